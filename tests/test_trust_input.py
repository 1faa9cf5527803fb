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
    # read as YAML, which refused them already: x's 99th bracket, or libyaml's own limit
    ("flow.json", STEP_JSON + "[" * 150 + "]" * 150 + "}}", f"1:{len(STEP_JSON) + 99}"),
    ("flow.json", STEP_JSON + "[" * 5000 + "]" * 5000 + "}}", f"1:{len(STEP_JSON) + 999}"),
])
def test_toml_and_json_nested_deeper_than_100_levels_are_refused(
        tmp_path: Path, command: list[str], name: str, text: str, where: str) -> None:
    (tmp_path / name).write_text(text)
    res = flowsh(*command, name, cwd=tmp_path)
    message = ("malformed YAML: exceeded maximum nesting depth"
               if name.endswith(".json") and "[" * 1001 in text else "mappings and lists nest deeper than 100 levels")
    refused(res, f"{name}:{where}: {message}")
    assert not (tmp_path / "ran").exists()
