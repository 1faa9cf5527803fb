"""The smaller first-hour papercuts of issue 18, each with the behaviour a user sees."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flowsh.commands.plugins import columns
from tests.conftest import run_cli


def _help(*cmd: str) -> str:
    r = run_cli(*cmd, "--help", env={"COLUMNS": "120"})
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_help_names_arguments_as_users_write_them() -> None:
    run = _help("run")
    assert run.startswith("Usage: flowsh run [OPTIONS] FILE [KEY=VALUE]...\n")
    assert re.search(r"^  FILE\s+Workflow file", run, re.M)
    assert re.search(r"^  KEY=VALUE\s+Parameters as KEY=VALUE", run, re.M)
    assert "--state URL" in run and "-j, --jobs N" in run
    assert "Usage: flowsh validate [OPTIONS] FILE...\n" in _help("validate")
    assert "Usage: flowsh status [OPTIONS] [RUN_ID]\n" in _help("status")
    assert "Usage: flowsh wrap [OPTIONS] COMMAND [ARGS]...\n" in _help("wrap")
    # A value from a fixed set says which kind, not TEXT (review of issue 18).
    assert "--misfire MODE" in _help("scheduler", "run")
    assert "--severity LEVEL" in _help("notify", "test")
    send = _help("notify", "send")
    assert "--event EVENT" in send and "--severity LEVEL" in send and "--run-id RUN_ID" in send
    # Nowhere in the generated reference: typer's {file} or <list[str]>-style types.
    ref = (Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text()
    assert not re.search(r"\{[a-z_]+\}|<(?:list\[)?(?:str|int|path|float|Path)\]?>", ref)


def test_one_step_is_not_one_steps(tmp_path: Path) -> None:
    flow = tmp_path / "one.yaml"
    flow.write_text("steps: [{name: a, run: 'true'}]\n")
    r = run_cli("run", str(flow))
    assert r.returncode == 0
    assert re.search(r"one: starting run \S+ \(1 step\)", r.stderr), r.stderr
    assert "(1 steps)" not in r.stderr
    assert "workflow one: 1 step," in run_cli("run", str(flow), "--dry-run").stdout
    two = tmp_path / "two.yaml"
    two.write_text("steps: [{name: a, run: 'true'}, {name: b, run: 'true'}]\n")
    assert "(2 steps)" in run_cli("run", str(two)).stderr


@pytest.mark.skipif(not shutil.which("unshare"), reason="needs unshare(1)")
def test_an_unreadable_workflow_file_is_one_line(tmp_path: Path) -> None:
    """As root, permissions do not stop a read: run flowsh in a user namespace where the
    file's owner (us, mapped to uid 1000) has no capabilities and mode 000 applies."""
    flow = tmp_path / "secret.yaml"
    flow.write_text("steps: [{name: a, run: 'true'}]\n")
    flow.chmod(0)
    if os.geteuid() == 0:
        prefix = ["unshare", "--user", "--map-user=1000"]
        if subprocess.run([*prefix, "true"], capture_output=True, check=False).returncode:
            pytest.skip("no unprivileged user namespaces here (container policy)")
        probe = subprocess.run([*prefix, "cat", str(flow)], capture_output=True, text=True,
                               check=False)
        if "Permission denied" not in probe.stderr:
            pytest.skip("user namespaces do not drop DAC override here")
    else:
        prefix = []
    for cmd in (["run"], ["validate"], ["graph"], ["export", "--bash"]):
        r = subprocess.run([*prefix, sys.executable, "-m", "flowsh", *cmd, str(flow)],
                           capture_output=True, text=True, timeout=60, check=False,
                           env={**os.environ})
        assert r.returncode == 2, (cmd, r.stderr)
        lines = r.stderr.splitlines()
        assert len(lines) == 1, (cmd, r.stderr)
        assert f"{flow}: cannot read: Permission denied" in lines[0]
        assert "Usage:" not in r.stderr


def test_plugins_columns_align_whatever_the_widths() -> None:
    rows = [("NAME", "FROM", "HOOKS"), ("a", "built-in", "x, y"),
            ("healthchecks", "flowsh-healthchecks-extra 0.1.0", "z")]
    out = columns(rows)
    starts = {line.index(hooks) for line, (_, _, hooks) in zip(out, rows, strict=True)}
    assert len(starts) == 1, out
    r = run_cli("plugins", env={"COLUMNS": "300"})
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["NAME", "FROM", "HOOKS"]
    hook_col = lines[0].index("HOOKS")
    assert all(ln[hook_col:].startswith("flowsh_") for ln in lines[1:]), r.stdout


def test_export_systemd_creates_the_output_directory(tmp_path: Path) -> None:
    flow = tmp_path / "nightly.yaml"
    flow.write_text("name: nightly\nschedule: '0 2 * * *'\nsteps: [{name: a, run: 'true'}]\n")
    out = tmp_path / "units" / "user"
    r = run_cli("export", str(flow), "--systemd", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["flowsh-nightly.service",
                                                     "flowsh-nightly.timer"]
    assert "--resume --scheduled --quiet" in (out / "flowsh-nightly.service").read_text()
    afile = tmp_path / "a-file"
    afile.write_text("")
    r = run_cli("export", str(flow), "--systemd", "-o", str(afile))
    assert r.returncode == 2 and "-o must be a directory" in r.stderr
