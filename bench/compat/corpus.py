"""Seeded generators of realistic contract trees and of random edits to them: the corpus.

Used by the compat benchmark and by the tests (the differential test against ``buf
breaking``, the golden outputs); it is test support, so it lives here and not in ``compat``.
A tree is a small in-memory model (:class:`Tree`) rendered to ``.proto`` text;
:func:`generate` builds one, and :func:`mutate` applies random edits of the kinds release
managers make (fields removed, retyped, renumbered, moved into oneofs, enum values removed,
RPC types changed, files deleted, …) while keeping the tree compilable.
"""

from __future__ import annotations

import dataclasses
import pickle
import random
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["Tree", "generate", "mutate", "write_tree"]

SCALARS = [
    "int32",
    "int64",
    "uint32",
    "uint64",
    "sint32",
    "sint64",
    "fixed32",
    "fixed64",
    "sfixed32",
    "sfixed64",
    "bool",
    "string",
    "bytes",
    "double",
    "float",
]
_WORDS = [
    "patient",
    "booking",
    "doctor",
    "ward",
    "bed",
    "visit",
    "record",
    "invoice",
    "payment",
    "insurer",
    "device",
    "sensor",
    "reading",
    "alert",
    "shift",
    "nurse",
    "room",
    "order",
    "drug",
    "dose",
    "lab",
    "sample",
    "result",
    "report",
    "consent",
    "address",
    "phone",
    "card",
    "slot",
    "queue",
    "token",
    "session",
    "audit",
    "event",
]
_DOMAINS = ["clinic", "billing", "devices", "staff", "records"]


@dataclasses.dataclass
class Field:
    """A message field."""

    name: str
    number: int
    type: str
    """A scalar name or a fully-qualified type reference (``.pkg.Msg``)."""
    label: str = ""
    """``""``, ``optional``, ``repeated`` or ``required``."""
    map_key: str | None = None
    oneof: str | None = None
    json_name: str | None = None
    default: str | None = None
    options: list[str] = dataclasses.field(default_factory=list)
    """Extra raw field options, e.g. ``jstype = JS_STRING``."""


@dataclasses.dataclass
class Enum:
    """An enum."""

    name: str
    values: list[tuple[str, int]]
    reserved_numbers: list[int] = dataclasses.field(default_factory=list)
    reserved_names: list[str] = dataclasses.field(default_factory=list)
    options: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Message:
    """A message, with nested types."""

    name: str
    fields: list[Field] = dataclasses.field(default_factory=list)
    nested: list[Message] = dataclasses.field(default_factory=list)
    enums: list[Enum] = dataclasses.field(default_factory=list)
    reserved_numbers: list[int] = dataclasses.field(default_factory=list)
    reserved_names: list[str] = dataclasses.field(default_factory=list)
    options: list[str] = dataclasses.field(default_factory=list)
    extension_ranges: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    """Inclusive ``extensions A to B;`` ranges (proto2)."""


@dataclasses.dataclass
class Extend:
    """An ``extend <extendee> { … }`` block."""

    extendee: str
    fields: list[Field] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Rpc:
    """An RPC."""

    name: str
    request: str
    response: str
    client_streaming: bool = False
    server_streaming: bool = False
    idempotency: str | None = None


@dataclasses.dataclass
class Service:
    """A service."""

    name: str
    rpcs: list[Rpc] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class File:
    """A ``.proto`` file."""

    path: str
    package: str
    syntax: str = "proto3"
    """``proto3``, ``proto2`` or ``2023`` (an edition)."""
    imports: list[str] = dataclasses.field(default_factory=list)
    options: dict[str, str] = dataclasses.field(default_factory=dict)
    messages: list[Message] = dataclasses.field(default_factory=list)
    enums: list[Enum] = dataclasses.field(default_factory=list)
    services: list[Service] = dataclasses.field(default_factory=list)
    extends: list[Extend] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Tree:
    """A whole contract tree."""

    files: list[File] = dataclasses.field(default_factory=list)

    def render(self) -> dict[str, str]:
        """Every file's ``.proto`` text, by path."""
        return {f.path: _render_file(f) for f in self.files}


# --- rendering ----------------------------------------------------------------------------


def _render_enum(e: Enum, syntax: str, ind: str) -> list[str]:
    out = [f"{ind}enum {e.name} {{"]
    out += [f"{ind}  option {o};" for o in e.options]
    for name, number in e.values:
        out.append(f"{ind}  {name} = {number};")
    if e.reserved_numbers:
        out.append(f"{ind}  reserved {', '.join(map(str, e.reserved_numbers))};")
    if e.reserved_names:
        out.append(f"{ind}  reserved {_names(e.reserved_names, syntax)};")
    out.append(f"{ind}}}")
    return out


def _names(names: list[str], syntax: str) -> str:
    # Editions spell reserved names as identifiers, proto2/proto3 as string literals.
    if syntax[0].isdigit():
        return ", ".join(names)
    return ", ".join(f'"{n}"' for n in names)


def _field_line(f: Field, syntax: str, ind: str, in_oneof: bool) -> str:
    if f.map_key is not None:
        head = f"map<{f.map_key}, {f.type}>"
    else:
        label = "" if in_oneof else f.label
        if syntax == "2023" and label in ("optional", "required"):
            label = ""
        elif syntax == "proto2" and not in_oneof and not label:
            label = "optional"
        head = f"{label} {f.type}".strip()
    opts = list(f.options)
    if f.json_name is not None:
        opts.append(f'json_name = "{f.json_name}"')
    if f.default is not None:
        opts.append(f"default = {f.default}")
    if syntax == "2023" and not in_oneof and f.map_key is None:
        if f.label == "" and not f.type.startswith("."):
            opts.append("features.field_presence = IMPLICIT")
        elif f.label == "required":
            opts.append("features.field_presence = LEGACY_REQUIRED")
    tail = f" [{', '.join(opts)}]" if opts else ""
    return f"{ind}{head} {f.name} = {f.number}{tail};"


def _render_message(m: Message, syntax: str, ind: str) -> list[str]:
    out = [f"{ind}message {m.name} {{"]
    inner = ind + "  "
    out += [f"{inner}option {o};" for o in m.options]
    done: set[str] = set()
    for f in m.fields:
        if f.oneof is None:
            out.append(_field_line(f, syntax, inner, False))
        elif f.oneof not in done:
            done.add(f.oneof)
            out.append(f"{inner}oneof {f.oneof} {{")
            for g in m.fields:
                if g.oneof == f.oneof:
                    out.append(_field_line(g, syntax, inner + "  ", True))
            out.append(f"{inner}}}")
    for n in m.nested:
        out += _render_message(n, syntax, inner)
    for e in m.enums:
        out += _render_enum(e, syntax, inner)
    for a, b in m.extension_ranges:
        out.append(f"{inner}extensions {a} to {b};")
    if m.reserved_numbers:
        out.append(f"{inner}reserved {', '.join(map(str, m.reserved_numbers))};")
    if m.reserved_names:
        out.append(f"{inner}reserved {_names(m.reserved_names, syntax)};")
    out.append(f"{ind}}}")
    return out


def _render_file(f: File) -> str:
    head = f'edition = "{f.syntax}";' if f.syntax[0].isdigit() else f'syntax = "{f.syntax}";'
    out = [head, "", f"package {f.package};", ""]
    for imp in f.imports:
        out.append(f'import "{imp}";')
    for k, v in f.options.items():
        out.append(f"option {k} = {v};")
    out.append("")
    for e in f.enums:
        out += _render_enum(e, f.syntax, "")
    for m in f.messages:
        out += _render_message(m, f.syntax, "")
    for x in f.extends:
        out.append(f"extend {x.extendee} {{")
        out += [_field_line(fl, f.syntax, "  ", False) for fl in x.fields]
        out.append("}")
    for s in f.services:
        out.append(f"service {s.name} {{")
        for r in s.rpcs:
            req = f"stream {r.request}" if r.client_streaming else r.request
            resp = f"stream {r.response}" if r.server_streaming else r.response
            body = ";"
            if r.idempotency:
                body = f" {{ option idempotency_level = {r.idempotency}; }}"
            out.append(f"  rpc {r.name}({req}) returns ({resp}){body}")
        out.append("}")
    return "\n".join(out) + "\n"


def write_tree(tree: Tree, root: Path) -> None:
    """Write every file of ``tree`` below ``root``."""
    for path, text in tree.render().items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


# --- generation ---------------------------------------------------------------------------


def _camel(*words: str) -> str:
    return "".join(w.capitalize() for w in words)


class _Gen:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.n = 0

    def uid(self) -> int:
        self.n += 1
        return self.n

    def enum(self, prefix: str) -> Enum:
        name = _camel(self.rng.choice(_WORDS), "kind") + str(self.uid())
        upper = "".join("_" + c if c.isupper() else c.upper() for c in name).lstrip("_")
        values = [(f"{upper}_UNSPECIFIED", 0)]
        n = self.rng.randint(2, 6)
        for i in range(1, n):
            values.append((f"{upper}_{self.rng.choice(_WORDS).upper()}_{i}", i))
        e = Enum(name, values)
        if self.rng.random() < 0.2:
            e.reserved_numbers.append(n + 3)
        if self.rng.random() < 0.1:
            e.reserved_names.append(f"{upper}_OLD")
        return e

    def message(
        self,
        syntax: str,
        types: list[str],
        enums: list[str],
        depth: int = 0,
        scope: str = "",
        fields: int = 0,
    ) -> Message:
        rng = self.rng
        m = Message(_camel(rng.choice(_WORDS), rng.choice(_WORDS)) + str(self.uid()))
        full = f"{scope}.{m.name}"
        if depth < 2 and rng.random() < 0.25:
            m.nested.append(self.message(syntax, types, enums, depth + 1, full, 3))
        if rng.random() < 0.2:
            m.enums.append(self.enum(m.name))
        local_types = types + [f"{full}.{n.name}" for n in m.nested]
        local_enums = enums + [f"{full}.{e.name}" for e in m.enums]
        count = fields or rng.randint(2, 9)
        number = 0
        oneof_left = 0
        oneof_name = ""
        for i in range(count):
            number += rng.choice((1, 1, 1, 2, 3))
            name = f"{rng.choice(_WORDS)}_{rng.choice(_WORDS)}_{i}"
            r = rng.random()
            if r < 0.55 or not (local_types or local_enums):
                typ = rng.choice(SCALARS)
            elif r < 0.8 and local_types:
                typ = rng.choice(local_types)
            elif local_enums:
                typ = rng.choice(local_enums)
            else:
                typ = rng.choice(SCALARS)
            f = Field(name, number, typ)
            if oneof_left:
                f.oneof = oneof_name
                oneof_left -= 1
            else:
                r = rng.random()
                if r < 0.12:
                    oneof_name = f"choice_{i}"
                    oneof_left = rng.randint(1, 2)
                    f.oneof = oneof_name
                elif r < 0.22:
                    f.label = "repeated"
                elif r < 0.28 and not typ.startswith("."):
                    f.map_key = rng.choice(("string", "int32", "int64"))
                elif syntax != "proto3" or r < 0.36:
                    f.label = "optional"
                    if syntax == "proto2" and r > 0.95:
                        f.label = "required"
            if (
                syntax == "proto2"
                and f.label == "optional"
                and not typ.startswith(".")
                and typ not in ("bytes",)
                and rng.random() < 0.2
            ):
                f.default = _default_for(typ, rng)
            m.fields.append(f)
        if rng.random() < 0.15:
            m.reserved_numbers.append(number + 5)
        if rng.random() < 0.1:
            m.reserved_names.append(f"old_{rng.choice(_WORDS)}")
        return m


def _default_for(typ: str, rng: random.Random) -> str:
    if typ == "bool":
        return rng.choice(("true", "false"))
    if typ == "string":
        return f'"{rng.choice(_WORDS)}"'
    if typ in ("double", "float"):
        return str(rng.choice((0.5, 1.0, 2.5)))
    if typ.startswith("u") or typ.startswith("fixed"):
        return str(rng.randint(0, 9))
    return str(rng.randint(-5, 9))


def generate(
    seed: int,
    *,
    packages: int = 2,
    files_per_package: int = 3,
    messages_per_file: int = 4,
    syntaxes: tuple[str, ...] = ("proto3", "proto3", "proto3", "proto2", "2023"),
) -> Tree:
    """Build a random but realistic contract tree.

    Each package has a ``common.proto`` of shared types; the other files import it and
    hold request/response messages and a service.

    Args:
        seed: the random seed; the same seed builds the same tree.
        packages: number of packages.
        files_per_package: files per package, ``common.proto`` included.
        messages_per_file: top-level messages per file.
        syntaxes: the syntaxes / editions to draw from.

    Returns:
        The tree.
    """
    rng = random.Random(seed)
    g = _Gen(rng)
    tree = Tree()
    domains = list(_DOMAINS)
    for p in range(packages):
        domain = domains[p % len(domains)] + (str(p // len(domains)) if p >= len(domains) else "")
        pkg = f"hplus.{domain}.v1"
        base = f"hplus/{domain}/v1"
        csyntax = rng.choice(syntaxes)
        common = File(f"{base}/common.proto", pkg, csyntax)
        common.options["go_package"] = f'"example.com/{domain}/v1;{domain}v1"'
        common.enums.append(g.enum("common"))
        ctypes: list[str] = []
        cenums = [f".{pkg}.{common.enums[0].name}"]
        for _ in range(max(1, messages_per_file // 2)):
            m = g.message(csyntax, ctypes, cenums, scope=f".{pkg}")
            common.messages.append(m)
            ctypes.append(f".{pkg}.{m.name}")
        tree.files.append(common)
        for i in range(1, files_per_package):
            syntax = rng.choice(syntaxes)
            f = File(f"{base}/{rng.choice(_WORDS)}_{i}.proto", pkg, syntax, [common.path])
            if rng.random() < 0.5:
                f.options["java_package"] = f'"com.example.{domain}.v1"'
            types = list(ctypes)
            enums = list(cenums) if csyntax != "proto2" or syntax == "proto2" else []
            for _ in range(messages_per_file):
                m = g.message(syntax, types, enums, scope=f".{pkg}")
                f.messages.append(m)
                types.append(f".{pkg}.{m.name}")
            if rng.random() < 0.3:
                e = g.enum("local")
                f.enums.append(e)
            if syntax == "proto2":
                _add_extensions(f, random.Random(seed * 7919 + p * 101 + i), g)
            svc = Service(_camel(rng.choice(_WORDS)) + f"Service{i}")
            own = [f".{pkg}.{m.name}" for m in f.messages]
            for j in range(rng.randint(1, 4)):
                rpc = Rpc(
                    _camel(
                        rng.choice(("get", "list", "create", "update", "watch")), rng.choice(_WORDS)
                    )
                    + str(j),
                    rng.choice(own),
                    rng.choice(own),
                )
                if rng.random() < 0.15:
                    rpc.server_streaming = True
                if rng.random() < 0.1:
                    rpc.idempotency = rng.choice(("NO_SIDE_EFFECTS", "IDEMPOTENT"))
                svc.rpcs.append(rpc)
            f.services.append(svc)
            tree.files.append(f)
    return tree


def _add_extensions(f: File, rng: random.Random, g: _Gen) -> None:
    # A separate generator, so that adding extensions left every other draw unchanged.
    if not f.messages or rng.random() < 0.5:
        return
    m = rng.choice(f.messages)
    m.extension_ranges.append((100, 199))
    x = Extend(f".{f.package}.{m.name}")
    for k in range(rng.randint(1, 3)):
        label = rng.choice(("optional", "optional", "repeated"))
        x.fields.append(Field(f"ext_{g.uid()}_{k}", 100 + k, rng.choice(SCALARS), label))
    f.extends.append(x)


# --- mutation -----------------------------------------------------------------------------


def _walk(msgs: list[Message], scope: str) -> Iterator[tuple[Message, str, list[Message]]]:
    for m in msgs:
        full = f"{scope}.{m.name}"
        yield m, full, msgs
        yield from _walk(m.nested, full)


def _all_messages(tree: Tree) -> list[tuple[File, Message, str, list[Message]]]:
    return [
        (f, m, full, owner)
        for f in tree.files
        for m, full, owner in _walk(f.messages, f".{f.package}")
    ]


def _all_enums(tree: Tree) -> list[tuple[File, Enum, str, list[Enum]]]:
    out = []
    for f in tree.files:
        out += [(f, e, f".{f.package}.{e.name}", f.enums) for e in f.enums]
        for m, full, _ in _walk(f.messages, f".{f.package}"):
            out += [(f, e, f"{full}.{e.name}", m.enums) for e in m.enums]
    return out


def _references(tree: Tree) -> set[str]:
    """Every referenced type name and each of its enclosing scopes (``.a.B.C`` → ``.a.B``)."""
    refs: set[str] = set()
    for f in tree.files:
        for m, _, _ in _walk(f.messages, f".{f.package}"):
            refs.update(fl.type for fl in m.fields if fl.type.startswith("."))
        for s in f.services:
            for r in s.rpcs:
                refs.update((r.request, r.response))
        refs.update(x.extendee for x in f.extends)
    scopes = set(refs)
    for ref in refs:
        parts = ref.split(".")
        scopes.update(".".join(parts[:i]) for i in range(2, len(parts)))
    return scopes


def _unreferenced(full: str, refs: set[str]) -> bool:
    return full not in refs


def _visible(tree: Tree, f: File) -> tuple[list[str], list[str]]:
    files = [f] + [g for g in tree.files if g.path in f.imports]
    types = [full for g in files for _, full, _ in _walk(g.messages, f".{g.package}")]
    enums = [
        full
        for g, _, full, _ in _all_enums(Tree(files))
        if g.syntax != "proto2" or f.syntax == "proto2"  # open files cannot use closed enums
    ]
    return types, enums


Mutation = Callable[[Tree, random.Random], str | None]


def _pick_field(tree: Tree, rng: random.Random) -> tuple[File, Message, Field] | None:
    # One file first, so that a pick costs O(file), not O(tree), on benchmark corpora.
    f = rng.choice(tree.files)
    cands = [(f, m, fl) for m, _, _ in _walk(f.messages, f".{f.package}") for fl in m.fields]
    return rng.choice(cands) if cands else None


def _m_delete_field(tree: Tree, rng: random.Random) -> str | None:
    got = _pick_field(tree, rng)
    if got is None:
        return None
    _, m, fl = got
    m.fields.remove(fl)
    r = rng.random()
    if r < 0.3:
        m.reserved_numbers.append(fl.number)
    elif r < 0.5:
        m.reserved_names.append(fl.name)
    elif r < 0.6:
        m.reserved_numbers.append(fl.number)
        m.reserved_names.append(fl.name)
    return f"delete field {m.name}.{fl.name}"


def _m_rename_field(tree: Tree, rng: random.Random) -> str | None:
    got = _pick_field(tree, rng)
    if got is None:
        return None
    _, m, fl = got
    fl.name = f"{fl.name}_renamed"
    return f"rename field {m.name}.{fl.name}"


def _m_renumber_field(tree: Tree, rng: random.Random) -> str | None:
    got = _pick_field(tree, rng)
    if got is None:
        return None
    _, m, fl = got
    used = {g.number for g in m.fields} | set(m.reserved_numbers)
    fl.number = max(used) + rng.randint(1, 3)
    return f"renumber field {m.name}.{fl.name}"


def _m_retype_field(tree: Tree, rng: random.Random) -> str | None:
    got = _pick_field(tree, rng)
    if got is None:
        return None
    f, m, fl = got
    types, enums = _visible(tree, f)
    r = rng.random()
    if fl.map_key is not None and rng.random() < 0.5:
        fl.map_key = rng.choice(["string", "int32", "int64", "uint64", "bool"])
        return f"retype map key {m.name}.{fl.name}"
    if r < 0.6 or fl.map_key is not None:
        fl.type = rng.choice(SCALARS)
    elif r < 0.8 and types:
        fl.type = rng.choice(types)
    elif enums:
        fl.type = rng.choice(enums)
    fl.default = None
    if fl.type.startswith(".") and fl.map_key is None and fl.label == "" and f.syntax == "2023":
        pass
    return f"retype field {m.name}.{fl.name} -> {fl.type}"


def _m_relabel_field(tree: Tree, rng: random.Random) -> str | None:
    got = _pick_field(tree, rng)
    if got is None:
        return None
    f, m, fl = got
    if fl.oneof is not None:
        return None
    if fl.map_key is not None:
        fl.map_key = None
        fl.label = "repeated"
        return f"map -> repeated {m.name}.{fl.name}"
    choices = ["optional", "repeated"] + ([""] if f.syntax != "proto2" else ["required"])
    choices = [c for c in choices if c != fl.label]
    fl.label = rng.choice(choices)
    if fl.label in ("repeated", "required"):
        fl.default = None
    if fl.label == "required" and fl.default is not None:
        fl.default = None
    if fl.label == "" and f.syntax == "2023" and fl.type.startswith("."):
        fl.label = "optional"
    return f"relabel {m.name}.{fl.name} -> {fl.label or 'implicit'}"


def _m_oneof(tree: Tree, rng: random.Random) -> str | None:
    got = _pick_field(tree, rng)
    if got is None:
        return None
    _, m, fl = got
    if fl.map_key is not None or fl.label in ("repeated", "required"):
        return None
    oneofs = sorted({g.oneof for g in m.fields if g.oneof})
    fl.default = None
    if fl.oneof is None:
        fl.oneof = rng.choice([*oneofs, f"moved_{fl.number}"])
        fl.label = ""
        return f"move {m.name}.{fl.name} into oneof {fl.oneof}"
    if rng.random() < 0.5 or len(oneofs) < 2:
        fl.oneof = None
        return f"move {m.name}.{fl.name} out of its oneof"
    fl.oneof = rng.choice([o for o in oneofs if o != fl.oneof])
    return f"move {m.name}.{fl.name} to oneof {fl.oneof}"


def _m_json_name(tree: Tree, rng: random.Random) -> str | None:
    got = _pick_field(tree, rng)
    if got is None:
        return None
    _, m, fl = got
    fl.json_name = None if fl.json_name else f"{fl.name.replace('_', '')}X"
    return f"json_name {m.name}.{fl.name}"


def _m_add_field(tree: Tree, rng: random.Random) -> str | None:
    msgs = _all_messages(tree)
    f, m, _, _ = rng.choice(msgs)
    used = {g.number for g in m.fields} | set(m.reserved_numbers)
    number = max(used | {0}) + 1
    fl = Field(f"added_{number}", number, rng.choice(SCALARS))
    if f.syntax == "proto2":
        fl.label = "required" if rng.random() < 0.3 else "optional"
    m.fields.append(fl)
    return f"add field {m.name}.{fl.name}"


def _m_enum_value(tree: Tree, rng: random.Random) -> str | None:
    enums = _all_enums(tree)
    if not enums:
        return None
    _, e, _, _ = rng.choice(enums)
    if len(e.values) < 2:
        return None
    name, number = rng.choice(e.values[1:])
    r = rng.random()
    if r < 0.4:
        e.values.remove((name, number))
        if rng.random() < 0.4:
            e.reserved_numbers.append(number)
        if rng.random() < 0.3:
            e.reserved_names.append(name)
        return f"delete enum value {name}"
    if r < 0.7:
        e.values[e.values.index((name, number))] = (name + "_RENAMED", number)
        return f"rename enum value {name}"
    e.values.append((f"{e.values[0][0]}_ADDED_{len(e.values)}", max(n for _, n in e.values) + 1))
    return f"add enum value to {e.name}"


def _m_reserved(tree: Tree, rng: random.Random) -> str | None:
    holders: list[Message | Enum] = [m for _, m, _, _ in _all_messages(tree)]
    holders += [e for _, e, _, _ in _all_enums(tree)]
    holders = [h for h in holders if h.reserved_numbers or h.reserved_names]
    if not holders:
        return None
    h = rng.choice(holders)
    if h.reserved_numbers and (not h.reserved_names or rng.random() < 0.5):
        h.reserved_numbers.pop(rng.randrange(len(h.reserved_numbers)))
    else:
        h.reserved_names.pop(rng.randrange(len(h.reserved_names)))
    return f"unreserve in {h.name}"


def _m_delete_message(tree: Tree, rng: random.Random) -> str | None:
    refs = _references(tree)
    cands = [
        (m, full, owner) for _, m, full, owner in _all_messages(tree) if _unreferenced(full, refs)
    ]
    if not cands:
        return None
    m, full, owner = rng.choice(cands)
    owner.remove(m)
    return f"delete message {full}"


def _m_delete_enum(tree: Tree, rng: random.Random) -> str | None:
    refs = _references(tree)
    cands = [(e, full, owner) for _, e, full, owner in _all_enums(tree) if full not in refs]
    if not cands:
        return None
    e, full, owner = rng.choice(cands)
    owner.remove(e)
    return f"delete enum {full}"


def _m_rpc(tree: Tree, rng: random.Random) -> str | None:
    cands = [(f, s, r) for f in tree.files for s in f.services for r in s.rpcs]
    if not cands:
        return None
    f, s, r = rng.choice(cands)
    types, _ = _visible(tree, f)
    x = rng.random()
    if x < 0.2:
        s.rpcs.remove(r)
        return f"delete rpc {r.name}"
    if x < 0.4:
        r.request = rng.choice(types)
    elif x < 0.55:
        r.response = rng.choice(types)
    elif x < 0.7:
        r.client_streaming = not r.client_streaming
    elif x < 0.85:
        r.server_streaming = not r.server_streaming
    else:
        r.idempotency = rng.choice([None, "NO_SIDE_EFFECTS", "IDEMPOTENT"])
    return f"change rpc {r.name}"


def _m_delete_service(tree: Tree, rng: random.Random) -> str | None:
    cands = [(f, s) for f in tree.files for s in f.services]
    if not cands:
        return None
    f, s = rng.choice(cands)
    f.services.remove(s)
    return f"delete service {s.name}"


def _m_delete_file(tree: Tree, rng: random.Random) -> str | None:
    imported = {i for f in tree.files for i in f.imports}
    cands = [f for f in tree.files if f.path not in imported]
    if len(cands) < 1 or len(tree.files) < 2:
        return None
    f = rng.choice(cands)
    tree.files.remove(f)
    return f"delete file {f.path}"


def _m_file_option(tree: Tree, rng: random.Random) -> str | None:
    f = rng.choice(tree.files)
    key = rng.choice(
        [
            "go_package",
            "java_package",
            "java_multiple_files",
            "csharp_namespace",
            "optimize_for",
            "cc_enable_arenas",
            "java_outer_classname",
            "objc_class_prefix",
            "php_namespace",
            "ruby_package",
            "swift_prefix",
            "php_class_prefix",
            "php_metadata_namespace",
            "cc_generic_services",
            "java_generic_services",
            "py_generic_services",
            "java_string_check_utf8",
        ]
    )
    if key in f.options and rng.random() < 0.5:
        del f.options[key]
    elif key == "optimize_for":
        f.options[key] = rng.choice(["SPEED", "CODE_SIZE", "LITE_RUNTIME"])
    elif key.endswith(("_files", "_arenas", "_services", "_utf8")):
        if key == "java_string_check_utf8" and f.syntax == "2023":
            return None
        f.options[key] = rng.choice(["true", "false"])
    else:
        f.options[key] = f'"changed.{rng.randint(0, 99)}"'
    return f"file option {key} in {f.path}"


def _m_default(tree: Tree, rng: random.Random) -> str | None:
    cands = [
        (m, fl)
        for f, m, _, _ in _all_messages(tree)
        if f.syntax == "proto2"
        for fl in m.fields
        if fl.label == "optional"
        and fl.oneof is None
        and fl.map_key is None
        and not fl.type.startswith(".")
        and fl.type != "bytes"
    ]
    if not cands:
        return None
    m, fl = rng.choice(cands)
    fl.default = None if fl.default and rng.random() < 0.3 else _default_for(fl.type, rng)
    return f"default of {m.name}.{fl.name}"


def _m_move_message(tree: Tree, rng: random.Random) -> str | None:
    refs = _references(tree)
    cands = [
        (f, m)
        for f in tree.files
        for m in f.messages
        if _unreferenced(f".{f.package}.{m.name}", refs)
    ]
    if not cands:
        return None
    f, m = rng.choice(cands)
    full = f".{f.package}.{m.name}"
    common = {
        t
        for g in tree.files
        if g.path in f.imports
        for _, t, _ in _walk(g.messages, f".{g.package}")
    }
    common |= {t for g in tree.files if g.path in f.imports for _, _, t, _ in _all_enums(Tree([g]))}
    inner = [fl.type for mm, _, _ in _walk([m], f".{f.package}") for fl in mm.fields]
    if any(t.startswith(".") and t not in common and not t.startswith(full + ".") for t in inner):
        return None
    others = [
        g
        for g in tree.files
        if g.package == f.package and g is not f and g.syntax == f.syntax and g.imports == f.imports
    ]
    if not others:
        return None
    g = rng.choice(others)
    f.messages.remove(m)
    g.messages.append(m)
    return f"move message {m.name} to {g.path}"


def _m_field_option(tree: Tree, rng: random.Random) -> str | None:
    cands = [
        (f, m, fl)
        for f, m, _, _ in _all_messages(tree)
        for fl in m.fields
        if fl.map_key is None
        and fl.type in ("int64", "uint64", "sint64", "fixed64", "string", "bytes")
    ]
    if not cands:
        return None
    f, m, fl = rng.choice(cands)
    if fl.options and rng.random() < 0.4:
        fl.options.clear()
    elif fl.type in ("string", "bytes"):
        if f.syntax == "2023" and fl.type == "string" and rng.random() < 0.5:
            fl.options = ["features.utf8_validation = NONE"]
        else:
            fl.options = [f"ctype = {rng.choice(['CORD', 'STRING_PIECE', 'STRING'])}"]
    else:
        fl.options = [f"jstype = {rng.choice(['JS_STRING', 'JS_NUMBER', 'JS_NORMAL'])}"]
    return f"field option on {m.name}.{fl.name}"


def _m_type_option(tree: Tree, rng: random.Random) -> str | None:
    refs = _references(tree)
    if rng.random() < 0.5:
        msgs = [(f, m) for f, m, _, _ in _all_messages(tree)]
        f, m = rng.choice(msgs)
        if f.syntax == "2023" and rng.random() < 0.5:
            m.options = [] if m.options else ["features.json_format = LEGACY_BEST_EFFORT"]
        else:
            m.options = [] if m.options else ["no_standard_descriptor_accessor = true"]
        return f"message option on {m.name}"
    enums = [
        (f, e, full)
        for f, e, full, _ in _all_enums(tree)
        if f.syntax == "2023" and full not in refs
    ]
    if not enums:
        return None
    f, e, _ = rng.choice(enums)
    e.options = (
        []
        if e.options
        else [
            rng.choice(["features.enum_type = CLOSED", "features.json_format = LEGACY_BEST_EFFORT"])
        ]
    )
    return f"enum option on {e.name}"


def _m_syntax(tree: Tree, rng: random.Random) -> str | None:
    swap = {"proto3": "2023", "2023": "proto3"}
    imported = {i for f in tree.files for i in f.imports}
    cands = [f for f in tree.files if f.syntax in swap and f.path not in imported]
    if not cands:
        return None
    f = rng.choice(cands)
    f.syntax = swap[f.syntax]
    for m, _, _ in _walk(f.messages, ""):
        m.options = []
        for fl in m.fields:
            fl.options = [o for o in fl.options if not o.startswith("features")]
            if f.syntax == "proto3" and fl.label == "required":
                fl.label = "optional"
        for e in m.enums:
            e.options = []
    for e in f.enums:
        e.options = []
    return f"syntax of {f.path} -> {f.syntax}"


def _m_package(tree: Tree, rng: random.Random) -> str | None:
    imported = {i for f in tree.files for i in f.imports}
    cands = [f for f in tree.files if f.path not in imported]
    if not cands:
        return None
    f = rng.choice(cands)
    old, new = f".{f.package}.", f".{f.package}x."
    own = [full for _, full, _ in _walk(f.messages, f".{f.package}")]
    own += [full for g, _, full, _ in _all_enums(Tree([f]))]

    def fix(t: str) -> str:
        return new + t[len(old) :] if t in own else t

    for m, _, _ in _walk(f.messages, ""):
        for fl in m.fields:
            fl.type = fix(fl.type)
    for svc in f.services:
        for r in svc.rpcs:
            r.request, r.response = fix(r.request), fix(r.response)
    for x in f.extends:
        x.extendee = fix(x.extendee)
    f.package = new.strip(".")
    return f"package of {f.path} -> {f.package}"


def _m_extension(tree: Tree, rng: random.Random) -> str | None:
    cands = [(f, x) for f in tree.files for x in f.extends if x.fields]
    if not cands:
        return None
    f, x = rng.choice(cands)
    fl = rng.choice(x.fields)
    r = rng.random()
    if r < 0.3:
        x.fields.remove(fl)
        return f"delete extension {fl.name}"
    if r < 0.5:
        fl.name += "_renamed"
        return f"rename extension {fl.name}"
    if r < 0.7:
        fl.type = rng.choice(SCALARS)
        fl.default = None
        return f"retype extension {fl.name}"
    owner = next((m for m in f.messages if f".{f.package}.{m.name}" == x.extendee), None)
    if owner is None or not owner.extension_ranges:
        return None
    top = max(g.number for g in x.fields)
    owner.extension_ranges = [(100, rng.randint(top, 150))]
    return f"narrow extension range of {owner.name}"


MUTATIONS: list[Mutation] = [
    _m_extension,
    _m_field_option,
    _m_type_option,
    _m_syntax,
    _m_package,
    _m_delete_field,
    _m_delete_field,
    _m_rename_field,
    _m_renumber_field,
    _m_retype_field,
    _m_retype_field,
    _m_relabel_field,
    _m_oneof,
    _m_json_name,
    _m_add_field,
    _m_enum_value,
    _m_enum_value,
    _m_reserved,
    _m_delete_message,
    _m_delete_enum,
    _m_rpc,
    _m_rpc,
    _m_delete_service,
    _m_delete_file,
    _m_file_option,
    _m_default,
    _m_move_message,
]


def mutate(tree: Tree, seed: int, *, edits: int = 3) -> tuple[Tree, list[str]]:
    """A modified copy of ``tree`` with ``edits`` random edits.

    Args:
        tree: the original (left untouched).
        seed: the random seed.
        edits: how many edits to attempt.

    Returns:
        The new tree and a description of each edit made.
    """
    rng = random.Random(seed)
    new: Tree = pickle.loads(pickle.dumps(tree))  # a deep copy, several times faster
    done: list[str] = []
    for _ in range(edits * 3):
        if len(done) >= edits:
            break
        what = rng.choice(MUTATIONS)(new, rng)
        if what:
            done.append(what)
    return new, done
