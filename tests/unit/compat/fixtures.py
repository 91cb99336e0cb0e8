"""Source of the per-rule fixtures in ``compat/testdata/{previous,current}/<rule>/``.

Each case is a pair of small trees written to ``previous/<rule>/`` and ``current/<rule>/``;
the expected findings (``current/<rule>/expected.txt``, one ``path:line:column:RULE`` per
line) were produced by the real ``buf breaking`` with ``use: [<rule>]``, so the fixtures are
an external check as well as a regression test. Regenerate after editing a case::

    PYTHONPATH=gen:. .venv/bin/python -m tests.unit.compat.fixtures
"""

# ruff: noqa: E501 -- each fixture file stays one readable string literal

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3] / "compat" / "testdata"
BUF = Path(sys.executable).parent / "buf"

P3 = 'syntax = "proto3";\n\npackage a.v1;\n\n'
P2 = 'syntax = "proto2";\n\npackage a.v1;\n\n'
ED = 'edition = "2023";\n\npackage a.v1;\n\n'

Case = tuple[dict[str, str], dict[str, str]]

CASES: dict[str, Case] = {
    "ENUM_NO_DELETE": (
        {
            "a/v1/a.proto": P3
            + "enum E { E_UNSPECIFIED = 0; }\nmessage M {\n  enum N { N_UNSPECIFIED = 0; }\n}\n"
        },
        {"a/v1/a.proto": P3 + "message M {\n}\n"},
    ),
    "EXTENSION_NO_DELETE": (
        {
            "a/v1/a.proto": P2
            + "message M {\n  extensions 10 to 20;\n}\nextend M {\n  optional int32 x = 10;\n}\n"
        },
        {"a/v1/a.proto": P2 + "message M {\n  extensions 10 to 20;\n}\n"},
    ),
    "FILE_NO_DELETE": (
        {"a/v1/a.proto": P3 + "message A {}\n", "a/v1/b.proto": P3 + "message B {}\n"},
        {"a/v1/a.proto": P3 + "message A {}\n"},
    ),
    "MESSAGE_NO_DELETE": (
        {"a/v1/a.proto": P3 + "message A {\n  message In {}\n}\nmessage B {}\n"},
        {"a/v1/a.proto": P3 + "message A {\n}\n"},
    ),
    "SERVICE_NO_DELETE": (
        {"a/v1/a.proto": P3 + "message M {}\nservice S {\n  rpc R(M) returns (M);\n}\n"},
        {"a/v1/a.proto": P3 + "message M {}\n"},
    ),
    "ENUM_SAME_TYPE": (
        {"a/v1/a.proto": ED + "enum E {\n  E_UNSPECIFIED = 0;\n}\n"},
        {
            "a/v1/a.proto": ED
            + "enum E {\n  option features.enum_type = CLOSED;\n  E_UNSPECIFIED = 0;\n}\n"
        },
    ),
    "ENUM_VALUE_NO_DELETE": (
        {"a/v1/a.proto": P3 + "enum E {\n  E_UNSPECIFIED = 0;\n  E_ONE = 1;\n  E_TWO = 2;\n}\n"},
        {
            "a/v1/a.proto": P3
            + 'enum E {\n  E_UNSPECIFIED = 0;\n  reserved 1;\n  reserved "E_TWO";\n}\n'
        },
    ),
    "EXTENSION_MESSAGE_NO_DELETE": (
        {"a/v1/a.proto": P2 + "message M {\n  extensions 10 to 20, 30 to 40;\n}\n"},
        {"a/v1/a.proto": P2 + "message M {\n  extensions 10 to 15;\n}\n"},
    ),
    "FIELD_NO_DELETE": (
        {"a/v1/a.proto": P3 + "message M {\n  int32 a = 1;\n  int32 b = 2;\n}\n"},
        {"a/v1/a.proto": P3 + "message M {\n  int32 a = 1;\n  reserved 2;\n}\n"},
    ),
    "FIELD_SAME_CARDINALITY": (
        {
            "a/v1/a.proto": P3
            + "message M {\n  int32 a = 1;\n  optional int32 b = 2;\n  repeated int32 c = 3;\n  map<string, int32> d = 4;\n}\n"
        },
        {
            "a/v1/a.proto": P3
            + "message M {\n  optional int32 a = 1;\n  int32 b = 2;\n  int32 c = 3;\n  repeated D d = 4;\n  message D {\n    string key = 1;\n    int32 value = 2;\n  }\n}\n"
        },
    ),
    "FIELD_SAME_CPP_STRING_TYPE": (
        {"a/v1/a.proto": P3 + "message M {\n  string a = 1;\n  bytes b = 2 [ctype = CORD];\n}\n"},
        {"a/v1/a.proto": P3 + "message M {\n  string a = 1 [ctype = CORD];\n  bytes b = 2;\n}\n"},
    ),
    "FIELD_SAME_JAVA_UTF8_VALIDATION": (
        {"a/v1/a.proto": P2 + "message M {\n  optional string a = 1;\n}\n"},
        {
            "a/v1/a.proto": P2
            + "option java_string_check_utf8 = true;\n\nmessage M {\n  optional string a = 1;\n}\n"
        },
    ),
    "FIELD_SAME_JSTYPE": (
        {
            "a/v1/a.proto": P3
            + "message M {\n  int64 a = 1;\n  uint64 b = 2 [jstype = JS_STRING];\n}\n"
        },
        {
            "a/v1/a.proto": P3
            + "message M {\n  int64 a = 1 [jstype = JS_STRING];\n  uint64 b = 2;\n}\n"
        },
    ),
    "FIELD_SAME_TYPE": (
        {
            "a/v1/a.proto": P3
            + "message M {\n  int32 a = 1;\n  N b = 2;\n  string c = 3;\n}\nmessage N {}\nmessage O {}\n"
        },
        {
            "a/v1/a.proto": P3
            + "message M {\n  int64 a = 1;\n  O b = 2;\n  bytes c = 3;\n}\nmessage N {}\nmessage O {}\n"
        },
    ),
    "FIELD_SAME_UTF8_VALIDATION": (
        {"a/v1/a.proto": ED + "message M {\n  string a = 1;\n}\n"},
        {
            "a/v1/a.proto": ED
            + "message M {\n  string a = 1 [features.utf8_validation = NONE];\n}\n"
        },
    ),
    "FILE_SAME_SYNTAX": (
        {"a/v1/a.proto": P3 + "message M {}\n"},
        {"a/v1/a.proto": ED + "message M {}\n"},
    ),
    "MESSAGE_NO_REMOVE_STANDARD_DESCRIPTOR_ACCESSOR": (
        {"a/v1/a.proto": P3 + "message M {}\n"},
        {"a/v1/a.proto": P3 + "message M {\n  option no_standard_descriptor_accessor = true;\n}\n"},
    ),
    "ONEOF_NO_DELETE": (
        {
            "a/v1/a.proto": P3
            + "message M {\n  oneof o {\n    int32 a = 1;\n  }\n  optional int32 b = 2;\n}\n"
        },
        {"a/v1/a.proto": P3 + "message M {\n  int32 a = 1;\n  int32 b = 2;\n}\n"},
    ),
    "RPC_NO_DELETE": (
        {
            "a/v1/a.proto": P3
            + "message M {}\nservice S {\n  rpc A(M) returns (M);\n  rpc B(M) returns (M);\n}\n"
        },
        {"a/v1/a.proto": P3 + "message M {}\nservice S {\n  rpc A(M) returns (M);\n}\n"},
    ),
    "ENUM_SAME_JSON_FORMAT": (
        {"a/v1/a.proto": ED + "enum E {\n  E_UNSPECIFIED = 0;\n}\n"},
        {
            "a/v1/a.proto": ED
            + "enum E {\n  option features.json_format = LEGACY_BEST_EFFORT;\n  E_UNSPECIFIED = 0;\n}\n"
        },
    ),
    "ENUM_VALUE_SAME_NAME": (
        {"a/v1/a.proto": P3 + "enum E {\n  E_UNSPECIFIED = 0;\n  E_ONE = 1;\n}\n"},
        {"a/v1/a.proto": P3 + "enum E {\n  E_UNSPECIFIED = 0;\n  E_UNO = 1;\n}\n"},
    ),
    "FIELD_SAME_JSON_NAME": (
        {"a/v1/a.proto": P3 + "message M {\n  int32 a = 1;\n  int32 b = 2;\n}\n"},
        {
            "a/v1/a.proto": P3
            + 'message M {\n  int32 a = 1 [json_name = "alpha"];\n  int32 bb = 2;\n}\n'
        },
    ),
    "FIELD_SAME_NAME": (
        {"a/v1/a.proto": P3 + "message M {\n  int32 a = 1;\n}\n"},
        {"a/v1/a.proto": P3 + "message M {\n  int32 alpha = 1;\n}\n"},
    ),
    "MESSAGE_SAME_JSON_FORMAT": (
        {"a/v1/a.proto": ED + "message M {}\n"},
        {
            "a/v1/a.proto": ED
            + "message M {\n  option features.json_format = LEGACY_BEST_EFFORT;\n}\n"
        },
    ),
    "FIELD_SAME_DEFAULT": (
        {
            "a/v1/a.proto": P2
            + "message M {\n  optional int32 a = 1 [default = 3];\n  optional string b = 2;\n}\n"
        },
        {
            "a/v1/a.proto": P2
            + 'message M {\n  optional int32 a = 1 [default = 4];\n  optional string b = 2 [default = "x"];\n}\n'
        },
    ),
    "FIELD_SAME_ONEOF": (
        {
            "a/v1/a.proto": P3
            + "message M {\n  int32 a = 1;\n  oneof o {\n    int32 b = 2;\n  }\n  oneof p {\n    int32 c = 3;\n  }\n}\n"
        },
        {
            "a/v1/a.proto": P3
            + "message M {\n  oneof o {\n    int32 a = 1;\n    int32 c = 3;\n  }\n  int32 b = 2;\n}\n"
        },
    ),
    "FILE_SAME_PACKAGE": (
        {"a/v1/a.proto": P3 + "message M {}\n"},
        {"a/v1/a.proto": P3.replace("a.v1", "b.v1") + "message M {}\n"},
    ),
    "MESSAGE_SAME_REQUIRED_FIELDS": (
        {"a/v1/a.proto": P2 + "message M {\n  required int32 a = 1;\n  optional int32 b = 2;\n}\n"},
        {"a/v1/a.proto": P2 + "message M {\n  optional int32 a = 1;\n  required int32 b = 2;\n}\n"},
    ),
    "RESERVED_ENUM_NO_DELETE": (
        {
            "a/v1/a.proto": P3
            + 'enum E {\n  E_UNSPECIFIED = 0;\n  reserved 2 to 10;\n  reserved "E_OLD";\n}\n'
        },
        {"a/v1/a.proto": P3 + "enum E {\n  E_UNSPECIFIED = 0;\n  reserved 2 to 5;\n}\n"},
    ),
    "RESERVED_MESSAGE_NO_DELETE": (
        {"a/v1/a.proto": P3 + 'message M {\n  reserved 2, 4 to max;\n  reserved "old";\n}\n'},
        {"a/v1/a.proto": P3 + "message M {\n  reserved 4 to 9;\n}\n"},
    ),
    "RPC_SAME_CLIENT_STREAMING": (
        {"a/v1/a.proto": P3 + "message M {}\nservice S {\n  rpc A(M) returns (M);\n}\n"},
        {"a/v1/a.proto": P3 + "message M {}\nservice S {\n  rpc A(stream M) returns (M);\n}\n"},
    ),
    "RPC_SAME_IDEMPOTENCY_LEVEL": (
        {
            "a/v1/a.proto": P3
            + "message M {}\nservice S {\n  rpc A(M) returns (M);\n  rpc B(M) returns (M) {\n    option idempotency_level = IDEMPOTENT;\n  }\n}\n"
        },
        {
            "a/v1/a.proto": P3
            + "message M {}\nservice S {\n  rpc A(M) returns (M) {\n    option idempotency_level = NO_SIDE_EFFECTS;\n  }\n  rpc B(M) returns (M);\n}\n"
        },
    ),
    "RPC_SAME_REQUEST_TYPE": (
        {
            "a/v1/a.proto": P3
            + "message M {}\nmessage N {}\nservice S {\n  rpc A(M) returns (M);\n}\n"
        },
        {
            "a/v1/a.proto": P3
            + "message M {}\nmessage N {}\nservice S {\n  rpc A(N) returns (M);\n}\n"
        },
    ),
    "RPC_SAME_RESPONSE_TYPE": (
        {
            "a/v1/a.proto": P3
            + "message M {}\nmessage N {}\nservice S {\n  rpc A(M) returns (M);\n}\n"
        },
        {
            "a/v1/a.proto": P3
            + "message M {}\nmessage N {}\nservice S {\n  rpc A(M) returns (N);\n}\n"
        },
    ),
    "RPC_SAME_SERVER_STREAMING": (
        {"a/v1/a.proto": P3 + "message M {}\nservice S {\n  rpc A(M) returns (stream M);\n}\n"},
        {"a/v1/a.proto": P3 + "message M {}\nservice S {\n  rpc A(M) returns (M);\n}\n"},
    ),
    "PACKAGE_ENUM_NO_DELETE": (
        {
            "a/v1/a.proto": P3 + "enum E { E_UNSPECIFIED = 0; }\nenum F { F_UNSPECIFIED = 0; }\n",
            "a/v1/b.proto": P3 + "message B {}\n",
        },
        {
            "a/v1/a.proto": P3 + "message A {}\n",
            "a/v1/b.proto": P3 + "message B {}\nenum F { F_UNSPECIFIED = 0; }\n",
        },
    ),
    "PACKAGE_EXTENSION_NO_DELETE": (
        {
            "a/v1/a.proto": P2
            + "message M {\n  extensions 10 to 20;\n}\nextend M {\n  optional int32 x = 10;\n  optional int32 y = 11;\n}\n",
            "a/v1/b.proto": P2 + "message B {}\n",
        },
        {
            "a/v1/a.proto": P2 + "message M {\n  extensions 10 to 20;\n}\n",
            "a/v1/b.proto": P2
            + 'import "a/v1/a.proto";\n\nmessage B {}\nextend M {\n  optional int32 y = 11;\n}\n',
        },
    ),
    "PACKAGE_MESSAGE_NO_DELETE": (
        {
            "a/v1/a.proto": P3 + "message A {}\nmessage Moved {}\nmessage Gone {}\n",
            "a/v1/b.proto": P3 + "message B {}\n",
        },
        {
            "a/v1/a.proto": P3 + "message A {}\n",
            "a/v1/b.proto": P3 + "message B {}\nmessage Moved {}\n",
        },
    ),
    "PACKAGE_NO_DELETE": (
        {
            "a/v1/a.proto": P3 + "message A {}\n",
            "b/v1/b.proto": P3.replace("a.v1", "b.v1") + "message B {}\n",
        },
        {"a/v1/a.proto": P3 + "message A {}\n"},
    ),
    "PACKAGE_SERVICE_NO_DELETE": (
        {
            "a/v1/a.proto": P3
            + "message M {}\nservice S {\n  rpc A(M) returns (M);\n}\nservice T {\n  rpc A(M) returns (M);\n}\n",
            "a/v1/b.proto": P3 + "message B {}\n",
        },
        {
            "a/v1/a.proto": P3 + "message M {}\n",
            "a/v1/b.proto": P3
            + 'import "a/v1/a.proto";\n\nmessage B {}\nservice T {\n  rpc A(M) returns (M);\n}\n',
        },
    ),
    "ENUM_VALUE_NO_DELETE_UNLESS_NAME_RESERVED": (
        {"a/v1/a.proto": P3 + "enum E {\n  E_UNSPECIFIED = 0;\n  E_ONE = 1;\n  E_TWO = 2;\n}\n"},
        {"a/v1/a.proto": P3 + 'enum E {\n  E_UNSPECIFIED = 0;\n  reserved "E_TWO";\n}\n'},
    ),
    "FIELD_NO_DELETE_UNLESS_NAME_RESERVED": (
        {"a/v1/a.proto": P3 + "message M {\n  int32 a = 1;\n  int32 b = 2;\n  int32 c = 3;\n}\n"},
        {"a/v1/a.proto": P3 + 'message M {\n  reserved "b";\n  reserved 3;\n}\n'},
    ),
    "FIELD_WIRE_JSON_COMPATIBLE_CARDINALITY": (
        {
            "a/v1/a.proto": P3
            + "message M {\n  int32 a = 1;\n  repeated int32 b = 2;\n  map<string, int32> c = 3;\n}\n"
        },
        {
            "a/v1/a.proto": P3
            + "message M {\n  optional int32 a = 1;\n  int32 b = 2;\n  repeated C c = 3;\n  message C {\n    string key = 1;\n    int32 value = 2;\n  }\n}\n"
        },
    ),
    "FIELD_WIRE_JSON_COMPATIBLE_TYPE": (
        {
            "a/v1/a.proto": P3
            + "message M {\n  int32 a = 1;\n  int32 b = 2;\n  E c = 3;\n}\nenum E {\n  E_UNSPECIFIED = 0;\n}\n"
        },
        {
            "a/v1/a.proto": P3
            + "message M {\n  uint32 a = 1;\n  int64 b = 2;\n  F c = 3;\n}\nenum E {\n  E_UNSPECIFIED = 0;\n}\nenum F {\n  F_UNSPECIFIED = 0;\n}\n"
        },
    ),
    "ENUM_VALUE_NO_DELETE_UNLESS_NUMBER_RESERVED": (
        {"a/v1/a.proto": P3 + "enum E {\n  E_UNSPECIFIED = 0;\n  E_ONE = 1;\n  E_TWO = 2;\n}\n"},
        {"a/v1/a.proto": P3 + "enum E {\n  E_UNSPECIFIED = 0;\n  reserved 2;\n}\n"},
    ),
    "FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED": (
        {"a/v1/a.proto": P3 + "message M {\n  int32 a = 1;\n  int32 b = 2;\n  int32 c = 3;\n}\n"},
        {"a/v1/a.proto": P3 + 'message M {\n  reserved 2;\n  reserved "c";\n}\n'},
    ),
    "FIELD_WIRE_COMPATIBLE_CARDINALITY": (
        {
            "a/v1/a.proto": P3
            + "message M {\n  int32 a = 1;\n  repeated int32 b = 2;\n  map<string, int32> c = 3;\n}\n"
        },
        {
            "a/v1/a.proto": P3
            + "message M {\n  optional int32 a = 1;\n  int32 b = 2;\n  repeated C c = 3;\n  message C {\n    string key = 1;\n    int32 value = 2;\n  }\n}\n"
        },
    ),
    "FIELD_WIRE_COMPATIBLE_TYPE": (
        {
            "a/v1/a.proto": P3
            + "message M {\n  int32 a = 1;\n  int32 b = 2;\n  string c = 3;\n  bytes d = 4;\n  E e = 5;\n}\nenum E {\n  E_UNSPECIFIED = 0;\n  E_ONE = 1;\n}\n"
        },
        {
            "a/v1/a.proto": P3
            + 'import "x/v1/x.proto";\n\nmessage M {\n  int64 a = 1;\n  sint32 b = 2;\n  bytes c = 3;\n  string d = 4;\n  x.v1.E e = 5;\n}\nenum E {\n  E_UNSPECIFIED = 0;\n  E_ONE = 1;\n}\n',
            "x/v1/x.proto": P3.replace("a.v1", "x.v1") + "enum E {\n  E_UNSPECIFIED = 0;\n}\n",
        },
    ),
}

_FILE_OPTIONS = {
    "FILE_SAME_CC_ENABLE_ARENAS": ("cc_enable_arenas", "false"),
    "FILE_SAME_CC_GENERIC_SERVICES": ("cc_generic_services", "true"),
    "FILE_SAME_CSHARP_NAMESPACE": ("csharp_namespace", '"A.V1"'),
    "FILE_SAME_GO_PACKAGE": ("go_package", '"example.com/a/v1;av1"'),
    "FILE_SAME_JAVA_GENERIC_SERVICES": ("java_generic_services", "true"),
    "FILE_SAME_JAVA_MULTIPLE_FILES": ("java_multiple_files", "true"),
    "FILE_SAME_JAVA_OUTER_CLASSNAME": ("java_outer_classname", '"AProto"'),
    "FILE_SAME_JAVA_PACKAGE": ("java_package", '"com.example.a.v1"'),
    "FILE_SAME_OBJC_CLASS_PREFIX": ("objc_class_prefix", '"AXX"'),
    "FILE_SAME_OPTIMIZE_FOR": ("optimize_for", "CODE_SIZE"),
    "FILE_SAME_PHP_CLASS_PREFIX": ("php_class_prefix", '"A"'),
    "FILE_SAME_PHP_METADATA_NAMESPACE": ("php_metadata_namespace", '"A\\\\V1"'),
    "FILE_SAME_PHP_NAMESPACE": ("php_namespace", '"A\\\\V1"'),
    "FILE_SAME_PY_GENERIC_SERVICES": ("py_generic_services", "true"),
    "FILE_SAME_RUBY_PACKAGE": ("ruby_package", '"A::V1"'),
    "FILE_SAME_SWIFT_PREFIX": ("swift_prefix", '"AV"'),
}
for _rule, (_opt, _val) in _FILE_OPTIONS.items():
    # Changed in a.proto, added in b.proto, removed from c.proto.
    CASES[_rule] = (
        {
            "a/v1/a.proto": P3 + f"option {_opt} = {_val};\n\nmessage A {{}}\n",
            "a/v1/b.proto": P3 + "message B {}\n",
            "a/v1/c.proto": P3 + f"option {_opt} = {_val};\n\nmessage C {{}}\n",
        },
        {
            "a/v1/a.proto": P3
            + f"option {_opt} = {_val.replace('A', 'Z').replace('true', 'false').replace('CODE_SIZE', 'LITE_RUNTIME').replace('example', 'other')};\n\nmessage A {{}}\n",
            "a/v1/b.proto": P3 + f"option {_opt} = {_val};\n\nmessage B {{}}\n",
            "a/v1/c.proto": P3 + "message C {}\n",
        },
    )


def _write(tree: dict[str, str], root: Path) -> None:
    if root.exists():
        shutil.rmtree(root)
    for path, text in tree.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


def buf_findings(current: Path, previous: Path, use: list[str]) -> list[str]:
    """Run ``buf breaking`` and return ``path:line:column:RULE`` lines, sorted."""
    (current / "buf.yaml").write_text(f"version: v2\nbreaking:\n  use: [{', '.join(use)}]\n")
    (previous / "buf.yaml").write_text("version: v2\n")
    try:
        proc = subprocess.run(
            [
                str(BUF),
                "breaking",
                ".",
                "--against",
                str(previous.resolve()),
                "--error-format",
                "json",
            ],
            cwd=current,
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        (current / "buf.yaml").unlink()
        (previous / "buf.yaml").unlink()
    if proc.returncode not in (0, 100):
        raise RuntimeError(proc.stderr)
    out = []
    for line in proc.stdout.splitlines():
        d = json.loads(line)
        out.append(f"{d.get('path', '')}:{d['start_line']}:{d['start_column']}:{d['type']}")
    return sorted(out)


def main() -> None:
    for rule, (prev, cur) in sorted(CASES.items()):
        p, c = ROOT / "previous" / rule, ROOT / "current" / rule
        _write(prev, p)
        _write(cur, c)
        expected = buf_findings(c, p, [rule])
        if any(e.endswith(":COMPILE") for e in expected):
            raise SystemExit(f"{rule}: a fixture does not compile: {expected}")
        if not expected:
            raise SystemExit(f"{rule}: buf reports nothing; the case does not exercise the rule")
        (c / "expected.txt").write_text("\n".join(expected) + "\n")
        print(f"{rule}: {len(expected)} finding(s)")


if __name__ == "__main__":
    main()
