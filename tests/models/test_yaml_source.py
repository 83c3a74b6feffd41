"""The one-pass YAML reader: the data ``yaml.safe_load`` builds, the line of every value, and
every problem with its line (duplicate keys, aliases, tags, more than one document)."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest
import yaml

from laterne.models import yaml_source
from laterne.models.yaml_source import YamlProblems, read_yaml, yaml_loader_name

from ..conftest import DEMO

KITCHEN_SINK = """\
base: &base {x: 1, y: 2}
other: &other {y: 20, z: 30}
merged:
  <<: [*base, *other]
  x: 10
flow: {<<: *base, w: 5}
list: &list [a, 'b', "c"]
again: *list
sexagesimal: 21:00
quoted_time: "21:00"
day: 2026-01-01
stamp: 2026-01-01 10:00:00+01:00
numbers: [1_000, 017, 0x1F, 1.5e+3, .inf, -.inf, +12]
bools: [yes, No, on, OFF, true]
nulls: [~, null, ]
empty:
text: !!str 123
int: !!int "42"
binary: !!binary aGVsbG8=
folded: >
  one
  two
literal: |
  keep
nested: [[1, [2, [3]]], {a: {b: {c: d}}}]
1: integer key
"""


@pytest.mark.parametrize("text", [DEMO.read_text(encoding="utf-8"), KITCHEN_SINK])
def test_data_is_what_safe_load_builds(text: str) -> None:
    data, _ = read_yaml(text)
    assert data == yaml.safe_load(text)


def test_values_are_typed_as_yaml_1_1() -> None:
    data, _ = read_yaml(KITCHEN_SINK)
    assert data["merged"] == {"x": 10, "y": 2, "z": 30}  # explicit wins, then the first source
    assert data["flow"] == {"x": 1, "y": 2, "w": 5}
    assert data["sexagesimal"] == 1260 and data["quoted_time"] == "21:00"
    assert data["day"] == date(2026, 1, 1)
    assert data["stamp"] == datetime(2026, 1, 1, 10, tzinfo=timezone(timedelta(hours=1)))
    assert data["numbers"] == [1000, 15, 31, 1500.0, float("inf"), float("-inf"), 12]
    assert data["bools"] == [True, False, True, False, True]
    assert data["nulls"] == [None, None] and data["empty"] is None
    assert (data["text"], data["int"], data["binary"]) == ("123", 42, b"hello")
    assert data["again"] is data["list"]  # an alias is the same value, as with safe_load
    assert data[1] == "integer key"


def test_pure_python_fallback_reads_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    fast, fast_lines = read_yaml(KITCHEN_SINK)
    monkeypatch.setattr(yaml_source, "_Loader", yaml.SafeLoader)
    assert yaml_loader_name() == "SafeLoader"
    slow, slow_lines = read_yaml(KITCHEN_SINK)
    assert slow == fast
    for path in [("merged", "x"), ("nested", 1, "a", "b", "c"), ("numbers", 6), (1,)]:
        assert slow_lines.line_of(path) == fast_lines.line_of(path)


def test_libyaml_is_used_where_installed() -> None:
    expected = "CSafeLoader" if getattr(yaml, "__with_libyaml__", False) else "SafeLoader"
    assert yaml_loader_name() == expected


def test_lines_of_keys_items_and_missing_fields() -> None:
    text = "a:\n  b: 1\n  c:\n    - x\n    -\n      d: 2\nlist: [p,\n  q]\n"
    _, lines = read_yaml(text)
    assert lines.line_of(()) == 1
    assert lines.line_of(("a",)) == 1
    assert lines.line_of(("a", "b")) == 2
    assert lines.line_of(("a", "c")) == 3
    assert lines.line_of(("a", "c", 0)) == 4
    assert lines.line_of(("a", "c", 1, "d")) == 6
    assert lines.line_of(("list", 1)) == 8
    assert lines.line_of(("a", "missing", "deeper")) == 1  # the longest prefix that exists
    assert lines.line_of(("a", "c", 7)) == 3
    assert lines.line_of(("a", "b", "under a scalar")) == 2


def test_lines_of_merged_and_aliased_values_point_at_their_source() -> None:
    _, lines = read_yaml(KITCHEN_SINK)
    assert lines.line_of(("merged", "x")) == 5  # given explicitly
    assert lines.line_of(("merged", "z")) == 2  # merged from &other
    assert lines.line_of(("again",)) == 8
    assert lines.line_of(("again", 1)) == 7  # inside the anchored list


def problems(text: str) -> list[tuple[tuple[str | int, ...], int | None, str]]:
    with pytest.raises(YamlProblems) as info:
        read_yaml(text)
    return [(p.path, p.line, p.message) for p in info.value.problems]


def test_every_duplicate_key_is_reported_with_path_and_line() -> None:
    assert problems("a: 1\nb:\n  c: 1\n  d: [{e: 1, e: 2}]\n  c: 3\na: 4\n") == [
        (("b", "d", 0, "e"), 4, "duplicate key 'e'"),
        (("b", "c"), 5, "duplicate key 'c'"),
        (("a",), 6, "duplicate key 'a'"),
    ]


def test_a_key_equal_to_a_merged_one_is_no_duplicate() -> None:
    data, _ = read_yaml("b: &b {x: 1}\nc: {<<: *b, x: 2}\n")
    assert data["c"] == {"x": 2}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: [1\n", [((), 2, "YAML syntax: did not find expected ',' or ']'")]),
        (
            "a: 1\n---\nb: 2\n",
            [((), 2, "YAML syntax: expected a single document in the stream, "
                     "but found another document")],
        ),
        ("a: *nope\n", [(("a",), 1, "found undefined alias *nope")]),
        ("a: &a [1, *a]\n", [(("a", 1), 1, "alias *a refers to a value that contains it")]),
        ("? [1]\n: 2\n", [((), 1, "a mapping key must be a single value, not a mapping or list")]),
        ("a: !env HOME\n", [(("a",), 1, "unknown tag '!env'")]),
        (
            "a:\n  b: !!set {x}\n",
            [(("a", "b"), 2, "tag 'tag:yaml.org,2002:set' is not supported in a site file; "
                             "use a plain mapping or list")],
        ),
        ("a: 2026-02-30\n",
         [(("a",), 1, "cannot read '2026-02-30': day is out of range for month")]),
        ("a: <<\n", [(("a",), 1, "'<<' is a merge key, not a value; quote it")]),
        ("m: {<<: 5}\n", [((), 1, "'<<' (merge) needs a mapping or a list of mappings to merge")]),
    ],
)  # fmt: skip
def test_problems_have_a_line(
    text: str, expected: list[tuple[tuple[str | int, ...], int, str]]
) -> None:
    assert problems(text) == expected


def test_alias_bomb_is_refused_without_expanding_it() -> None:
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for n in range(1, 9):  # 10**9 values if expanded
        levels.append(f"a{n}: &a{n} [" + ", ".join([f"*a{n - 1}"] * 10) + "]")
    [(_path, line, message)] = problems("\n".join(levels) + "\n")
    assert message == "aliases expand the document to more than 5,000,000 values"
    assert line == 7


def test_empty_document_is_none() -> None:
    assert read_yaml("# nothing\n")[0] is None


def test_a_huge_value_is_cut_in_the_message() -> None:
    [(_path, line, message)] = problems("a:\n  b: !!int " + "9" * 10_000 + "\n")
    assert line == 2
    assert message.startswith("cannot read '" + "9" * 60 + "'… (10,000 characters) as ")
    assert len(message) < 300


@pytest.mark.skipif(not getattr(yaml, "__with_libyaml__", False), reason="libyaml's limit")
def test_deep_nesting_is_a_problem_not_a_crash() -> None:
    [(_path, line, message)] = problems("a: " + "[" * 50_000 + "]" * 50_000 + "\n")
    assert (line, message) == (1, "YAML syntax: exceeded maximum nesting depth")
