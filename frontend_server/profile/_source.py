"""Profile files: the ``extends`` chain, the merge, and located, typed access to the result.

A hospital file names its vendor template (``extends = "vendors/acme-rest.toml"``, relative
to the hospital file); a template may extend another. Tables merge key by key, the
extending file winning; any other value, arrays included, is replaced whole. Every value of
the merged document remembers which file set it, so an error names that file and line.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from mesh.config import ConfigError, PathItem, dotted_path, find_line, load_toml

__all__ = ["REQUIRED", "Layer", "MergedDocument", "Node", "load_layers", "merge"]

T = TypeVar("T")
E = TypeVar("E", bound=enum.Enum)

_MAX_DEPTH = 8


class _Required:
    """Marker: the parameter has no default."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
"""Default meaning "this parameter must be given"."""

_TYPE_NAMES = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    dict: "table",
    list: "array",
    dt.time: "time",
    dt.date: "date",
    dt.datetime: "date-time",
}


def _type_name(value: object) -> str:
    for kind, name in _TYPE_NAMES.items():
        if type(value) is kind:
            return name
    return type(value).__name__


@dataclasses.dataclass(frozen=True)
class Layer:
    """One profile file as read."""

    path: Path
    """Where it is."""
    text: str
    """Its text, to find lines."""
    data: Mapping[str, Any]
    """Its parsed content, ``extends`` removed."""


def load_layers(path: Path) -> list[Layer]:
    """Read ``path`` and the templates it extends, base template first.

    Raises:
        ConfigError: a file is unreadable or not TOML, ``extends`` is not a string, names a
            missing file, or the chain loops or is deeper than 8 files.
    """
    chain: list[Layer] = []
    seen: set[Path] = set()
    current = path
    while True:
        resolved = current.resolve()
        if resolved in seen:
            raise ConfigError("extends: the chain of templates loops", path=current)
        if len(chain) >= _MAX_DEPTH:
            raise ConfigError(f"extends: more than {_MAX_DEPTH} files in the chain", path=current)
        seen.add(resolved)
        doc, text = load_toml(current)
        parent = doc.pop("extends", None)
        chain.append(Layer(path=current, text=text, data=doc))
        if parent is None:
            break
        if not isinstance(parent, str) or not parent:
            raise ConfigError(
                f"extends: expected a file name (string), got {_type_name(parent)} {parent!r}",
                path=current,
                line=find_line(text, ("extends",)),
            )
        target = Path(parent)
        target = target if target.is_absolute() else current.parent / target
        if not target.is_file():
            raise ConfigError(
                f"extends: template {parent!r} not found (looked for {target})",
                path=current,
                line=find_line(text, ("extends",)),
            )
        current = target
    chain.reverse()
    return chain


@dataclasses.dataclass(frozen=True)
class MergedDocument:
    """The merged profile and where each of its values came from."""

    data: Mapping[str, Any]
    """The merged content."""
    origins: Mapping[tuple[PathItem, ...], Layer]
    """For each path of ``data``, the layer that set it (``()`` is the last layer)."""

    def locate(self, path: tuple[PathItem, ...]) -> tuple[Path, int | None]:
        """The file and line that define ``path``, or its nearest defined parent."""
        probe = path
        while probe not in self.origins:
            probe = probe[:-1]
        layer = self.origins[probe]
        return layer.path, find_line(layer.text, path)


def merge(layers: Iterable[Layer]) -> MergedDocument:
    """Merge layers, later ones winning (see the module docstring)."""
    data: dict[str, Any] = {}
    origins: dict[tuple[PathItem, ...], Layer] = {}

    def mark(value: Any, path: tuple[PathItem, ...], layer: Layer) -> None:
        origins[path] = layer
        if isinstance(value, Mapping):
            for key, sub in value.items():
                mark(sub, (*path, key), layer)
        elif isinstance(value, list):
            for index, sub in enumerate(value):
                mark(sub, (*path, index), layer)

    def drop(path: tuple[PathItem, ...]) -> None:
        for known in [p for p in origins if p[: len(path)] == path and len(p) > len(path)]:
            del origins[known]

    def into(
        target: dict[str, Any], source: Mapping[str, Any], path: tuple[PathItem, ...], layer: Layer
    ) -> None:
        origins[path] = layer
        for key, value in source.items():
            sub = (*path, key)
            if isinstance(value, Mapping) and isinstance(target.get(key), dict):
                into(target[key], value, sub, layer)
                continue
            drop(sub)
            target[key] = _copy(value)
            mark(value, sub, layer)

    for layer in layers:
        into(data, layer.data, (), layer)
    return MergedDocument(data=data, origins=origins)


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


class Node:
    """Checked access to one table of the merged profile, with located errors.

    Args:
        doc: the merged document.
        path: where this table is (``()`` for the top level).
    """

    def __init__(self, doc: MergedDocument, path: tuple[PathItem, ...] = ()) -> None:
        self._doc = doc
        self._path = path
        data: Any = doc.data
        for item in path:
            data = data[item]
        self._data: Mapping[Any, Any] = data

    @property
    def path(self) -> tuple[PathItem, ...]:
        """Where this table is."""
        return self._path

    def names(self) -> list[str]:
        """The keys this table has."""
        return [str(k) for k in self._data]

    def has(self, key: str) -> bool:
        """Whether ``key`` is set."""
        return key in self._data

    def error(self, key: PathItem | None, problem: str) -> ConfigError:
        """A :class:`ConfigError` naming ``key`` of this table, its file and line."""
        path = self._path if key is None else (*self._path, key)
        file, line = self._doc.locate(path)
        key = dotted_path(path) or "profile"
        return ConfigError(f"{key}: {problem}", path=file, line=line, key=key)

    def reject_unknown(self, known: Iterable[str], *, what: str = "parameter") -> None:
        """Raise on the first key not in ``known``: a typo must not pass silently."""
        allowed = set(known)
        for key in self._data:
            if key not in allowed:
                hint = f" (known: {', '.join(sorted(allowed))})" if allowed else ""
                raise self.error(key, f"unknown {what}{hint}")

    def get(self, key: str, kind: type[T], default: T = REQUIRED) -> T:
        """The value of ``key``, checked to be a ``kind``; ``default`` when absent.

        An integer is accepted where a float is expected; a bool is never an integer.

        Raises:
            ConfigError: missing without a default, or of the wrong type.
        """
        if key not in self._data:
            if default is REQUIRED:
                raise self.error(key, "missing required parameter")
            return default
        value = self._data[key]
        if kind is float and type(value) is int:
            return float(value)  # type: ignore[return-value]
        if type(value) is not kind:
            raise self.error(
                key,
                f"wrong type: expected {_TYPE_NAMES.get(kind, kind.__name__)}, "
                f"got {_type_name(value)} {value!r}",
            )
        return value

    def number(
        self,
        key: str,
        kind: type[T],
        default: T = REQUIRED,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
        exclusive_minimum: bool = False,
    ) -> T:
        """An int or float parameter within bounds."""
        value = self.get(key, kind, default)
        if key in self._data and isinstance(value, int | float):
            low_bad = minimum is not None and (
                value <= minimum if exclusive_minimum else value < minimum
            )
            if low_bad:
                op = ">" if exclusive_minimum else ">="
                raise self.error(key, f"invalid value {value!r}: must be {op} {minimum:g}")
            if maximum is not None and value > maximum:
                raise self.error(key, f"invalid value {value!r}: must be <= {maximum:g}")
        return value

    def choice(self, key: str, kind: type[E], default: E | _Required = REQUIRED) -> E:
        """A string parameter naming a member (by value) of the enum ``kind``."""
        if key not in self._data and not isinstance(default, _Required):
            return default
        text = self.get(key, str)
        try:
            return kind(text)
        except ValueError:
            allowed = ", ".join(str(m.value) for m in kind)
            raise self.error(key, f"invalid value {text!r}: must be one of {allowed}") from None

    def time(self, key: str, default: dt.time | _Required = REQUIRED) -> dt.time:
        """A time of day, written ``"HH:MM"`` or as a TOML local time (``08:30:00``)."""
        if key not in self._data and not isinstance(default, _Required):
            return default
        if key in self._data and type(self._data[key]) is dt.time:
            return self._data[key]  # type: ignore[no-any-return]
        text = self.get(key, str)
        return self.parse_time(key, text)

    def parse_time(self, key: PathItem, text: str) -> dt.time:
        """Parse ``"HH:MM"`` for ``key``."""
        try:
            hours, minutes = text.split(":")
            if len(hours) != 2 or len(minutes) != 2:
                raise ValueError(text)
            return dt.time(int(hours), int(minutes))
        except ValueError:
            raise self.error(key, f"invalid value {text!r}: expected a time HH:MM") from None

    def str_list(self, key: str, default: tuple[str, ...] | _Required = REQUIRED) -> list[str]:
        """An array of strings."""
        if key not in self._data and not isinstance(default, _Required):
            return list(default)
        values = self.get(key, list)
        for index, item in enumerate(values):
            if type(item) is not str:
                raise self.child_error(
                    key, index, f"wrong type: expected string, got {_type_name(item)} {item!r}"
                )
        return [str(v) for v in values]

    def child_error(self, key: str, sub: PathItem, problem: str) -> ConfigError:
        """An error located at ``key`` → ``sub`` below this table."""
        return self.error_at((*self._path, key, sub), problem)

    def error_at(self, path: tuple[PathItem, ...], problem: str) -> ConfigError:
        """An error located at an absolute ``path``."""
        file, line = self._doc.locate(path)
        key = dotted_path(path)
        return ConfigError(f"{key}: {problem}", path=file, line=line, key=key)

    def table(self, key: str, *, required: bool = False) -> Node:
        """The sub-table ``key``; an empty table when absent and not required.

        Raises:
            ConfigError: missing though required, or not a table.
        """
        if key not in self._data:
            if required:
                raise self.error(key, "missing required table")
            return _EmptyNode(self._doc, (*self._path, key))
        if not isinstance(self._data[key], Mapping):
            raise self.error(key, f"wrong type: expected table, got {_type_name(self._data[key])}")
        return Node(self._doc, (*self._path, key))

    def tables(self, key: str, *, required: bool = False) -> list[Node]:
        """The array of tables ``key`` (``[[key]]``)."""
        if key not in self._data:
            if required:
                raise self.error(key, "missing required parameter")
            return []
        value = self._data[key]
        if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
            raise self.error(key, f"wrong type: expected array of tables, got {_type_name(value)}")
        return [Node(self._doc, (*self._path, key, i)) for i in range(len(value))]

    def str_map(self, key: str, *, required: bool = False) -> dict[str, str]:
        """A table of string values (a mapping); empty when absent and not required."""
        node = self.table(key, required=required)
        out: dict[str, str] = {}
        for name in node.names():
            out[name] = node.get(name, str)
        return out


class _EmptyNode(Node):
    """An absent table: reads give defaults; errors point at the nearest defined parent."""

    def __init__(self, doc: MergedDocument, path: tuple[PathItem, ...]) -> None:
        self._doc = doc
        self._path = path
        self._data = {}
