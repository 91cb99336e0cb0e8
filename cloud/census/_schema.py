"""The census table: counts summed over every gateway node (one row per key)."""

from __future__ import annotations

import sqlalchemy as sa

from cloud.db import metadata

__all__ = ["CENSUS", "CENSUS_META", "METADATA"]

METADATA = metadata()

CENSUS = sa.Table(
    "field_census",
    METADATA,
    sa.Column("rpc", sa.String(300), primary_key=True),
    sa.Column("direction", sa.String(10), primary_key=True),
    sa.Column("contract_release", sa.String(64), primary_key=True),
    sa.Column("field_path", sa.String(500), primary_key=True),
    sa.Column("messages", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

CENSUS_META = sa.Table(
    "field_census_sampled",
    METADATA,
    sa.Column("rpc", sa.String(300), primary_key=True),
    sa.Column("direction", sa.String(10), primary_key=True),
    sa.Column("contract_release", sa.String(64), primary_key=True),
    sa.Column("sampled", sa.BigInteger, nullable=False),
    sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
)
