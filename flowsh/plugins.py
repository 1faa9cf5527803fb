"""The plugin manager: built-ins first, then entry points of group ``flowsh``.

Environment:
  FLOWSH_PLUGINS          comma-separated allow-list of plugin names to load (built-ins
                          always load unless disabled)
  FLOWSH_DISABLE_PLUGINS  comma-separated names to block (built-in or third-party)
  FLOWSH_LOAD_ENTRYPOINTS set to 0 to skip installed third-party plugins (the test suite
                          does this so a developer's plugins cannot change its results)
  FLOWSH_TRACE_PLUGINS    set to 1 to print every hook implementation call, with its
                          duration, on stderr

Every call goes through pluggy (``pm.hook.flowsh_...``), so wrappers, ``firstresult`` and
call monitoring work. Each implementation is guarded as it is registered: one that raises
is reported once on stderr and the others still run.
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

from flowsh import hookspecs

if TYPE_CHECKING:
    from flowsh.runopts import Reporter

# Built-ins, registered through the same door as third-party plugins. Later entries can
# be replaced: a third-party plugin that registers the same name wins (tryfirst by order).
DEFAULT_PLUGINS: tuple[str, ...] = (
    # executors and state
    "flowsh.builtin.exec_local",
    "flowsh.builtin.state_sqlite",
    "flowsh.builtin.state_json",
    # alerts
    "flowsh.builtin.notify_log",
    "flowsh.builtin.notify_command",
    "flowsh.builtin.notify_email",
    "flowsh.builtin.notify_webhook",
    "flowsh.builtin.alerts",
    # logs and metrics
    "flowsh.builtin.log_csv",
    "flowsh.builtin.log_jsonl",
    "flowsh.builtin.metrics_prometheus",
    # exporters and schedulers
    "flowsh.builtin.reporters",
    "flowsh.builtin.export_bash",
    "flowsh.builtin.export_cron",
    "flowsh.builtin.sched_crontab",
    "flowsh.builtin.sched_systemd",
    # commands, in the order `flowsh --help` lists them
    "flowsh.commands.core",
    "flowsh.commands.runs",
    "flowsh.commands.stats",
    "flowsh.commands.report",
    "flowsh.commands.serve",
    "flowsh.commands.wrap",
    "flowsh.commands.init",
    "flowsh.commands.importer",
    "flowsh.commands.export",
    "flowsh.commands.schedule",
    "flowsh.commands.notify",
    "flowsh.commands.plugins",
    "flowsh.commands.config",
)

_pm: pluggy.PluginManager | None = None
_problems: list[str] = []
# The plugin whose hook implementation is running: `registry` names who registered what.
_current: contextvars.ContextVar[str] = contextvars.ContextVar("flowsh_plugin", default="?")


def _guard(hook: str, plugin: str, function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def guarded(*args: Any) -> Any:
        token = _current.set(plugin)
        start = time.perf_counter()
        try:
            return function(*args)
        except Exception as exc:
            warn(f"plugin {plugin} failed in {hook}: {type(exc).__name__}: {exc}")
            return None
        finally:
            _current.reset(token)
            if os.environ.get("FLOWSH_TRACE_PLUGINS") == "1":
                took = (time.perf_counter() - start) * 1000
                sys.stderr.write(f"flowsh: trace: {hook} {plugin} {took:.2f} ms\n")

    return guarded


class _Manager(pluggy.PluginManager):
    """pluggy's manager, guarding each implementation (but wrappers) as it is registered."""

    def register(self, plugin: object, name: str | None = None) -> str | None:
        registered = super().register(plugin, name)
        if registered is None:
            return None
        for caller in self.get_hookcallers(plugin) or []:
            for impl in caller.get_hookimpls():
                if impl.plugin is plugin and not (impl.wrapper or impl.hookwrapper):
                    # pluggy has no API to wrap an implementation; its attribute is Final
                    # to the type checker only.
                    setattr(impl, "function", _guard(caller.name, registered, impl.function))  # noqa: B010
        return registered


def _names(var: str) -> set[str] | None:
    raw = os.environ.get(var)
    if raw is None:
        return None
    return {n.strip() for n in raw.split(",") if n.strip()}


def warn(message: str) -> None:
    """A plugin problem, reported once on stderr; never fatal."""
    if message not in _problems:
        _problems.append(message)
        print(f"flowsh: warning: {message}", file=sys.stderr)


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide manager, loaded on first use."""
    global _pm
    if _pm is None:
        _pm = _load()
    return _pm


def reset() -> None:
    """Forget the manager and registries (tests, and `plugins install` in-process)."""
    global _pm
    _pm = None
    _registries.clear()


def _load() -> pluggy.PluginManager:
    pm = _Manager("flowsh")
    pm.add_hookspecs(hookspecs)
    blocked = _names("FLOWSH_DISABLE_PLUGINS") or set()
    for name in blocked:
        pm.set_blocked(name)
    for modname in DEFAULT_PLUGINS:
        short = modname.rsplit(".", 1)[-1]
        if short in blocked or modname in blocked:
            continue
        try:
            mod = importlib.import_module(modname)
        except Exception as exc:  # a broken built-in must not take the CLI down
            warn(f"built-in plugin {short} failed to load: {exc}")
            continue
        pm.register(mod, name=short)
    if os.environ.get("FLOWSH_LOAD_ENTRYPOINTS", "1") != "0":
        _load_entrypoints(pm, allow=_names("FLOWSH_PLUGINS"), blocked=blocked)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        name = pm.get_name(exc.plugin) or repr(exc.plugin)
        # Kept registered: its other hooks work; the typo is reported once.
        warn(f"plugin {name} implements unknown hooks: {exc}")
    return pm


def _load_entrypoints(
    pm: pluggy.PluginManager, *, allow: set[str] | None, blocked: set[str]
) -> None:
    from importlib.metadata import entry_points

    for ep in entry_points(group="flowsh"):
        if ep.name in blocked or (allow is not None and ep.name not in allow):
            continue
        if pm.is_blocked(ep.name):
            continue
        if pm.get_plugin(ep.name) is not None:
            warn(f"plugin {ep.name} ({ep.value}): another plugin is already named "
                 f"{ep.name!r}; not loaded")
            continue
        try:
            plugin = ep.load()
        except Exception as exc:
            warn(f"plugin {ep.name} ({ep.value}) failed to load: {type(exc).__name__}: {exc}")
            continue
        try:
            pm.register(plugin, name=ep.name)
        except (ValueError, pluggy.PluginValidationError) as exc:
            warn(f"plugin {ep.name} could not be registered: {exc}")
            continue
        dist = getattr(ep, "dist", None)
        if dist is not None:
            _dists[ep.name] = (dist.metadata["Name"], dist.version)


_dists: dict[str, tuple[str, str]] = {}
_registries: dict[str, dict[str, tuple[Any, str]]] = {}


def registry(kind: str) -> dict[str, Any]:
    """What plugins registered through ``flowsh_register_<kind>``: name -> object.

    A name registered twice keeps the first registration in hook-call order (third-party
    plugins are called before built-ins, so they can replace one) and the duplicate is
    reported by the name of the plugin that lost.
    """
    if kind not in _registries:
        pm = get_plugin_manager()
        hook = getattr(pm.hook, f"flowsh_register_{kind}")
        found: dict[str, tuple[Any, str]] = {}

        def register(name: str, obj: Any) -> None:
            plugin = _current.get()
            if name in found:
                warn(
                    f"plugin {plugin} registers {kind[:-1]} {name!r}, already registered "
                    f"by {found[name][1]}; keeping {found[name][1]}'s"
                )
                return
            found[name] = (obj, plugin)

        # pluggy calls the last registered first: a third-party plugin can replace a built-in.
        hook(register=register)
        _registries[kind] = found
    return {name: obj for name, (obj, _) in _registries[kind].items()}


def registered_by(kind: str, name: str) -> str | None:
    registry(kind)
    entry = _registries[kind].get(name)
    return entry[1] if entry else None


def make_reporter(kind: str, state_url: str | None = None) -> Reporter:
    """The run's reporter, from the first plugin that answers for `kind`."""
    found: Reporter | None = get_plugin_manager().hook.flowsh_make_reporter(
        kind=kind, state_url=state_url)
    if found is not None:
        return found
    # Here, not at the top: runopts brings the model (pydantic, ~130 ms), and every
    # command imports this module at start-up.
    from flowsh.runopts import Reporter

    return Reporter()


def emit(event: str, **kwargs: Any) -> None:
    """Call a hook on every plugin. An implementation that raises is reported (its guard);
    a wrapper that raises is reported here; neither changes anything else."""
    try:
        getattr(get_plugin_manager().hook, event)(**kwargs)
    except Exception as exc:
        warn(f"a plugin wrapper failed in {event}: {type(exc).__name__}: {exc}")


def registration_rank(module: str) -> int:
    """Where the plugin defining ``module`` stands in registration order (built-ins first)."""
    for i, (_, plugin) in enumerate(get_plugin_manager().list_name_plugin()):
        name = getattr(plugin, "__name__", None) or type(plugin).__module__
        if module == name or module.startswith(name + "."):
            return i
    return sys.maxsize


def plugin_info() -> list[dict[str, Any]]:
    """Name, version and hooks of every loaded plugin (`flowsh plugins`)."""
    from flowsh import __version__

    pm = get_plugin_manager()
    out = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        dist, version = _dists.get(name, ("flowsh", __version__))
        out.append({
            "name": name,
            "distribution": dist,
            "version": version,
            "builtin": name not in _dists,
            "hooks": hooks,
        })
    return sorted(out, key=lambda p: (not p["builtin"], p["name"]))

