"""Tables of the partition map (the control database) and of every partition's database.

The tables are created and changed only by the migrations in ``migrations/control`` and
``migrations/partition``; this module describes them for queries and must match the newest
migration (a test checks).

Control database: which partitions exist (``partitions``), which region each serves
(``partition_regions``), the map's version (``partition_map``, one row, bumped in the same
transaction as every change of the other two) and the history of splits.

Each partition's database, besides the tables of the parts that keep their records there:
``partition_fence`` (one row: the partition's name, so a URL pointing at another
partition's database is refused, and whether writes are fenced), and ``partition_changes``,
the log a split's triggers fill while it copies the partition.
"""

from __future__ import annotations

import sqlalchemy as sa

from cloud.db import metadata

__all__ = [
    "CHANGES",
    "CONTROL",
    "FENCE",
    "MAP",
    "PARTITIONS",
    "PARTITION_INFRA",
    "REGIONS",
    "SPLITS",
]

CONTROL = metadata()

PARTITIONS = sa.Table(
    "partitions",
    CONTROL,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
)
"""One row per partition: ``active`` (serves regions), ``copying`` (a split's target, not in
the map yet) or ``retired`` (split away; its rows stay, unread and fenced)."""

REGIONS = sa.Table(
    "partition_regions",
    CONTROL,
    sa.Column("region", sa.String(2), primary_key=True),
    sa.Column("partition", sa.String(32), nullable=False),
)
"""Which partition serves each region."""

MAP = sa.Table(
    "partition_map",
    CONTROL,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
)
"""One row (id 1): the map's version, which nodes poll to notice a change."""

SPLITS = sa.Table(
    "partition_splits",
    CONTROL,
    sa.Column("split_id", sa.String(32), primary_key=True),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("targets", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("rows_copied", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("pause_seconds", sa.Float, nullable=True),
    sa.Column("detail", sa.Text, nullable=False, server_default=""),
)
"""Every split: ``running``, ``done`` or ``failed``, what it copied and how long the source
was unwritable (``pause_seconds``: from its fence to the map switch)."""

PARTITION_INFRA = metadata()

FENCE = sa.Table(
    "partition_fence",
    PARTITION_INFRA,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("partition", sa.String(32), nullable=False),
    sa.Column("fenced", sa.Boolean, nullable=False),
    sa.Column("fenced_at", sa.DateTime(timezone=True), nullable=True),
)
"""One row (id 1): whose database this is, and whether its writes are fenced."""

CHANGES = sa.Table(
    "partition_changes",
    PARTITION_INFRA,
    sa.Column(
        "seq",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("table_name", sa.String(64), nullable=False),
    sa.Column("row_key", sa.Text, nullable=False),
)
"""Rows written while a split copies this partition: (table, JSON of the row or its key),
filled by triggers the split installs and removes, drained by the split."""
