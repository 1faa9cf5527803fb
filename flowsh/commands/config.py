"""Built-in command ``flowsh config``: the merged settings and where each value came from.

Precedence, highest first: the command line and ``FLOWSH_*`` variables, the workflow file,
the user config file (``$XDG_CONFIG_HOME/flowsh/config.yaml``), flowsh's defaults.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import typer

from flowsh import hookimpl


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _origin_rows(file: Path | None) -> list[tuple[str, Any, str]]:
    from flowsh.config import config_path, load_user_config
    from flowsh.model import Defaults
    from flowsh.state import default_state_url, flowsh_home

    user = load_user_config()
    cfg = str(config_path())
    data: dict[str, Any] = {}
    wf_name = ""
    if file is not None:
        from flowsh.yamlsrc import parse_yaml

        data, _ = parse_yaml(file.read_text(encoding="utf-8"), file)
        data = data if isinstance(data, dict) else {}
        wf_name = str(file)
    rows: list[tuple[str, Any, str]] = []
    home_src = "FLOWSH_HOME" if os.environ.get("FLOWSH_HOME") else (
        "XDG_STATE_HOME" if os.environ.get("XDG_STATE_HOME") else "default")
    rows.append(("home", str(flowsh_home()), home_src))
    rows.append(("config_file", cfg, "exists" if Path(cfg).exists() else "absent"))
    if os.environ.get("FLOWSH_STATE"):
        rows.append(("state", os.environ["FLOWSH_STATE"], "FLOWSH_STATE"))
    elif wf_name and isinstance(data.get("state"), str):
        rows.append(("state", data["state"], wf_name))
    elif isinstance(user.get("state"), str):
        rows.append(("state", user["state"], cfg))
    else:
        rows.append(("state", default_state_url(), "default"))
    file_defaults = _mapping(data.get("defaults"))
    user_defaults = user.get("defaults") or {}
    for key, field in Defaults.model_fields.items():
        if key in file_defaults:
            rows.append((f"defaults.{key}", file_defaults[key], wf_name))
        elif key in user_defaults:
            rows.append((f"defaults.{key}", user_defaults[key], cfg))
        else:
            rows.append((f"defaults.{key}", field.default, "default"))
    file_notify = _mapping(data.get("notify"))
    user_notify = user.get("notify") or {}
    channels: dict[str, tuple[Any, str]] = {}
    for src, notify in ((cfg, user_notify), (wf_name, file_notify)):
        for name, ch in (notify.get("channels") or {}).items():
            channels[name] = ((ch or {}).get("type"), src)
    for name, (kind, src) in sorted(channels.items()):
        rows.append((f"notify.channels.{name}", kind, src))
    for key in ("routes", "events"):
        merged = {**(user_notify.get(key) or {}), **(file_notify.get(key) or {})}
        for k, v in merged.items():
            src = wf_name if k in (file_notify.get(key) or {}) else cfg
            rows.append((f"notify.{key}.{k}", v, src))
    # Pools: a pool declared in both gets the smaller size (docs/semantics.md POOL-2).
    file_pools, user_pools = _mapping(data.get("pools")), user.get("pools") or {}
    for name in sorted({*file_pools, *user_pools}, key=str):
        sizes = [(v, src) for v, src in ((file_pools.get(name), wf_name),
                                         (user_pools.get(name), cfg)) if v is not None]
        size, src = min(sizes, key=lambda vs: (vs[0] if isinstance(vs[0], int) else 0))
        rows.append((f"pools.{name}", size, src))
    for var in ("FLOWSH_PLUGINS", "FLOWSH_DISABLE_PLUGINS", "FLOWSH_LOAD_ENTRYPOINTS"):
        if var in os.environ:
            rows.append((var.lower(), os.environ[var], "environment"))
    return rows


def config_cmd(
    file: Optional[Path] = typer.Argument(None, help="A workflow file to merge in."),  # noqa: UP045
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Show the merged settings and where each value came from."""
    if file is not None:
        from flowsh.loader import load_workflow

        load_workflow(file)  # a bad file is reported as for `validate`
    rows = _origin_rows(file)
    if json_out:
        typer.echo(json.dumps({k: {"value": v, "from": s} for k, v, s in rows}, indent=2))
        return
    width = max(len(k) for k, _, _ in rows)
    for key, value, src in rows:
        shown = json.dumps(value) if not isinstance(value, str) else value
        typer.echo(f"{key:<{width}}  {shown}  ({src})")


@hookimpl
def flowsh_register_commands(app: typer.Typer) -> None:
    app.command("config")(config_cmd)
