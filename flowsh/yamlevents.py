"""YAML text -> data straight from the parser's events, without PyYAML's node tree.

`yamlsrc._parse` composes the whole node tree, then constructs the data from it; the tree
is several times the size of the data, and on a cold 10,000-step validate it was what set
the peak RSS. This builds the same data from libyaml's event stream, for the shapes that
workflow files have: mappings, sequences, scalars resolved and constructed by SafeLoader's
own resolver and constructors, anchors and aliases (one shared object, as the constructor
shares it), and `yamlsrc`'s own rules (text as written under env/params/args, duplicate
and non-text keys refused).

For anything rarer (an explicit tag, a merge key, a key that is not a plain text scalar,
a duplicate key, several documents, an alias where the text-as-written rule would make
the answer depend on the constructor's order, any error at all) `build` returns FALLBACK
and the compose path decides: its data, and every error message, line and column, stay
exactly what they were. tests/unit/test_yamlevents.py holds the two paths to the same
answer. The loader and the constructor both paths use live here (yamlsrc imports them),
so that neither module imports the other.
"""

from __future__ import annotations

import functools
from typing import Any, Final

# -- shared with the compose path (flowsh/yamlsrc.py): the loader and the constructor ---

def _composer() -> Any:
    """libyaml's parser when PyYAML was built with it (about 3x faster on large files); the
    node tree, and so every line and column, is the same either way."""
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# Keys whose values become environment text (env, params' defaults, a script's args).
_TEXT_KEYS = frozenset({"env", "params", "args"})
_TYPED_TAGS = frozenset(f"tag:yaml.org,2002:{t}" for t in ("int", "float", "bool", "timestamp"))


class _BadKey(Exception):
    def __init__(self, message: str, mark: Any) -> None:
        super().__init__(message)
        self.mark = mark


@functools.cache
def _constructor_class() -> Any:
    import yaml

    class _Constructor(yaml.constructor.SafeConstructor):
        """SafeConstructor that refuses duplicate and non-scalar mapping keys (PyYAML keeps
        the last of two duplicates without a word: a mistyped second `run:` would win)."""

        def construct_mapping(self, node: yaml.MappingNode,
                              deep: bool = False) -> dict[Any, Any]:
            self.flatten_mapping(node)  # resolves `<<:` merge keys
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if _typed_plain(key_node):
                    key = key_node.value  # `ON:` is the name ON, not True
                else:
                    key = self.construct_object(key_node, deep=True)
                if not isinstance(key, str | int | float | bool) or key is None:
                    raise _BadKey("mapping keys must be plain strings", key_node.start_mark)
                key = str(key)
                if key in out:
                    raise _BadKey(f"duplicate key {key!r}", key_node.start_mark)
                if key in _TEXT_KEYS:
                    _as_written(value_node)
                out[key] = self.construct_object(value_node, deep=deep)
            return out

        def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
            try:
                return super().construct_object(node, deep=deep)
            except (yaml.YAMLError, _BadKey):
                raise
            except Exception as exc:
                if not isinstance(node, yaml.ScalarNode):
                    raise
                # A value its tag's constructor cannot build (2024-02-30, `!!int abc`, an
                # int of 5,000 digits) raised ValueError, KeyError... past every handler.
                raise _BadKey(_unbuildable(node, exc), node.start_mark) from None

    def _typed_plain(node: Any) -> bool:
        return (isinstance(node, yaml.ScalarNode) and not node.style  # plain: None, or ""
                and node.tag in _TYPED_TAGS)

    def _as_written(node: Any) -> None:
        # Values that reach a step as text keep the text written: YAML 1.1 makes
        # `1.10` 1.1, `0755` 493, `12:30` 750 and `yes` True, which str() cannot undo.
        items = (node.value if isinstance(node, yaml.SequenceNode)
                 else [v for _, v in node.value] if isinstance(node, yaml.MappingNode) else [])
        for item in items:
            if _typed_plain(item):
                item.tag = "tag:yaml.org,2002:str"

    return _Constructor


def _unbuildable(node: Any, exc: Exception) -> str:
    shown = node.value if len(node.value) <= 40 else node.value[:10] + "\u2026"
    kind = str(node.tag).rsplit(":", 1)[-1]
    why = f" ({str(exc).split(';')[0]})" if isinstance(exc, ValueError | OverflowError) else ""
    # a plain scalar read as a date or number by its looks alone: quoting keeps the text
    import yaml

    resolver: Any = yaml.resolver.Resolver()
    looks = not node.style and resolver.resolve(yaml.ScalarNode, node.value,
                                                (True, False)) == node.tag
    hint = "; quote it to keep it as text" if looks else ""
    return f"malformed YAML: {shown!r} is not a valid {kind}{why}{hint}"


# -- the event builder ------------------------------------------------------------

FALLBACK: Final = object()

# How deep mappings and lists may nest. Everything that walks the data (the cache's JSON
# check, pydantic, the loader) recurses: ~450 levels, under libyaml's own 1000, ended in a
# RecursionError traceback, and an alias inside its own anchor nests without end. No
# workflow comes near: the compose path refuses deeper files (FILE-8).
MAX_DEPTH: Final = 100
TOO_DEEP: Final = f"mappings and lists nest deeper than {MAX_DEPTH} levels"

# How many nodes aliases may add to a file, each alias counting every node its anchor holds
# (the aliases in it expanded too). The data shares an anchor's object, but everything that
# walks it (the cache's JSON check, pydantic, the loader) walks each alias again: nine
# levels of nine aliases of the level above ("billion laughs", a few hundred bytes) are
# 10^9 nodes, and validate ran out of memory. A million is five times what a 10,000-step
# file adds with a ten-key `<<: *defaults` on every step (21 nodes each), and a file just
# under it validates in 0.4 s (FILE-8).
MAX_ALIAS_NODES: Final = 1_000_000

_STR = "tag:yaml.org,2002:str"
_NULL = "tag:yaml.org,2002:null"
# The scalar tags SafeLoader's resolver gives that SafeConstructor turns into data; the
# others it can give (merge `<<`, value `=`) are the compose path's business.
_CONSTRUCTED = frozenset(f"tag:yaml.org,2002:{t}" for t in ("bool", "int", "float",
                                                           "timestamp"))
_NO_KEY: Final = object()


class _Rare(Exception):
    """A shape this builder leaves to the compose path."""


class _Frame:
    """An open mapping or sequence. `text`: it is the value of an env/params/args key, so
    its items keep their text as written; `key`: the mapping's key awaiting its value."""

    __slots__ = ("anchor", "first", "height", "is_map", "key", "obj", "text", "text_key")

    def __init__(self, obj: Any, is_map: bool, text: bool, anchor: str | None,
                 first: int) -> None:
        self.obj = obj
        self.is_map = is_map
        self.text = text
        self.anchor = anchor
        self.key: Any = _NO_KEY
        self.text_key = False
        self.height = 0  # how many levels of collections it holds, aliased ones included
        self.first = first  # nodes counted before it: its own count is what follows


def build(text: str) -> Any:
    """The data `yamlsrc._parse` gives for `text`, or FALLBACK when it must decide."""
    try:
        loader = _composer()(text)
        try:
            return _build(loader)
        finally:
            loader.dispose()
    except Exception:  # of any kind: the compose path reports it, in its own words
        return FALLBACK


def _build(loader: Any) -> Any:
    from yaml.events import (
        AliasEvent,
        DocumentEndEvent,
        DocumentStartEvent,
        MappingEndEvent,
        MappingStartEvent,
        ScalarEvent,
        SequenceEndEvent,
        SequenceStartEvent,
        StreamEndEvent,
        StreamStartEvent,
    )
    from yaml.nodes import ScalarNode

    if loader.yaml_path_resolvers:  # resolution would depend on the path: not ours
        raise _Rare
    get = loader.get_event
    resolve = loader.resolve
    # The resolver tries the regexps filed under a value's first character (and any filed
    # under None); a first character with none resolves to str without a call.
    implicit = loader.yaml_implicit_resolvers
    first_free = None not in implicit
    ctor = _constructor_class()()
    constructors = ctor.yaml_constructors

    def tag_of(event: Any) -> str:
        value = event.value
        if event.implicit[0]:  # plain
            if first_free and value and value[0] not in implicit:
                return _STR
            tag: str = resolve(ScalarNode, value, event.implicit)
            return tag
        return _STR  # quoted or block: not resolved (no path resolvers, checked above)

    if type(get()) is not StreamStartEvent or type(get()) is not DocumentStartEvent:
        raise _Rare  # no document: "the file is empty" is the compose path's to say
    anchors: dict[str, Any] = {}
    keys: dict[str, str] = {}
    plain_keys: dict[str, str] = {}  # plain keys taken, each resolved once
    # Anchors of nodes that the text-as-written rule retags: where an alias of one is
    # constructed first, the compose path gives the typed value to both, else the text.
    touched: set[str] = set()
    heights: dict[str, int] = {}  # of anchored collections
    # Nodes so far, aliases expanded; and of each anchor, how many it expands to.
    nodes = 0
    added = 0  # by aliases
    sizes: dict[str, int] = {}
    stack: list[_Frame] = []
    root: Any = _NO_KEY
    while True:
        event = get()
        kind = type(event)
        top = stack[-1] if stack else None
        if top is not None and top.is_map and top.key is _NO_KEY and kind is not MappingEndEvent:
            # a key: only a plain or quoted scalar with neither tag nor anchor
            if kind is not ScalarEvent or event.tag is not None or event.anchor is not None:
                raise _Rare
            # `ON:` is the name ON, not True. One string per distinct key, as json.loads
            # does: 10,000 steps' `name`, `run` and `needs` held once, not 10,000 times;
            # a plain key taken before is not resolved again.
            key = plain_keys.get(event.value) if event.implicit[0] else None
            if key is None:
                tag = tag_of(event)
                if tag != _STR and (event.style or tag not in _TYPED_TAGS):
                    raise _Rare  # null, merge `<<`, value `=`: the compose path refuses or merges
                key = keys.setdefault(event.value, event.value)
                if event.implicit[0]:
                    plain_keys[key] = key
            if key in top.obj:
                raise _Rare  # a duplicate: the compose path's error, at its position
            top.key = key
            top.text_key = key in _TEXT_KEYS
            continue
        # A node in a value's place. `as_written`: a direct item of an env/params/args
        # value; `text_value`: that value itself.
        as_written = top is not None and top.text
        text_value = top is not None and top.is_map and top.text_key
        if kind is ScalarEvent:
            if event.tag is not None:
                raise _Rare
            tag = tag_of(event)
            value = event.value
            if tag == _STR or (as_written and not event.style and tag in _TYPED_TAGS):
                obj: Any = value
            elif tag == _NULL:
                obj = None
            elif tag in _CONSTRUCTED:
                obj = constructors[tag](ctor, ScalarNode(tag, value, style=event.style))
            else:
                raise _Rare
            nodes += 1
            if event.anchor is not None:
                _define(anchors, touched, event.anchor, obj,
                        as_written and not event.style and tag in _TYPED_TAGS)
                sizes[event.anchor] = 1
        elif kind is AliasEvent:
            if as_written or text_value or event.anchor in touched \
                    or event.anchor not in anchors:  # not yet complete: a recursive alias
                raise _Rare
            obj = anchors[event.anchor]
            height = heights.get(event.anchor)
            if height is not None and top is not None:
                # the anchor's collections, nested again where the alias stands
                if len(stack) + height >= MAX_DEPTH:
                    raise _Rare  # too deep: the compose path's error
                top.height = max(top.height, height + 1)
            size = sizes[event.anchor]
            nodes += size
            added += size
            if added > MAX_ALIAS_NODES:
                raise _Rare  # an alias bomb: the compose path's error
        elif kind is MappingStartEvent or kind is SequenceStartEvent:
            if event.tag is not None or len(stack) >= MAX_DEPTH:
                raise _Rare  # too deep: the compose path's error
            is_map = kind is MappingStartEvent
            frame = _Frame({} if is_map else [], is_map, text_value, event.anchor, nodes)
            nodes += 1
            if event.anchor is not None and text_value:
                touched.add(event.anchor)  # its items are retagged
            stack.append(frame)
            continue
        elif kind is MappingEndEvent or kind is SequenceEndEvent:
            done = stack.pop()
            obj = done.obj
            if done.anchor is not None:
                _define(anchors, touched, done.anchor, obj, done.anchor in touched)
                heights[done.anchor] = done.height
                sizes[done.anchor] = nodes - done.first
            top = stack[-1] if stack else None
            if top is not None:
                top.height = max(top.height, done.height + 1)
        elif kind is DocumentEndEvent:
            if type(get()) is not StreamEndEvent:
                raise _Rare  # another document: the compose path refuses it
            return root
        else:
            raise _Rare
        if top is None:
            root = obj
        elif top.is_map:
            top.obj[top.key] = obj
            top.key = _NO_KEY
        else:
            top.obj.append(obj)


def _define(anchors: dict[str, Any], touched: set[str], name: str, obj: Any,
            retagged: bool) -> None:
    if name in anchors:
        raise _Rare  # defined twice: the compose path's error
    anchors[name] = obj
    if retagged:
        touched.add(name)
