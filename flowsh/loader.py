"""Workflow files -> validated `Workflow`, with errors that point at FILE:LINE:COL.

YAML is composed into nodes first so every key and value keeps its position; pydantic's
error locations are mapped back to those positions. TOML carries no positions, so its
errors name the key path. Seed-style bash files (`declare -A workflow=(...)`) go through
`flowsh.seed`.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from flowsh.errors import WorkflowError
from flowsh.model import IDENT, Workflow

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

    @property
    def root(self) -> yaml.Node | None:
        if self._root is None and self._text is not None:
            try:
                self._root = yaml.compose(self._text, Loader=_Composer)
            except yaml.YAMLError:
                self._root = None
            self._text = None
        return self._root

    def _from_tree(self, loc: Loc, *, key: bool) -> tuple[int, int] | None:
        node, key_mark = self.root, None
        if node is None:
            return None
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


# libyaml's parser when PyYAML was built with it (about 3x faster on large files); the
# node tree, and so every line and column, is the same either way.
_Composer: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _BadKey(Exception):
    def __init__(self, message: str, mark: Any) -> None:
        super().__init__(message)
        self.mark = mark


class _Constructor(yaml.constructor.SafeConstructor):
    """SafeConstructor that refuses duplicate and non-scalar mapping keys (PyYAML keeps
    the last of two duplicates without a word: a mistyped second `run:` would win)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        self.flatten_mapping(node)  # resolves `<<:` merge keys
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) or key is None:
                raise _BadKey("mapping keys must be plain strings", key_node.start_mark)
            key = str(key)
            if key in out:
                raise _BadKey(f"duplicate key {key!r}", key_node.start_mark)
            out[key] = self.construct_object(value_node, deep=deep)
        return out


def parse_yaml(text: str, path: Path | None) -> tuple[Any, Positions]:
    try:
        node = yaml.compose(text, Loader=_Composer)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "malformed YAML"
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
    try:
        data = _Constructor().construct_document(node)
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
    return data, Positions(path, text)


def _fields_at(loc: Loc) -> list[str]:
    """Known keys of the mapping at `loc`, for "did you mean" hints."""
    from flowsh import model

    cls: Any = model.Workflow
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


def _describe(err: Mapping[str, Any], data: Any) -> tuple[str, Loc, bool]:
    loc: Loc = tuple(err["loc"])
    kind = err["type"]
    # pydantic puts validator-internal parts (function-after[...]) in loc; drop them.
    loc = tuple(p for p in loc if not (isinstance(p, str) and "[" in p))
    where = _where(loc, data)
    if kind == "extra_forbidden":
        key = str(loc[-1])
        message = f"unknown key {key!r}"
        close = difflib.get_close_matches(key, _fields_at(loc[:-1]), n=1)
        if close:
            message += f" (did you mean {close[0]!r}?)"
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


def validate_data(data: Any, pos: Positions, *, default_name: str) -> Workflow:
    if not isinstance(data, dict):
        raise pos.error("a workflow file must be a mapping with at least a `steps` list")
    for field in ("required_params", "name_declared"):
        if field in data:  # set by the loader, not keys of the file
            raise pos.error(f"unknown key {field!r}", (field,), key=True)
    if "name" not in data:
        data["name"] = default_name
        data["name_declared"] = False
    _merge_user_config(data)
    if isinstance(data.get("steps"), list):
        for i, step in enumerate(data["steps"]):
            if isinstance(step, str):
                # `- ./backup.sh` is a step whose name is derived and whose text is the command.
                data["steps"][i] = {"name": f"step{i + 1}", "run": step}
    _refuse_nul(data, pos, ())
    try:
        wf = Workflow.model_validate(data)
    except ValidationError as exc:
        message, loc, key = _describe(exc.errors()[0], data)
        more = exc.error_count() - 1
        if more:
            message += f" (and {more} more error{'s' if more > 1 else ''})"
        raise pos.error(message, loc, key=key) from None
    _check_references(wf, pos)
    return wf


def _refuse_nul(value: Any, pos: Positions, loc: tuple[Any, ...]) -> None:
    """A NUL byte (YAML's "\\0") ends a C string: no command, argument or environment
    variable can hold one, and bash drops it. Refused wherever it is, naming the key."""
    if isinstance(value, str):
        if "\0" in value:
            where = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in loc)
            raise pos.error(f"key {where.lstrip('.')!r}: a NUL byte: no command, argument or "
                            "environment variable can hold one", loc)
    elif isinstance(value, dict):
        for k, v in value.items():
            _refuse_nul(k, pos, (*loc, k))
            _refuse_nul(v, pos, (*loc, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _refuse_nul(v, pos, (*loc, i))


def _merge_user_config(data: dict[str, Any]) -> None:
    """`defaults` and `state` from the user config, under the file's own (the file wins).

    `notify` is merged where it is used (flowsh.notify.effective_notify), so that errors in
    a shared channel name the config file, not this one.
    """
    from flowsh.config import load_user_config, merge

    user = load_user_config()
    if isinstance(user.get("defaults"), dict):
        mine = data.get("defaults")
        data["defaults"] = merge(user["defaults"], mine if isinstance(mine, dict) else {})
    if isinstance(user.get("state"), str):
        data.setdefault("state", user["state"])


def _check_references(wf: Workflow, pos: Positions) -> None:
    """Duplicate names and unknown `needs`; cycles are found by the graph."""
    seen: dict[str, int] = {}
    for i, step in enumerate(wf.steps):
        if step.name in seen:
            raise pos.error(
                f"duplicate step name {step.name!r} (first defined at step #{seen[step.name] + 1})",
                ("steps", i, "name"),
            )
        seen[step.name] = i
    for i, step in enumerate(wf.steps):
        for j, dep in enumerate(step.needs or ()):
            if dep not in seen:
                close = difflib.get_close_matches(dep, list(seen), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise pos.error(
                    f"step {step.name!r} needs unknown step {dep!r}{hint}",
                    ("steps", i, "needs", j),
                )
            if dep == step.name:
                raise pos.error(f"step {step.name!r} needs itself", ("steps", i, "needs", j))


def parse_overrides(pairs: Iterable[str]) -> dict[str, str]:
    """``KEY=VALUE`` command-line params; the value is taken verbatim."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not IDENT.match(key):
            from flowsh.errors import UsageError

            raise UsageError(
                f"parameter {pair!r} must be KEY=VALUE with KEY a shell identifier"
            )
        out[key] = value
    return out


def read_env_file(path: Path) -> dict[str, str]:
    """An env_file: the subset of shell assignments in docs/semantics.md (shared rule 5).

    The exported script's bash reader (templates/bash) implements the same grammar; both
    must give the same bytes for every file, so this is written as the same state machine
    rather than with a dotenv library. Bytes are kept as bytes (surrogateescape): a value
    reaches a step exactly as written. Refusals are FILE:LINE (exit 2).
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise WorkflowError(f"cannot read env_file: {exc.strerror}", path=path) from None
    if b"\0" in raw:
        # An environment variable cannot hold a NUL byte (it ends the C string).
        line = raw[:raw.index(b"\0")].count(b"\n") + 1
        raise WorkflowError("a NUL byte: an environment variable cannot hold one",
                            path=path, line=line)
    return parse_env_text(raw.decode("utf-8", "surrogateescape"), path)


_ENV_EXPORT = re.compile(r"export[ \t]+(.*)\Z", re.S)
_ENV_ASSIGN = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)\Z", re.S)
_ENV_BADNAME = re.compile(r"([^= \t]+)=")
_ENV_PLAIN = re.compile(r"[^'\"\\$` \t]+")
_ENV_INSIDE = re.compile(r'[^"\\$`]+')
_ENV_BLANKS = re.compile(r"[ \t]+")


def parse_env_text(text: str, path: Path) -> dict[str, str]:
    """Parse env_file text (see `read_env_file`); `path` is for messages only."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline ending the last line ends it; it starts no other
    out: dict[str, str] = {}
    n = 0

    def refuse(line: int, message: str) -> WorkflowError:
        return WorkflowError(message, path=path, line=line)

    def dollar(line: int, name: str, rest: str) -> None:
        # $NAME, ${...}, $(...) are refused; a lone $ (as in `5$`) is data, as in shell.
        nxt = rest[1:2]
        if nxt and (nxt.isascii() and (nxt.isalnum() or nxt in "_{(")):
            raise refuse(line, f"{name}: expansion ${nxt}... is not allowed in an env_file "
                               "(single-quote a literal $)")

    def backtick(line: int, name: str) -> WorkflowError:
        return refuse(line, f"{name}: command substitution (`) is not allowed in an env_file")

    while n < len(lines):
        rest = lines[n]
        n += 1
        start = n
        rest = rest.lstrip(" \t")
        if not rest or rest.startswith("#"):
            continue
        m = _ENV_EXPORT.match(rest)
        if m:
            rest = m.group(1)
        m = _ENV_ASSIGN.match(rest)
        if m is None:
            bad = _ENV_BADNAME.match(rest)
            if bad:
                raise refuse(n, f"invalid name '{bad.group(1)}' (letters, digits and _, "
                                "not starting with a digit)")
            raise refuse(n, "not an assignment (NAME=value expected)")
        name, rest = m.group(1), m.group(2)
        if name.upper().startswith("FLOWSH_"):
            # ENV-3: the runner's own names (the exported script's runner read them too).
            raise refuse(n, f"{name}: names starting with FLOWSH_ are reserved for flowsh")
        val: list[str] = []
        while rest:
            m = _ENV_PLAIN.match(rest)
            if m:
                val.append(m.group(0))
                rest = rest[m.end():]
                continue
            c = rest[0]
            if c in " \t":
                m = _ENV_BLANKS.match(rest)
                assert m is not None
                rest = rest[m.end():]
                if not rest or rest.startswith("#"):
                    break  # blanks then a comment, or trailing blanks: the value ends
                val.append(m.group(0))
            elif c == "'":
                rest = rest[1:]
                while "'" not in rest:
                    if n >= len(lines):
                        raise refuse(start, f"{name}: unterminated ' quote")
                    val.append(rest + "\n")
                    rest = lines[n]
                    n += 1
                end = rest.index("'")
                val.append(rest[:end])
                rest = rest[end + 1:]
            elif c == '"':
                rest = rest[1:]
                while True:
                    m = _ENV_INSIDE.match(rest)
                    if m:
                        val.append(m.group(0))
                        rest = rest[m.end():]
                        continue
                    d = rest[:1]
                    if d == "":
                        if n >= len(lines):
                            raise refuse(start, f'{name}: unterminated " quote')
                        val.append("\n")
                        rest = lines[n]
                        n += 1
                    elif d == '"':
                        rest = rest[1:]
                        break
                    elif d == "\\":
                        e = rest[1:2]
                        if e and e in '"\\$`':
                            val.append(e)
                            rest = rest[2:]
                        elif e == "":  # backslash-newline: the line goes on
                            if n >= len(lines):
                                raise refuse(start, f'{name}: unterminated " quote')
                            rest = lines[n]
                            n += 1
                        else:
                            val.append("\\")
                            rest = rest[1:]
                    elif d == "$":
                        dollar(n, name, rest)
                        val.append("$")
                        rest = rest[1:]
                    else:
                        raise backtick(n, name)
            elif c == "\\":
                if len(rest) == 1:  # backslash-newline outside quotes: goes on next line
                    rest = ""
                    if n < len(lines):
                        rest = lines[n]
                        n += 1
                else:
                    val.append(rest[1])
                    rest = rest[2:]
            elif c == "$":
                dollar(n, name, rest)
                val.append("$")
                rest = rest[1:]
            else:
                raise backtick(n, name)
        out[name] = "".join(val)
    return out


def load_workflow(path: str | os.PathLike[str]) -> Workflow:
    """Read and validate a workflow file (YAML, TOML or seed-style bash)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WorkflowError("no such file", path=p) from None
    except IsADirectoryError:
        raise WorkflowError("is a directory, not a workflow file", path=p) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkflowError(f"cannot read: {getattr(exc, 'strerror', None) or exc}",
                            path=p) from None
    default_name = p.stem if IDENT.match(p.stem.replace("-", "_").replace(".", "_")) else "workflow"
    suffix = p.suffix.lower()
    if suffix in (".sh", ".bash") or (suffix not in (".yaml", ".yml", ".toml", ".json")
                                      and text.startswith("#!")):
        from flowsh.seed import parse_seed

        data, pos = parse_seed(text, p)
    elif suffix == ".toml":
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise WorkflowError(f"malformed TOML: {exc}", path=p) from None
        pos = Positions(p)
    else:
        data, pos = parse_yaml(text, p)
    wf = validate_data(data, pos, default_name=default_name)
    wf = wf.model_copy(update={"path": str(p.resolve())})
    from flowsh.graph import Graph

    Graph.build(wf, pos)  # refuses cycles before anything runs
    _check_files(wf, pos)
    return wf


def _check_files(wf: Workflow, pos: Positions) -> None:
    """Scripts and sourced files must exist before anything runs."""
    from flowsh.paths import resolve_path, step_cwd

    if wf.env_file is not None:
        env_path = resolve_path(wf, wf.env_file)
        if not env_path.is_file():
            raise pos.error(f"env_file {wf.env_file!r} not found", ("env_file",))
        read_env_file(env_path)  # its grammar is refused at load time: FILE:LINE, exit 2
    for src_i, src in enumerate(wf.source):
        if not resolve_path(wf, src).is_file():
            raise pos.error(f"source file {src!r} not found", ("source", src_i))
    for i, step in enumerate(wf.steps):
        if step.script is not None:
            cwd = step_cwd(wf, step)
            if not resolve_path(wf, step.script, cwd).is_file():
                raise pos.error(
                    f"step {step.name!r}: script {step.script!r} not found (looked in {cwd})",
                    ("steps", i, "script"),
                )
        for j, src in enumerate(step.source):
            if not resolve_path(wf, src).is_file():
                raise pos.error(
                    f"step {step.name!r}: source file {src!r} not found", ("steps", i, "source", j)
                )
