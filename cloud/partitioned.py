"""What lives in the business partitions: each part's tables, in the order they migrate.

The node opens every partition with these schemas and ``hplus partitions split`` copies
their tables; a part that starts keeping records in the partitions (orders, payments) adds
its schema here, and both pick it up.
"""

from __future__ import annotations

from cloud.accounts import ACCOUNTS_SCHEMA
from cloud.orders import ORDERS_SCHEMA
from cloud.partitions import PartitionSchema

__all__ = ["SCHEMAS"]

SCHEMAS: tuple[PartitionSchema, ...] = (ACCOUNTS_SCHEMA, ORDERS_SCHEMA)
"""Every part's tables in the partition databases."""
