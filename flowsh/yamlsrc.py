"""YAML source text -> data, keeping each key's and value's line and column.

Shared by everything that reads a user's YAML (workflow files, the user config, bash
libraries' positions) so an error can point at FILE:LINE:COL; pydantic's error locations
are described here too, in the words the user wrote.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowsh import cache
from flowsh.errors import WorkflowError, did_you_mean
from flowsh.model import IDENT
from flowsh.yamlevents import (
    MAX_ALIAS_NODES,
    MAX_DEPTH,
    TOO_DEEP,
    _BadKey,
    _composer,
    _constructor_class,
)

if TYPE_CHECKING:
    import yaml

# PyYAML is imported only to parse a file the cache does not hold, or to find an error's
# line: ~20 ms of every start otherwise.

Loc = tuple[str | int, ...]


class Positions:
    """Line/column (1-based) of keys and values in a file, by key path.

    For YAML the file's text is kept and composed again only when an error needs a
    position, so a valid file pays nothing for it, in time or memory (a node tree is
    several times the size of the data). `keys` and `values` hold positions set by hand
    (seed-style bash files) and win over the tree.
    """

    def __init__(self, path: Path | None, text: str | None = None) -> None:
        self.path = path
        self._text = text
        self._root: yaml.Node | None = None
        self.keys: dict[Loc, tuple[int, int]] = {}
        self.values: dict[Loc, tuple[int, int]] = {}
        # True when the parse showed that no key or value holds a NUL byte (the JSON of the
        # data has no \u0000), sparing the loader a walk of every string (30 ms / 10k steps).
        self.nul_free = False

    @property
    def root(self) -> yaml.Node | None:
        if self._root is None and self._text is not None:
            import yaml

            try:
                self._root = yaml.compose(self._text, Loader=_composer())
            except yaml.YAMLError:
                self._root = None
            self._text = None
        return self._root

    def _from_tree(self, loc: Loc, *, key: bool) -> tuple[int, int] | None:
        node, key_mark = self.root, None
        if node is None:
            return None
        import yaml
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                for k, v in node.value:
                    if isinstance(k, yaml.ScalarNode) and k.value == str(part):
                        node, key_mark = v, k.start_mark
                        break
                else:
                    return None
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) \
                    and 0 <= part < len(node.value):
                node, key_mark = node.value[part], None
            else:
                return None
        mark = key_mark if key and key_mark is not None else node.start_mark
        return (mark.line + 1, mark.column + 1)

    def has(self, loc: Loc) -> bool:
        loc = tuple(loc)
        return loc in self.values or loc in self.keys or \
            self._from_tree(loc, key=False) is not None

    def find(self, loc: Loc, *, key: bool = False) -> tuple[int | None, int | None]:
        table = self.keys if key else self.values
        loc = tuple(loc)
        while loc:
            if loc in table:
                return table[loc]
            if loc in self.values:
                return self.values[loc]
            found = self._from_tree(loc, key=key)
            if found is not None:
                return found
            loc = loc[:-1]
        if self.root is not None:
            return (self.root.start_mark.line + 1, self.root.start_mark.column + 1)
        return (1, 1) if self.values or self.keys else (None, None)

    def error(self, message: str, loc: Loc = (), *, key: bool = False) -> WorkflowError:
        line, col = self.find(loc, key=key)
        return WorkflowError(message, path=self.path, line=line, col=col)


def parse_yaml(text: str, path: Path | None) -> tuple[Any, Positions]:
    """The file's data and, for errors, its positions.

    A file parsed before comes from the cache (flowsh/cache.py), keyed by a hash of its
    text and of what parsing depends on: a 10,000-step file takes 0.1 s to parse from
    libyaml's events (0.8 s through the node tree) and 10 ms to read back as JSON. Only
    data that JSON gives back exactly (text, numbers, booleans, null, lists, mappings with
    text keys) is kept; a file that holds a date, binary data or a set is parsed every
    time, as is one whose JSON would be far larger than its text (aliases written out
    again each time they stand). A file that does not parse is never kept, so its errors
    are always PyYAML's. Nor is a file that names a secret (a word of
    `flowsh.model.SECRET_NAME`, `secrets:`): flowsh keeps secret values out of
    $FLOWSH_HOME, and a file that names one may hold one.
    """
    if _may_name_a_secret(text):
        return _parse(text, path), Positions(path, text)
    digest = cache.key("yaml", _parser_stamp(), text)
    pos = Positions(path, text)
    raw = cache.load("yaml", digest)
    if raw is not None:
        try:
            data = json.loads(raw)
        except ValueError:
            pass  # not ours after all: parse
        else:
            pos.nul_free = b"\\u0000" not in raw
            return data, pos
    data = _parse(text, path)
    if _json_exact(data, _CACHE_GROWTH * len(text) + _CACHE_SLACK):
        raw = json.dumps(data).encode()
        pos.nul_free = b"\\u0000" not in raw
        cache.store("yaml", digest, raw)
    return data, pos


# Every word SECRET_NAME looks for (`key` covers API_KEY, PRIVATE_KEY and *_KEY), tested as
# substrings of the case-folded text (folded like re.I: "\u212aEY", with a Kelvin sign, is
# a KEY to it). SECRET_NAME.search itself took 97 ms on a 400 KB file. A superset: a file
# that merely says "monkey" is not cached, nothing worse.
_SECRET_WORDS = ("passw", "passphrase", "secret", "token", "key", "credential")


def _may_name_a_secret(text: str) -> bool:
    folded = text.casefold()
    return any(word in folded for word in _SECRET_WORDS)


@functools.cache
def _parser_stamp() -> str:
    """What a parse depends on besides the text: the interpreter, flowsh's version, the
    mtimes of this file and of yamlevents.py (a development checkout's change to how YAML
    is read) and PyYAML's files (an upgrade replaces them), found without importing it
    (0.3 ms)."""
    import importlib.util
    import sys

    from flowsh import __version__, yamlevents

    # Each module's own __file__: an install of .pyc files alone (compileall -b, the .py
    # removed) has no yamlevents.py beside yamlsrc.pyc.
    parts = [sys.version, __version__, str(Path(__file__).stat().st_mtime_ns),
             str(Path(yamlevents.__file__).stat().st_mtime_ns)]
    try:
        spec = importlib.util.find_spec("yaml")
        where = [spec.origin] if spec and spec.origin else []
        where += list(spec.submodule_search_locations or []) if spec else []
        parts += [f"{w}\0{os.stat(w).st_mtime_ns}" for w in where]
    except (ImportError, ValueError, OSError):
        parts.append("?")
    return "\0".join(parts)


# How much larger than the file its cache entry may be. The data shares an anchor's object
# wherever an alias stands, JSON writes it out again each time: FILE-8 bounds the nodes
# aliases add, not their text, so a 10 KB file aliasing a 10 KB string 111,110 times was a
# 1.1 GB entry (validate ran out of memory in json.dumps). A 10,000-step file with a ten-key
# `<<: *defaults` on every step is 3.7 times its text; one past the bound is parsed each time.
_CACHE_GROWTH = 16
_CACHE_SLACK = 1 << 20


class _TooLarge(Exception):
    pass


def _json_exact(value: Any, budget: int) -> bool:
    """Whether ``json.loads(json.dumps(value)) == value``, types included, and the JSON
    takes at most about `budget` characters (a string counted by its length, escapes
    aside). Stops walking once past it: aliases walk their anchor again each time."""
    left = budget

    def exact(value: Any) -> bool:
        # Each collection charges its items' text before walking them (a string's quotes
        # and separators counted as 4), so the budget is checked once per collection.
        nonlocal left
        kind = type(value)
        if kind is list:
            items: Any = value
        elif kind is dict:
            for k in value:
                if type(k) is not str:
                    return False
                left -= len(k) + 4
            items = value.values()
        else:
            return kind is str or kind is bool or kind is int or value is None or \
                (kind is float and value - value == 0)  # finite
        for v in items:
            kind = type(v)
            if kind is str:
                left -= len(v) + 4
            elif kind is dict or kind is list:
                left -= 2
                if not exact(v):
                    return False
            elif kind is bool or kind is int or v is None:
                left -= 6
            elif kind is float and v - v == 0:
                left -= 8
            else:
                return False
        if left < 0:
            raise _TooLarge
        return True

    try:
        return exact(value)
    except _TooLarge:
        return False


def _parse(text: str, path: Path | None) -> Any:
    # Straight from the parser's events when the file's shapes allow (the node tree the
    # compose path builds set a cold 10,000-step validate's peak RSS), else composed.
    from flowsh import yamlevents

    data = yamlevents.build(text)
    if data is not yamlevents.FALLBACK:
        return data
    return _compose_and_construct(text, path)


def _compose_and_construct(text: str, path: Path | None) -> Any:
    import yaml

    try:
        node = yaml.compose(text, Loader=_composer())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "malformed YAML"
        if isinstance(exc, yaml.composer.ComposerError) and exc.context and exc.problem \
                and exc.context_mark is not None:
            # The composer's problem is half a sentence ("second occurrence", "but found
            # another document"): its context says of what.
            first = exc.context_mark.line + 1
            if exc.context.startswith("found duplicate anchor"):
                # libyaml's words name no anchor (PyYAML's own do)
                problem = f"anchor &{_anchor_twice(text)} defined twice (first at line {first})"
            else:
                problem = f"{exc.context} at line {first}, {exc.problem} here"
        raise WorkflowError(
            f"malformed YAML: {problem}",
            path=path,
            line=mark.line + 1 if mark else None,
            col=mark.column + 1 if mark else None,
        ) from None
    except yaml.YAMLError as exc:
        raise WorkflowError(f"malformed YAML: {exc}", path=path) from None
    if node is None:
        raise WorkflowError("the file is empty", path=path, line=1, col=1)
    too_deep = _too_deep(node)
    if too_deep is not None:
        mark = too_deep.start_mark
        raise WorkflowError(TOO_DEEP,
                            path=path, line=mark.line + 1, col=mark.column + 1)
    if _alias_added(node) > MAX_ALIAS_NODES:
        name, mark = _alias_past_the_bound(text)
        raise WorkflowError(f"alias *{name}: aliases expand to more than {MAX_ALIAS_NODES:,} "
                            "nodes", path=path, line=mark.line + 1 if mark else None,
                            col=mark.column + 1 if mark else None)
    try:
        data = _constructor_class()().construct_document(node)
    except _BadKey as exc:
        raise WorkflowError(str(exc), path=path, line=exc.mark.line + 1,
                            col=exc.mark.column + 1) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise WorkflowError(
            f"malformed YAML: {exc.problem}",
            path=path,
            line=mark.line + 1 if mark else None,
            col=mark.column + 1 if mark else None,
        ) from None
    return data


def _anchor_twice(text: str) -> str:
    """The first anchor the file defines a second time (the composer refused it)."""
    import yaml

    seen: set[str] = set()
    try:
        for event in yaml.parse(text, Loader=_composer()):
            anchor = getattr(event, "anchor", None)
            if anchor is not None and not isinstance(event, yaml.AliasEvent):
                if anchor in seen:
                    return str(anchor)
                seen.add(anchor)
    except yaml.YAMLError:
        pass
    return "?"


def _too_deep(root: yaml.Node) -> yaml.Node | None:
    """The first collection (in the file's order, aliases followed) nested deeper than
    MAX_DEPTH, or None. Each collection's height (how many levels of collections it holds,
    at most MAX_DEPTH; an alias inside its own anchor nests without end) is summed once,
    then the walk goes down only where MAX_DEPTH is reached. Walking a node again from each
    deeper place an alias put it, as this did, took 97 walks of a 200,000-item list aliased
    at 97 depths (4.5 s of a 900 KB file)."""
    from itertools import chain

    import yaml

    scalar, mapping = yaml.ScalarNode, yaml.MappingNode

    def kids(node: yaml.Node) -> Any:
        return chain.from_iterable(node.value) if type(node) is mapping else node.value

    if type(root) is scalar:
        return None
    heights: dict[int, int] = {}
    open_: set[int] = {id(root)}  # on the path being summed: met again, a cycle
    path: list[tuple[yaml.Node, Any]] = [(root, iter(kids(root)))]
    sums = [0]  # the height so far of each node on the path
    while path:
        node, children = path[-1]
        for child in children:
            if type(child) is scalar:
                continue
            known = MAX_DEPTH if id(child) in open_ else heights.get(id(child))
            if known is None:
                open_.add(id(child))
                path.append((child, iter(kids(child))))
                sums.append(0)
                break
            if known + 1 > sums[-1]:
                sums[-1] = min(known + 1, MAX_DEPTH)
        else:
            path.pop()
            open_.discard(id(node))
            height = heights[id(node)] = sums.pop()
            if sums and height + 1 > sums[-1]:
                sums[-1] = min(height + 1, MAX_DEPTH)
    if heights[id(root)] < MAX_DEPTH:
        return None
    node, depth = root, 0
    while depth < MAX_DEPTH:
        node = next(child for child in kids(node) if type(child) is not scalar
                    and depth + 1 + heights[id(child)] >= MAX_DEPTH)
        depth += 1
    return node


def _alias_added(root: yaml.Node) -> int:
    """How many nodes aliases add to the tree (an aliased node is one object in it, counted
    again wherever an alias stands). The tree is no deeper than MAX_DEPTH by now (no alias
    inside its own anchor), so recursion is bounded; each collection is summed once (18 ms
    of a 10,000-step file's 400 ms compose)."""
    import yaml

    scalar, mapping = yaml.ScalarNode, yaml.MappingNode
    sizes: dict[int, int] = {}  # of collections
    scalars: set[int] = set()

    def size(node: yaml.Node) -> int:
        total = 1
        items = node.value
        if type(node) is mapping:
            items = [part for pair in items for part in pair]
        for child in items:
            if type(child) is scalar:
                total += 1
                scalars.add(id(child))
            else:
                known = sizes.get(id(child))
                total += size(child) if known is None else known
        sizes[id(node)] = total
        return total

    if type(root) is scalar:
        return 0
    return size(root) - len(sizes) - len(scalars)


def _alias_past_the_bound(text: str) -> tuple[str, Any | None]:
    """The alias (its name and mark) whose nodes take the file past MAX_ALIAS_NODES: the
    node tree keeps no alias's own position, the events do."""
    import yaml

    nodes = added = 0
    sizes: dict[str, int] = {}
    open_: list[tuple[str | None, int]] = []
    last: tuple[str, Any | None] = ("", None)
    for event in yaml.parse(text, Loader=_composer()):
        if isinstance(event, yaml.AliasEvent):
            size = sizes.get(event.anchor or "", 1)
            nodes += size
            added += size
            last = (event.anchor or "", event.start_mark)
            if added > MAX_ALIAS_NODES:
                return last
        elif isinstance(event, yaml.ScalarEvent):
            nodes += 1
            if event.anchor is not None:
                sizes[event.anchor] = 1
        elif isinstance(event, yaml.CollectionStartEvent):
            open_.append((event.anchor, nodes))
            nodes += 1
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, first = open_.pop()
            if anchor is not None:
                sizes[anchor] = nodes - first
    return last  # not reached: the tree and the events count alike


def _fields_at(loc: Loc) -> list[str]:
    """Known keys of the mapping at `loc`, for "did you mean" hints."""
    from pydantic import BaseModel  # an error's hint: pydantic refused the file

    from flowsh.modelcheck import Workflow

    cls: Any = Workflow
    for part in loc:
        if isinstance(part, int):
            continue
        field = cls.model_fields.get(part)
        if field is None:
            return []
        ann = field.annotation
        inner = getattr(ann, "__args__", None) or (ann,)
        nested = [a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)]
        if not nested:
            return []
        cls = nested[0]
    names = []
    for name, field in cls.model_fields.items():
        if field.exclude:
            continue
        names.append(field.alias or name)
    return names


def _where(loc: Loc, data: Any) -> str:
    """``step 'extract': timeout`` rather than ``steps.0.timeout``."""
    if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
        try:
            name = data["steps"][loc[1]].get("name")
        except (KeyError, IndexError, TypeError, AttributeError):
            name = None
        head = f"step {name!r}" if name else f"step #{loc[1] + 1}"
        rest = ".".join(str(p) for p in loc[2:])
        return f"{head} key {rest!r}" if rest else head
    return f"key {'.'.join(str(p) for p in loc)!r}" if loc else "workflow"


def describe(err: Mapping[str, Any], data: Any) -> tuple[str, Loc, bool]:
    loc: Loc = tuple(err["loc"])
    kind = err["type"]
    # pydantic puts validator-internal parts (function-after[...]) in loc; drop them.
    loc = tuple(p for p in loc if not (isinstance(p, str) and "[" in p))
    where = _where(loc, data)
    if kind == "extra_forbidden":
        key = str(loc[-1])
        message = f"unknown key {key!r}" + did_you_mean(key, _fields_at(loc[:-1]))
        return message, loc, True
    if kind == "missing":
        return f"{_where(loc[:-1], data)}: missing required key {str(loc[-1])!r}", loc[:-1], False
    if loc[:1] == ("required_params",):  # `day:` entries, split out of params by the model
        params = data.get("params") if isinstance(data, dict) else None
        bad = [k for k in (params or {}) if not IDENT.match(str(k))]
        msg = str(err["msg"]).removeprefix("Value error, ")
        return f"key 'params': {msg}", ("params", *bad[:1]), True
    if kind == "string_type" and len(loc) == 2 and loc[0] in ("params", "env"):
        return (f"{loc[0]} {loc[1]!r}: the value must be text (a string, number or "
                "boolean)" + ("; no value makes it required" if loc[0] == "params" else ""),
                loc, False)
    msg = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return f"{where}: {msg}", loc, False
