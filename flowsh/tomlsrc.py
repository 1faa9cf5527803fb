"""TOML workflow files -> data, refusing what YAML's reader refuses: mappings and lists
nested deeper than MAX_DEPTH levels (FILE-8).

tomllib parses arrays and inline tables by recursion: ~330 levels ended in a RecursionError
traceback, and a shallower file deeper than 100 levels reached the loader's walks (which
recurse too). tomllib keeps no positions, so a file refused for its depth is read again by
`_deep_at`, a scanner that knows just enough TOML (strings, comments, keys, headers,
brackets) to find the line and column of the collection 100 levels down; it runs only when
refusing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flowsh.errors import WorkflowError
from flowsh.yamlevents import MAX_DEPTH, TOO_DEEP

# A key of this many parts or more (`a.b.c...`, in a table header or before `=`) is one
# table per part, far deeper than MAX_DEPTH. tomllib takes time quadratic in a key's parts
# (10,000: 1.2 s; a 200 KB header of 100,000: minutes), so a file that may hold one (a line
# with as many dots: a key is on one line) is refused from the scanner's position before
# tomllib reads it. 0.3 ms of a 10,000-step file; 4 ms if it holds that many dots at all.
_LONG_KEY_PARTS = 4 * MAX_DEPTH


def _may_hold_a_long_key(text: str) -> bool:
    import re

    dots = _LONG_KEY_PARTS - 1
    if text.count(".") < dots:
        return False
    for line in re.finditer(rf"(?m)^[^\n]{{{2 * dots + 1}}}", text):  # long enough
        end = text.find("\n", line.start())
        if text.count(".", line.start(), len(text) if end < 0 else end) >= dots:
            return True
    return False


def parse_toml(text: str, path: Path) -> dict[str, Any]:
    import tomllib

    if _may_hold_a_long_key(text):
        # perhaps in a string: then the scanner finds nothing so deep and tomllib decides
        where = _deep_at(text)
        if where is not None:
            raise WorkflowError(TOO_DEEP,
                                path=path, line=where[0], col=where[1])
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise WorkflowError(f"malformed TOML: {exc}", path=path) from None
    except ValueError as exc:
        # int() past Python's 4,300 digits (sys.get_int_max_str_digits), in tomllib's
        # number rule: not a TOMLDecodeError, and so it was a traceback
        import re

        long = re.search(r"(?<![\w.])\d[\d_]{4300,}", text)
        line, col = (None, None) if long is None else _line_col(text, long.start())
        raise WorkflowError(f"malformed TOML: {str(exc).split(';')[0]}", path=path,
                            line=line, col=col) from None
    except RecursionError:
        data = None  # nested far deeper than MAX_DEPTH: tomllib recursed into the limit
    if data is None or _too_deep(data):
        line, col = _deep_at(text) or (None, None)
        raise WorkflowError(TOO_DEEP,
                            path=path, line=line, col=col)
    return data


def _too_deep(root: dict[str, Any]) -> bool:
    """Whether a mapping or list stands MAX_DEPTH levels below the root (as for YAML: the
    root at 0, a key's list at 1). Level by level: TOML has no aliases, so each collection
    is met once (3 ms of a 10,000-step file's 180 ms parse)."""
    level: list[Any] = [root]
    for _ in range(MAX_DEPTH):
        level = [v for c in level for v in (c.values() if type(c) is dict else c)
                 if type(v) is dict or type(v) is list]
        if not level:
            return False
    return True


# -- finding the line: only when refusing ------------------------------------------------

_PUNCT = frozenset("[]{}=,\n")
_ATOM_END = frozenset(" \t\r\n#\"'[]{}=,")


def _tokens(text: str) -> list[tuple[str, str, int]]:
    """(kind, text, offset): kind is a punctuation character, "s" a quoted string (its
    text between the quotes, escapes kept) or "a" anything else (a bare key, with its dots,
    or a value). Comments and blanks are dropped; a newline is a token."""
    out: list[tuple[str, str, int]] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r":
            i += 1
        elif c == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif c in _PUNCT:
            out.append((c, c, i))
            i += 1
        elif c in "\"'":
            quote = text[i:i + 3] if text.startswith(c * 3, i) else c
            j = i + len(quote)
            while j < n and not text.startswith(quote, j) and (len(quote) == 3 or text[j] != "\n"):
                j += 2 if c == '"' and text[j] == "\\" else 1
            out.append(("s", text[i + len(quote):j], i))
            i = j + len(quote)
            while len(quote) == 3 and i < n and text[i] == c:  # """a"""" ends a"
                i += 1
        else:
            j = i
            while j < n and text[j] not in _ATOM_END:
                j += 1
            out.append(("a", text[i:j], i))
            i = j
    return out


def _key(tokens: list[tuple[str, str, int]], at: int) -> tuple[list[tuple[str, int]], int]:
    """A (dotted) key's parts with their offsets, from tokens[at] to before the token that
    ends it (`=`, `]`, or anything else a key cannot hold)."""
    parts: list[tuple[str, int]] = []
    while at < len(tokens) and tokens[at][0] in "as":
        kind, word, offset = tokens[at]
        if kind == "s":
            parts.append((word, offset))
        else:
            start = offset
            for piece in word.split("."):
                if piece:
                    parts.append((piece, start))
                start += len(piece) + 1
        at += 1
    return parts, at


def _deep_at(text: str) -> tuple[int, int] | None:
    """LINE:COL (1-based) of the first mapping or list MAX_DEPTH levels down: a `[` or `{`,
    a dotted key's part, or a table header's. None if the scan finds none (TOML it does
    not follow; the refusal then names the file only)."""
    tokens = _tokens(text)
    at_depth: int | None = None  # offset of the first collection found too deep

    def deeper(depth: int, offset: int) -> None:
        nonlocal at_depth
        if depth >= MAX_DEPTH and at_depth is None:
            at_depth = offset

    arrays_of_tables: set[tuple[str, ...]] = set()
    table = 0  # depth of the current table
    # Open arrays and inline tables: (kind, depth); an inline table also tells whether a
    # key is awaited.
    stack: list[list[Any]] = []
    at = 0
    line_start = True  # at top level, where a key or header may begin
    while at < len(tokens) and at_depth is None:
        kind, _, offset = tokens[at]
        top = stack[-1] if stack else None
        if kind == "\n":
            line_start = not stack
            at += 1
        elif top is None and line_start and kind == "[":
            aot = at + 1 < len(tokens) and tokens[at + 1][0] == "[" \
                and tokens[at + 1][2] == offset + 1
            parts, at = _key(tokens, at + (2 if aot else 1))
            depth = 0
            names = tuple(p for p, _ in parts)
            for k, (_, part_at) in enumerate(parts):
                depth += 1
                deeper(depth, part_at)
                if at_depth is not None:
                    break  # found: the prefixes below cost time quadratic in the parts
                if names[:k + 1] in arrays_of_tables and (k + 1 < len(parts) or aot):
                    depth += 1  # the array's last table
                    deeper(depth, part_at)
            if at_depth is None and aot and names not in arrays_of_tables:
                arrays_of_tables.add(names)
                depth += 1
                deeper(depth, offset)
            table = depth
            line_start = False
            while at < len(tokens) and tokens[at][0] == "]":
                at += 1
        elif kind in "as" and (line_start if top is None else top[0] == "{" and top[2]):
            base = table if top is None else top[1]
            parts, at = _key(tokens, at)
            for k, (_, part_at) in enumerate(parts[:-1]):
                deeper(base + k + 1, part_at)
            value_depth = base + len(parts)
            if at < len(tokens) and tokens[at][0] == "=":
                at += 1
            if top is None:
                line_start = False
            else:
                top[2] = False
            if at < len(tokens) and tokens[at][0] in "[{":
                deeper(value_depth, tokens[at][2])
                stack.append([tokens[at][0], value_depth, True])
                at += 1
        elif top is not None and kind in "[{":
            depth = top[1] + 1 if top[0] == "[" else top[1]
            deeper(depth, offset)
            stack.append([kind, depth, True])
            at += 1
        elif top is not None and kind in "]}":
            stack.pop()
            at += 1
        elif top is not None and top[0] == "{" and kind == ",":
            top[2] = True
            at += 1
        else:
            at += 1
    if at_depth is None:
        return None
    return _line_col(text, at_depth)


def _line_col(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of `offset`."""
    return text.count("\n", 0, offset) + 1, offset - (text.rfind("\n", 0, offset) + 1) + 1
