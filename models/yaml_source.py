"""YAML text to plain data plus the line of every value, in one pass over the parser's events.

Rule: pure (no I/O), one parse, and a problem is never silent. :func:`read_yaml` builds the data
``yaml.safe_load`` would build from one document (the same YAML 1.1 implicit types: ints,
floats, bools, null, timestamps, sexagesimal ``21:00`` = 1260; anchors, aliases and ``<<`` merge
keys) together with :class:`Lines`, the 1-based line of every mapping key and sequence item; or
it raises :class:`YamlProblems` listing what is wrong, each with its line: characters YAML does
not allow, syntax errors, duplicate keys (``safe_load`` keeps the last one silently), keys that
are not single values, tags other than the standard scalar ones, and aliases that expand to more
than :data:`MAX_EXPANDED_VALUES` values (a "billion laughs" file).

Why events and not a node tree: composing nodes (each a Python object with two marks) and then
constructing the data from them costs three times as much, most of it in the garbage collector
walking the nodes. Here the event stream of libyaml's C parser (``yaml.CSafeLoader``; the pure-
Python ``yaml.SafeLoader`` where libyaml is missing) is read once and each event becomes its
final value at once; scalars are typed by the safe loader's own resolver and constructors, and a
plain scalar is resolved once per distinct text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import ScalarNode

__all__ = [
    "MAX_EXPANDED_VALUES",
    "Lines",
    "YamlProblem",
    "YamlProblems",
    "read_yaml",
    "yaml_loader_name",
]

#: values (scalars, mappings, sequences) a document may expand to, counting every alias as a
#: copy of what it refers to; a 20 MB site file has about 2 million
MAX_EXPANDED_VALUES = 5_000_000

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"

#: what YAML 1.1 allows in a stream (the same class as ``yaml.reader.Reader.NON_PRINTABLE``)
_NON_PRINTABLE = re.compile(
    "[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)

_CONTROL_NAMES = {0x00: "NUL", 0x07: "BEL", 0x08: "BS", 0x0B: "VT", 0x0C: "FF", 0x1B: "ESC"}


def yaml_loader_name() -> str:
    """The parser in use: ``CSafeLoader`` (libyaml) or ``SafeLoader`` (pure Python)."""
    return _Loader.__name__


@dataclass(frozen=True, slots=True)
class YamlProblem:
    """One problem in a YAML document: where (path of keys and indices, 1-based line), what."""

    path: tuple[str | int, ...]
    message: str
    line: int | None


class YamlProblems(ValueError):
    """The text is not a usable YAML document; ``problems`` lists why, each with its line."""

    def __init__(self, problems: Sequence[YamlProblem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"line {p.line}: {p.message}" for p in self.problems))


#: a value's line in :class:`Lines`: a scalar's is a line number; a mapping's or sequence's is
#: ``(line, children)``, children keyed like the data (a dict for a mapping, a list for a sequence)
_LineEntry = int | tuple[int, "dict[Any, Any] | list[Any]"]


class Lines:
    """The 1-based line of every value of a document, shaped like its data.

    A mapping key's line is the line of the key; a sequence item's is the line where the item
    starts. :meth:`line_of` answers for the longest prefix of a path that exists, so a path into
    a field the file does not have (a missing required field) gets the line of its parent.
    """

    __slots__ = ("_root",)

    def __init__(self, root: _LineEntry | None) -> None:
        self._root = root

    def line_of(self, path: Sequence[Any]) -> int | None:
        """The line of ``path`` (keys and indices from the top), or of its longest prefix."""
        entry = self._root
        if entry is None:
            return None
        line = entry if isinstance(entry, int) else entry[0]
        for part in path:
            if isinstance(entry, int):
                break
            children = entry[1]
            if isinstance(children, dict):
                try:
                    nxt = children.get(part)
                except TypeError:  # an unhashable part cannot be a key
                    break
            elif isinstance(part, int) and not isinstance(part, bool) and 0 <= part < len(children):
                nxt = children[part]
            else:
                break
            if nxt is None:
                break
            entry = nxt
            line = entry if isinstance(entry, int) else entry[0]
        return line


class _Merge:
    """The ``<<`` key of a mapping (a merge key), distinct from any value."""

    __slots__ = ()


_MERGE = _Merge()
_NO_KEY = object()  # a mapping frame waiting for its next key
_BAD_KEY = object()  # a key that cannot be used (reported); its value is dropped


class _Frame:
    """An open mapping or sequence: its data so far, the lines of its children, and so on."""

    __slots__ = (
        "anchor",
        "children",
        "data",
        "is_map",
        "key",
        "key_line",
        "line",
        "merges",
        "start_count",
    )

    def __init__(self, is_map: bool, line: int, anchor: str | None, start_count: int) -> None:
        self.is_map = is_map
        self.data: Any = {} if is_map else []
        self.children: Any = {} if is_map else []
        self.line = line
        self.anchor = anchor
        self.key: Any = _NO_KEY
        self.key_line = line
        self.merges: list[tuple[Any, Any, int]] | None = None  # (value, its lines entry, line)
        self.start_count = start_count


def _bad_character(text: str, index: int) -> YamlProblem:
    code = ord(text[index])
    name = _CONTROL_NAMES.get(code)
    what = f"character U+{code:04X}" + (f" ({name})" if name else "")
    offset = len(text[:index].encode("utf-8", "surrogatepass"))
    line = text.count("\n", 0, index) + 1
    if code == 0:
        hint = "a site file is text; is this a binary file?"
    elif code < 0x20 or 0x7F <= code < 0xA0:
        hint = "YAML does not allow control characters; remove it"
    else:
        hint = "YAML does not allow this character; remove it"
    return YamlProblem((), f"{what} at offset {offset}: {hint}", line)


class _PlainScalars:
    """Types a plain (unquoted, untagged) scalar exactly as the safe loader does: the first
    implicit resolver whose pattern matches gives the tag, its constructor the value. The
    resolvers that apply are looked up once per first character; values other than strings are
    cached by text (a district repeats the same few numbers thousands of times)."""

    __slots__ = ("_cache", "_constructors", "_loader", "_table", "_wildcard", "by_first")

    def __init__(self, loader: yaml.SafeLoader) -> None:
        self._loader = loader
        self._table: dict[Any, list[tuple[str, re.Pattern[str]]]] = (
            type(loader).yaml_implicit_resolvers
        )
        self._wildcard = self._table.get(None, [])
        self._constructors = type(loader).yaml_constructors
        self._cache: dict[str, Any] = {}
        #: first character -> the resolvers to try (empty: always a string)
        self.by_first: dict[str, list[tuple[str, re.Pattern[str]]]] = {}

    def candidates(self, first: str) -> list[tuple[str, re.Pattern[str]]]:
        found = self.by_first[first] = self._table.get(first, []) + self._wildcard
        return found

    def typed(self, value: str, candidates: list[tuple[str, re.Pattern[str]]], mark: Any) -> Any:
        tag = next((t for t, regexp in candidates if regexp.match(value)), _STR)
        if tag == _STR:
            return value
        if tag == _MERGE_TAG:
            return _MERGE
        cache = self._cache
        if value in cache:
            return cache[value]
        result = self._constructors[tag](self._loader, ScalarNode(tag, value, mark, mark))
        cache[value] = result
        return result


def _short(text: str, *, quote: bool = True, limit: int = 60) -> str:
    """``text`` (quoted), cut to about ``limit`` characters: a value may be megabytes long."""
    shown = text if len(text) <= limit else text[:limit]
    shown = repr(shown) if quote else shown
    return shown if len(text) <= limit else f"{shown}… ({len(text):,} characters)"


class _Stop(Exception):
    """Raised inside the event loop to stop at a problem that makes the rest meaningless."""

    def __init__(self, problem: YamlProblem) -> None:
        self.problem = problem


def read_yaml(text: str) -> tuple[Any, Lines]:
    """The data of the one YAML document in ``text`` and the line of each of its values.

    An empty document gives ``None``.

    Raises
    ------
    YamlProblems
        a character YAML does not allow (with its byte offset), a syntax error, duplicate keys
        (every one), a key that is a mapping or list, an unknown tag or a value a tag cannot
        read, an undefined or recursive alias, or more than :data:`MAX_EXPANDED_VALUES` values.
    """
    bad = _NON_PRINTABLE.search(text)
    if bad is not None:
        raise YamlProblems([_bad_character(text, bad.start())])
    loader = _Loader(text)
    problems: list[YamlProblem] = []
    try:
        data, root = _build(loader, problems)
    except _Stop as stop:
        raise YamlProblems([*problems, stop.problem]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise YamlProblems([YamlProblem((), f"YAML syntax: {exc.problem}", line)]) from None
    except yaml.YAMLError as exc:  # a reader error without a mark
        raise YamlProblems([YamlProblem((), f"YAML: {exc}", None)]) from None
    finally:
        loader.dispose()
    if problems:
        raise YamlProblems(problems)
    return data, Lines(root)


def _build(loader: yaml.SafeLoader, problems: list[YamlProblem]) -> tuple[Any, _LineEntry | None]:
    """The event loop of :func:`read_yaml` (iterative: nesting depth costs no recursion).

    This is the hot path of loading a site: a scalar (most events) is typed and placed into its
    parent inline; only mappings, sequences and aliases go through the general placement below.
    """
    get_event = loader.get_event
    plain = _PlainScalars(loader)
    by_first = plain.by_first
    constructors = type(loader).yaml_constructors
    stack: list[_Frame] = []
    anchors: dict[str, tuple[Any, _LineEntry, int]] = {}  # name -> value, lines, expanded size
    open_anchors: set[str] = set()
    count = 0  # values so far, aliases counted as copies
    documents = 0
    root: Any = None
    root_lines: _LineEntry | None = None
    parent: _Frame | None = None  # stack[-1]
    containers = (dict, list)
    scalar_event, alias_event = ScalarEvent, AliasEvent
    map_start, seq_start = MappingStartEvent, SequenceStartEvent
    map_end, seq_end = MappingEndEvent, SequenceEndEvent

    def path_here() -> tuple[str | int, ...]:
        out: list[str | int] = []
        for f in stack:
            if f.is_map:
                if f.key is _NO_KEY or f.key is _BAD_KEY or f.key is _MERGE:
                    break
                out.append(f.key)
            else:
                out.append(len(f.data))
        return tuple(out)

    def explicit(raw: str, tag: str, line: int, mark: Any) -> Any:
        """A scalar with a tag of its own (``!!str 5``, ``!!binary ...``), or a problem."""
        if tag == "!" or tag == _STR:
            return raw
        if tag not in constructors:
            problems.append(YamlProblem(path_here(), f"unknown tag {tag!r}", line))
            return raw
        try:
            return constructors[tag](loader, ScalarNode(tag, raw, mark, None))
        except (yaml.YAMLError, ValueError, TypeError, KeyError) as exc:
            message = f"cannot read {_short(raw)} as {tag}: {_short(str(exc), quote=False)}"
            problems.append(YamlProblem(path_here(), message, line))
            return raw

    while True:
        event = get_event()  # type: ignore[no-untyped-call]
        cls = event.__class__
        if cls is scalar_event:  # ---------------------------------------- the hot path
            count += 1
            mark = event.start_mark
            line = mark.line + 1
            value: Any = event.value
            tag = event.tag
            if tag is None:
                if event.implicit[0]:  # plain: typed by the resolvers
                    first = value[:1]
                    candidates = by_first.get(first)
                    if candidates is None:
                        candidates = plain.candidates(first)
                    if candidates:
                        raw = value
                        try:
                            value = plain.typed(raw, candidates, mark)
                        except (yaml.YAMLError, ValueError, TypeError, KeyError) as exc:
                            message = f"cannot read {_short(raw)}: {_short(str(exc), quote=False)}"
                            problems.append(YamlProblem(path_here(), message, line))
                        if value is _MERGE and (
                            parent is None or not parent.is_map or parent.key is not _NO_KEY
                        ):
                            problems.append(
                                YamlProblem(
                                    path_here(), "'<<' is a merge key, not a value; quote it", line
                                )
                            )
                            value = raw
            else:
                value = explicit(value, tag, line, mark)
            if event.anchor is not None:
                anchors[event.anchor] = (value, line, 1)
            if parent is None:
                root, root_lines = value, line
            elif not parent.is_map:
                parent.data.append(value)
                parent.children.append(line)
            else:
                key = parent.key
                if key is _NO_KEY:
                    parent.key = value
                    parent.key_line = line
                    continue
                parent.key = _NO_KEY
                if key is _BAD_KEY:
                    continue
                if key is _MERGE:
                    if parent.merges is None:
                        parent.merges = []
                    parent.merges.append((value, line, parent.key_line))
                    continue
                data = parent.data
                if key in data:
                    problems.append(
                        YamlProblem((*path_here(), key), f"duplicate key {key!r}", parent.key_line)
                    )
                data[key] = value
                parent.children[key] = parent.key_line
            continue
        # ---- a mapping or sequence starts or ends, an alias, or the document structure
        if cls is map_start or cls is seq_start:
            count += 1
            line = event.start_mark.line + 1
            tag = event.tag
            plain_tag = _MAP if cls is map_start else _SEQ
            if tag is not None and tag != "!" and tag != plain_tag:
                raise _Stop(
                    YamlProblem(
                        path_here(),
                        f"tag {tag!r} is not supported in a site file; "
                        "use a plain mapping or list",
                        line,
                    )
                )
            if event.anchor is not None:
                open_anchors.add(event.anchor)
            parent = _Frame(cls is map_start, line, event.anchor, count)
            stack.append(parent)
            continue
        if cls is map_end or cls is seq_end:
            frame = stack.pop()
            parent = stack[-1] if stack else None
            value = frame.data
            if frame.merges is not None:
                value, frame.children = _merged(frame)
            line = frame.line
            entry: _LineEntry = (line, frame.children)
            if frame.anchor is not None:
                open_anchors.discard(frame.anchor)
                anchors[frame.anchor] = (value, entry, count - frame.start_count + 1)
        elif cls is alias_event:
            line = event.start_mark.line + 1
            name = event.anchor
            if name in open_anchors:
                raise _Stop(
                    YamlProblem(
                        path_here(), f"alias *{name} refers to a value that contains it", line
                    )
                )
            if name not in anchors:
                raise _Stop(YamlProblem(path_here(), f"found undefined alias *{name}", line))
            value, anchored, size = anchors[name]
            count += size
            if count > MAX_EXPANDED_VALUES:
                raise _Stop(
                    YamlProblem(
                        path_here(),
                        f"aliases expand the document to more than {MAX_EXPANDED_VALUES:,} values",
                        line,
                    )
                )
            entry = anchored if isinstance(anchored, int) else (line, anchored[1])
        elif cls is DocumentStartEvent:
            documents += 1
            if documents > 1:
                raise _Stop(
                    YamlProblem(
                        (),
                        "YAML syntax: expected a single document in the stream, "
                        "but found another document",
                        event.start_mark.line + 1,
                    )
                )
            continue
        elif cls is StreamEndEvent:
            break
        else:  # stream start, document end
            continue

        # ---- place a mapping, sequence or alias into its parent
        if parent is None:
            root, root_lines = value, entry
            continue
        if not parent.is_map:
            parent.data.append(value)
            parent.children.append(entry)
            continue
        key = parent.key
        if key is _NO_KEY:  # this value is a key
            if isinstance(value, containers):
                problems.append(
                    YamlProblem(
                        path_here(),
                        "a mapping key must be a single value, not a mapping or list",
                        line,
                    )
                )
                value = _BAD_KEY
            parent.key = value
            parent.key_line = line
            continue
        parent.key = _NO_KEY
        if key is _BAD_KEY:
            continue
        key_line = parent.key_line
        if key is _MERGE:
            if parent.merges is None:
                parent.merges = []
            parent.merges.append((value, entry, key_line))
            continue
        if key in parent.data:
            problems.append(YamlProblem((*path_here(), key), f"duplicate key {key!r}", key_line))
        parent.data[key] = value
        parent.children[key] = key_line if isinstance(entry, int) else (key_line, entry[1])
    return root, root_lines


def _merged(frame: _Frame) -> tuple[dict[Any, Any], dict[Any, Any]]:
    """The mapping of ``frame`` with its ``<<`` merge keys applied as the safe loader does:
    explicit keys win over merged ones; of ``<<: [*a, *b]``, ``a`` wins over ``b``."""
    sources: list[tuple[dict[Any, Any], dict[Any, Any]]] = []
    assert frame.merges is not None
    for value, entry, line in frame.merges:
        items = value if isinstance(value, list) else [value]
        entries = entry[1] if isinstance(value, list) and not isinstance(entry, int) else [entry]
        pairs = []
        for item, item_entry in zip(items, entries, strict=False):
            if not isinstance(item, dict) or isinstance(item_entry, int):
                raise _Stop(
                    YamlProblem(
                        (), "'<<' (merge) needs a mapping or a list of mappings to merge", line
                    )
                )
            item_children = item_entry[1]
            assert isinstance(item_children, dict)
            pairs.append((item, item_children))
        sources.extend(reversed(pairs))
    data: dict[Any, Any] = {}
    children: dict[Any, Any] = {}
    for item, item_children in sources:
        data.update(item)
        children.update(item_children)
    data.update(frame.data)
    children.update(frame.children)
    return data, children
