"""Red-team reproducers for this session's new start-up of the exported script (it starts
itself again with SIGINT/SIGTERM at their defaults when they were ignored on entry, TIME-2),
its clock (`printf '%(...)T'`, EPOCHREALTIME for the CSV's milliseconds) and the web UI's
links between a `call:` step and its child run. Each test failed on integ at bd8ac5c
unless its docstring says it is a guard.

Real processes only: the exported script under bash with the signal really ignored
(SIG_IGN set before exec, as `cmd &` in a non-interactive shell does), a real locale
built with localedef, a real `flowsh serve` and a headless Chromium.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import redteam_kit as kit
from tests.conftest import poll, run_cli

# Findings still open: strict xfails, so that a fix shows as an unexpected pass.
OPEN: frozenset[str] = frozenset()

_open_findings = kit.open_findings("rt15x", OPEN)

LONG = """\
name: long
steps:
  - name: a
    run: touch started; sleep 30; echo never > never
"""

ECHO = """\
name: echo
params:
  msg: d
  API_TOKEN: ""
steps:
  - name: a
    run: |
      cd "${OUTDIR:-.}"
      printf '%s' "$msg" > msg
      printf '%s' "${FLOWSH_SIGNALS_RESET-unset}" > mark
      printf '%s' "${flowsh_clock-unset} ${flowsh_start-unset} ${flowsh_i-unset} ${flowsh_limit-unset} ${flowsh_k-unset}" > names
"""


def _export(tmp_path: Path, text: str, name: str = "flow.sh") -> Path:
    flow = tmp_path / (name.rsplit(".", 1)[0] + ".yaml")
    flow.write_text(text)
    kit.ok(kit.flowsh("export", str(flow), "--bash", "-o", str(tmp_path / name),
                      cwd=tmp_path))
    return tmp_path / name


def _ignoring(*sigs: signal.Signals) -> Callable[[], None]:
    """What `cmd &` in a non-interactive shell does before exec: the signals ignored."""
    def pre() -> None:
        for s in sigs:
            signal.signal(s, signal.SIG_IGN)
    return pre


def _env(home: Path, **extra: str) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "FLOWSH_HOME": str(home), **extra}


def _interrupted(argv: list[str], cwd: Path, work: Path, env: dict[str, str],
                 sig: signal.Signals = signal.SIGINT) -> tuple[int, str]:
    """Start `argv` with `sig` ignored, wait for the step to start, send `sig`: the exit
    code and stderr. A run that the signal did not stop is killed after 20 s: exit None."""
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_ignoring(sig))
    try:
        poll(lambda: (work / "started").exists() or proc.poll() is not None,
             "the step to start", 30)
        assert proc.poll() is None, f"exited {proc.returncode} before the step: " + \
            (proc.stderr.read() if proc.stderr else "")
        proc.send_signal(sig)
        try:
            rc = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"{sig.name} did not stop the run") from None
        return rc, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- 1. the start-up: SIGINT/SIGTERM ignored on entry ------------------------------------


def test_a_caller_s_flowsh_signals_reset_does_not_skip_the_reset(tmp_path: Path,
                                                                   home: Path) -> None:
    """MED. FLOWSH_SIGNALS_RESET in the caller's environment (any value: a user's, a
    wrapper's copy of an environment) made the script believe it had already started
    itself again: with SIGINT ignored on entry, Ctrl-C then stopped nothing and the run
    went on to the end (issue 15's hang, back). Expected: 130, the step never finishes."""
    script = _export(tmp_path, LONG)
    for value in ("1", "0", "yes"):
        (tmp_path / "started").unlink(missing_ok=True)
        rc, err = _interrupted(["bash", str(script), "-q"], tmp_path, tmp_path,
                               _env(home, FLOWSH_SIGNALS_RESET=value))
        assert rc == 130, err
        assert not (tmp_path / "never").exists()


def test_a_script_bash_finds_on_path_resets_ignored_sigint(tmp_path: Path,
                                                          home: Path) -> None:
    """LOW. `bash etl.sh` where etl.sh is found on PATH (not in the current directory):
    bash gives $0 as typed (`etl.sh`) and BASH_SOURCE the file it found, so the check
    `BASH_SOURCE == $0` took it for a sourced script: it warned and Ctrl-C stopped
    nothing. Expected: started again from the file bash found, stopped by SIGINT."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = _export(bin_dir, LONG, "etl.sh")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    rc, err = _interrupted(["bash", "etl.sh", "-q"], elsewhere, bin_dir,
                           _env(home, PATH=f"{bin_dir}:/usr/bin:/bin"))
    assert script.exists() and rc == 130, err
    assert "warning" not in err


def test_a_script_named_with_a_leading_dash_starts_again(tmp_path: Path, home: Path) -> None:
    """LOW. A script whose name starts with `-`, run as `bash -- -etl.sh`: the second
    start ran `bash -etl.sh`, which bash read as options (`-.: invalid option`, exit 2):
    the run never started. Expected: it runs, and SIGINT stops it (130)."""
    _export(tmp_path, LONG, "-etl.sh")
    rc, err = _interrupted(["bash", "--", "-etl.sh", "-q"], tmp_path, tmp_path, _env(home))
    assert rc == 130, err


def test_an_env_that_forks_and_resets_nothing_does_not_start_the_script_for_ever(
        tmp_path: Path, home: Path) -> None:
    """Guard for the pid marker above (integ's marker, set or not, could not loop; the
    first cut of the fix did, and this failed on it). An `env` earlier on PATH that takes
    --default-signal but forks its command and resets nothing (a wrapper script): the
    second start's pid is not the marker, the signal is still ignored, and the script
    started itself again and again, each wrapper waiting on the next. Expected: it notices
    (the marker is its parent's pid), warns once and runs."""
    shims = tmp_path / "shims"
    shims.mkdir()
    (shims / "env").write_text(
        "#!/bin/bash\n"
        "while [[ $1 == --* ]]; do shift; done\n"
        "while [[ $1 == *=* ]]; do export \"$1\"; shift; done\n"
        '"$@"\n')
    (shims / "env").chmod(0o755)
    script = _export(tmp_path, ECHO)
    proc = subprocess.Popen(["bash", str(script), "-q", "msg=m", "API_TOKEN=s"], cwd=tmp_path,
                            env=_env(home, PATH=f"{shims}:/usr/bin:/bin"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_ignoring(signal.SIGINT), start_new_session=True)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError("the script kept starting itself again") from None
    assert proc.returncode == 0, err
    assert err.count("warning: started with SIGINT or SIGTERM ignored") == 1, err
    assert (tmp_path / "msg").read_text() == "m"


def test_sigterm_ignored_on_entry_stops_the_run(tmp_path: Path, home: Path) -> None:
    """Guard: SIGTERM ignored on entry is reset too (TIME-2 names both signals)."""
    script = _export(tmp_path, LONG)
    rc, err = _interrupted(["bash", str(script), "-q"], tmp_path, tmp_path, _env(home),
                           signal.SIGTERM)
    assert rc == 130, err


ODD = ["msg=a b\nc\td", "msg=", "msg=--", "msg=x=y", "msg=*", "msg=$(touch pwned)",
       "msg=\xe9\u00ff'\"\\", "msg=-x"]


@pytest.mark.parametrize("how", ["plain", "xtrace", "symlink", "relative"])
def test_arguments_survive_the_second_start_byte_for_byte(tmp_path: Path, home: Path,
                                                          how: str) -> None:
    """Guard: with SIGINT ignored (so the script starts itself again), each odd argument
    reaches the step as given, `--` included, under `bash -x`, through a symlink and by
    a relative path from another directory; the marker reaches no step and the exit code
    is the run's."""
    script = _export(tmp_path, ECHO)
    cwd, path = tmp_path, str(script)
    flags: list[str] = []
    if how == "xtrace":
        flags = ["-x"]
    elif how == "symlink":
        (tmp_path / "link").mkdir()
        (tmp_path / "link" / "run").symlink_to(script)
        path = str(tmp_path / "link" / "run")
    elif how == "relative":
        cwd = tmp_path / "sub"
        cwd.mkdir()
        path = "../flow.sh"
    for arg in ODD:
        for extra in ([], ["--"]):
            (tmp_path / "msg").unlink(missing_ok=True)
            r = subprocess.run(["bash", *flags, path, "-q", *extra, arg, "API_TOKEN=s"],
                               cwd=cwd, env=_env(home, OUTDIR=str(tmp_path)),
                               capture_output=True, text=True,
                               timeout=60, preexec_fn=_ignoring(signal.SIGINT))
            assert r.returncode == 0, (arg, r.stderr)
            assert (tmp_path / "msg").read_text() == arg.split("=", 1)[1], arg
            assert (tmp_path / "mark").read_text() == "unset"
            assert "warning: started with" not in r.stderr
            assert not list(tmp_path.rglob("pwned"))
    refused = subprocess.run(["bash", *flags, path, "--only", "nosuch", "API_TOKEN=s"],
                             cwd=cwd, env=_env(home), capture_output=True, text=True,
                             timeout=60, preexec_fn=_ignoring(signal.SIGINT))
    assert refused.returncode == 2, refused.stderr


def test_a_sourced_or_piped_script_warns_and_still_runs(tmp_path: Path, home: Path) -> None:
    """Guard: read from stdin or sourced, the script cannot start itself again: it says
    so and runs (never replaces the shell that sourced it)."""
    script = _export(tmp_path, ECHO)
    for cmd in (f"bash -s -- -q msg=piped API_TOKEN=s < {script}",
                f". {script} -q msg=sourced API_TOKEN=s; echo after-source-unreached"):
        r = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, env=_env(home),
                           capture_output=True, text=True, timeout=60,
                           preexec_fn=_ignoring(signal.SIGINT))
        assert r.returncode == 0, r.stderr
        assert "warning: started with SIGINT or SIGTERM ignored" in r.stderr
        assert (tmp_path / "msg").read_text() in ("piped", "sourced")


def test_a_caller_s_flowsh_lowercase_names_reach_steps_as_flowsh_run_gives_them(
        tmp_path: Path, home: Path) -> None:
    """LOW. The runner's own variables are `flowsh_*`; one the caller exported
    (`flowsh_clock`, new with the shell's clock, or `flowsh_start`, `flowsh_i`) reached
    the step holding the runner's value (an epoch) or not at all, where `flowsh run`
    hands the step the caller's environment as it is (ENV-1: the runner's environment is
    the lowest layer)."""
    script = _export(tmp_path, ECHO)
    names = {"flowsh_clock": "c v", "flowsh_start": "s", "flowsh_i": "i",
             "flowsh_limit": "l", "flowsh_k": "k"}
    r = subprocess.run(["bash", str(script), "-q", "API_TOKEN=s"], cwd=tmp_path,
                       env=_env(home, **names), capture_output=True, text=True, timeout=60)
    kit.ok(r)
    assert (tmp_path / "names").read_text() == "c v s i l k"
    (tmp_path / "names").unlink()
    kit.ok(run_cli("run", "-q", str(tmp_path / "flow.yaml"), "API_TOKEN=s", cwd=tmp_path,
                   env=names))
    assert (tmp_path / "names").read_text() == "c v s i l k"


@pytest.mark.parametrize("name", ["i", "s"])
def test_a_param_named_like_a_runner_local_does_not_change_the_libraries(
        tmp_path: Path, home: Path, name: str) -> None:
    """MED (found beside the above; older than this session). The step's names are
    exported in a subshell of the runner just before it execs, and a runner's local of
    the same name in a calling function took the value: a param `i` replaced the index
    of the `source:` libraries to evaluate (`${FLOWSH_LIBRARY_EVAL[i]}`), so the
    library's variables were silently empty in every step (X= instead of X=computed,
    which flowsh run gives). A param `s` (the up-to-date check's step, read the same way)
    is a guard: with one library set its wrong index fell on the right one."""
    (tmp_path / "lib.sh").write_text('f() { echo "f ran"; }\nX=$(echo computed)\n')
    (tmp_path / "in.txt").write_text("in\n")
    script = _export(tmp_path, f"""\
name: lib
source: lib.sh
params:
  {name}: "1"
steps:
  - name: a
    sources: in.txt
    run: f > out; echo "X=$X" >> out
""")
    kit.ok(kit.script(script, home=home))
    assert (tmp_path / "out").read_text() == "f ran\nX=computed\n"
    (tmp_path / "out").unlink()
    kit.ok(kit.script(script, home=home))
    assert not (tmp_path / "out").exists()  # up to date
    (tmp_path / "lib.sh").write_text('f() { echo "f changed"; }\nX=$(echo computed)\n')
    kit.ok(kit.script(script, home=home))
    assert (tmp_path / "out").read_text() == "f changed\nX=computed\n"


# --- 2. the clock ------------------------------------------------------------------------

CSV_FLOW = """\
name: clock
monitor: {csv: log.csv}
env: {TZ: "Pacific/Chatham"}
steps:
  - name: a
    run: printf '%s' "$TZ" > tz
"""

STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\Z")


@pytest.fixture(scope="module")
def locales(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """de_DE (decimal comma) and ps_AF (decimal point U+066B, two bytes) built with
    localedef into a directory of their own (LOCPATH): the machine has only C.utf8."""
    if shutil.which("localedef") is None or not Path("/usr/share/i18n/locales/ps_AF").exists():
        pytest.skip("localedef and the locale sources (locales package) are needed")
    out = tmp_path_factory.mktemp("locales")
    for name in ("de_DE", "ps_AF"):
        subprocess.run(["localedef", "-i", name, "-f", "UTF-8", str(out / f"{name}.UTF-8")],
                       check=False, capture_output=True, timeout=120)
        assert (out / f"{name}.UTF-8").exists(), name
    yield out


@pytest.mark.parametrize("loc", ["de_DE.UTF-8", "ps_AF.UTF-8"])
@pytest.mark.parametrize("tz", [":Asia/Kolkata", "Europe/Paris", "<+0545>-5:45"])
def test_the_csv_timestamp_is_utc_with_milliseconds_in_any_locale(
        tmp_path: Path, home: Path, locales: Path, loc: str, tz: str) -> None:
    """LOW (ps_AF). The CSV's milliseconds were cut from EPOCHREALTIME at `.` or `,`:
    in a locale whose decimal point is another character (ps_AF: U+066B, of which bash
    writes the first byte) the seconds did not parse (`printf: ...: invalid number` on
    stderr at every row) and every row had the same wrong milliseconds. Expected: the
    format `flowsh run` writes, UTC, ordered, within the run's wall-clock span."""
    import time

    script = _export(tmp_path, CSV_FLOW)
    before = time.time()
    r = subprocess.run(["bash", str(script), "-q"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=60,
                       env=_env(home, LOCPATH=str(locales), LC_ALL=loc, TZ=tz))
    after = time.time()
    kit.ok(r)
    assert r.stderr == ""
    assert (tmp_path / "tz").read_text() == "Pacific/Chatham"
    rows = (tmp_path / "log.csv").read_text().splitlines()[1:]
    stamps = [row.split(",", 1)[0] for row in rows]
    assert len(stamps) == 4 and all(STAMP.match(s) for s in stamps), stamps
    from datetime import datetime

    epochs = [datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() for s in stamps]
    assert epochs == sorted(epochs)
    assert before - 0.01 <= epochs[0] and epochs[-1] <= after + 0.01, (before, epochs, after)
    state = json.loads((home / "exported" / "clock" / "state_clock.json").read_text())
    assert int(before) <= state["started_at"] <= after


# --- 3. the web UI: a call step's child run ----------------------------------------------


def test_the_live_child_link_follows_a_retried_call_step(home: Path, tmp_path: Path) -> None:
    """MED. `flowsh retry RUN --step sub` runs a `call:` step again in place: the same
    run, a new child run. The open run page got the change (the SSE key holds the child
    run) but web.js added a link only where there was none, so it kept pointing at the
    old child run: an operator following it read the previous attempt's logs. Expected:
    the link (href and text) names the new child run, without a reload."""
    from playwright.sync_api import expect, sync_playwright

    from tests.report_browser import CHROMIUM
    from tests.web_helpers import serve

    if CHROMIUM is None:
        pytest.fail("chromium is not installed (apt-get install -y chromium)")
    (tmp_path / "child.yaml").write_text(
        "name: child\nsteps:\n  - name: c\n    run: '[ -e ok ] || exit 3'\n")
    parent = tmp_path / "parent.yaml"
    parent.write_text("name: parent\nsteps:\n  - name: sub\n    call: child.yaml\n")
    first = run_cli("run", "--json", str(parent), cwd=tmp_path)
    assert first.returncode == 1, first.stderr
    run_id = json.loads(first.stdout.splitlines()[0])["run_id"]
    with serve(home) as srv, sync_playwright() as pw:
        old = srv.client.get(f"/api/v1/runs/{run_id}").json()["steps"][0]["child_run"]
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                               args=["--no-sandbox", "--disable-gpu"])
        try:
            page = b.new_page()
            page.goto(f"{srv.url}/runs/{run_id}?token={srv.token}")
            link = page.locator('details.log[data-step="sub"] a.child-run')
            expect(link).to_have_attribute("href", f"/runs/{old}")
            page.evaluate("window.__sameDocument = true")
            (tmp_path / "ok").touch()
            kit.ok(run_cli("retry", run_id, "--step", "sub", cwd=tmp_path))
            new = srv.client.get(f"/api/v1/runs/{run_id}").json()["steps"][0]["child_run"]
            assert new and new != old
            expect(page.locator("#run-status")).to_have_text("succeeded", timeout=30_000)
            expect(link).to_have_attribute("href", f"/runs/{new}", timeout=15_000)
            expect(link.locator("code")).to_have_text(new)
            assert link.count() == 1
            assert page.evaluate("window.__sameDocument") is True
        finally:
            b.close()


def _parent_and_child(tmp_path: Path) -> str:
    """A parent run whose one step calls child.yaml, run to its end: the parent's id."""
    (tmp_path / "child.yaml").write_text("name: child\nsteps:\n  - name: c\n    run: echo c\n")
    parent = tmp_path / "parent.yaml"
    parent.write_text("name: parent\nsteps:\n  - name: sub\n    call: child.yaml\n")
    done = run_cli("run", "--json", str(parent), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run_id: str = json.loads(done.stdout.splitlines()[0])["run_id"]
    return run_id


def test_odd_ids_in_the_links_are_text_not_markup(home: Path, tmp_path: Path) -> None:
    """Guard: a child run id and a parent run/step as the store holds them (a shared
    PostgreSQL state is written by every user of it) are escaped in the page and quoted
    in the link; the API gives them back as they are."""
    import sqlite3

    from tests.web_helpers import serve

    run_id = _parent_and_child(tmp_path)
    evil = '"><img src=x onerror=alert(1)></code><script>alert(2)</script>/../x?y#z'
    with serve(home) as srv:
        child = srv.client.get(f"/api/v1/runs/{run_id}").json()["steps"][0]["child_run"]
        db = sqlite3.connect(home / "flowsh.db")
        with db:
            db.execute("UPDATE steps SET child_run = ? WHERE run_id = ?", (evil, run_id))
            db.execute("UPDATE runs SET parent_run = ?, parent_step = ? WHERE run_id = ?",
                       (evil, evil, child))
        db.close()
        for rid in (run_id, child):
            text = srv.client.get(f"/runs/{rid}").text
            assert "<img" not in text and "<script>alert" not in text
        assert srv.client.get(f"/api/v1/runs/{child}").json()["parent_step"] == evil
        gone = srv.client.get("/runs/" + "20991231T000000-00000000")
        assert gone.status_code == 404 and "Traceback" not in gone.text


def test_a_pruned_child_run_s_link_leads_to_a_plain_not_found_page(home: Path,
                                                                     tmp_path: Path) -> None:
    """LOW. The parent's link to a child run that `flowsh prune` deleted (and the child's
    link back to a pruned parent) led to a page headed "Refused", as if the server had
    refused an action. Expected: a 404 headed "Not found" naming the run, the page's
    own links, no traceback."""
    from tests.web_helpers import serve

    run_id = _parent_and_child(tmp_path)
    with serve(home) as srv:
        child = srv.client.get(f"/api/v1/runs/{run_id}").json()["steps"][0]["child_run"]
        kit.ok(run_cli("prune", "--keep", "0", "-w", "child"))
        assert f'href="/runs/{child}"' in srv.client.get(f"/runs/{run_id}").text
        page = srv.client.get(f"/runs/{child}")
        assert page.status_code == 404
        assert "<h2>Not found</h2>" in page.text and child in page.text
        assert "Refused" not in page.text and "Traceback" not in page.text
        assert srv.client.get("/no/such/page").text.count("<h2>Not found</h2>") == 1
