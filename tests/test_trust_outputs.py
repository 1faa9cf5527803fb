"""Outputs are bytes-exact and cannot plant the environment (issue 11, item 2), secret outputs
survive a resume (item 3), multi-line secrets are masked line by line (item 4)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowsh.engine import RunOptions, run_workflow
from flowsh.loader import load_workflow
from flowsh.outputs import OutputError, parse_outputs
from flowsh.state import RunRecord
from flowsh.store import open_backend


def run(path: Path, **opts: object) -> RunRecord:
    return run_workflow(load_workflow(path), RunOptions(**opts))  # type: ignore[arg-type]


def test_carriage_return_is_data_not_a_line_break(
    write_flow: Callable[..., Path], tmp_path: Path
) -> None:
    path = write_flow("""
        steps:
          - {name: a, run: 'printf "MSG=harmless\\rPATH=/x\\n" >> "$FLOWSH_OUTPUT"'}
          - {name: b, needs: [a], run: 'printf %s "$MSG" > msg; printf %s "$PATH" > path'}
    """)
    rec = run(path)
    assert rec.status == "succeeded", rec.steps
    assert (tmp_path / "msg").read_bytes() == b"harmless\rPATH=/x"
    assert (tmp_path / "path").read_text() == os.environ["PATH"]
    assert rec.steps["a"].outputs == {"MSG": "harmless\rPATH=/x"}


@pytest.mark.parametrize("line", [
    "PATH=/x", "BASH_ENV=/tmp/evil", "ENV=/tmp/evil", "IFS=x", "LD_PRELOAD=/x.so",
    "BASH_FUNC_ls%%=() { :; }", "FLOWSH_OUTPUT=/x", "flowsh_run_id=x", "1BAD=x", "A B=x",
    "just some text", "BLOCK<<EOF",
])
def test_a_line_that_is_not_a_valid_output_fails_the_step_naming_it(
    write_flow: Callable[..., Path], tmp_path: Path, line: str
) -> None:
    (tmp_path / "line").write_text(line + "\n")
    path = write_flow("""
        steps:
          - {name: a, run: 'echo OK=1 >> "$FLOWSH_OUTPUT"; cat line >> "$FLOWSH_OUTPUT"'}
          - {name: b, needs: [a], run: 'touch ran'}
    """)
    rec = run(path)
    a = rec.steps["a"]
    assert rec.status == "failed" and a.status == "failed"
    assert a.message is not None and "$FLOWSH_OUTPUT line 2" in a.message
    name = line.partition("=")[0].partition("<<")[0]
    assert name[:20] in a.message
    assert a.outputs == {}
    assert not (tmp_path / "ran").exists()


def test_parse_outputs_forms() -> None:
    data = b"A=1\n\nB<<END\nx\r\n\xff\xfe\nEND\nC=a=b\r\n"
    out = parse_outputs(data)
    assert out["A"] == "1" and out["C"] == "a=b\r"
    assert os.fsencode(out["B"]) == b"x\r\n\xff\xfe"
    with pytest.raises(OutputError, match="no line 'END' ends the block"):
        parse_outputs(b"B<<END\nx\n")


# Values without newline and NUL (an environment variable holds neither), any other byte.
_value = st.binary(max_size=40).filter(lambda b: b"\n" not in b and b"\0" not in b)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(values=st.lists(_value, min_size=1, max_size=6),
       block=st.binary(max_size=60).filter(lambda b: b"\0" not in b))
def test_fuzz_values_reach_downstream_byte_for_byte(
    write_flow: Callable[..., Path], tmp_path: Path, values: list[bytes], block: bytes
) -> None:
    src = tmp_path / "src"
    lines = b"".join(b"V%d=%s\n" % (i, v) for i, v in enumerate(values))
    delim = b"END_" + os.urandom(6).hex().encode()
    src.write_bytes(lines + b"BLK<<" + delim + b"\n" + block + b"\n" + delim + b"\n")
    got = tmp_path / "got"
    got.mkdir(exist_ok=True)
    path = write_flow(f"""
        steps:
          - {{name: a, run: 'cat src >> "$FLOWSH_OUTPUT"'}}
          - name: b
            needs: [a]
            run: |
              for i in $(seq 0 {len(values) - 1}); do v=V$i; printf %s "${{!v}}" > got/$i; done
              printf %s "$BLK" > got/blk
    """)
    rec = run(path)
    assert rec.status == "succeeded", rec.steps["a"].message
    for i, v in enumerate(values):
        assert (got / str(i)).read_bytes() == v
    assert (got / "blk").read_bytes() == block


def test_resume_hands_the_real_secret_output_to_later_steps(
    write_flow: Callable[..., Path], tmp_path: Path, home: Path
) -> None:
    path = write_flow("""
        steps:
          - {name: mint, run: 'echo "SECRET_KEY=s3cr3t-value" >> "$FLOWSH_OUTPUT"'}
          - {name: use, needs: [mint], run: 'test -e go && printf %s "$SECRET_KEY" > got'}
    """)
    first = run(path)
    assert first.status == "failed"
    assert first.steps["mint"].outputs == {"SECRET_KEY": "***"}
    secret_file = home / "runs" / first.run_id / "mint.secret-outputs.json"
    assert secret_file.stat().st_mode & 0o777 == 0o600
    backend = open_backend()
    try:
        stored = backend.load_run(first.run_id)
    finally:
        backend.close()
    assert "s3cr3t" not in repr(stored)
    (tmp_path / "go").touch()
    again = run(path, resume=stored)
    assert again.status == "succeeded"
    assert (tmp_path / "got").read_text() == "s3cr3t-value"
    assert not secret_file.exists()  # the run succeeded: nothing left to resume


def test_multiline_secret_masked_line_by_line_in_logs_and_console(
    write_flow: Callable[..., Path], tmp_path: Path, home: Path
) -> None:
    path = write_flow("""
        params:
          DB_PASSWORD: "x"
        steps:
          - name: mint
            run: |
              { echo 'PRIVATE_KEY<<EOF'; echo 'key-line-one'; echo 'key-line-two'; echo EOF; } >> "$FLOWSH_OUTPUT"
          - name: show
            needs: [mint]
            run: 'echo "$PRIVATE_KEY"; echo "$DB_PASSWORD"'
    """)
    proc = subprocess.run(
        [sys.executable, "-m", "flowsh", "run", str(path), "DB_PASSWORD=pass-one\npass-two"],
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    run_id = next(p.name for p in (home / "runs").iterdir())
    logs = subprocess.run([sys.executable, "-m", "flowsh", "logs", run_id],
                          capture_output=True, text=True, timeout=120, check=False)
    step_log = (home / "runs" / run_id / "show.log").read_text()
    for text in (proc.stdout + proc.stderr, logs.stdout, step_log):
        for secret in ("key-line-one", "key-line-two", "pass-one", "pass-two"):
            assert secret not in text
    assert step_log.count("***") == 4


def test_killed_runner_resume_gets_secret_output(
    write_flow: Callable[..., Path], tmp_path: Path, home: Path
) -> None:
    """A kill -9 after the secret-minting step: `run --resume` hands the real value on."""
    path = write_flow("""
        steps:
          - {name: mint, run: 'echo "TOKEN_VALUE=tok-123456" >> "$FLOWSH_OUTPUT"'}
          - {name: wait, needs: [mint], run: 'touch started; while ! test -e go; do sleep 0.05; done'}
          - {name: use, needs: [wait], run: 'printf %s "$TOKEN_VALUE" > got'}
    """)
    proc = subprocess.Popen([sys.executable, "-m", "flowsh", "run", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (tmp_path / "started").exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (tmp_path / "go").touch()
    res = subprocess.run([sys.executable, "-m", "flowsh", "run", str(path), "--resume"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "got").read_text() == "tok-123456"


def test_multiline_secret_param_masked_in_alerts(
    write_flow: Callable[..., Path], tmp_path: Path
) -> None:
    path = write_flow("""
        params:
          DB_PASSWORD: "x"
        steps:
          - {name: leak, run: 'echo "$DB_PASSWORD"; exit 3'}
        notify:
          channels:
            team: {type: command, run: 'cat > alert.json'}
          routes: {critical: [team]}
          events: {run_failed: critical}
    """)
    proc = subprocess.run(
        [sys.executable, "-m", "flowsh", "run", str(path), "DB_PASSWORD=first-line\nsecond-line"],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    alert = (tmp_path / "alert.json").read_text()
    assert "leak" in alert and "***" in alert  # the log tail is there, masked
    assert "first-line" not in alert and "second-line" not in alert
    assert "first-line" not in proc.stderr + proc.stdout
