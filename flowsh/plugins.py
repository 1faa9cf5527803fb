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
import threading
import time
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import pluggy

from flowsh import hookspecs

if TYPE_CHECKING:
    from flowsh.runopts import Reporter


class Lazy(NamedTuple):
    """A built-in plugin imported only when one of its hooks is first called.

    ``hooks`` names what the module implements (without the ``flowsh_`` prefix);
    ``commands`` the sub-commands a ``register_commands`` module adds, so `flowsh status`
    imports only the module that defines `status`. tests/test_plugins.py checks each line
    against the module itself. Measured: importing all 27 built-ins up front cost ~56 ms
    of CPU at every start (engine, notify, state, typer pulled in by the command modules).
    """

    module: str
    hooks: str
    commands: str = ""


# Built-ins, registered through the same door as third-party plugins, one line each (a plain
# module name is imported at load, a `Lazy` one at the first call of one of its hooks).
# Later entries can be replaced: a third-party plugin that registers the same name wins
# (tryfirst by order).
DEFAULT_PLUGINS: tuple[str | Lazy, ...] = (
    # executors and state
    Lazy("flowsh.builtin.exec_local", "register_executors"),
    Lazy("flowsh.builtin.state_sqlite", "register_state_backends"),
    Lazy("flowsh.builtin.state_json", "register_state_backends"),
    Lazy("flowsh.builtin.state_postgresql", "register_state_backends"),
    # alerts
    Lazy("flowsh.builtin.notify_log", "register_notifiers"),
    Lazy("flowsh.builtin.notify_command", "register_notifiers"),
    Lazy("flowsh.builtin.notify_email", "register_notifiers"),
    Lazy("flowsh.builtin.notify_webhook", "register_notifiers"),
    Lazy("flowsh.builtin.alerts", "run_started step_retrying step_finished run_finished"),
    # logs and metrics
    Lazy("flowsh.builtin.log_csv",
         "run_started step_started step_retrying step_finished run_finished"),
    Lazy("flowsh.builtin.log_jsonl",
         "run_started step_started step_retrying step_waiting step_finished run_finished"),
    Lazy("flowsh.builtin.metrics_prometheus", "run_started run_finished"),
    # exporters and schedulers
    Lazy("flowsh.builtin.reporters", "make_reporter"),
    Lazy("flowsh.builtin.export_bash", "register_exporters"),
    Lazy("flowsh.builtin.export_cron", "register_exporters"),
    Lazy("flowsh.builtin.sched_crontab", "register_schedulers"),
    Lazy("flowsh.builtin.sched_systemd", "register_schedulers"),
    # commands, in the order `flowsh --help` lists them
    Lazy("flowsh.commands.core", "register_commands",
         "run resume retry validate graph schema call-child"),
    Lazy("flowsh.commands.listing", "register_commands", "list"),
    Lazy("flowsh.commands.runs", "register_commands", "status history logs prune"),
    Lazy("flowsh.commands.stats", "register_commands", "stats"),
    Lazy("flowsh.commands.report", "register_commands", "report"),
    Lazy("flowsh.commands.serve", "register_commands", "serve"),
    Lazy("flowsh.commands.wrap", "register_commands", "wrap"),
    Lazy("flowsh.commands.init", "register_commands", "init"),
    Lazy("flowsh.commands.importer", "register_commands", "import"),
    Lazy("flowsh.commands.export", "register_commands", "export"),
    Lazy("flowsh.commands.schedule", "register_commands", "schedule scheduler"),
    Lazy("flowsh.commands.notify", "register_commands", "notify"),
    Lazy("flowsh.commands.plugins", "register_commands", "plugins"),
    Lazy("flowsh.commands.config", "register_commands", "config"),
    Lazy("flowsh.commands.why", "register_commands", "why"),
)


class _LazyPlugin(types.ModuleType):
    """Stands in for a `Lazy` built-in in pluggy's registry, at its place in the order.

    Each declared hook is a stub with the hookspec's signature (pluggy reads argument names
    through ``__wrapped__``); its first call imports the module and every later call goes
    straight to the module's own implementation, with the arguments it takes. A module
    object rather than a plain one: pluggy's `register` looks at every name in ``dir()``,
    and a module's holds only its own (6 names, not 30: 0.45 ms less per built-in).
    """

    def __init__(self, spec: Lazy) -> None:
        super().__init__(spec.module)  # registration_rank() ranks commands by module name
        self.commands = frozenset(spec.commands.split())
        for short in spec.hooks.split():
            hook = f"flowsh_{short}"
            setattr(self, hook, self._stub(spec.module, hook))

    @staticmethod
    def _stub(module: str, hook: str) -> Callable[..., Any]:
        spec_fn = getattr(hookspecs, hook)
        names = _argnames(spec_fn)
        target: list[tuple[Callable[..., Any], list[int]]] = []

        def stub(*args: Any) -> Any:
            if not target:
                real = getattr(importlib.import_module(module), hook)
                wanted = set(_argnames(real))
                target.append((real, [i for i, n in enumerate(names) if n in wanted]))
            real, picks = target[0]
            return real(**{names[i]: args[i] for i in picks})

        stub.__name__ = hook
        stub.__wrapped__ = spec_fn  # type: ignore[attr-defined]
        return _hookimpl(stub)


def _argnames(fn: Callable[..., Any]) -> tuple[str, ...]:
    """Positional argument names of a module-level function: what pluggy passes it."""
    code = fn.__code__
    return code.co_varnames[: code.co_argcount]


_hookimpl = pluggy.HookimplMarker("flowsh")

_pm: pluggy.PluginManager | None = None
_problems: list[str] = []
# The plugin whose hook implementation is running: `registry` names who registered what.
_current: contextvars.ContextVar[str] = contextvars.ContextVar("flowsh_plugin", default="?")


# The plugin each thread is in, by thread id: the event dispatcher names a stuck one.
running_in: dict[int, str] = {}


def _guard(hook: str, plugin: str, function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def guarded(*args: Any) -> Any:
        token = _current.set(plugin)
        me = threading.get_ident()
        outer = running_in.get(me)
        running_in[me] = plugin
        start = time.perf_counter()
        try:
            return function(*args)
        except (Exception, SystemExit) as exc:  # sys.exit() in a plugin ends nothing
            warn(f"plugin {plugin} failed in {hook}: {type(exc).__name__}: {exc}")
            return None
        finally:
            _current.reset(token)
            if outer is None:
                running_in.pop(me, None)
            else:
                running_in[me] = outer
            if os.environ.get("FLOWSH_TRACE_PLUGINS") == "1":
                took = (time.perf_counter() - start) * 1000
                sys.stderr.write(f"flowsh: trace: {hook} {plugin} {took:.2f} ms\n")

    return guarded


class _Manager(pluggy.PluginManager):
    """pluggy's manager, guarding each implementation (but wrappers) as it is registered."""

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> pluggy.HookimplOpts | None:
        # A lazy built-in's hooks are its `flowsh_*` stubs; its other names (a module's
        # __name__, __doc__, __spec__... and `commands`) are no hook, and pluggy's static
        # look-up of each was half of registering all the built-ins (2.6 -> 1.5 ms a start).
        if isinstance(plugin, _LazyPlugin) and not name.startswith("flowsh_"):
            return None
        return super().parse_hookimpl_opts(plugin, name)

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
    for entry in DEFAULT_PLUGINS:
        modname = entry.module if isinstance(entry, Lazy) else entry
        short = modname.rsplit(".", 1)[-1]
        if short in blocked or modname in blocked:
            continue
        if isinstance(entry, Lazy):
            pm.register(_LazyPlugin(entry), name=short)
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
    for name, value, dist in _entry_points():
        if name in blocked or (allow is not None and name not in allow):
            continue
        if pm.is_blocked(name):
            continue
        if pm.get_plugin(name) is not None:
            warn(f"plugin {name} ({value}): another plugin is already named "
                 f"{name!r}; not loaded")
            continue
        try:
            plugin = _load_ref(value)
        except Exception as exc:
            warn(f"plugin {name} ({value}) failed to load: {type(exc).__name__}: {exc}")
            continue
        try:
            pm.register(plugin, name=name)
        except (ValueError, pluggy.PluginValidationError) as exc:
            warn(f"plugin {name} could not be registered: {exc}")
            continue
        if dist is not None:
            _dists[name] = dist


def _load_ref(value: str) -> Any:
    """What ``importlib.metadata.EntryPoint.load`` does with ``module:attr.attr``."""
    module, _, attrs = value.partition(":")
    obj = importlib.import_module(module.strip())
    for attr in attrs.split("[", 1)[0].strip().split("."):
        if attr:
            obj = getattr(obj, attr)
    return obj


EntryPointRecord = tuple[str, str, "tuple[str, str] | None"]


def _entry_points() -> list[EntryPointRecord]:
    """Entry points of group ``flowsh``: (name, value, (distribution, version)).

    Scanning them means importing `importlib.metadata` and reading every installed
    distribution's metadata: 20-40 ms at each start. The result is cached, keyed on the
    interpreter and on the modification time of every directory on ``sys.path``: installing,
    upgrading or removing a distribution adds or removes its ``.dist-info`` directory, which
    changes its parent's mtime, so the next start scans again.
    """
    import json

    from flowsh import cache

    digest = cache.key(cache.environment())
    raw = cache.load("entrypoints", digest)
    if raw is not None:
        try:
            return [(n, v, tuple(d) if d else None)  # type: ignore[misc]
                    for n, v, d in json.loads(raw)]
        except (ValueError, TypeError):
            pass  # not what we wrote: scan again
    found: list[EntryPointRecord] = []
    if not none_declared():
        from importlib.metadata import entry_points

        for ep in entry_points(group="flowsh"):
            dist = getattr(ep, "dist", None)
            found.append((ep.name, ep.value,
                          (dist.metadata["Name"], dist.version) if dist is not None else None))
    cache.store("entrypoints", digest, json.dumps(found).encode())
    return found


def none_declared(paths: list[str] | None = None) -> bool:
    """True when no installed distribution can declare an entry point of group ``flowsh``;
    False when one may (then `importlib.metadata` says which, and how).

    What `importlib.metadata` would read, read without it: its import and its scan were
    13-30 ms of every start with a cold cache (a new $FLOWSH_HOME, each install). It finds
    distributions through the meta path finders that have ``find_distributions``, which for
    the standard one means every ``*.dist-info`` and ``*.egg-info`` directory of each
    ``sys.path`` entry; a group is a line ``[NAME]`` of their ``entry_points.txt``. Anything
    else (another finder, a zip or an egg on the path, an unreadable file, a section line
    that merely mentions flowsh) answers False: never a plugin missed, at worst the slow scan.
    """
    from importlib.machinery import PathFinder

    for finder in sys.meta_path:
        if getattr(finder, "find_distributions", None) is not None and finder is not PathFinder:
            return False
    for entry in sys.path if paths is None else paths:
        if not isinstance(entry, str):
            return False
        root = entry or "."
        if os.path.basename(root).lower().endswith(".egg"):
            return False
        try:
            children = os.listdir(root)
        except OSError:
            if os.path.lexists(root):
                return False  # a zip, or a directory it cannot list: ask importlib.metadata
            continue
        for child in children:
            if not child.lower().endswith((".dist-info", ".egg-info")):
                continue
            try:
                with open(os.path.join(root, child, "entry_points.txt"), encoding="utf-8") as fh:
                    text = fh.read()
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                continue  # what importlib.metadata reads as "no entry points"
            except (OSError, ValueError):
                return False
            if "flowsh" in text and any(line.strip().startswith("[") and "flowsh" in line
                                        for line in text.splitlines()):
                return False
    return True


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
        try:
            hook(register=register)
        except (Exception, SystemExit) as exc:  # a wrapper (implementations are guarded)
            warn(f"{_culprit(exc)} failed in flowsh_register_{kind}: "
                 f"{type(exc).__name__}: {exc}")
        _registries[kind] = found
    return {name: obj for name, (obj, _) in _registries[kind].items()}


def registered_by(kind: str, name: str) -> str | None:
    registry(kind)
    entry = _registries[kind].get(name)
    return entry[1] if entry else None


def make_reporter(kind: str, state_url: str | None = None) -> Reporter | None:
    """The run's reporter, from the first plugin that answers for `kind` (None: no plugin
    did, and the run shows nothing)."""
    found: Reporter | None = get_plugin_manager().hook.flowsh_make_reporter(
        kind=kind, state_url=state_url)
    return found


def emit(event: str, *, without: frozenset[str] = frozenset(), **kwargs: Any) -> None:
    """Call a hook on every plugin (but those named in `without`). An implementation that
    raises is reported (its guard); a wrapper that raises is reported here; neither changes
    anything else."""
    pm = get_plugin_manager()
    try:
        if without:
            left_out = [p for name in without if (p := pm.get_plugin(name)) is not None]
            pm.subset_hook_caller(event, remove_plugins=left_out)(**kwargs)
        else:
            getattr(pm.hook, event)(**kwargs)
    except (Exception, SystemExit) as exc:
        warn(f"{_culprit(exc)} failed in {event}: {type(exc).__name__}: {exc}")


def _culprit(exc: BaseException) -> str:
    """`plugin NAME`, from the deepest frame of `exc` in a registered plugin's module: a
    wrapper is not guarded as it is registered, so its name comes from where it raised."""
    modules: dict[str, str] = {}
    for name, plugin in get_plugin_manager().list_name_plugin():
        module = plugin.__name__ if isinstance(plugin, types.ModuleType) else \
            type(plugin).__module__
        modules.setdefault(module, name)
    found = None
    tb = exc.__traceback__
    while tb is not None:
        found = modules.get(tb.tb_frame.f_globals.get("__name__", ""), found)
        tb = tb.tb_next
    return f"plugin {found}" if found else "a plugin wrapper"


def register_commands(app: Any, command: str | None = None) -> None:
    """Call ``flowsh_register_commands``: on every plugin, or, when ``command`` is one a
    lazy built-in declares, on that built-in and on every other kind of plugin (a third
    party may add or replace any command), leaving the other built-in command modules
    unimported. Measured: importing all 12 command modules and converting their 26 commands
    cost ~90 ms of CPU at each start."""
    pm = get_plugin_manager()
    skip = _commands_elsewhere(pm, command)
    caller = (pm.subset_hook_caller("flowsh_register_commands", remove_plugins=skip)
              if skip else pm.hook.flowsh_register_commands)
    try:
        caller(app=app)
    except Exception as exc:
        warn(f"a plugin wrapper failed in flowsh_register_commands: {type(exc).__name__}: {exc}")


def _commands_elsewhere(pm: pluggy.PluginManager, command: str | None) -> list[object]:
    """The lazy built-in command modules `flowsh COMMAND` need not import: those that do not
    declare `command`, when one does (none when no built-in declares it)."""
    if command is None:
        return []
    lazy = [p for _, p in pm.list_name_plugin() if isinstance(p, _LazyPlugin) and p.commands]
    if not any(command in p.commands for p in lazy):
        return []
    return [p for p in lazy if command not in p.commands]


def builtin_only(command: str, module: str) -> bool:
    """Whether `flowsh COMMAND` is the built-in `module`'s alone: of the plugins
    `register_commands(app, command)` would call, that module's is the only one (no third
    party adds, replaces or wraps a command; the built-in is not disabled). The fast path of
    `flowsh run` (climain.py) skips typer only then."""
    pm = get_plugin_manager()
    skip = _commands_elsewhere(pm, command)
    impls = [i for i in pm.hook.flowsh_register_commands.get_hookimpls()
             if i.plugin not in skip]
    return (len(impls) == 1 and isinstance(impls[0].plugin, _LazyPlugin)
            and impls[0].plugin.__name__ == module and command in impls[0].plugin.commands)


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

