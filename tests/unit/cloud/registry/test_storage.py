from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from google.protobuf import descriptor_pb2
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncEngine

import compat
from cloud.registry import InvalidArgument, canonical_image, load_image, migrate_registry
from cloud.registry._schema import METADATA


async def test_migration_matches_the_schema_and_is_repeatable(db_engine: AsyncEngine) -> None:
    await migrate_registry(db_engine)
    await migrate_registry(db_engine)  # a second start is a no-op

    def diff(conn):  # type: ignore[no-untyped-def]
        ctx = MigrationContext.configure(
            conn, opts={"compare_type": True, "version_table": "alembic_version_registry"}
        )
        return compare_metadata(ctx, METADATA), inspect(conn).get_table_names()

    async with db_engine.connect() as conn:
        changes, tables = await conn.run_sync(diff)
    assert changes == []
    assert "alembic_version_registry" in tables


def _fds(tmp_path: Path) -> descriptor_pb2.FileDescriptorSet:
    root = tmp_path / "p"
    (root / "c" / "v1").mkdir(parents=True)
    (root / "c" / "v1" / "a.proto").write_text(
        'syntax = "proto3";\npackage c.v1;\nimport "google/protobuf/timestamp.proto";\n'
        "message A { google.protobuf.Timestamp at = 1; }\n"
    )
    (root / "c" / "v1" / "b.proto").write_text(
        'syntax = "proto3";\npackage c.v1;\nimport "c/v1/a.proto";\nmessage B { A a = 1; }\n'
    )
    return compat.compile_protos(root)


def test_canonical_form_is_dependency_ordered_and_order_independent(tmp_path: Path) -> None:
    fds = _fds(tmp_path)
    canonical = canonical_image(fds)
    names = [f.name for f in descriptor_pb2.FileDescriptorSet.FromString(canonical).file]
    assert names == ["google/protobuf/timestamp.proto", "c/v1/a.proto", "c/v1/b.proto"]
    reordered = descriptor_pb2.FileDescriptorSet(file=list(reversed(fds.file)))
    assert canonical_image(reordered) == canonical
    image = load_image(reordered.SerializeToString())
    assert image.data == canonical
    assert image.digest == hashlib.sha256(canonical).hexdigest()
    assert image.files == ("c/v1/a.proto", "c/v1/b.proto")  # imports are not the release's


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda f: f.file.append(f.file[0]), "appears twice"),
        (lambda f: f.file[-1].dependency.append("x/y.proto"), "'x/y.proto', which is missing"),
        (lambda f: f.file[0].dependency.append(f.file[-1].name), "import cycle"),
    ],
)
def test_malformed_images_are_refused(tmp_path: Path, mangle, message: str) -> None:
    fds = _fds(tmp_path)
    mangle(fds)
    with pytest.raises(InvalidArgument, match=message) as err:
        canonical_image(fds)
    assert err.value.field == "image"
