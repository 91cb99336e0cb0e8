"""Real (minimal) wheels for tests that install packages with pip: files plus dist-info."""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from collections.abc import Mapping

__all__ = ["wheel"]


def _record(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest},{len(data)}"


def wheel(name: str, version: str, files: Mapping[str, bytes]) -> tuple[str, bytes]:
    """A pure-Python wheel of ``files`` (path → bytes): its file name and its bytes."""
    info = f"{name}-{version}.dist-info"
    members = dict(files)
    members[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    )
    members[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: hplus-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = [f"{path},{_record(data)}" for path, data in members.items()]
    members[f"{info}/RECORD"] = ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for path, data in members.items():
            z.writestr(path, data)
    return f"{name}-{version}-py3-none-any.whl", out.getvalue()
