"""Descriptor images: validation, the canonical form and its content address.

The canonical serialisation of an image (what the registry stores, and what its digest is
computed over) is defined as follows:

1. Parse the bytes as a ``google.protobuf.FileDescriptorSet``. Every file must be a
   ``.proto`` file, names must be unique, and every dependency of every file must be in the
   set (an image is self-contained).
2. Order the files topologically by their ``dependency`` lists, breaking ties by file name
   (byte-wise): at each step emit the smallest name whose dependencies are all emitted.
   Dependency order keeps the image loadable by protoc and by a descriptor pool; the name
   tie-break makes the order independent of how the image was produced.
3. Keep every field of every file as it is, ``source_code_info`` included (findings need
   line numbers, and comments are part of the contract).
4. Serialise with ``SerializeToString(deterministic=True)``.

The digest is the SHA-256 of those bytes, so an image re-serialised by another tool (other
file order) gets the same address.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.message import DecodeError

import compat
from cloud.registry._errors import InvalidArgument

__all__ = ["MAX_IMAGE_BYTES", "Image", "canonical_image", "load_image"]

MAX_IMAGE_BYTES = 32 * 1024 * 1024
"""Largest image accepted, as ``registry.proto`` documents."""


@dataclasses.dataclass(frozen=True)
class Image:
    """A validated descriptor image in canonical form."""

    data: bytes
    """The canonical serialisation."""
    digest: str
    """Lower-case hex SHA-256 of ``data``."""
    files: tuple[str, ...]
    """The release's own proto files (imports such as ``google/protobuf/…`` left out)."""
    services: tuple[str, ...]
    """Fully qualified names of the services in the own files."""
    loaded: compat.LoadedInput = dataclasses.field(repr=False, compare=False)
    """The image indexed for the compat engine."""


def canonical_image(fds: descriptor_pb2.FileDescriptorSet) -> bytes:
    """Serialise ``fds`` canonically (see the module docstring).

    Raises:
        InvalidArgument: a file name repeats or a dependency is missing (field ``image``).
    """
    by_name: dict[str, descriptor_pb2.FileDescriptorProto] = {}
    for f in fds.file:
        if f.name in by_name:
            raise InvalidArgument("image", f"file {f.name!r} appears twice")
        by_name[f.name] = f
    waiting: dict[str, set[str]] = {}
    users: dict[str, list[str]] = {}
    for name, f in by_name.items():
        for dep in f.dependency:
            if dep not in by_name:
                raise InvalidArgument(
                    "image", f"not self-contained: {name!r} imports {dep!r}, which is missing"
                )
            users.setdefault(dep, []).append(name)
        waiting[name] = set(f.dependency)
    ready = [name for name, deps in waiting.items() if not deps]
    heapq.heapify(ready)
    out = descriptor_pb2.FileDescriptorSet()
    while ready:
        name = heapq.heappop(ready)
        out.file.append(by_name[name])
        for user in users.get(name, ()):
            waiting[user].discard(name)
            if not waiting[user]:
                heapq.heappush(ready, user)
    if len(out.file) != len(by_name):
        raise InvalidArgument("image", "import cycle between files")
    return out.SerializeToString(deterministic=True)


def load_image(data: bytes, *, label: str = "image") -> Image:
    """Validate an image and bring it into canonical form.

    Blocking (parses and indexes the descriptors); call it through ``asyncio.to_thread``.

    Args:
        data: a serialized ``FileDescriptorSet`` as pushed.
        label: how the image is named in compat output.

    Returns:
        The canonical image, indexed for the compat engine.

    Raises:
        InvalidArgument: the bytes are empty, too large or not a usable image.
    """
    if not data:
        raise InvalidArgument("image", "empty")
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidArgument("image", f"{len(data)} bytes; at most {MAX_IMAGE_BYTES} allowed")
    fds = descriptor_pb2.FileDescriptorSet()
    try:
        fds.ParseFromString(data)
    except DecodeError:
        raise InvalidArgument("image", "not a serialized FileDescriptorSet") from None
    canonical = canonical_image(fds)
    loaded = _load(canonical, label)
    files = tuple(sorted(loaded.schema.files))
    services = tuple(sorted(loaded.schema.services))
    return Image(
        data=canonical,
        digest=hashlib.sha256(canonical).hexdigest(),
        files=files,
        services=services,
        loaded=loaded,
    )


def _load(data: bytes, label: str) -> compat.LoadedInput:
    # compat's public API reads images from files only (it also decides which files are
    # imports); a bytes entry point would save this round trip.
    with tempfile.TemporaryDirectory(prefix="hplus-registry-") as tmp:
        path = Path(tmp) / "image.binpb"
        path.write_bytes(data)
        try:
            loaded = compat.load_input(str(path))
        except compat.CompatInputError as err:
            raise InvalidArgument("image", err.message) from None
    return dataclasses.replace(loaded, label=label)
