"""`flowsh init`: the scaffold is valid, runs, and teaches the keys."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from flowsh.loader import load_workflow

FLOWSH = [sys.executable, "-m", "flowsh"]


def flowsh(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FLOWSH, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False, stdin=subprocess.DEVNULL)


def test_init_scaffold_validates_and_runs(tmp_path: Path) -> None:
    r = flowsh("init", "nightly", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    wf_file, lib = tmp_path / "nightly.yaml", tmp_path / "lib.sh"
    text = wf_file.read_text()
    for key in ("params:", "env:", "source: lib.sh", "overlap:", "defaults:", "retries:",
                "timeout:", "needs:", "always: true", "notify:", "schedule:", "FLOWSH_OUTPUT"):
        assert key in text, key
    assert oct(wf_file.stat().st_mode & 0o777) == "0o600"
    wf = load_workflow(wf_file)
    assert wf.name == "nightly"
    assert [s.name for s in wf.steps] == ["extract", "report", "cleanup"]
    assert flowsh("validate", "nightly.yaml", cwd=tmp_path).returncode == 0
    r = flowsh("run", "nightly.yaml", "day=2026-11-25", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "extracting 2026-11-25\nreport: 1 row(s) for 2026-11-25\n"
    assert lib.read_text().startswith("#!/bin/bash\n")
    shellcheck = subprocess.run(["shellcheck", "-s", "bash", str(lib)], capture_output=True,
                                text=True, check=False)
    assert shellcheck.returncode in (0, 1)  # no parse errors (exit 2+ would be a bad file)
    assert "SC1" not in shellcheck.stdout  # SC1xxx are syntax-level problems


def test_init_never_overwrites_without_force(tmp_path: Path) -> None:
    assert flowsh("init", "a", cwd=tmp_path).returncode == 0
    (tmp_path / "lib.sh").write_text("# mine\n")
    r = flowsh("init", "b", cwd=tmp_path)
    assert r.returncode == 2
    assert "lib.sh already exists" in r.stderr
    assert not (tmp_path / "b.yaml").exists()
    assert (tmp_path / "lib.sh").read_text() == "# mine\n"
    assert flowsh("init", "b", "--force", cwd=tmp_path).returncode == 0
    assert (tmp_path / "lib.sh").read_text() != "# mine\n"


def test_init_default_name_is_the_directory(tmp_path: Path) -> None:
    d = tmp_path / "sales-report"
    d.mkdir()
    assert flowsh("init", cwd=d).returncode == 0
    assert load_workflow(d / "sales-report.yaml").name == "sales-report"


def test_init_from_script(tmp_path: Path) -> None:
    scripts = tmp_path / "bin"
    scripts.mkdir()
    s = scripts / "back up.sh"
    s.write_text('#!/bin/bash\necho "backing up from $PWD"\n')
    s.chmod(0o755)
    r = flowsh("init", "--from", "bin/back up.sh", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    wf = load_workflow(tmp_path / "back_up.yaml")
    assert wf.name == "back_up"
    assert wf.steps[0].script == "bin/back up.sh"
    r = flowsh("run", "../back_up.yaml", cwd=tmp_path / "bin")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"backing up from {tmp_path}\n"
    assert not os.path.exists(tmp_path / "lib.sh")


def test_init_from_missing_script(tmp_path: Path) -> None:
    r = flowsh("init", "--from", "nope.sh", cwd=tmp_path)
    assert r.returncode == 2
    assert "no such file" in r.stderr


def _same_as_bash(tmp_path: Path, script: str, name: str) -> tuple[str, str]:
    """What `bash SCRIPT` writes to ran.txt, and what the workflow `init --from` made does."""
    (tmp_path / f"{name}.sh").write_text(script)
    (tmp_path / "ran.txt").unlink(missing_ok=True)
    res = flowsh("init", "--from", f"{name}.sh", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    subprocess.run(["bash", f"{name}.sh"], cwd=tmp_path, check=True, timeout=60)
    by_bash = (tmp_path / "ran.txt").read_text()
    (tmp_path / "ran.txt").unlink()
    res = flowsh("run", f"{name}.yaml", "--quiet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    return by_bash, (tmp_path / "ran.txt").read_text()


def test_init_from_keeps_heredocs_background_jobs_and_any_entry_name(tmp_path: Path) -> None:
    # A heredoc's text is data (`c inside heredoc` is no call of c); `a &` ... `wait` stay
    # one step (apart, a would be stopped with its step); run_all "$@" is the entry.
    job = ("#!/bin/bash\na() { sleep 0.3; echo 'a ran' >> ran.txt; }\n"
           "c() { echo 'c ran' >> ran.txt; }\n"
           "main() {\n  a &\n  cat <<EOT >> ran.txt\nc inside heredoc\nEOT\n  wait\n}\n"
           'main "$@"\n')
    by_bash, by_flowsh = _same_as_bash(tmp_path, job, "job")
    assert sorted(by_flowsh.splitlines()) == sorted(by_bash.splitlines()) == [
        "a ran", "c inside heredoc"]
    entry = ("#!/bin/bash\nstep_one() { echo one >> ran.txt; }\n"
             "step_two() { echo two >> ran.txt; }\n"
             'run_all() {\n  step_one\n  step_two\n}\nrun_all "$@"\n')
    by_bash, by_flowsh = _same_as_bash(tmp_path, entry, "entry")
    assert by_flowsh == by_bash == "one\ntwo\n"
    wf = load_workflow(tmp_path / "entry.yaml")
    assert [s.name for s in wf.steps] == ["step_one", "step_two"]
    assert "\\u00" not in (tmp_path / "job.yaml").read_text()  # `&`, not `\u0026`
