"""Compile a tree of ``.proto`` files into a ``FileDescriptorSet`` with the real protoc.

protoc is the one shipped in ``grpcio-tools`` (pinned in ``pyproject.toml``), run in a child
process so that its diagnostics, which it writes straight to file descriptor 2, can be read
and turned into one precise :class:`ProtoCompileError` instead of noise on the terminal.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import importlib.util
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from google.protobuf import descriptor_pb2

__all__ = ["ProtoCompileError", "compile_protos", "include_paths", "proto_files"]

# protoc reports `path:line:col: message`; warnings are prefixed with "warning:".
_DIAG = re.compile(r"^(?P<path>[^:\n]+):(?P<line>\d+):(?P<col>\d+):\s*(?P<msg>.*)$")


@dataclasses.dataclass
class ProtoCompileError(Exception):
    """A ``.proto`` input could not be compiled.

    ``str(err)`` is one line naming the file, line and column where protoc gives them.
    (Not frozen: Python sets ``__traceback__`` on exceptions as they propagate.)
    """

    message: str
    """What is wrong, as protoc (or our own check) said it."""
    path: str | None = None
    """The file the problem is in, relative to the compiled root where possible."""
    line: int | None = None
    """1-based line, when known."""
    column: int | None = None
    """1-based column, when known."""

    def __str__(self) -> str:
        where = self.path or ""
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.message}" if where else self.message


def include_paths() -> list[Path]:
    """The include roots for imports we allow: protobuf well-known types and googleapis.

    Returns:
        ``grpc_tools``' bundled ``google/protobuf`` protos and the root of the installed
        ``googleapis-common-protos`` (``google/rpc``, ``google/type``).
    """
    roots = [Path(str(importlib.resources.files("grpc_tools") / "_proto"))]
    spec = importlib.util.find_spec("google.rpc.status_pb2")
    if spec is not None and spec.origin is not None:
        # site-packages/google/rpc/status_pb2.py -> site-packages
        roots.append(Path(spec.origin).parents[2])
    return roots


def proto_files(root: Path) -> list[str]:
    """Every ``.proto`` file below ``root``, as sorted root-relative POSIX paths."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.proto"))


def compile_protos(
    root: Path,
    *,
    files: Sequence[str] | None = None,
    include_imports: bool = True,
    include_source_info: bool = True,
) -> descriptor_pb2.FileDescriptorSet:
    """Compile ``.proto`` files below ``root`` into one descriptor set.

    Args:
        root: the import root (for us, ``proto/``); file paths in the result are relative to it.
        files: root-relative files to compile; default every ``.proto`` below ``root``.
        include_imports: also embed the imported files (well-known types, googleapis), so the
            result is self-contained as an image.
        include_source_info: keep source locations and comments (needed for line numbers).

    Returns:
        The ``FileDescriptorSet`` protoc wrote, files in dependency order.

    Raises:
        ProtoCompileError: ``root`` is missing or holds no ``.proto`` file, or protoc
            rejected an input (syntax error, missing import, type error).
    """
    if not root.is_dir():
        raise ProtoCompileError(f"not a directory: {root}")
    targets = list(files) if files is not None else proto_files(root)
    if not targets:
        raise ProtoCompileError(f"no .proto files under {root}")
    with tempfile.TemporaryDirectory(prefix="hplus-protoc-") as tmp:
        out = Path(tmp) / "image.binpb"
        args = [sys.executable, "-m", "grpc_tools.protoc", f"-I{root}"]
        args += [f"-I{p}" for p in include_paths()]
        args.append(f"--descriptor_set_out={out}")
        if include_imports:
            args.append("--include_imports")
        if include_source_info:
            args.append("--include_source_info")
        args += targets
        proc = subprocess.run(args, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise _first_error(proc.stderr, root)
        fds = descriptor_pb2.FileDescriptorSet()
        fds.ParseFromString(out.read_bytes())
        return fds


def _first_error(stderr: str, root: Path) -> ProtoCompileError:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "warning:" not in ln]
    for ln in errors:
        m = _DIAG.match(ln)
        if m:
            return ProtoCompileError(
                m["msg"], path=m["path"], line=int(m["line"]), column=int(m["col"])
            )
    if errors:
        # e.g. "foo.proto: File not found." has no position.
        path, _, msg = errors[0].partition(": ")
        return ProtoCompileError(msg or errors[0], path=path if msg else None)
    return ProtoCompileError(f"protoc failed on {root} without a diagnostic")
