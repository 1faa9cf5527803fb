"""Workflow files -> validated `Workflow`, with errors that point at FILE:LINE:COL.

YAML is composed into nodes first so every key and value keeps its position; pydantic's
error locations are mapped back to those positions. TOML carries no positions, so its
errors name the key path (but for its depth: flowsh.tomlsrc). Seed-style bash files
(`declare -A workflow=(...)`) go through `flowsh.seed`.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from flowsh.config import config_path, load_user_config, merge
from flowsh.envfile import read_env_file
from flowsh.errors import UsageError, WorkflowError, did_you_mean
from flowsh.graph import Graph
from flowsh.model import IDENT, MAX_STEP_NAME, STEP_NAME, Workflow
from flowsh.paths import resolve_path, step_cwd
from flowsh.yamlsrc import Positions, describe, parse_yaml


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
    if pos.nul_free:  # known from the parse: only what the user config added is walked
        for merged in ("defaults", "state", "pools"):
            if merged in data:
                _refuse_nul(data[merged], pos, (merged,))
    else:
        _refuse_nul(data, pos, ())
    try:
        wf = Workflow.model_validate(data)
    except Exception as exc:
        # Only pydantic refuses (flowsh.model hands it what it cannot vouch for), so it is
        # imported by now; a valid file never imports it.
        from pydantic import ValidationError

        if not isinstance(exc, ValidationError):
            raise
        message, loc, key = describe(exc.errors()[0], data)
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
    user = load_user_config()
    if isinstance(user.get("defaults"), dict):
        mine = data.get("defaults")
        data["defaults"] = merge(user["defaults"], mine if isinstance(mine, dict) else {})
    if isinstance(user.get("state"), str):
        data.setdefault("state", user["state"])
    if isinstance(user.get("pools"), dict):
        data["pools"] = merge_pools(user["pools"], data.get("pools"))


def merge_pools(user: dict[str, int], mine: Any) -> Any:
    """The user config's pools and the workflow's: a pool both declare gets the smaller
    size, since each is a limit someone set (POOL-2). Anything but a mapping of sizes is
    left for validation to refuse at its line."""
    if mine is None:
        return dict(user)
    if not isinstance(mine, dict):
        return mine
    out: dict[str, Any] = dict(user)
    for name, size in mine.items():
        both = isinstance(size, int) and not isinstance(size, bool) and name in user
        out[name] = min(size, user[name]) if both else size
    return out


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
                hint = did_you_mean(dep, seen)
                raise pos.error(
                    f"step {step.name!r} needs unknown step {dep!r}{hint}",
                    ("steps", i, "needs", j),
                )
            if dep == step.name:
                raise pos.error(f"step {step.name!r} needs itself", ("steps", i, "needs", j))
        if step.pool is not None and step.pool not in wf.pools:
            declared = ", ".join(sorted(wf.pools)) or "none"
            raise pos.error(
                f"step {step.name!r}: `pool: {step.pool}` is not declared in `pools` (here or "
                f"in the user config {config_path()}; declared: {declared})",
                ("steps", i, "pool"))


def parse_overrides(pairs: Iterable[str]) -> dict[str, str]:
    """``KEY=VALUE`` command-line params; the value is taken verbatim."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not IDENT.match(key):
            raise UsageError(
                f"parameter {pair!r} must be KEY=VALUE with KEY a shell identifier"
            )
        out[key] = value
    return out


def load_workflow(path: str | os.PathLike[str], *, execute: bool = True) -> Workflow:
    """Read and validate a workflow file (YAML, TOML or seed-style bash).

    A seed-style bash file is sourced (under the guard) to check its step functions
    exist; `execute=False` skips that, for a reader that only shows the file (the web
    UI): looking at a workflow must never run a file another account may have edited."""
    with _no_cycle_collection():
        return _load(Path(path), execute=execute)


@contextlib.contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Python's cycle collector paused while a file becomes a model: the data and the
    model are tens of thousands of new containers for a big file, which set off full
    collections (30-40 ms of a 10,000-step file's 130 ms), and they hold no cycles to
    find. Reference counting still frees everything; the collector resumes after."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _load(p: Path, *, execute: bool) -> Workflow:
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WorkflowError("no such file", path=p) from None
    except IsADirectoryError:
        raise WorkflowError("is a directory, not a workflow file", path=p) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkflowError(f"cannot read: {getattr(exc, 'strerror', None) or exc}",
                            path=p) from None
    # A stem that is no valid workflow name (`my night`, `-nightly`, too long) gives
    # `workflow` (IDENT-1): never a refusal for a `name` key the file does not have.
    # The stem of the resolved path: a symlink of another name (cron-nightly.yaml ->
    # nightly.yaml) is the same file, hence the same identity (IDENT-1).
    where = p.resolve()
    try:
        str(where).encode("utf-8")
    except UnicodeEncodeError:
        # A name in another encoding (latin-1 `caf\xe9.yaml`): the run's record keeps the
        # path as text, and SQLite refused it with a traceback once the run had begun.
        raise WorkflowError("the file's path is not UTF-8 text; rename the file (or its "
                            "directory)", path=p) from None
    stem = where.stem
    default_name = (stem if IDENT.match(stem.replace("-", "_").replace(".", "_"))
                    and STEP_NAME.match(stem) and len(stem) <= MAX_STEP_NAME else "workflow")
    suffix = p.suffix.lower()
    if _is_bash(suffix, text):
        from flowsh.seed import parse_seed  # bash workflow files only: ~1.5 ms otherwise

        data, pos = parse_seed(text, p, check=execute)
    elif suffix == ".toml":
        from flowsh.tomlsrc import parse_toml

        data = parse_toml(text, p)
        pos = Positions(p)
    else:
        data, pos = parse_yaml(text, p)
    wf = validate_data(data, pos, default_name=default_name)
    wf = wf.model_copy(update={"path": str(where)})
    Graph.build(wf, pos)  # refuses cycles before anything runs
    _check_files(wf, pos)
    return wf


def _check_files(wf: Workflow, pos: Positions) -> None:
    """Scripts and sourced files must exist before anything runs."""
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


def positions_of(wf: Workflow) -> Positions | None:
    """Positions of the workflow's file, to point a later check's error at its line."""
    if not wf.path:
        return None
    path = Path(wf.path)
    try:
        text = path.read_text(encoding="utf-8")
        suffix = path.suffix.lower()
        if _is_bash(suffix, text):
            from flowsh.seed import parse_seed

            return parse_seed(text, path, check=False)[1]
        if suffix != ".toml":  # as _load reads it: YAML
            return parse_yaml(text, path)[1]
    except (OSError, WorkflowError):
        return None
    return None


def _is_bash(suffix: str, text: str) -> bool:
    """A bash workflow file (flowsh.seed) rather than YAML, TOML or JSON. One rule for the
    loader and for positions_of: a shebang on a `.yaml` file is a YAML comment."""
    return suffix in (".sh", ".bash") or (
        suffix not in (".yaml", ".yml", ".toml", ".json") and text.startswith("#!"))
