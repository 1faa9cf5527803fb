"""The user config file: what many workflows share (notify channels and routes, defaults, state).

``$FLOWSH_CONFIG`` if set, else ``$XDG_CONFIG_HOME/flowsh/config.yaml`` (default
``~/.config/flowsh/config.yaml``). A workflow file overrides it key by key; the CLI and
``FLOWSH_*`` variables override both. A missing file is an empty config.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flowsh.errors import WorkflowError, did_you_mean
from flowsh.yamlsrc import describe, parse_yaml

TOP_KEYS = ("notify", "defaults", "state", "pools")


def config_path() -> Path:
    explicit = os.environ.get("FLOWSH_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "flowsh" / "config.yaml"


def load_user_config(path: Path | None = None) -> dict[str, Any]:
    """The user config as plain data, validated; ``{}`` when there is no file.

    Raises `WorkflowError` naming the file, line and key for anything invalid.
    """
    p = path or config_path()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkflowError(f"cannot read the flowsh config file: {exc}", path=p) from None
    if not text.strip():
        return {}
    try:
        data, pos = parse_yaml(text, p)
    except WorkflowError as exc:
        if exc.detail == "the file is empty":  # only comments: nothing configured yet
            return {}
        raise
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise pos.error("the config file must be a mapping (keys: notify, defaults, state, pools)")
    for key in data:
        if key not in TOP_KEYS:
            hint = did_you_mean(key, TOP_KEYS)
            raise pos.error(
                f"unknown key {key!r} in the flowsh config{hint}; known: {', '.join(TOP_KEYS)}",
                (key,),
                key=True,
            )
    if any(k in data for k in ("notify", "defaults", "pools")):
        _check_sections(data, pos)
    if "state" in data and not isinstance(data["state"], str):
        raise pos.error("key 'state': must be a state URL string", ("state",))
    return data


def _check_sections(data: dict[str, Any], pos: Any) -> None:
    """`notify`, `defaults` and `pools` against the workflow model's pydantic classes (a
    config holding none of them does not import pydantic: ~75 ms of every start)."""
    from pydantic import TypeAdapter

    from flowsh.modelcheck import Defaults, Notify, PoolName, PoolSize

    _check(Notify, data, "notify", pos)
    _check(Defaults, data, "defaults", pos)
    # `pools: {db: 2}`: shared with every workflow run by this user (docs/semantics.md POOL).
    _check(TypeAdapter(dict[PoolName, PoolSize]), data, "pools", pos)


def _check(model: Any, data: dict[str, Any], key: str, pos: Any) -> None:
    if key not in data:
        return
    if not isinstance(data[key], dict):
        raise pos.error(f"key {key!r}: must be a mapping", (key,))
    from pydantic import TypeAdapter, ValidationError

    try:
        if isinstance(model, TypeAdapter):
            model.validate_python(data[key])
        else:
            model.model_validate(data[key])
    except ValidationError as exc:
        err: dict[str, Any] = dict(exc.errors()[0])
        err["loc"] = (key, *tuple(err["loc"]))
        message, loc, is_key = describe(err, data)
        raise pos.error(message, loc, key=is_key) from None


def merge(user: dict[str, Any], workflow: dict[str, Any]) -> dict[str, Any]:
    """``user`` under ``workflow``: mappings merge recursively, anything else the workflow wins."""
    out = dict(user)
    for key, value in workflow.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out
