"""Help texts that name arguments the way users write them: `FILE`, `KEY=VALUE`.

typer 0.29 prints a required argument as ``{file}``, and every argument and untyped option
with its Python type (``params... <list[str]>``, ``--state <str>``). A person reading
``flowsh run --help`` wants the conventional Unix form: ``flowsh run [OPTIONS] FILE
[KEY=VALUE]...``. The root group (`FlowshGroup`, the app's ``cls``) rewrites each command
it hands out, once: arguments get an upper-case metavar (``KEY=VALUE`` for params) and
click's usage form, and options without a metavar get one from their type. Path
parameters skip typer's readability check, so an unreadable file is reported by flowsh in
one line (``FILE: cannot read: Permission denied``, exit 2) rather than as a usage block.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperArgument, TyperGroup

from flowsh import cliparams

# Argument names whose upper-case form would not say what to write.
_ARG_METAVARS = {"params": "KEY=VALUE", "run_id": "RUN_ID", "files": "FILE"}
# Option names that deserve a better word than their type's.
_OPT_METAVARS = {"state": "URL", "cron": "EXPR", "metrics_push": "URL", "scheduler": "NAME",
                 "workflow": "NAME", "name": "NAME", "fmt": "NAME", "step": "STEP",
                 "timeout": "DURATION", "lock_timeout": "DURATION", "retry_delay": "DURATION",
                 "kill_grace": "DURATION", "older_than": "DURATION", "overlap": "MODE",
                 "executor": "NAME", "output": "PATH", "jobs": "N", "limit": "N", "keep": "N",
                 "misfire": "MODE", "severity": "LEVEL", "event": "EVENT", "run_id": "RUN_ID",
                 "message": "TEXT"}
_TYPE_METAVARS = {"int": "N", "float": "NUMBER", "path": "PATH", "str": "TEXT"}


class ConventionalArgument(TyperArgument):
    """`FILE`, `[RUN_ID]`, `[KEY=VALUE]...` in usage; no `<type>` beside the name."""

    def _usage_display_name(self) -> str:
        name = self.display_name_raw
        more = "..." if self.nargs != 1 and not name.endswith("...") else ""
        return f"{name}{more}" if self.required else f"[{name}]{more}"

    def display_type(self, ctx: Any) -> str:
        return ""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None


def conventional(cmd: Any) -> Any:
    """Rewrite `cmd` (and a group's sub-commands) in place; returns it."""
    if getattr(cmd, "_flowsh_conventional", False):
        return cmd
    cmd._flowsh_conventional = True
    cliparams.install(getattr(cmd, "params", ()))
    for param in getattr(cmd, "params", ()):
        desc = getattr(param, "type_descriptor", None)
        if desc is not None and hasattr(desc.parameter_info, "readable"):  # list[Path] too
            # typer's own check prints click's 4-line usage block for an unreadable file;
            # flowsh opens the file itself and says why in one line (exit 2).
            desc.parameter_info.readable = False
        if isinstance(param, TyperArgument):
            if param.metavar is None:
                param.metavar = _ARG_METAVARS.get(param.name or "", (param.name or "").upper())
            param.__class__ = ConventionalArgument
        elif param.metavar is None and not getattr(param, "is_flag", False) \
                and getattr(param, "param_type_name", "") == "option":
            desc = param.type_descriptor
            kind = "path" if desc.is_path else str(param.bare_type()).lower()
            if kind != "bool" and not desc.is_choice:
                param.metavar = _OPT_METAVARS.get(param.name or "",
                                                  _TYPE_METAVARS.get(kind, kind.upper()))
    for sub in getattr(cmd, "commands", {}).values():
        conventional(sub)
    return cmd


class FlowshGroup(TyperGroup):
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        # With those typer adds late: --install-completion, --help.
        cliparams.install(self.get_params(ctx))
        return list(super().parse_args(ctx, args))

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name, cmd, rest = super().resolve_command(ctx, args)
        if cmd is not None:
            cliparams.install(cmd.get_params(ctx))  # its --help (cached by click)
        return name, cmd, rest

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        cmd = super().get_command(ctx, cmd_name)
        return conventional(cmd) if cmd is not None else None

    def get_help(self, ctx: Any) -> str:
        conventional(self)
        return str(super().get_help(ctx))
