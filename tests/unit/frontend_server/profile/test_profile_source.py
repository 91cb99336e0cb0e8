from __future__ import annotations

from pathlib import Path

import pytest

from frontend_server.profile._source import Layer, Node, merge
from mesh.config import ConfigError, dotted_path, find_line

TEXT = """\
top = 1
[his]
dialect = "rest"
timeouts.read = 3
[[his.endpoints]]
url = "a"
[[his.endpoints]]
url = "b"  # second
[his.endpoints.auth]
token = "t"
[code_tables.gender]
"1" = "M"
'x y' = "F"
doc = \"\"\"
[not_a_table]
\"\"\"
[after]
"""


@pytest.mark.parametrize(
    ("path", "line"),
    [
        (("top",), 1),
        (("his",), 2),
        (("his", "dialect"), 3),
        (("his", "timeouts", "read"), 4),
        (("his", "endpoints", 0), 5),
        (("his", "endpoints", 0, "url"), 6),
        (("his", "endpoints", 1, "url"), 8),
        (("his", "endpoints", 1, "auth", "token"), 10),
        (("code_tables", "gender", "1"), 12),
        (("code_tables", "gender", "x y"), 13),
        (("code_tables", "gender", "missing"), 11),  # nearest defined parent
        (("not_a_table",), None),  # inside a multi-line string
        (("after",), 17),
        (("nowhere", "at_all"), None),
    ],
)
def test_find_line(path: tuple[str | int, ...], line: int | None) -> None:
    assert find_line(TEXT, path) == line


def test_dotted_path() -> None:
    assert dotted_path(("his", "endpoints", 1, "url")) == "his.endpoints[1].url"
    assert dotted_path(("code_tables", "title", "主任医师")) == 'code_tables.title."主任医师"'


def test_merge_keeps_origins() -> None:
    base = Layer(
        path=Path("base.toml"), text="[a]\nx = 1\ny = [1, 2]\n", data={"a": {"x": 1, "y": [1, 2]}}
    )
    top = Layer(path=Path("top.toml"), text="[a]\ny = [3]\n", data={"a": {"y": [3]}})
    doc = merge([base, top])
    assert doc.data == {"a": {"x": 1, "y": [3]}}
    assert doc.locate(("a", "x")) == (Path("base.toml"), 2)
    assert doc.locate(("a", "y")) == (Path("top.toml"), 2)
    assert doc.locate(("a", "y", 1)) == (Path("top.toml"), 2)  # not the base's stale item
    node = Node(doc).table("a")
    with pytest.raises(ConfigError, match=r"^top.toml:2: a.y: wrong type: expected string"):
        node.get("y", str)
