"""Bad input gets one clear line, exit 2, never a traceback, never a hang: alias bombs and
deep TOML/JSON (FILE-8), Ctrl-C at start-up, booleans in notify channels' numbers (FILE-5).

Every command here is a real `flowsh` process under a timeout (and, where the broken
version ate memory, an address-space limit), so a regression fails instead of hanging the
suite or the machine.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import sigint_default

# Far above what `flowsh validate` needs (~60 MB); a bomb expanded runs into it at once.
MEMORY = 1 << 30


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def flowsh(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flowsh", *args], cwd=cwd, env=dict(os.environ),
                          capture_output=True, text=True, timeout=timeout, check=False,
                          preexec_fn=_limited)


def refused(res: subprocess.CompletedProcess[str], line: str) -> None:
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode == 2, (res.returncode, res.stderr)
    # `run` and `export` say "flowsh: error: " first
    assert res.stderr.strip().splitlines() in ([line], [f"flowsh: error: {line}"]), res.stderr


def _laughs(levels: int = 9) -> str:
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


# -- FILE-8: aliases ---------------------------------------------------------------------

@pytest.mark.parametrize("command", [["validate"], ["run"], ["export", "--bash"]])
def test_an_alias_bomb_is_refused_at_once_at_the_alias(tmp_path: Path, command: list[str]
                                                       ) -> None:
    flow = tmp_path / "flow.yaml"
    flow.write_text("steps:\n  - {name: a, run: touch ran}\n" + _laughs())
    res = flowsh(*command, "flow.yaml", cwd=tmp_path, timeout=30)
    refused(res, "flow.yaml:9:10: alias *l5: aliases expand to more than 1,000,000 nodes")
    assert not (tmp_path / "ran").exists()


def test_the_user_config_is_refused_alike(tmp_path: Path) -> None:
    config = Path(os.environ["XDG_CONFIG_HOME"]) / "flowsh" / "config.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("defaults: {timeout: 5s}\n" + _laughs())
    (tmp_path / "flow.yaml").write_text("steps:\n  - {name: a, run: touch ran}\n")
    res = flowsh("validate", "flow.yaml", cwd=tmp_path, timeout=30)
    refused(res, f"{config}:8:10: alias *l5: aliases expand to more than 1,000,000 nodes")


# -- FILE-8: TOML and JSON ---------------------------------------------------------------

STEP_TOML = "[[steps]]\nname = 'a'\nrun = 'touch ran'\n"
STEP_JSON = '{"steps": [{"name": "a", "run": "touch ran"}], "executor_options": {"x": '


@pytest.mark.parametrize("command", [["validate"], ["run"], ["export", "--bash"]])
@pytest.mark.parametrize(("name", "text", "where"), [
    # 5000: tomllib's RecursionError; 150: data deeper than FILE-8 allows, as YAML's is.
    # x's list is at depth 3 (steps 1, its table 2): its 98th bracket is at 100.
    ("flow.toml", STEP_TOML + "x = " + "[" * 5000 + "]" * 5000 + "\n", "4:102"),
    ("flow.toml", STEP_TOML + "x = " + "[" * 150 + "]" * 150 + "\n", "4:102"),
    ("flow.toml", STEP_TOML + "[t]\n" + ".".join(["k"] * 3000) + " = 1\n", "5:197"),
    # read as YAML, which refused them already: x's 99th bracket
    ("flow.json", STEP_JSON + "[" * 150 + "]" * 150 + "}}", f"1:{len(STEP_JSON) + 99}"),
])
def test_toml_and_json_nested_deeper_than_100_levels_are_refused(
        tmp_path: Path, command: list[str], name: str, text: str, where: str) -> None:
    (tmp_path / name).write_text(text)
    res = flowsh(*command, name, cwd=tmp_path)
    refused(res, f"{name}:{where}: mappings and lists nest deeper than 100 levels")
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("command", [["validate"], ["run"]])
def test_json_nested_past_libyamls_own_limit_is_refused(tmp_path: Path,
                                                        command: list[str]) -> None:
    """Past 1,000 levels, a libyaml that has a limit of its own (0.2.5's scanner looks that
    far ahead) refuses first, at its 1,000th bracket; one without reaches FILE-8's check at
    the 100th. Either way one line, FILE:LINE:COL, exit 2, nothing run."""
    (tmp_path / "flow.json").write_text(STEP_JSON + "[" * 5000 + "]" * 5000 + "}}")
    res = flowsh(*command, "flow.json", cwd=tmp_path)
    lines = [f"flow.json:1:{len(STEP_JSON) + 99}: mappings and lists nest deeper than 100 "
             "levels", f"flow.json:1:{len(STEP_JSON) + 999}: malformed YAML: exceeded maximum "
             "nesting depth"]
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.strip().removeprefix("flowsh: error: ") in lines, res.stderr
    assert not (tmp_path / "ran").exists()


# -- Ctrl-C at start-up ------------------------------------------------------------------

# On PYTHONPATH as sitecustomize: logs each module the import system looks for, and where
# a run gets under way ("!run": its state opened, or a process started); sends this process
# SIGINT when it looks for $SIGINT_AT, so the Ctrl-C lands in that import.
SITECUSTOMIZE = """
import os, signal, sys

def _log(line):
    if os.environ.get("IMPORT_LOG"):
        with open(os.environ["IMPORT_LOG"], "a") as fh:
            fh.write(line + "\\n")

class _Finder:
    def find_spec(self, name, path=None, target=None):
        _log(name)
        if name == os.environ.get("SIGINT_AT"):
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None

def _audit(event, args):
    if event in ("sqlite3.connect", "subprocess.Popen", "os.posix_spawn", "os.fork"):
        _log("!run")

sys.meta_path.insert(0, _Finder())
sys.addaudithook(_audit)
"""


@pytest.mark.parametrize("command", ["validate", "run"])
def test_ctrl_c_while_importing_ends_quietly_with_130(tmp_path: Path, command: str) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    (tmp_path / "flow.yaml").write_text("steps:\n  - {name: a, run: touch ran}\n")
    log = tmp_path / "imports"
    # No parse or plugin cache: every run imports all it can (YAML's reader included), and
    # the same modules as the run that logged them.
    env = {**os.environ, "PYTHONPATH": str(site), "IMPORT_LOG": str(log),
           "FLOWSH_NO_CACHE": "1"}

    def flowsh_at(module: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "flowsh", command, "flow.yaml"],
                              cwd=tmp_path, env={**env, "SIGINT_AT": module}, text=True,
                              capture_output=True, timeout=60, check=False,
                              preexec_fn=sigint_default)

    assert flowsh_at("").returncode == 0
    (tmp_path / "ran").unlink(missing_ok=True)
    names = log.read_text().split()
    # What is imported once flowsh's own code runs (before it, while Python starts and the
    # package's two small first modules load, Ctrl-C is Python's to handle), until a run
    # gets under way (a Ctrl-C then is one during the run: recorded, summed up, exit 130).
    names = names[names.index("flowsh.__main__") + 1:]
    later = list(dict.fromkeys(names[:names.index("!run")] if "!run" in names else names))
    assert len(later) > 40, later
    log.unlink()
    del env["IMPORT_LOG"]
    for module in later[:: max(1, len(later) // 30)] + later[-1:]:
        res = flowsh_at(module)
        assert "Traceback" not in res.stderr, (module, res.stderr)
        assert res.returncode == 130, (module, res.returncode, res.stderr)
        assert res.stderr.strip() in ("", "flowsh: error: interrupted"), (module, res.stderr)
        assert not (tmp_path / "ran").exists(), module


# -- FILE-5: notify channels' numbers ----------------------------------------------------

@pytest.mark.parametrize(("channel", "key", "word"), [
    ("type: email, to: ops@example.com, port: true", "port", "true"),
    ("type: email, to: ops@example.com, timeout: yes", "timeout", "true"),
    ("type: webhook, url: 'http://127.0.0.1:9', retries: yes", "retries", "true"),
    ("type: webhook, url: 'http://127.0.0.1:9', retry_delay: no", "retry_delay", "false"),
    ("type: command, run: 'true', timeout: false", "timeout", "false"),
    ("type: log, timeout: true", "timeout", "true"),  # `log` never read its timeout
])
@pytest.mark.parametrize("where", ["workflow", "user config"])
def test_a_boolean_in_a_notify_channels_number_is_refused(
        tmp_path: Path, channel: str, key: str, word: str, where: str) -> None:
    block = f"notify:\n  channels:\n    c: {{{channel}}}\n"
    col = len("    c: {") + channel.index(f"{key}:") + 1
    flow = "steps:\n  - {name: a, run: touch ran}\n"
    if where == "workflow":
        (tmp_path / "flow.yaml").write_text(flow + block)
        line = f"{(tmp_path / 'flow.yaml').resolve()}:5:{col}"  # the resolved path, as notify says
    else:
        config = Path(os.environ["XDG_CONFIG_HOME"]) / "flowsh" / "config.yaml"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(block)
        (tmp_path / "flow.yaml").write_text(flow)
        line = f"{config}"  # a user config's channel is named by file (no position kept)
    for command in ("validate", "run"):
        res = flowsh(command, "flow.yaml", cwd=tmp_path)
        refused(res, f"{line}: notify channel 'c' key '{key}': expected a number, not {word}")
    assert not (tmp_path / "ran").exists()


def test_notify_channels_numbers_that_are_numbers_still_pass(tmp_path: Path) -> None:
    (tmp_path / "flow.yaml").write_text(
        "steps:\n  - {name: a, run: 'true'}\nnotify:\n  channels:\n"
        "    l: {type: log, timeout: 5s}\n"
        "    m: {type: email, to: ops@example.com, port: 2525, timeout: 3}\n"
        "    w: {type: webhook, url: 'http://127.0.0.1:9', retries: 0, retry_delay: 0.5}\n")
    res = flowsh("validate", "flow.yaml", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
