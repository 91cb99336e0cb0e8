"""Status codes are chosen in one place per side: counted in the source, not trusted.

A servicer (or anything else) that calls ``context.abort`` itself picks a status code
outside the side's mapping; so does a servicer class that is not wrapped by a mapping (an
exception escaping it becomes grpc's ``Unexpected <class>: <text>``).
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]
PACKAGES = ("mesh", "cloud", "frontend_server", "compat", "tools")

ABORTS_ALLOWED = {
    # The one place: ErrorMapping.abort, used by the edge's and the cloud's mapping.
    "mesh/errors/_server.py": 1,
    # The tunnel engine's protocol-level statuses on the outer Connect stream: shutting
    # down, a bad credential, the session's end status (tunnel.proto).
    "mesh/tunnel/_gateway.py": 3,
}
"""Files that may call ``context.abort`` (or ``abort_with_status``), and how often."""

UNMAPPED_SERVICERS = {
    # Serves the tunnel protocol itself; its statuses are the engine's (above).
    "TunnelGateway",
}


def sources() -> list[tuple[str, ast.Module]]:
    out = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            out.append((rel, ast.parse(path.read_text(encoding="utf-8"), rel)))
    return out


def test_context_abort_is_called_in_one_place_per_side() -> None:
    found: Counter[str] = Counter()
    for rel, tree in sources():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("abort", "abort_with_status")
                and ast.unparse(node.func.value).endswith("context")
            ):
                found[rel] += 1
    assert dict(found) == ABORTS_ALLOWED


def test_every_servicer_class_is_wrapped_by_an_error_mapping() -> None:
    servicers: dict[str, list[str]] = {}
    for rel, tree in sources():
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef):
                continue
            generated = [
                b
                for b in node.bases
                if isinstance(b, ast.Attribute)
                and ast.unparse(b.value).endswith("_pb2_grpc")
                and b.attr.endswith("Servicer")
            ]
            if generated:
                servicers[f"{rel}:{node.name}"] = [ast.unparse(d) for d in node.decorator_list]
    assert len(servicers) >= 10  # the hospital services, admin, registry, operations, ...
    unmapped = [
        name
        for name, decorators in servicers.items()
        if name.rpartition(":")[2] not in UNMAPPED_SERVICERS
        and not any(d in ("HOSPITAL_ERRORS.servicer", "CLOUD_ERRORS.servicer") for d in decorators)
    ]
    assert unmapped == []
