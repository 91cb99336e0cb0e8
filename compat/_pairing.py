"""The generic pairing layer: the elements of two releases matched by stable keys.

Files are matched by path, messages, enums and services by full name, fields by number
(extensions by extendee and number), enum values by number and RPCs by name. The rule
engine calls each handler on the pairs of its kind, and the change list walks the same
pairs plus the elements only one release has; neither looks a counterpart up itself.

One :class:`Pairing` serves one comparison: it remembers which message pairs are
declared identically, so the rules and the change list skip them without comparing twice.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TypeVar

from compat._index import (
    EnumNode,
    EnumValueNode,
    FieldNode,
    FileNode,
    MessageNode,
    MethodNode,
    Schema,
    ServiceNode,
    identical,
)

__all__ = ["Pairing", "ValueGroup", "joined", "kept", "only"]

K = TypeVar("K")
V = TypeVar("V")

ValueGroup = dict[str, EnumValueNode]
"""The values of one enum that share a number (aliases), by name."""


def kept(previous: Mapping[K, V], current: Mapping[K, V]) -> Iterator[tuple[V, V]]:
    """Elements both releases have, as ``(previous, current)``, in the older release's order."""
    get = current.get
    for key, p in previous.items():
        c = get(key)
        if c is not None:
            yield p, c


def only(side: Mapping[K, V], other: Mapping[K, V]) -> Iterator[tuple[K, V]]:
    """Elements of ``side`` whose key ``other`` lacks, in ``side``'s order."""
    for key, value in side.items():
        if key not in other:
            yield key, value


def joined(
    previous: Mapping[K, V], current: Mapping[K, V]
) -> Iterator[tuple[K, V | None, V | None]]:
    """Every key of either release as ``(key, previous, current)``, ``None`` where absent.

    The newer release's keys come first, in its order; then the keys only the older one has.
    """
    for key, c in current.items():
        yield key, previous.get(key), c
    for key, p in only(previous, current):
        yield key, p, None


class Pairing:
    """Two releases, and their elements matched by stable keys.

    Args:
        previous: the older release.
        current: the newer release.
    """

    __slots__ = ("_same", "current", "previous")

    def __init__(self, previous: Schema, current: Schema) -> None:
        self.previous = previous
        self.current = current
        self._same: dict[str, bool] = {}

    def files(self) -> Iterator[tuple[FileNode, FileNode]]:
        """File pairs, by path."""
        return kept(self.previous.files, self.current.files)

    def added_files(self) -> list[str]:
        """Paths only the newer release has, sorted."""
        return sorted(path for path, _ in only(self.current.files, self.previous.files))

    def removed_files(self) -> list[str]:
        """Paths only the older release has, sorted."""
        return sorted(path for path, _ in only(self.previous.files, self.current.files))

    def messages(self) -> Iterator[tuple[MessageNode, MessageNode]]:
        """Message pairs, by full name, except those declared identically (nothing to see).

        Whether a pair is identical is decided once per comparison and remembered.
        """
        same = self._same
        for pm, cm in kept(self.previous.messages, self.current.messages):
            if not identical(pm, cm, same):
                yield pm, cm

    @staticmethod
    def fields(
        previous: MessageNode, current: MessageNode
    ) -> Iterator[tuple[FieldNode, FieldNode]]:
        """Field pairs of one message pair, by number, in the older declaration order."""
        return kept(previous.fields, current.fields)

    @staticmethod
    def added_fields(previous: MessageNode, current: MessageNode) -> dict[int, FieldNode]:
        """Fields of one message pair only the newer message has, by number."""
        return dict(only(current.fields, previous.fields))

    @staticmethod
    def removed_fields(previous: MessageNode, current: MessageNode) -> dict[int, FieldNode]:
        """Fields of one message pair only the older message has, by number."""
        return dict(only(previous.fields, current.fields))

    def extensions(self) -> Iterator[tuple[FieldNode, FieldNode]]:
        """Extension pairs, by extendee and number."""
        cur = self.current.extensions
        for extendee, pexts in self.previous.extensions.items():
            yield from kept(pexts, cur.get(extendee, {}))

    def enums(self) -> Iterator[tuple[EnumNode, EnumNode]]:
        """Enum pairs, by full name."""
        return kept(self.previous.enums, self.current.enums)

    @staticmethod
    def enum_values(
        previous: EnumNode, current: EnumNode
    ) -> Iterator[tuple[ValueGroup, ValueGroup]]:
        """Value pairs of one enum pair, by number (aliases grouped)."""
        return kept(previous.values, current.values)

    def added_messages(self) -> Iterator[tuple[str, MessageNode]]:
        """Messages only the newer release has, in its order."""
        return only(self.current.messages, self.previous.messages)

    def removed_messages(self) -> Iterator[tuple[str, MessageNode]]:
        """Messages only the older release has, in its order."""
        return only(self.previous.messages, self.current.messages)

    def added_enums(self) -> Iterator[tuple[str, EnumNode]]:
        """Enums only the newer release has, in its order."""
        return only(self.current.enums, self.previous.enums)

    def removed_enums(self) -> Iterator[tuple[str, EnumNode]]:
        """Enums only the older release has, in its order."""
        return only(self.previous.enums, self.current.enums)

    @staticmethod
    def every_enum_value(
        previous: EnumNode, current: EnumNode
    ) -> Iterator[tuple[int, ValueGroup | None, ValueGroup | None]]:
        """Every value number of one enum pair, as :func:`joined` gives them, by number."""
        return joined(dict(sorted(previous.values.items())), dict(sorted(current.values.items())))

    def services(self) -> Iterator[tuple[ServiceNode, ServiceNode]]:
        """Service pairs, by full name."""
        return kept(self.previous.services, self.current.services)

    @staticmethod
    def methods(
        previous: ServiceNode, current: ServiceNode
    ) -> Iterator[tuple[MethodNode, MethodNode]]:
        """RPC pairs of one service pair, by name."""
        return kept(previous.methods, current.methods)

    def every_service(self) -> Iterator[tuple[str, ServiceNode | None, ServiceNode | None]]:
        """Every service of either release, as :func:`joined` gives them."""
        return joined(self.previous.services, self.current.services)

    @staticmethod
    def every_method(
        previous: ServiceNode, current: ServiceNode
    ) -> Iterator[tuple[str, MethodNode | None, MethodNode | None]]:
        """Every RPC of one service pair, as :func:`joined` gives them."""
        return joined(previous.methods, current.methods)
