"""Reading configuration files with errors that name the file, the key and the line.

Configuration is TOML (``tomllib``, standard library). Components describe their settings as
frozen dataclasses; this module reads a file once, checks every key against what the
component knows (an unknown key is an error: a typo must not pass silently), converts
values, and reports ``file:line: [section] key: problem`` on anything wrong.
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["ConfigError", "PathItem", "Section", "dotted_path", "find_line", "load_toml"]

T = TypeVar("T")

_TOML_POS = re.compile(r"\(at line (\d+), column (\d+)\)")


class ConfigError(Exception):
    """A configuration file or value is wrong.

    ``str(err)`` is one line: ``path:line: message`` when the place is known.

    Args:
        message: what is wrong (``key: problem`` when ``key`` is given).
        path: the file, or what stands for it.
        line: the line in it.
        key: the dotted parameter at fault, when the message names one (a caller that
            reports the error field by field, like ``ApplyConfig``, uses it).
    """

    def __init__(
        self,
        message: str,
        *,
        path: Path | str | None = None,
        line: int | None = None,
        key: str | None = None,
    ):
        self.message = message
        self.path = str(path) if path is not None else None
        self.line = line
        self.key = key
        super().__init__(str(self))

    @property
    def problem(self) -> str:
        """The message without the leading ``key:``."""
        if self.key and self.message.startswith(f"{self.key}: "):
            return self.message[len(self.key) + 2 :]
        return self.message

    def __str__(self) -> str:
        where = self.path or ""
        if where and self.line is not None:
            where += f":{self.line}"
        return f"{where}: {self.message}" if where else self.message


def load_toml(path: Path) -> tuple[dict[str, Any], str]:
    """Read and parse a TOML file.

    Returns:
        The parsed document and its text (kept to find the line of a key later).

    Raises:
        ConfigError: the file cannot be read or is not valid TOML (with line and column).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read config file: {err.strerror}", path=path) from None
    except UnicodeDecodeError:
        raise ConfigError("config file is not UTF-8 text", path=path) from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as err:
        m = _TOML_POS.search(str(err))
        msg = _TOML_POS.sub("", str(err)).strip()
        line = int(m.group(1)) if m else None
        if m:
            msg += f" (column {m.group(2)})"
        raise ConfigError(f"invalid TOML: {msg}", path=path, line=line) from None


def _find_line(text: str, section: str, key: str | None) -> int | None:
    """The 1-based line that defines ``key`` in ``[section]`` (or the section header)."""
    current = ""
    header_line: int | None = None
    header = re.compile(r"^\s*\[\s*([^\]]+?)\s*\]\s*(#.*)?$")
    for no, raw in enumerate(text.splitlines(), start=1):
        m = header.match(raw)
        if m:
            current = m.group(1)
            if section == "" and key is not None and current.split(".")[0] == key:
                return no  # a top-level key written as a table header
            if current == section:
                header_line = no
            continue
        assignment = rf"^\s*[\"']?{re.escape(key or '')}[\"']?\s*="
        if current == section and key is not None and re.match(assignment, raw):
            return no
    return header_line


# TOML keys as written: bare, "basic" or 'literal', joined by dots.
_BARE_KEY = r"[A-Za-z0-9_-]+"
_BASIC_KEY = r'"(?:[^"\\]|\\.)*"'
_LITERAL_KEY = r"'[^']*'"
_KEY = rf"(?:{_BARE_KEY}|{_BASIC_KEY}|{_LITERAL_KEY})"
_DOTTED_KEY = rf"{_KEY}(?:\s*\.\s*{_KEY})*"
_TABLE_HEADER = re.compile(rf"^\s*\[\s*({_DOTTED_KEY})\s*\]\s*(?:#.*)?$")
_ARRAY_HEADER = re.compile(rf"^\s*\[\[\s*({_DOTTED_KEY})\s*\]\]\s*(?:#.*)?$")
_ASSIGNMENT = re.compile(rf"^\s*({_DOTTED_KEY})\s*=")
_KEY_PART = re.compile(_KEY)

PathItem = str | int
"""One step of a path into a parsed document: a table key or an array index."""


def _key_parts(dotted: str) -> list[str]:
    """Split a dotted TOML key as written into its unquoted parts."""
    parts: list[str] = []
    for raw in _KEY_PART.findall(dotted):
        if raw.startswith('"'):
            parts.append(str(tomllib.loads(f"k = {raw}")["k"]))
        elif raw.startswith("'"):
            parts.append(raw[1:-1])
        else:
            parts.append(raw)
    return parts


@functools.lru_cache(maxsize=64)
def _line_index(text: str) -> dict[tuple[PathItem, ...], int]:
    """Map every path a TOML text defines (tables, keys, array-table items) to its first line.

    A line scanner, not a parser: the text is known to be valid TOML (``load_toml`` parsed it),
    so headers and ``key =`` lines can be recognised by shape. Lines inside multi-line strings
    are skipped; values inside inline tables and arrays are located at their key's line.
    """
    index: dict[tuple[PathItem, ...], int] = {}
    counts: dict[tuple[PathItem, ...], int] = {}  # array tables: items seen so far
    current: tuple[PathItem, ...] = ()
    in_multiline: str | None = None

    def resolve(keys: Sequence[str]) -> tuple[PathItem, ...]:
        # A header below an array table (``[a.b]`` after ``[[a]]``) refers to its last item.
        out: list[PathItem] = []
        for key in keys:
            out.append(key)
            if tuple(out) in counts:
                out.append(counts[tuple(out)] - 1)
        return tuple(out)

    def record(path: tuple[PathItem, ...], start: int, no: int) -> None:
        for end in range(start, len(path) + 1):
            index.setdefault(path[:end], no)

    for no, raw in enumerate(text.splitlines(), start=1):
        if in_multiline is not None:
            if raw.count(in_multiline) % 2 == 1:
                in_multiline = None
            continue
        if m := _ARRAY_HEADER.match(raw):
            keys = _key_parts(m.group(1))
            table = (*resolve(keys[:-1]), keys[-1])
            item = counts.get(table, 0)
            counts[table] = item + 1
            current = (*table, item)
            record(current, 1, no)
            continue
        if m := _TABLE_HEADER.match(raw):
            current = resolve(_key_parts(m.group(1)))
            record(current, 1, no)
            continue
        if m := _ASSIGNMENT.match(raw):
            path = current + tuple(_key_parts(m.group(1)))
            record(path, len(current) + 1, no)
            rest = raw[m.end() :]
            for quote in ('"""', "'''"):
                if rest.count(quote) % 2 == 1:
                    in_multiline = quote
    return index


def find_line(text: str, path: Sequence[PathItem]) -> int | None:
    """The 1-based line of ``text`` that defines ``path``, or of its nearest defined parent.

    ``path`` names tables and keys (``("his", "timeouts", "read_seconds")``) and items of
    arrays of tables (``("his", "endpoints", 1, "url")`` for the second ``[[his.endpoints]]``).
    A key written dotted (``timeouts.read_seconds = 3``) or under a table header is found
    either way. Items of inline arrays and keys of inline tables are located at their key.

    Returns:
        The line, or ``None`` when neither the path nor any parent appears in the text.
    """
    index = _line_index(text)
    probe = tuple(path)
    while probe:
        if probe in index:
            return index[probe]
        probe = probe[:-1]
    return None


def dotted_path(path: Sequence[PathItem]) -> str:
    """Show a path the way an operator writes it: ``his.endpoints[1].url``.

    Keys that are not bare TOML keys are quoted: ``code_tables.gender."0"``.
    """
    out = ""
    for item in path:
        if isinstance(item, int):
            out += f"[{item}]"
            continue
        shown = item if re.fullmatch(_BARE_KEY, item) else f'"{item}"'
        out += f".{shown}" if out else shown
    return out


class Section:
    """Typed, checked access to one table of a configuration file.

    Args:
        data: the table's contents.
        name: the table's name (``""`` for the top level), used in messages.
        path: the file it came from, or ``None`` for built-in defaults.
        text: the file's text, to find lines.
    """

    def __init__(
        self,
        data: Mapping[str, Any],
        *,
        name: str,
        path: Path | None = None,
        text: str = "",
    ) -> None:
        self._data = dict(data)
        self._name = name
        self._path = path
        self._text = text

    @classmethod
    def of(cls, doc: Mapping[str, Any], name: str, *, path: Path | None, text: str) -> Section:
        """The table ``name`` of ``doc`` (empty when absent).

        Raises:
            ConfigError: ``name`` is present but is not a table.
        """
        raw = doc.get(name, {})
        if not isinstance(raw, Mapping):
            raise ConfigError(
                f"[{name}] must be a table", path=path, line=_find_line(text, "", name)
            )
        return cls(raw, name=name, path=path, text=text)

    def error(self, key: str | None, message: str) -> ConfigError:
        """A :class:`ConfigError` located at ``key`` of this section."""
        if not self._name:
            label = key or "top level"
        else:
            label = f"[{self._name}] {key}" if key else f"[{self._name}]"
        return ConfigError(
            f"{label}: {message}", path=self._path, line=_find_line(self._text, self._name, key)
        )

    def reject_unknown(self, known: Iterable[str]) -> None:
        """Raise on the first key that is not in ``known`` (a typo must not pass silently)."""
        allowed = set(known)
        for key in self._data:
            if key not in allowed:
                raise self.error(key, f"unknown setting (known: {', '.join(sorted(allowed))})")

    def get(self, key: str, kind: type[T], default: T) -> T:
        """The value of ``key`` checked to be of ``kind``, or ``default`` when absent.

        Raises:
            ConfigError: the value has the wrong type.
        """
        if key not in self._data:
            return default
        value = self._data[key]
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise self.error(key, f"expected {kind.__name__}, got {type(value).__name__} {value!r}")
        return value  # type: ignore[no-any-return]

    def check(self, key: str, value: T, ok: Callable[[T], bool], requirement: str) -> T:
        """Return ``value`` if ``ok(value)``, else raise naming ``requirement``."""
        if not ok(value):
            raise self.error(key, f"{value!r} is invalid: {requirement}")
        return value
