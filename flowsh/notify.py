"""Alerts: the seed's ``alert()`` done properly.

An event (run_failed, step_retry...) gets a severity from ``notify.events``; the severity
picks channels from ``notify.routes``; each channel is a notifier (registered by a plugin
through ``flowsh_register_notifiers``) that receives an `Alert` with its text rendered by a
jinja2 template (the channel's ``template:`` file, else ``templates/alerts/*.j2``).

Sending never fails a run: every channel sends in its own thread, bounded by the channel's
``timeout``; an error or a timeout is reported once on stderr and the run goes on.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, get_args

from flowsh import modelrules
from flowsh.errors import NotFoundError, WorkflowError, did_you_mean
from flowsh.model import EventName, Severity

if TYPE_CHECKING:
    import jinja2

    from flowsh.model import Notify, Workflow
    from flowsh.secrets import Masker

# The words are defined once, in the model's Literal types (the JSON Schema shows them).
SEVERITIES: tuple[str, ...] = get_args(Severity)
EVENTS: tuple[str, ...] = get_args(EventName)
# Without `events:` a workflow alerts on what nobody wants to miss.
DEFAULT_EVENTS: dict[str, str] = {"run_failed": "critical", "run_long": "warning",
                                  "run_late": "warning"}
# Keys every channel accepts; the rest is the notifier's own config.
COMMON_KEYS = frozenset({"type", "template", "subject", "timeout"})
DEFAULT_TIMEOUT = 10.0
LOG_TAIL_LINES = 20


def _hostname() -> str:
    import socket  # only when an alert is made: `validate` never needs it (~2 ms)

    return socket.gethostname()


@dataclass
class Alert:
    """What a notifier receives. ``subject`` and ``text`` are rendered per channel."""

    severity: str
    event: str
    workflow: str
    run_id: str
    step: str | None = None
    exit_code: int | None = None
    duration: float | None = None
    host: str = field(default_factory=_hostname)
    log_tail: str = ""
    message: str = ""
    file: str | None = None  # the workflow file: notifiers resolve relative paths from it
    time: float = field(default_factory=time.time)
    subject: str = ""
    text: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def env(self) -> dict[str, str]:
        """``FLOWSH_ALERT_*`` variables (for command notifiers and scripts)."""
        out = {}
        for key, value in self.to_dict().items():
            if value is None:
                value = ""
            elif isinstance(value, float):
                value = f"{value:.3f}"
            out[f"FLOWSH_ALERT_{key.upper()}"] = str(value)
        return out

    @property
    def workdir(self) -> Path:
        return Path(self.file).parent if self.file else Path.cwd()


class Notifier(Protocol):
    def send(self, alert: Alert) -> None: ...


# --- config helpers for notifiers --------------------------------------------------------


def config_error(channel: str, key: str | None, message: str) -> WorkflowError:
    """A bad channel config, naming channel and key (positioned later by `check_notify`)."""
    where = f"notify channel {channel!r}" + (f" key {key!r}" if key else "")
    err = WorkflowError(f"{where}: {message}")
    err.channel, err.key = channel, key  # type: ignore[attr-defined]
    return err


def check_keys(channel: str, config: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Refuse unknown keys, suggesting the closest known one."""
    known = set(allowed) | COMMON_KEYS
    for key in config:
        if key not in known:
            raise config_error(channel, key, f"unknown key{did_you_mean(key, sorted(known))}")


def get_str(channel: str, config: Mapping[str, Any], key: str, default: str | None = None,
            *, required: bool = False) -> str | None:
    value = config.get(key, default)
    if value is None:
        if required:
            raise config_error(channel, key, "is required")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise config_error(channel, key, "must be a string")
    return str(value)


def get_list(channel: str, config: Mapping[str, Any], key: str, *, required: bool = False
             ) -> list[str]:
    value = config.get(key)
    if value is None:
        if required:
            raise config_error(channel, key, "is required")
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise config_error(channel, key, "must be a string or a non-empty list of strings")
    return list(value)


def not_a_bool(channel: str, key: str, value: Any) -> None:
    """A port, count or duration written `true` or `yes` is a boolean to YAML, and a bool is
    an int to Python (`port: true` is port 1): refused in FILE-5's words, as the workflow's
    own numbers are (modelrules.not_a_bool)."""
    try:
        modelrules.not_a_bool(value)
    except ValueError as exc:
        raise config_error(channel, key, str(exc)) from None


def get_count(channel: str, config: Mapping[str, Any], key: str, default: int) -> int:
    """A whole number >= 0 (retries)."""
    value = config.get(key, default)
    not_a_bool(channel, key, value)
    if not isinstance(value, int) or value < 0:
        raise config_error(channel, key, "must be a whole number >= 0")
    return value


def get_number(channel: str, config: Mapping[str, Any], key: str, default: float) -> float:
    from flowsh.durations import parse_duration

    value = config.get(key, default)
    not_a_bool(channel, key, value)
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise config_error(channel, key, str(exc)) from None


def channel_timeout(channel: str, config: Mapping[str, Any]) -> float:
    return get_number(channel, config, "timeout", DEFAULT_TIMEOUT)


# --- the effective notify config ---------------------------------------------------------


def effective_notify(workflow: Workflow) -> Notify:
    """The workflow's ``notify`` over the user config's (``flowsh.config``)."""
    from flowsh.config import load_user_config, merge
    from flowsh.model import Notify

    user = load_user_config().get("notify") or {}
    if not user:
        return workflow.notify
    mine = workflow.notify.model_dump(exclude_unset=True, exclude_defaults=True)
    mine["channels"] = {
        name: ch.model_dump() for name, ch in workflow.notify.channels.items()
    }
    return Notify.model_validate(merge(user, mine))


def events_of(notify: Notify) -> dict[str, str]:
    events: dict[str, str] = {str(k): str(v) for k, v in notify.events.items()}
    return events or dict(DEFAULT_EVENTS)


def channels_for(notify: Notify, severity: str) -> list[str]:
    """``routes[severity]``; without any routes, every declared channel hears everything.

    A notifier type can opt out of that fallback with a class attribute
    ``implicit_routes = False`` (healthchecks: it pings on run events, not on alerts).
    """
    if notify.routes:
        return list(notify.routes.get(severity, []))  # type: ignore[call-overload]
    from flowsh.plugins import registry

    factories = registry("notifiers")
    return [name for name, ch in notify.channels.items()
            if getattr(factories.get(ch.type), "implicit_routes", True)]


def channel_config(notify: Notify, name: str) -> dict[str, Any]:
    """The channel's config; an undeclared name that is a notifier type (``log``) is itself."""
    ch = notify.channels.get(name)
    if ch is not None:
        return ch.model_dump()
    from flowsh.plugins import registry

    if name in registry("notifiers"):
        return {"type": name}
    known = sorted(set(notify.channels) | set(registry("notifiers")))
    raise NotFoundError(f"unknown notify channel {name!r} (known: {', '.join(known) or 'none'})")


def build_notifier(name: str, config: Mapping[str, Any]) -> Notifier:
    from flowsh.plugins import registry

    kind = config.get("type")
    factories = registry("notifiers")
    if kind not in factories:
        hint = did_you_mean(str(kind), sorted(factories))
        raise config_error(
            name, "type",
            f"unknown notifier type {kind!r}{hint}; installed: {', '.join(sorted(factories))}"
            " (plugins add more: `flowsh plugins install ...`)",
        )
    rest = {k: v for k, v in config.items() if k != "type"}
    notifier: Notifier = factories[kind](name, rest)
    return notifier


def check_notify(workflow: Workflow) -> None:
    """Validate routes and every channel's config; errors point at the workflow file's line.

    Meant for `flowsh validate` and the start of a run.
    """
    notify = effective_notify(workflow)
    try:
        for severity, names in notify.routes.items():
            for i, name in enumerate(names):
                try:
                    channel_config(notify, name)
                except NotFoundError as exc:
                    err = WorkflowError(f"notify.routes.{severity}: {exc}")
                    err.loc = ("notify", "routes", severity, i)  # type: ignore[attr-defined]
                    raise err from None
        for name in notify.channels:
            config = channel_config(notify, name)
            build_notifier(name, config)
            # Every channel's send is bounded by it, whether its notifier reads it or not
            # (`log` does not): a bad one failed each alert instead of validate.
            channel_timeout(name, config)
            _template_env(config, workflow.path, name)
    except WorkflowError as exc:
        raise _positioned(exc, workflow) from None


def _positioned(exc: WorkflowError, workflow: Workflow) -> WorkflowError:
    loc = getattr(exc, "loc", None)
    channel = getattr(exc, "channel", None)
    if loc is None and channel is not None:
        key = getattr(exc, "key", None)
        loc = ("notify", "channels", channel, *((key,) if key else ()))
    if loc is None or not workflow.path or exc.path:
        return exc
    from flowsh.yamlsrc import parse_yaml

    path = Path(workflow.path)
    try:
        _, pos = parse_yaml(path.read_text(encoding="utf-8"), path)
    except (OSError, WorkflowError):
        return WorkflowError(exc.detail, path=path)
    if not pos.has(loc[:3]):
        # Declared in the user config, not in this file.
        from flowsh.config import config_path

        return WorkflowError(exc.detail, path=config_path())
    return pos.error(exc.detail, loc, key=True)


# --- rendering ---------------------------------------------------------------------------


def _template_env(config: Mapping[str, Any], wf_path: str | None, channel: str
                  ) -> tuple[jinja2.Template, jinja2.Template]:
    import jinja2

    from flowsh.templating import templates_dir

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
        autoescape=False,  # alerts are plain text; notifiers escape for their medium
    )
    env.filters["duration"] = _fmt_duration
    try:
        if config.get("template"):
            base = Path(wf_path).parent if wf_path else Path.cwd()
            tpath = (base / Path(str(config["template"])).expanduser()).resolve()
            try:
                body = env.from_string(tpath.read_text(encoding="utf-8"))
            except OSError as exc:
                raise config_error(channel, "template", f"cannot read {tpath}: {exc.strerror}"
                                   ) from None
        else:
            body = env.get_template("alerts/text.j2")
        if config.get("subject"):
            subject = env.from_string(str(config["subject"]))
        else:
            subject = env.get_template("alerts/subject.j2")
    except jinja2.TemplateSyntaxError as exc:
        key = "subject" if config.get("subject") and exc.name is None and not config.get(
            "template") else "template"
        raise config_error(channel, key, f"template error line {exc.lineno}: {exc.message}"
                           ) from None
    return subject, body


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    from flowsh.durations import format_duration

    return format_duration(seconds)


def render(alert: Alert, config: Mapping[str, Any], channel: str,
           masker: Masker | None = None) -> Alert:
    """A copy of ``alert`` with ``subject`` and ``text`` rendered for this channel, masked."""
    subject_t, body_t = _template_env(config, alert.file, channel)
    ctx = {**alert.to_dict(), "alert": alert, "channel": channel}
    subject = " ".join(subject_t.render(ctx).split())
    text = body_t.render(ctx).strip() + "\n"
    out = dataclasses.replace(alert, subject=subject, text=text)
    if masker:
        out = dataclasses.replace(
            out,
            subject=masker(out.subject), text=masker(out.text),
            message=masker(out.message), log_tail=masker(out.log_tail),
        )
    return out


def log_tail(path: str | None, lines: int = LOG_TAIL_LINES, max_bytes: int = 16384) -> str:
    """The last ``lines`` lines of a step log (reads at most ``max_bytes`` from its end)."""
    from flowsh.fileio import tail_lines

    return "\n".join(tail_lines(path, lines, max_bytes)[0])


# --- sending -----------------------------------------------------------------------------


@dataclass
class Delivery:
    channel: str
    ok: bool
    error: str | None = None


def send_to(channel: str, config: Mapping[str, Any], alert: Alert,
            masker: Masker | None = None) -> None:
    """Render and send synchronously; raises on failure (`flowsh notify test`)."""
    notifier = build_notifier(channel, config)
    notifier.send(render(alert, config, channel, masker))


def dispatch(alert: Alert, notify: Notify, *, masker: Masker | None = None,
             channels: list[str] | None = None, quiet: bool = False) -> list[Delivery]:
    """Send ``alert`` to the channels its severity routes to, each bounded by its timeout.

    Never raises: a failure, a hang past the timeout or a bad config is reported on stderr
    (once per message) and returned as a failed `Delivery`.
    """
    from flowsh.plugins import warn

    names = channels if channels is not None else channels_for(notify, alert.severity)
    results: dict[str, Delivery] = {}
    threads: list[tuple[str, threading.Thread, float]] = []
    for name in dict.fromkeys(names):
        try:
            config = channel_config(notify, name)
            timeout = channel_timeout(name, config)
        except Exception as exc:  # bad config must not stop the other channels
            results[name] = Delivery(name, False, str(exc))
            continue

        def work(name: str = name, config: dict[str, Any] = config) -> None:
            try:
                send_to(name, config, alert, masker)
            except Exception as exc:
                msg = str(exc) or type(exc).__name__
                if masker:
                    msg = masker(msg)
                results[name] = Delivery(name, False, msg)
            else:
                results[name] = Delivery(name, True)

        # Daemon: a notifier hung past its timeout must not keep flowsh alive at exit.
        t = threading.Thread(target=work, name=f"flowsh-notify-{name}", daemon=True)
        t.start()
        threads.append((name, t, timeout))
    start = time.monotonic()
    for name, t, timeout in threads:
        # Each channel gets its own timeout from the moment all were started.
        t.join(max(0.0, timeout - (time.monotonic() - start)) + 0.5)
        if t.is_alive():
            results[name] = Delivery(name, False, f"timed out after {timeout:g}s")
    out = []
    for name in dict.fromkeys(names):
        res = results.get(name) or Delivery(name, False, "no result")
        if not res.ok and not quiet:
            warn(f"notify channel {name!r} failed to send {alert.event} alert: {res.error}")
        out.append(res)
    return out
