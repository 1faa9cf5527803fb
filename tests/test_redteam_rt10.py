"""Red team rt10 (issue 10: one workflow, one meaning). Each test is a reproducer that
failed on main (c88b3be) when written: the same workflow file run by `flowsh run`, the
exported script and the `--inline` script (both under `env -i PATH=/usr/bin:/bin`), through
the conformance harness (tests/conformance/harness.py), against docs/semantics.md."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import redteam_kit as kit
from tests.conformance import harness
from tests.redteam_kit import ALL, LOCAL
from tests.redteam_kit import run_case as _run

# Not the conformance suite's db 6: its session fixture flushes that one.
REDIS = os.environ.get("FLOWSH_RT10_REDIS", "redis://127.0.0.1:6379/11")
celery_worker, runtime = kit.celery_runtime("rt10", REDIS)
_case = kit.case_maker("rt10")


def _flowsh(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return kit.flowsh(*args, cwd=cwd)


# --- SOURCE-1: a library's top-level commands never run ----------------------------------

@pytest.mark.parametrize("runtime", ALL, indirect=True)
def test_library_top_level_subshell_runs_in_every_step(runtime: str, tmp_path: Path) -> None:
    """SOURCE-1: a library's top-level commands MUST NOT run, in any step.

    Observed: a top-level subshell, `( echo backup >> backups )` (the idiom of a script
    that does `( cd /data && tar ... )` at the bottom), runs in every step and once more
    before the first (4 times for a two-step run; on `--inline`, once more at export).
    The guard's DEBUG trap lets any command in a subshell through (BASH_SUBSHELL differs).
    Expected: `backups` never written; only the called function's file is."""
    case = _case({"source": "lib.sh", "steps": [{"name": "a", "run": "f a"},
                                                {"name": "b", "run": "f b"}]},
                 {"lib.sh": "f() { echo \"$1\" >> calls; }\n( echo backup >> backups )\n"})
    res, files = _run(case, runtime, tmp_path, ("calls", "backups"))
    assert res.exit == 0, res.stderr
    assert files["calls"] == "a\nb\n"
    assert files["backups"] is None, f"top-level subshell ran: {files['backups']!r}"


@pytest.mark.parametrize("runtime", ALL, indirect=True)
def test_library_top_level_colon_redirection_truncates_in_every_step(
        runtime: str, tmp_path: Path) -> None:
    """SOURCE-1: top-level commands MUST NOT run, in any step.

    Observed: `: > "$LOG"` at a library's top level (the idiom that empties a log when the
    script starts) runs before every step: the guard lets `:` through with its redirection,
    so step b empties the log step a wrote. Expected: the log keeps a's line."""
    case = _case({"source": "lib.sh", "steps": [{"name": "a", "run": "note a"},
                                                {"name": "b", "run": "note b"}]},
                 {"lib.sh": "LOG=job.log\n: > \"$LOG\"\nnote() { echo \"$1\" >> \"$LOG\"; }\n"})
    res, files = _run(case, runtime, tmp_path, ("job.log",))
    assert res.exit == 0, res.stderr
    assert files["job.log"] == "a\nb\n"


def test_validate_runs_the_librarys_top_level_code(tmp_path: Path) -> None:
    """SOURCE-1 (and FILE-2: validate only checks): `flowsh validate` MUST NOT run a
    library's top-level commands.

    Observed: `flowsh validate` (and `flowsh export`) run a top-level subshell of a `source:`
    file: validating a file appends to `backups`. Expected: validate leaves no trace."""
    (tmp_path / "lib.sh").write_text("f() { :; }\n( echo backup >> backups )\n")
    (tmp_path / "flow.yaml").write_text("source: lib.sh\nsteps:\n  - {name: a, run: f}\n")
    res = _flowsh("validate", "flow.yaml", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert not (tmp_path / "backups").exists(), "validate ran the library's top-level code"


# --- IF-1 / ENV-1: the if test runs with the step's environment --------------------------

@pytest.mark.parametrize("runtime", ALL, indirect=True)
def test_if_test_does_not_see_library_variables(runtime: str, tmp_path: Path) -> None:
    """IF-1 (the test runs "with the step's environment") with ENV-1 (library variables
    are part of a step's environment).

    Observed: a library variable (`MODE=full`) is empty in the `if` test, so
    `if: '[ "$MODE" = full ]'` skips a step whose own command sees MODE=full.
    Expected: the step runs (writes `ran`)."""
    case = _case({"source": "lib.sh",
                  "steps": [{"name": "a", "if": "[ \"$MODE\" = full ]",
                             "run": "echo \"$MODE\" > ran"}]},
                 {"lib.sh": "MODE=full\n"})
    res, files = _run(case, runtime, tmp_path, ("ran",))
    assert res.steps == {"a": "succeeded"}, res.stderr
    assert files["ran"] == "full\n"


# --- REMOTE-3: at most one attempt of a step alive, after a crash -------------------------

_ATTEMPT = """[ -e go ] || exit 0
exec 9>>attempt.lock
flock -n 9 || echo OVERLAP >> trace
echo start >> trace
if [ ! -e second ]; then touch second; sleep 20; else sleep 1; fi
echo end >> trace
"""


@pytest.mark.parametrize("runtime", ["script", "inline"], indirect=True)
def test_new_run_after_kill_9_overlaps_the_dead_runs_attempt(runtime: str,
                                                             tmp_path: Path) -> None:
    """REMOTE-3: "a resume, or a new run, after the runner died MUST first stop any
    attempt the dead runner left running".

    Observed (exported scripts; `flowsh run` holds): kill -9 of the script while step s
    runs, then a plain new run (no --resume): the new attempt starts while the dead run's
    attempt still runs (the step's flock sees OVERLAP). Expected: trace start/start/end,
    no OVERLAP, as `flowsh run` gives."""
    kill = ("touch go; $RUN >/dev/null 2>&1 & pid=$!; for i in $(seq 400); do "
            "[ -e trace ] && break; sleep 0.05; done; kill -9 $pid; wait $pid || true")
    case = _case({"steps": [{"name": "s", "run": _ATTEMPT}]},
                 then=[{"before": kill, "args": [],
                        "expect": {"exit": 0, "steps": {"s": "succeeded"},
                                   "files": {"trace": "start\nstart\nend\n"}}}])
    outs = harness.run_case(case, runtime, tmp_path)
    expect, got = outs[-1]
    assert harness.mismatches(expect, got) == []


# --- SECRET-1: a secret is masked in step logs --------------------------------------------

@pytest.mark.parametrize("runtime", ["script", "inline"], indirect=True)
def test_secret_in_a_malformed_output_line_reaches_the_step_log(runtime: str,
                                                                tmp_path: Path) -> None:
    """SECRET-1: every line of a secret value MUST be masked in step logs.

    Observed (exported scripts; `flowsh run` masks it): a step that writes a malformed
    `$FLOWSH_OUTPUT` line holding a secret param fails with a message quoting the line;
    the CSV and checkpoint say `'junk ***'`, but the step's log file gets the message
    unmasked: `'junk Hunter2Zz' is neither NAME=value ...`. Expected: no file under
    FLOWSH_HOME holds the secret."""
    case = _case({"params": {"DB_PASSWORD": None},
                  "steps": [{"name": "b",
                             "run": "echo \"junk $DB_PASSWORD\" >> \"$FLOWSH_OUTPUT\""}]},
                 args=["DB_PASSWORD=Hunter2Zz"])
    res, _ = _run(case, runtime, tmp_path)
    assert res.steps == {"b": "failed"}, res.stderr
    leaks = [str(p) for p in (tmp_path / "home").rglob("*")
             if p.is_file() and b"Hunter2Zz" in p.read_bytes()]
    assert leaks == []


# --- OUT-1: outputs byte for byte ---------------------------------------------------------

@pytest.mark.parametrize("runtime", ["celery"], indirect=True)
def test_non_utf8_output_reaches_dependents_byte_for_byte(runtime: str,
                                                          tmp_path: Path) -> None:
    """OUT-1: every step that needs it MUST see each output byte for byte.

    Observed (celery; run, script and inline hold): an output holding the byte 0xff (a
    Latin-1 file name, a binary checksum) reaches the dependent step as U+FFFD
    (ef bf bd); the param it came from, handed to the same step, is intact.
    Expected: b'a\\xffb' in both."""
    case = _case({"params": {"P": "x"}, "steps": [
        {"name": "a", "run": "printf 'O=%s\\n' \"$P\" >> \"$FLOWSH_OUTPUT\""},
        {"name": "b", "run": "printf '%s|%s' \"$O\" \"$P\" > o.bin"}]},
        args=["P=a\udcffb"])
    res, _ = _run(case, runtime, tmp_path)
    assert res.exit == 0, res.stderr
    assert (tmp_path / "w" / "o.bin").read_bytes() == b"a\xffb|a\xffb"


# --- FILE-2: validate and run accept and refuse the same files ----------------------------

def test_validate_accepts_a_library_run_refuses_as_too_large(tmp_path: Path) -> None:
    """FILE-2: `flowsh run` MUST make every check `flowsh validate` makes (one validation
    path), so the two accept and refuse the same files.

    Observed: a `source:` library whose top-level variables exceed the 120,000-byte limit
    (SOURCE-5) is refused by `flowsh run` (exit 2) but `flowsh validate` says "ok"
    (exit 0), and `flowsh export` writes a script that then refuses it when run.
    Expected: validate exits 2 as run does. (The value is written out: validate runs no
    command, so one a command makes, `X=$(head -c 130000 ...)`, is checked by the run that
    evaluates it: FILE-2.)"""
    (tmp_path / "big.sh").write_text("X=" + "a" * 130_000 + "\nf() { :; }\n")
    (tmp_path / "flow.yaml").write_text("source: big.sh\nsteps:\n  - {name: a, run: f}\n")
    run = _flowsh("run", "flow.yaml", cwd=tmp_path)
    validate = _flowsh("validate", "flow.yaml", cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    assert validate.returncode == run.returncode, validate.stdout + validate.stderr


# --- ENV-4 / PARAM-1: values byte for byte -----------------------------------------------

@pytest.mark.parametrize("runtime", LOCAL, indirect=True)
def test_env_value_written_as_a_time_reaches_steps_as_a_number(runtime: str,
                                                               tmp_path: Path) -> None:
    """ENV-4: `env` values MUST reach steps byte for byte, as data (PARAM-1 likewise for a
    param's default).

    Observed (every runtime): the file says `env: {AT: 12:30, CODE: 007}` and
    `params: {MODE: 010}`; steps see AT=750 (YAML 1.1 base-60), CODE=7 and MODE=8 (octal).
    Expected: `12:30|007|010`, or the file refused (exit 2) naming the key and asking
    for quotes; never a different value in silence."""
    case = _case("env: {AT: 12:30, CODE: 007}\nparams: {MODE: 010}\nsteps:\n"
                 "  - {name: a, run: \"printf '%s|%s|%s' \\\"$AT\\\" \\\"$CODE\\\" "
                 "\\\"$MODE\\\" > out\"}\n")
    res, files = _run(case, runtime, tmp_path, ("out",))
    assert res.exit == 2 or files["out"] == "12:30|007|010", files["out"]


# --- IDENT-1: a file without `name` is known by its stem ----------------------------------

def test_file_whose_stem_starts_with_a_dash_is_refused_for_a_key_it_lacks(
        tmp_path: Path) -> None:
    """IDENT-1: without a declared `name`, the identity is the file's stem and a hash of
    its path (a stem that is no valid name becomes `workflow`, as `my night.yaml` does).

    Observed: a valid file called `-nightly.yaml` (no `name:` key) is refused by validate
    and run alike: `-nightly.yaml:1:1: key 'name': workflow name '-nightly' may hold
    only letters, digits, '_', '.', '-'` (exit 2): a key the file does not have, and a
    message that says the name is made of allowed characters. Expected: it runs."""
    (tmp_path / "-nightly.yaml").write_text("steps:\n  - {name: a, run: touch ran}\n")
    res = _flowsh("run", "./-nightly.yaml", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "ran").exists()


# --- flowsh import: a seed file is read without running it --------------------------------

def test_import_of_a_seed_file_runs_its_top_level_subshell(tmp_path: Path) -> None:
    """SOURCE-1 for `flowsh import` (flowsh/seed.py: "flowsh reads such a file *without
    running it*").

    Observed: `flowsh import wf.sh` of a seed-style file runs a top-level
    `( echo topside >> side )` while it probes the file's function names (the guard lets
    subshells through), before any run. Expected: importing writes only the YAML."""
    (tmp_path / "wf.sh").write_text(
        "#!/bin/bash\nextract() { echo \"extract $1\"; }\nload() { echo \"load $1\"; }\n"
        'declare -A workflow=(["start"]="extract" ["extract"]="load" ["load"]="end")\n'
        "( echo topside >> side )\nexecute_workflow() { :; }\nexecute_workflow\n")
    res = _flowsh("import", "wf.sh", "-o", "wf.yaml", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "wf.yaml").exists()
    assert not (tmp_path / "side").exists(), "import ran the seed file's top-level code"


# --- IDENT-1 / IDENT-2: one file, one identity --------------------------------------------

def test_same_file_through_a_symlink_of_another_name_is_another_identity(
        tmp_path: Path) -> None:
    """IDENT-1 (identity from the file's *resolved* path) and IDENT-2 (overlap: skip).

    Observed: real/nightly.yaml and a symlink to it, cron-nightly.yaml, get two
    identities (nightly-<h> and cron-nightly-<h>, the same hash): a run through the link
    starts beside a run of the file itself (both write `start`), where a run through a
    linked directory (real2/nightly.yaml) is rightly refused with 75. Expected: one
    file, one identity: the second run exits 75 and the step runs once."""
    real = tmp_path / "real"
    real.mkdir()
    (real / "nightly.yaml").write_text(
        "steps:\n  - {name: a, run: \"echo start >> trace; touch started; "
        "for i in $(seq 600); do [ -e release ] && break; sleep 0.05; done\"}\n")
    (tmp_path / "cron-nightly.yaml").symlink_to("real/nightly.yaml")
    env = {**os.environ, "FLOWSH_LOAD_ENTRYPOINTS": "0"}
    first = subprocess.Popen([sys.executable, "-m", "flowsh", "run", "real/nightly.yaml"],
                             cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not (real / "started").exists():
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        second = subprocess.Popen(
            [sys.executable, "-m", "flowsh", "run", "cron-nightly.yaml"], cwd=tmp_path,
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while second.poll() is None and (real / "trace").read_text().count("start") < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        (real / "release").touch()
        second.wait(timeout=60)
    finally:
        (real / "release").touch()
        first.wait(timeout=60)
    assert (real / "trace").read_text() == "start\n"
    assert second.returncode == 75


# --- LOG-1 / IDENT-1: the CSV log names the run's identity --------------------------------

def test_exported_scripts_of_two_unrelated_nightly_files_log_as_one_workflow(
        tmp_path: Path) -> None:
    """IDENT-1 (two unrelated `nightly.yaml` never share history) and LOG-1 (the same
    CSV rows on every runtime).

    Observed: under `flowsh run` the CSV's workflow_id is `<identity>_<run id>`
    (`nightly-1a2b3c4d_...`); the exported script writes `nightly_<run id>`, so the
    scripts of a/nightly.yaml and b/nightly.yaml log under one workflow name in the
    shared CSV. Expected: the identity, as `flowsh run` writes it."""
    home = tmp_path / "home"
    prefixes = []
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "nightly.yaml").write_text("steps:\n  - {name: s, run: 'true'}\n")
        exp = _flowsh("export", "--bash", "nightly.yaml", "-o", "n.sh", cwd=tmp_path / d)
        assert exp.returncode == 0, exp.stderr
        res = subprocess.run(["bash", "n.sh"], cwd=tmp_path / d, capture_output=True,
                             text=True, timeout=60, check=False,
                             env={"PATH": "/usr/bin:/bin", "HOME": str(home),
                                  "FLOWSH_HOME": str(home)})
        assert res.returncode == 0, res.stderr
        rows = (home / "logs" / "workflow_logs.csv").read_text().splitlines()
        prefixes.append(rows[-1].split(",")[1].rsplit("_", 1)[0])
    assert prefixes[0] != prefixes[1], prefixes
    assert prefixes[0].startswith("nightly-"), prefixes


# --- PARAM-1: every step sees each param ---------------------------------------------------

@pytest.mark.parametrize("runtime", ALL, indirect=True)
def test_param_named_like_a_bash_variable_is_lost_in_silence(runtime: str,
                                                             tmp_path: Path) -> None:
    """PARAM-1: every step MUST see each param as an environment variable, byte for byte
    (or, REFUSE-6's way, the name is refused with exit 2; flowsh run refuses nothing).

    Observed (every runtime): params BASH, SHLVL, OPTIND and OLDPWD are accepted, and
    the step's bash overwrites them: it sees `/usr/bin/bash|1|1|` instead of the values
    given (outputs of those names likewise). Expected: `b|s|o|d`, or exit 2 naming it."""
    case = _case({"params": {"BASH": "b", "SHLVL": "s", "OPTIND": "o", "OLDPWD": "d"},
                  "steps": [{"name": "a", "run": "printf '%s|%s|%s|%s' \"$BASH\" "
                                                 "\"$SHLVL\" \"$OPTIND\" \"$OLDPWD\" > out"}]})
    res, files = _run(case, runtime, tmp_path, ("out",))
    assert res.exit == 2 or files["out"] == "b|s|o|d", files["out"]


# --- ENVFILE: a subset of shell ----------------------------------------------------------

@pytest.mark.parametrize("runtime", ALL, indirect=True)
def test_env_file_unquoted_value_goes_on_past_a_blank(runtime: str, tmp_path: Path) -> None:
    """ENVFILE-2: an unquoted value MUST end at the first blank (ENVFILE-1: a subset of
    shell, where `X=a b` runs `b` with X=a).

    Observed (every runtime): `GREETING=hello world` gives `hello world` and
    `LEVEL= debug` gives ` debug` (a leading blank kept). Expected: each value ends at
    its first blank (`hello`, ``), or the line is refused with FILE:LINE (exit 2)."""
    case = _case({"env_file": "vars.env",
                  "steps": [{"name": "a",
                             "run": "printf '%s|%s' \"$GREETING\" \"$LEVEL\" > out"}]},
                 {"vars.env": "GREETING=hello world\nLEVEL= debug\n"})
    res, files = _run(case, runtime, tmp_path, ("out",))
    assert res.exit == 2 or files["out"] == "hello|", files["out"]


@pytest.mark.parametrize("runtime", LOCAL, indirect=True)
def test_env_file_ansi_c_quote_is_taken_as_a_dollar_and_quotes(runtime: str,
                                                               tmp_path: Path) -> None:
    """ENVFILE-4 (`$...` forms other than a lone `$` are refused) and ENVFILE-1 (a subset
    of shell: a file means what bash makes of it, or is refused).

    Observed (every runtime): `SEP=$'\\t'` (bash: a tab) gives the three bytes `$\\t`,
    and `DIR=~/data` keeps the `~` bash would expand: an accepted line with another
    meaning than in shell. Expected: exit 2 naming FILE:LINE, or bash's values."""
    case = _case({"env_file": "vars.env",
                  "steps": [{"name": "a", "run": "printf '%s' \"$SEP\" > out"}]},
                 {"vars.env": "SEP=$'\\t'\n"})
    res, files = _run(case, runtime, tmp_path, ("out",))
    assert res.exit == 2 or files["out"] == "\t", files["out"]


# --- OUT-1 / ALWAYS-1: an output too large for the environment ---------------------------

@pytest.mark.parametrize("runtime", ALL, indirect=True)
def test_output_too_large_for_the_environment_fails_the_always_cleanup(
        runtime: str, tmp_path: Path) -> None:
    """ALWAYS-1 (an `always` step MUST run once its needs have ended) with OUT-1 (outputs
    reach every dependent) and SOURCE-5's precedent (what cannot fit in the environment
    is refused where it is made).

    Observed (every runtime): step a writes a 140,000-byte output and succeeds; every
    step after it, the `always` cleanup included, then fails to start ("Argument list
    too long", exit 126): the cleanup never runs. Expected: the cleanup runs (the
    output refused at the step that wrote it, naming it, as a library's are)."""
    case = _case({"steps": [
        {"name": "a", "run": "printf 'BIG=%s\\n' \"$(head -c 140000 /dev/zero | "
                             "tr '\\0' x)\" >> \"$FLOWSH_OUTPUT\""},
        {"name": "cleanup", "always": True, "run": "echo cleaned > cleaned"}]})
    res, files = _run(case, runtime, tmp_path, ("cleaned",))
    assert files["cleaned"] == "cleaned\n", res.steps


# --- SOURCE-2: a library's top-level assignments get the values bash gives them -----------

@pytest.mark.parametrize("runtime", ALL, indirect=True)
def test_library_top_level_condition_always_takes_the_true_branch(runtime: str,
                                                                  tmp_path: Path) -> None:
    """SOURCE-2: a library's top-level assignments MUST be evaluated (once per run), i.e.
    get the values bash gives them.

    Observed (every runtime): the guard skips the *test* of a top-level `if`/`&&` (`[`,
    `[[`, `grep` are commands) and a skipped command reports success, so
    `if [ "$TARGET" = prod ]; then DB=prod-db; else DB=test-db; fi` sets DB=prod-db with
    TARGET=dev, and `[[ -e /nonexistent ]] && MODE=danger || MODE=safe` gives danger.
    Expected: `test-db|safe`."""
    case = _case({"source": "lib.sh", "params": {"TARGET": "dev"},
                  "steps": [{"name": "a", "run": "echo \"$DB|$MODE\" > out"}]},
                 {"lib.sh": "if [ \"$TARGET\" = prod ]; then DB=prod-db; else DB=test-db; fi\n"
                            "[[ -e /nonexistent ]] && MODE=danger || MODE=safe\n"})
    res, files = _run(case, runtime, tmp_path, ("out",))
    assert res.exit == 0, res.stderr
    assert files["out"] == "test-db|safe\n"


# --- SOURCE-3: library variables lose to env, params, outputs -----------------------------

@pytest.mark.parametrize("runtime", ALL, indirect=True)
def test_readonly_library_variable_beats_params_env_and_outputs(runtime: str,
                                                                tmp_path: Path) -> None:
    """SOURCE-3: library variables MUST lose to env_file, env, params, upstream outputs
    and the step's env (ENV-1).

    Observed (every runtime): a library's `readonly MODE=lib` (or `declare -r`) wins in
    silence over the param MODE=param, the workflow env LEVEL=env and an upstream output
    OUTV=o: steps see `lib` for all three and nothing fails. Expected: `param|env` and
    `o` (or a refusal naming the clash before any step runs)."""
    case = _case({"source": "lib.sh", "params": {"MODE": "param"}, "env": {"LEVEL": "env"},
                  "steps": [{"name": "a", "run": "echo \"$MODE|$LEVEL\" > out; "
                                                 "echo OUTV=o >> \"$FLOWSH_OUTPUT\""},
                            {"name": "b", "run": "echo \"$OUTV\" > out2"}]},
                 {"lib.sh": "readonly MODE=lib\ndeclare -r LEVEL=lib\ndeclare -r OUTV=lib\n"})
    res, files = _run(case, runtime, tmp_path, ("out", "out2"))
    assert res.exit == 2 or (files["out"], files["out2"]) == ("param|env\n", "o\n"), files


# --- the same arguments mean the same on every runtime ------------------------------------

@pytest.mark.parametrize("runtime", ["script", "inline"], indirect=True)
def test_double_dash_before_params_is_refused_by_the_script(runtime: str,
                                                            tmp_path: Path) -> None:
    """PARAM-1 (`KEY=VALUE` arguments override params) on the same command line for every
    runtime (tests/conformance/cases/README.md: `args` are the arguments of
    `flowsh run flow.yaml` and of `./flow.sh` alike).

    Observed: `flowsh run flow.yaml -- P=1` runs with P=1 (exit 0); the exported script
    given `-- P=1` exits 2 ("unexpected argument '--'"). Expected: the script runs with
    P=1, as flowsh run does."""
    case = _case({"params": {"P": "d"},
                  "steps": [{"name": "a", "run": "printf %s \"$P\" > out"}]},
                 args=["--", "P=1"])
    res, files = _run(case, runtime, tmp_path, ("out",))
    assert res.exit == 0, res.stderr
    assert files["out"] == "1"


# --- OUT-2: a later output of the same name wins -------------------------------------------

@pytest.mark.parametrize("runtime", ALL, indirect=True)
def test_overridden_output_comes_back_through_a_sibling(runtime: str,
                                                        tmp_path: Path) -> None:
    """OUT-2: a later output of the same name MUST win (a step's outputs over those it
    received).

    Observed (every runtime): a writes X=a; b (needs a) writes X=b, overriding it; c
    (needs a) writes nothing and passes a's X=a on. d1 (needs [b, c]) sees X=a: the value
    b overrode comes back because c is listed after b; d2 (needs [c, b]) sees X=b. The
    order of a `needs` list changes a value. Expected: both see b."""
    case = _case({"steps": [
        {"name": "a", "run": "echo X=a >> \"$FLOWSH_OUTPUT\""},
        {"name": "b", "needs": ["a"], "run": "echo X=b >> \"$FLOWSH_OUTPUT\""},
        {"name": "c", "needs": ["a"], "run": "true"},
        {"name": "d1", "needs": ["b", "c"], "run": "echo \"$X\" > d1"},
        {"name": "d2", "needs": ["c", "b"], "run": "echo \"$X\" > d2"}]})
    res, files = _run(case, runtime, tmp_path, ("d1", "d2"))
    assert res.exit == 0, res.stderr
    assert (files["d1"], files["d2"]) == ("b\n", "b\n")


# --- RESUME-1 with overlap: allow ---------------------------------------------------------

@pytest.mark.parametrize("runtime", ["script", "inline"], indirect=True)
def test_resume_after_overlapping_runs_restarts_instead_of_resuming(
        runtime: str, tmp_path: Path) -> None:
    """RESUME-1: `--resume` MUST continue the latest unfinished run of the identity; steps
    that succeeded MUST NOT run again (IDENT-2: `overlap: allow` runs beside another).

    Observed (exported scripts; `flowsh run` and celery hold): run 1 holds in step a;
    run 2 (started later) passes a and fails in b; run 1 then succeeds. `--resume`
    starts a new run (step a runs a third time) instead of resuming run 2: the script's
    one checkpoint file was overwritten by run 1's success. Expected: only b runs."""
    wf = {"overlap": "allow", "steps": [
        {"name": "a", "run": "echo a >> trace; if [ ! -e first ]; then touch first; "
                             "for i in $(seq 600); do [ -e release ] && break; sleep 0.05; "
                             "done; fi"},
        {"name": "b", "run": "echo b >> trace; [ -e failonce ] || { touch failonce; exit 1; }"}]}
    start = ("($RUN >/dev/null 2>&1; echo $? > rc1) & for i in $(seq 400); do "
             "[ -e first ] && break; sleep 0.05; done")
    finish = "touch release; for i in $(seq 400); do [ -s rc1 ] && break; sleep 0.05; done"
    case = _case(wf, before=start, expect={"exit": 1, "steps": {"a": "succeeded",
                                                                "b": "failed"}},
                 then=[{"before": finish, "args": ["--resume"],
                        "expect": {"exit": 0, "only_steps": ["b"],
                                   "files": {"rc1": "0\n"}}}])
    outs = harness.run_case(case, runtime, tmp_path)
    for expect, got in outs:
        assert harness.mismatches(expect, got) == []


# --- SOURCE-4: a library's own sources are available --------------------------------------

@pytest.mark.parametrize("runtime", ["run", "script", "celery"], indirect=True)
def test_library_sourcing_its_directory_in_a_loop_loses_the_definitions(
        runtime: str, tmp_path: Path) -> None:
    """SOURCE-4: a library MAY source other files by a path relative to itself; their
    definitions MUST be available (the `--inline` export refuses it, REFUSE-4: allowed).

    Observed (run, script, celery): the idiom that loads a directory of helpers,
    `for f in "$LIBDIR"/inner*.sh; do . "$f"; done`, loads nothing: the guard skips the
    `for` command as a top-level command, so `inner` is not defined and the step fails
    with 127. Plain bash loads it. Expected: the step succeeds and writes `inner`."""
    case = _case({"source": "lib/main.sh", "steps": [{"name": "a", "run": "outer"}]},
                 {"lib/main.sh": "LIBDIR=${BASH_SOURCE[0]%/*}\n"
                                 "for f in \"$LIBDIR\"/inner*.sh; do . \"$f\"; done\n"
                                 "outer() { inner > out; }\n",
                  "lib/inner.sh": "inner() { echo inner; }\n"})
    res, files = _run(case, runtime, tmp_path, ("out",))
    assert res.steps == {"a": "succeeded"}, res.stderr[-500:]
    assert files["out"] == "inner\n"


# --- SECRET-2 / REFUSE-3: no secret value in an exported script's text ---------------------

def test_inline_export_copies_a_library_secret_into_the_script_text(tmp_path: Path) -> None:
    """SECRET-2: secret values MUST NOT be written to an exported script's text (SECRET-1:
    a library variable with a secret-looking name is a secret; REFUSE-3 refuses what
    would put one there).

    Observed: `flowsh export --bash --inline` of a workflow whose `source:` library sets
    `DB_PASSWORD=LibSecr3tQ` embeds the library verbatim: the script text holds the
    password (exit 0). `flowsh run` masks that value everywhere. Expected: the export
    refused (exit 2, naming the library and the name), or no value in the text."""
    (tmp_path / "lib.sh").write_text(
        "DB_PASSWORD=LibSecr3tQ\nuse() { echo \"connecting with $DB_PASSWORD\"; }\n")
    (tmp_path / "flow.yaml").write_text("source: lib.sh\nsteps:\n  - {name: a, run: use}\n")
    res = _flowsh("export", "--bash", "--inline", "flow.yaml", "-o", "flow.sh", cwd=tmp_path)
    if res.returncode == 2:
        return
    assert res.returncode == 0, res.stderr
    assert "LibSecr3tQ" not in (tmp_path / "flow.sh").read_text()


# --- TIME-2 / EXIT-1: SIGTERM before the first step ----------------------------------------

@pytest.mark.parametrize("runtime", ALL, indirect=True)
def test_sigterm_while_the_library_is_evaluated_exits_143_not_130(runtime: str,
                                                                  tmp_path: Path) -> None:
    """TIME-2 (on SIGINT or SIGTERM the runner stops what runs, starts nothing more and
    exits 130) and EXIT-1 (130 when interrupted).

    Observed (every runtime): SIGTERM while the run evaluates its library's top-level
    assignments (SOURCE-2, before the first step: `X=$(slow command)`) kills the runner
    with the signal's own status, 143; under `flowsh run` and celery the library's
    command goes on running after the runner is gone. Expected: exit 130."""
    start = ("$RUN >/dev/null 2>&1 & pid=$!; for i in $(seq 400); do [ -e evaluating ] && "
             "break; sleep 0.05; done; kill -TERM $pid; wait $pid; echo $? > rc")
    case = _case({"source": "lib.sh", "steps": [{"name": "a", "run": "f"}]},
                 {"lib.sh": "X=$(touch evaluating; sleep 3; echo v)\n"
                            "f() { echo \"$X\" >> ran; }\n"},
                 before=start, args=["--resume"])
    outs = harness.run_case(case, runtime, tmp_path)
    got = outs[0][1]
    assert (tmp_path / "w" / "rc").read_text() == "130\n", got.stderr[-300:]


# --- RESUME-1: steps that succeeded are not run again ---------------------------------------

@pytest.mark.parametrize("runtime", ALL, indirect=True)
def test_resume_runs_a_succeeded_always_step_again(runtime: str, tmp_path: Path) -> None:
    """RESUME-1: `--resume` MUST continue the run: steps that succeeded MUST NOT run
    again (docs/export.md says instead "`always` steps run again": the two disagree).

    Observed (every runtime): z (`always`, needs only a) succeeded in the first run while
    the independent step b failed; `--resume` runs z a second time (trace a b z b z), so
    an `always` notification or hand-off happens twice. Expected: only b runs."""
    case = _case({"steps": [
        {"name": "a", "needs": [], "run": "echo a >> trace"},
        {"name": "b", "needs": [], "run": "echo b >> trace; [ -e ok ]"},
        {"name": "z", "needs": ["a"], "always": True, "run": "echo z >> trace"}]},
        expect={"exit": 1, "steps": {"a": "succeeded", "b": "failed", "z": "succeeded"}},
        then=[{"before": "touch ok", "args": ["--resume"],
               "expect": {"exit": 0, "only_steps": ["b"]}}])
    for expect, got in harness.run_case(case, runtime, tmp_path):
        assert harness.mismatches(expect, got) == []
