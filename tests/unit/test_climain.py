"""`flowsh run` without typer (flowsh/climain.py) makes exactly typer's call, or none.

The option table is checked against typer's own `run` command; the arguments the fast path
passes are compared with those typer passes over a corpus of command lines and over
generated ones; and real processes through both doors leave the same exit code, streams
and run record.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowsh import climain, plugins, runcmd

# Command lines the fast path must take (a plain `flowsh run` in its usual forms).
TAKEN = [
    ["f.yaml"],
    ["-q", "f.yaml"],
    ["f.yaml", "A=1", "B=two words", "C="],
    ["-j", "8", "f.yaml"],
    ["-j8", "--quiet", "f.yaml"],
    ["--jobs=3", "f.yaml", "X=1", "--json"],
    ["f.yaml", "--only", "a", "--only", "b,c", "--from", "x", "--until=y"],
    ["-n", "f.yaml"],
    ["--dry-run", "--resume", "f.yaml"],
    ["--state", "sqlite:///tmp/x.db", "--overlap", "wait", "--lock-timeout", "5s", "f.yaml"],
    ["--metrics-push", "http://h:9091", "--executor", "local", "f.yaml"],
    ["--quiet-on-success", "--skip-quietly", "--log", "out.log", "f.yaml"],
    ["--scheduled", "--scheduled-cron", "*/5 * * * *", "--scheduled-time", "2026-01-01T00:00Z",
     "f.yaml"],
    ["--force", "--force-step", "a", "--force-step=b,c", "f.yaml"],
    ["-j", "0", "f.yaml"],  # refused by the run itself (flowsh's message), not by the parser
    ["--overlap", "never", "f.yaml"],
    ["f.yaml", "=x", "A=1"],
]
# Left to typer: help, errors, values it converts or refuses, forms not worth a second parser.
LEFT = [
    [], ["-h"], ["--help"], ["f.yaml", "--help"], ["-q"], ["--", "f.yaml"], ["-", "A=1"],
    ["-j", "x", "f.yaml"], ["-j", "-1", "f.yaml"], ["-j", "٣", "f.yaml"], ["-j"],
    ["--jobs"], ["f.yaml", "--state"], ["--quiet=1", "f.yaml"], ["-qn", "f.yaml"],
    ["--no-quiet", "f.yaml"], ["--bogus", "f.yaml"], ["-q", "-q", "f.yaml"],
    ["-j", "1", "-j", "2", "f.yaml"], ["--state", "", "f.yaml"], ["--log=", "f.yaml"],
    ["", "A=1"], ["--state", "-x", "f.yaml"], ["-x", "f.yaml"], ["-j=3", "f.yaml"],
]


def _kind(param: Any) -> str:
    if getattr(param, "is_flag", False):
        return "flag"
    if param.multiple:
        return "list"
    ann = param.type_descriptor.annotation
    return {int: "int", Path: "path", str: "str"}[ann]


def _typer_run_command() -> Any:
    from flowsh.cli import build_app

    return typer.main.get_command(build_app("run")).commands["run"]  # type: ignore[attr-defined]


def test_option_table_is_typers() -> None:
    """Every option of typer's `run` is in RUN_OPTIONS with its parameter, kind and
    environment variable, and nothing else is: an option added to `run_cmd` fails here
    until the fast path knows it."""
    cmd = _typer_run_command()
    options = [p for p in cmd.params if p.param_type_name == "option"]
    arguments = [p.name for p in cmd.params if p.param_type_name == "argument"]
    table = {name: (p.name, _kind(p)) for p in options for name in [*p.opts, *p.secondary_opts]}
    assert table == climain.RUN_OPTIONS
    assert {p.name: p.envvar for p in options if p.envvar} == climain.RUN_ENVVARS
    assert tuple(arguments) == climain.RUN_ARGUMENTS


def test_run_command_takes_run_cmds_parameters() -> None:
    from flowsh.commands.core import run_cmd

    assert list(inspect.signature(run_cmd).parameters) == \
        list(inspect.signature(runcmd.run_command).parameters)


def _typer_kwargs(args: list[str], env: dict[str, str]) -> dict[str, Any] | None:
    """What typer calls `run` with for `flowsh run ARGS` (None: it refuses them)."""
    from flowsh.cli import build_app
    from flowsh.commands.core import run_cmd

    app = build_app("run")
    info = next(i for i in app.registered_commands if i.name == "run")
    got: dict[str, Any] = {}

    @functools.wraps(run_cmd)
    def record(**kwargs: Any) -> None:
        got.update(kwargs)

    saved, info.callback = info.callback, record
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        app(["run", *args], prog_name="flowsh", standalone_mode=False)
    except Exception:  # click's usage errors, typer's conversion errors
        return None
    finally:
        info.callback = saved
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return got


@pytest.mark.parametrize("env", [{}, {"FLOWSH_STATE": "json:///tmp/s"}, {"FLOWSH_STATE": ""}])
@pytest.mark.parametrize("args", TAKEN, ids=" ".join)
def test_taken_lines_are_typers_call(args: list[str], env: dict[str, str]) -> None:
    fast = climain.parse_run(args, env)
    assert fast is not None
    assert fast == _typer_kwargs(args, env)


@pytest.mark.parametrize("args", LEFT, ids=repr)
def test_other_lines_are_left_to_typer(args: list[str]) -> None:
    assert climain.parse_run(args, {}) is None


_TOKENS = st.sampled_from([
    *climain.RUN_OPTIONS, "--jobs=2", "-j4", "--log=x", "--only=a", "--state=", "-qn", "--",
    "-", "-h", "--help", "--nope", "f.yaml", "A=1", "B=", "=", "", "8", "0", "-1", "x y",
    "08", "1_0", "¹", "--from=-a",
])


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=st.lists(_TOKENS, max_size=7), state=st.sampled_from([None, "", "pg://h/db"]))
def test_any_line_is_typers_call_or_left(args: list[str], state: str | None) -> None:
    env = {} if state is None else {"FLOWSH_STATE": state}
    fast = climain.parse_run(args, env)
    if fast is not None:
        assert fast == _typer_kwargs(args, env)


def test_left_to_typer_when_a_plugin_adds_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    class Extra:
        @plugins._hookimpl
        def flowsh_register_commands(self, app: typer.Typer) -> None:
            pass

    assert plugins.builtin_only("run", "flowsh.commands.core")
    plugins.get_plugin_manager().register(Extra(), name="extra")
    assert not plugins.builtin_only("run", "flowsh.commands.core")
    assert climain.run_fast(["f.yaml"]) is False  # nothing ran: no file was even read


def test_left_to_typer_when_core_is_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWSH_DISABLE_PLUGINS", "core")
    plugins.reset()
    assert not plugins.builtin_only("run", "flowsh.commands.core")


@pytest.mark.parametrize("var", ["_FLOWSH_COMPLETE", "FLOWSH_DEBUG", "FLOWSH_TRACE_PLUGINS"])
def test_left_to_typer_for_completion_and_debug(var: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(var, "1")
    assert climain.run_fast(["f.yaml"]) is False


# -- real processes through both doors ----------------------------------------------------

FLOW = """\
name: diff
params:
  WHO: world
  NEED:
steps:
  - name: a
    run: echo "hello $WHO"
  - name: b
    needs: [a]
    run: 'echo out; echo err >&2; test "$NEED" != fail'
"""

E2E = [
    ["FLOW", "NEED=1"],
    ["-q", "FLOW", "NEED=1", "WHO=you"],
    ["FLOW", "NEED=fail"],
    ["FLOW"],  # a required param missing: flowsh's refusal
    ["--json", "FLOW", "NEED=1"],
    ["-n", "FLOW", "NEED=1"],
    ["-j", "0", "FLOW", "NEED=1"],
    ["--overlap", "never", "FLOW", "NEED=1"],
    ["--only", "a", "FLOW", "NEED=1"],
    ["--only", "b", "FLOW", "NEED=1"],  # refused: a has no successful run to borrow from
    ["--log", "LOG", "--quiet-on-success", "FLOW", "NEED=fail"],
    ["missing.yaml"],
    ["-j", "x", "FLOW"],  # typer's message, through both doors
]

_TYPER_DOOR = "import sys; from flowsh.cli import main; main()"
_VOLATILE = re.compile(
    r"\d{8}T\d{6}-[0-9a-f]{8}|\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d:?\d\d|Z)?"
    r"|\d+(\.\d+)?m?s\b|\"(pid|duration|duration_s|ts|time|started_at|ended_at|heartbeat)\": [^,}]+")


def _normal(text: str, tmp: Path) -> str:
    return _VOLATILE.sub("~", text.replace(str(tmp), "TMP"))


def _through(door: str, args: list[str], tmp: Path) -> tuple[int, str, str, str]:
    home = tmp / f"home-{door}"
    flow = tmp / "flow.yaml"
    log = tmp / f"{door}.log"
    argv = [a.replace("FLOW", str(flow)).replace("LOG", str(log)) for a in args]
    env = {**os.environ, "FLOWSH_HOME": str(home)}
    pre = ["-m", "flowsh"] if door == "fast" else ["-c", _TYPER_DOOR]
    res = subprocess.run([sys.executable, *pre, "run", *argv], env=env, cwd=tmp, text=True,
                         capture_output=True, timeout=120, check=False)
    hist = subprocess.run([sys.executable, "-m", "flowsh", "history", "--json"], env=env,
                          text=True, capture_output=True, timeout=120, check=False)
    runs = json.loads(hist.stdout) if hist.returncode == 0 and hist.stdout.strip() else []
    record = json.dumps(runs, sort_keys=True)
    logged = log.read_text() if log.exists() else ""
    return (res.returncode, _normal(res.stdout, tmp), _normal(res.stderr, tmp),
            _normal(record + logged.replace(str(log), "LOG"), tmp))


@pytest.mark.parametrize("args", E2E, ids=" ".join)
def test_both_doors_leave_the_same(args: list[str], tmp_path: Path) -> None:
    (tmp_path / "flow.yaml").write_text(FLOW)
    assert _through("fast", args, tmp_path) == _through("typer", args, tmp_path)


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), EOFError(),
                                 BrokenPipeError(32, "Broken pipe")], ids=repr)
def test_what_ends_a_command_ends_it_as_typer_does(exc: BaseException,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C, end of input and a closed pipe inside `run`: the exit code and stderr typer's
    `_main` makes of them."""
    from flowsh.cli import build_app
    from flowsh.commands.core import run_cmd

    def boom(*args: Any, **kwargs: Any) -> None:
        raise exc

    out, err = sys.stdout, sys.stderr
    app = build_app("run")
    info = next(i for i in app.registered_commands if i.name == "run")
    saved, info.callback = info.callback, functools.wraps(run_cmd)(boom)
    try:
        with pytest.raises(SystemExit) as by_typer:
            app(["run", "f.yaml"], prog_name="flowsh")
    finally:
        info.callback = saved
        sys.stdout, sys.stderr = out, err
    typer_err = capsys.readouterr().err
    monkeypatch.setattr(runcmd, "run_command", boom)
    code = climain.as_typer_would(climain.parse_run(["f.yaml"], {}) or {})
    sys.stdout, sys.stderr = out, err
    assert (code, capsys.readouterr().err) == (by_typer.value.code, typer_err)


def test_a_plugin_that_replaces_run_gets_it(tmp_path: Path) -> None:
    """An installed plugin (an entry point) that registers its own `run`: `flowsh run FILE`
    is its command, as typer would have made it, not the built-in one."""
    where = tmp_path / "plug"
    info = where / "myrun-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: myrun\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[flowsh]\nmyrun = myrun\n")
    (where / "myrun.py").write_text(
        "import typer\nfrom flowsh.api import hookimpl\n\n"
        "@hookimpl\ndef flowsh_register_commands(app):\n"
        "    @app.command('run')\n    def run(file: str) -> None:\n"
        "        typer.echo(f'my run of {file}')\n")
    env = {**os.environ, "FLOWSH_LOAD_ENTRYPOINTS": "1", "PYTHONPATH": str(where)}
    res = subprocess.run([sys.executable, "-m", "flowsh", "run", "f.yaml"], env=env,
                         cwd=tmp_path, text=True, capture_output=True, timeout=120, check=False)
    assert (res.returncode, res.stdout) == (0, "my run of f.yaml\n"), res.stderr
