"""Turn an input reference into an indexed release.

Accepted references:

* a directory of ``.proto`` files (compiled with protoc from grpcio-tools, with source info);
* a frozen image file (``*.binpb``, a serialized ``FileDescriptorSet`` with imports);
* ``release:<version>``, looked up as ``<releases_dir>/<version>.binpb``;
* ``git:<ref>``, the proto tree at that ref, extracted with ``git archive`` and compiled.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import re
import subprocess
import tarfile
import tempfile
from pathlib import Path

import semver
from google.protobuf import descriptor_pb2
from google.protobuf.message import DecodeError

from compat._engine import schema_of
from compat._index import Schema
from compat._protoc import ProtoCompileError, compile_protos, include_paths, proto_files

__all__ = [
    "CompatInputError",
    "LoadedInput",
    "check_git_ref",
    "list_release_versions",
    "load_input",
]

DEFAULT_RELEASES_DIR = Path("proto/releases")


@dataclasses.dataclass(eq=False)
class CompatInputError(Exception):
    """An input cannot be read or compiled. ``str(err)`` is one line naming where."""

    message: str
    """What is wrong."""
    path: str | None = None
    """The file (or input reference) at fault."""
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


@dataclasses.dataclass(frozen=True)
class LoadedInput:
    """A release ready to compare."""

    label: str
    """How the input was named (``release:1.0.0``, a directory, ``git:main``)."""
    schema: Schema
    """The indexed release."""
    image: descriptor_pb2.FileDescriptorSet
    """The descriptor set it came from (imports included)."""


def _from_compile_error(
    err: ProtoCompileError, root: Path, label: str | None = None
) -> CompatInputError:
    path = err.path
    if path is not None and label is not None:
        path = f"{label}:{path}"
    elif path is not None and not Path(path).exists() and (root / path).exists():
        path = str(root / path)
    return CompatInputError(
        err.message, path=path or label or str(root), line=err.line, column=err.column
    )


def _compile_dir(
    root: Path, label: str | None = None
) -> tuple[descriptor_pb2.FileDescriptorSet, list[str]]:
    if not root.is_dir():
        raise CompatInputError("no such directory", path=str(root))
    try:
        files = [f for f in proto_files(root) if not f.startswith("releases/")]
    except OSError as err:
        raise CompatInputError(f"cannot read: {err.strerror}", path=str(root)) from None
    if not files:
        raise CompatInputError("no .proto files found", path=label or str(root))
    try:
        fds = compile_protos(root, files=files)
    except ProtoCompileError as err:
        raise _from_compile_error(err, root, label) from None
    return fds, files


def _bundled(path: str) -> bool:
    return any((root / path).is_file() for root in include_paths())


def load_image(path: Path, label: str | None = None) -> LoadedInput:
    """Load a frozen image (a serialized ``FileDescriptorSet``).

    Files that ship with protoc or googleapis (``google/protobuf/…``, ``google/rpc/…``) are
    treated as imports, not as part of the release. When a ``<image>.sha256`` file sits
    beside the image, the bytes must match it.

    Raises:
        CompatInputError: the file is missing, unreadable, corrupt or empty.
    """
    name = label or str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CompatInputError("no such file", path=name) from None
    except OSError as err:
        raise CompatInputError(f"cannot read: {err.strerror}", path=name) from None
    digest_file = path.with_name(path.name + ".sha256")
    if digest_file.is_file():
        want = digest_file.read_text().split()[0] if digest_file.read_text().split() else ""
        if hashlib.sha256(data).hexdigest() != want:
            raise CompatInputError(f"image does not match its digest {digest_file.name}", path=name)
    fds = descriptor_pb2.FileDescriptorSet()
    try:
        fds.ParseFromString(data)
    except DecodeError:
        raise CompatInputError(
            "corrupt image: not a serialized FileDescriptorSet", path=name
        ) from None
    if not fds.file or any(not f.name.endswith(".proto") for f in fds.file):
        raise CompatInputError("corrupt image: no .proto file descriptors", path=name)
    own = [f.name for f in fds.file if not _bundled(f.name)]
    if not own:
        raise CompatInputError("image holds only imported files", path=name)
    return LoadedInput(name, schema_of(fds, own), fds)


def list_release_versions(releases_dir: Path = DEFAULT_RELEASES_DIR) -> list[str]:
    """Versions of the frozen releases in ``releases_dir``, oldest first.

    Files whose name is not a semantic version are skipped.
    """
    found: list[tuple[semver.Version, str]] = []
    if not releases_dir.is_dir():
        return []
    for image in releases_dir.glob("*.binpb"):
        text = image.name.removesuffix(".binpb")
        try:
            found.append((semver.Version.parse(text), text))
        except ValueError:
            continue
    return [text for _, text in sorted(found)]


# What `git check-ref-format` refuses in a ref name, plus what a revision suffix may add.
_REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//")
_REVISION_SUFFIX = re.compile(r"(?:[~^][0-9]*)*$")


def check_git_ref(ref: str) -> str:
    """Validate a ``git:`` reference before git sees it.

    A reference is a ref name (``main``, ``v1.2.0``, ``origin/main``, ``HEAD``, a commit
    hash), optionally followed by ``~N`` / ``^N`` suffixes (``HEAD~1``). Names follow
    ``git check-ref-format``'s rules, and nothing may start with ``-``, so no reference
    can be read as an option (``git:--output=FILE`` once made git write FILE).

    Returns:
        The reference, unchanged.

    Raises:
        CompatInputError: the reference is empty or not a valid name.
    """
    label = "git:" + ref.encode("unicode_escape").decode()  # control characters shown escaped
    suffix = _REVISION_SUFFIX.search(ref)
    name = ref[: suffix.start()] if suffix is not None else ref
    why = ""
    bad = _REF_FORBIDDEN.search(name)
    if not name:
        why = "it is empty"
    elif name.startswith("-"):
        why = "it starts with '-'"
    elif bad is not None:
        text = bad.group()
        what = "a space" if text == " " else repr(text)
        if len(text) == 1 and (text < " " or text == "\x7f"):
            what = "a control character"
        why = f"it contains {what}"
    elif name == "@":
        why = "it is '@'"
    elif name.startswith("/") or name.endswith(("/", ".")):
        why = f"it starts or ends with {name[0] if name.startswith('/') else name[-1]!r}"
    elif any(part.startswith(".") or part.endswith(".lock") for part in name.split("/")):
        why = "a component starts with '.' or ends with '.lock'"
    if why:
        raise CompatInputError(
            f"not a valid git reference ({why}); expected git:<branch, tag or commit>[~N]",
            path=label,
        )
    return ref


def _git(repo: Path, label: str, *args: str) -> bytes:
    try:
        proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=False)
    except FileNotFoundError:
        raise CompatInputError("git is not installed", path=label) from None
    if proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        raise CompatInputError(msg[-1] if msg else f"git {args[0]} failed", path=label)
    return proc.stdout


def _git_tree(
    ref: str, repo: Path, proto_dir: str
) -> tuple[descriptor_pb2.FileDescriptorSet, list[str]]:
    label = f"git:{ref}"
    check_git_ref(ref)
    # `--end-of-options`: whatever the reference is, git reads it as a revision, never as
    # an option; and it must name a commit, which is then archived by its hash.
    try:
        commit = _git(
            repo, label, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"
        )
    except CompatInputError as err:
        if err.message == "git is not installed":
            raise
        raise CompatInputError(f"not a commit in {repo}", path=label) from None
    sha = commit.decode().strip()
    archive = _git(repo, label, "archive", "--format=tar", "--end-of-options", sha, proto_dir)
    with tempfile.TemporaryDirectory(prefix="hplus-compat-git-") as tmp:
        try:
            with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
                tar.extractall(tmp, filter="data")
        except tarfile.TarError as err:
            raise CompatInputError(f"cannot unpack git archive: {err}", path=label) from None
        return _compile_dir(Path(tmp) / proto_dir, label)


def load_input(
    ref: str,
    *,
    releases_dir: Path = DEFAULT_RELEASES_DIR,
    repo: Path = Path("."),
    proto_dir: str = "proto",
) -> LoadedInput:
    """Load any supported input reference.

    Args:
        ref: a directory, an image file, ``release:<version>`` or ``git:<ref>``.
        releases_dir: where ``release:`` looks.
        repo: the git repository ``git:`` reads.
        proto_dir: the proto tree inside ``repo`` for ``git:``.

    Returns:
        The loaded release.

    Raises:
        CompatInputError: the input is unknown, unreadable or does not compile.
    """
    if ref.startswith("release:"):
        version = ref.removeprefix("release:")
        image = releases_dir / f"{version}.binpb"
        if not image.is_file():
            known = ", ".join(list_release_versions(releases_dir)) or "none"
            raise CompatInputError(f"unknown release (frozen: {known})", path=ref)
        return load_image(image, ref)
    if ref.startswith("git:"):
        fds, own = _git_tree(ref.removeprefix("git:"), repo, proto_dir)
        return LoadedInput(ref, schema_of(fds, own), fds)
    path = Path(ref)
    if path.is_dir():
        fds, own = _compile_dir(path)
        return LoadedInput(ref, schema_of(fds, own), fds)
    if path.is_file():
        return load_image(path, ref)
    raise CompatInputError("no such file, directory, release:<version> or git:<ref>", path=ref)
