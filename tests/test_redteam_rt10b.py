"""Red team rt10b (issue 10, second pass): bypasses and regressions of the library guard
(flowsh/bashguard.py) against docs/semantics.md SOURCE-1/SOURCE-5. Each test is a
reproducer that failed on main (0624232) when written: the same workflow file run by
`flowsh run`, the exported script and the `--inline` script (both under
`env -i PATH=/usr/bin:/bin`) through the conformance harness, or `flowsh validate`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests import redteam_kit as kit
from tests.conformance import harness
from tests.redteam_kit import ALL, LOCAL
from tests.redteam_kit import run_case as _run
from tests.redteam_kit import validate as _validate

# Not the conformance suite's db 6 (its session fixture flushes it) nor rt10's 11.
REDIS = os.environ.get("FLOWSH_RT10B_REDIS", "redis://127.0.0.1:6379/12")

# Findings still open (issue 10's note lists them): strict xfails, so that a fix shows as
# an unexpected pass to be removed from here.
OPEN: frozenset[str] = frozenset()
_open_findings = kit.open_findings("rt10b", OPEN)
celery_worker, runtime = kit.celery_runtime("rt10b", REDIS)
_case = kit.case_maker("rt10b")


def _flowsh(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return kit.flowsh(*args, cwd=cwd, home=cwd / ".home")


def _two_steps(lib: str) -> harness.Case:
    return kit.two_steps("rt10b", lib)


# --- `set` is replayed with eval: its command substitutions run ---------------------------

def test_validate_runs_command_substitution_in_top_level_set(tmp_path: Path) -> None:
    """HIGH. SOURCE-1: validate/export/import MUST run no command substitution but
    dirname, basename, cd, pwd, realpath, readlink, echo, printf.

    Observed: `set -- $(touch pwned)` at a library's top level: the guard records the
    `set` text and `eval`s it after the file, outside the trap, so `flowsh validate` (and
    `flowsh export --bash`, `--inline`) runs `touch`. Expected: no `pwned` file."""
    res = _validate(tmp_path, "set -- $(touch pwned)\n")
    assert res.returncode == 0, res.stderr
    assert not (tmp_path / "pwned").exists(), "validate ran a top-level set's $(cmd)"


def test_import_runs_command_substitution_in_top_level_set(tmp_path: Path) -> None:
    """HIGH. SOURCE-1: `flowsh import` reads a seed file running no command substitution
    but dirname, basename, cd, pwd, realpath, readlink, echo, printf.

    Observed: a seed file with `set -- $(touch pwned)` at top level: `flowsh import`
    creates `pwned` (the guard replays `set` with eval after the file). Expected: none."""
    (tmp_path / "seed.sh").write_text(
        "a() { :; }\nset -- $(touch pwned)\ndeclare -A workflow=( [start]=a [a]=end )\n")
    res = _flowsh("import", "seed.sh", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert not (tmp_path / "pwned").exists(), "import ran a top-level set's $(cmd)"


def test_validate_probe_switched_off_by_the_library(tmp_path: Path) -> None:
    """LOW (needs intent). SOURCE-1: validate runs no command substitution but dirname,
    basename, cd, pwd, realpath, readlink, echo, printf.

    Observed: the guard's own switch is an ordinary variable the library's top-level
    assignments can set: `__flowsh_probe=` then `X=$(touch pwned)` makes `flowsh
    validate` (export, import) run `touch`. Expected: no `pwned` (the guard's names
    refused or out of the library's reach)."""
    res = _validate(tmp_path, "__flowsh_probe=\nX=$(touch pwned)\n")
    assert not (tmp_path / "pwned").exists(), "validate ran a command substitution"
    assert res.returncode in (0, 2), res.stderr


@pytest.mark.parametrize("runtime", ALL, indirect=True)
def test_top_level_set_command_substitution_runs_in_every_step(runtime: str,
                                                               tmp_path: Path) -> None:
    """HIGH. SOURCE-1: a library's top-level commands MUST NOT run, in any step.

    Observed: `set -- $(echo x >> side)` (or `set -e -- "$(cmd)"`) is replayed with
    `eval` after the file in every step (definitions-only mode too), so its command runs
    once per step plus at evaluation/export. Expected: `side` never written."""
    res, files = _run(_two_steps("set -- $(echo x >> side)\n"), runtime, tmp_path,
                      ("calls", "side"))
    assert res.exit == 0, res.stderr
    assert files["calls"] == "a\nb\n"
    assert files["side"] is None, f"top-level set's $(cmd) ran: {files['side']!r}"


# --- command substitutions in commands the guard lets run ---------------------------------

@pytest.mark.parametrize("runtime", LOCAL)
def test_case_header_command_substitution_runs_in_every_step(runtime: str,
                                                              tmp_path: Path) -> None:
    """MEDIUM. SOURCE-1 (the header of a top-level `case` runs; its commands must not).

    Observed: `case "$(echo x >> side)" in *) ;; esac` runs the substitution in every
    step (definitions-only mode lets a `case` header and its `$(...)` through). Expected:
    `side` written at most once per run (evaluated with the assignments, SOURCE-2) or
    never; got one line per step."""
    res, files = _run(_two_steps("case \"$(echo x >> side)\" in *) ;; esac\n"), runtime,
                      tmp_path, ("calls", "side"))
    if res.exit == 2:
        # Refused (fix10d, as the brief allows): a header running a command is refused at
        # validate, FILE:LINE, before anything runs.
        assert "lib.sh:2" in res.stderr and files["side"] is None, res.stderr
        return
    assert res.exit == 0, res.stderr
    assert files["calls"] == "a\nb\n"
    assert (files["side"] or "").count("x") <= 1, f"ran per step: {files['side']!r}"


@pytest.mark.parametrize("runtime", LOCAL)
def test_test_command_substitution_runs_in_every_step(runtime: str, tmp_path: Path) -> None:
    """MEDIUM. SOURCE-1: only tests "without side effects" run at top level.

    Observed: `[ -z "$(sed -i 's/^/x/' calls 2>/dev/null)" ]` passes as a test (redirected
    only to /dev/null), so its command substitution runs before every step (same with
    `command -v "$(cmd)"`, `type $(cmd)`): step b's library edits the file step a wrote.
    Expected: `calls` is "a\\nb\\n"; got "xa\\nb\\n"."""
    res, files = _run(_two_steps("[ -z \"$(sed -i 's/^/x/' calls 2>/dev/null)\" ]\n"), runtime,
                      tmp_path, ("calls",))
    assert res.exit == 0, res.stderr
    assert files["calls"] == "a\nb\n"


@pytest.mark.parametrize("runtime", ["run", "script"])
def test_source_of_command_substitution_runs_in_every_step(runtime: str,
                                                            tmp_path: Path) -> None:
    """MEDIUM. SOURCE-1: `source <(cmd)` is refused, but `source "$(cmd)"` is let through
    and its command runs in every step (`--inline` refuses it at export: REFUSE-4, fine).

    Observed: `. "$(echo x >> side; echo ./inner.sh)"` appends to `side` once per step
    (and at evaluation). Expected: refused like `source <(cmd)`, or run at most once."""
    case = _case({"source": "lib.sh", "steps": [{"name": "a", "run": "f a"},
                                                {"name": "b", "run": "f b"}]},
                 {"lib.sh": ". \"$(echo x >> side; echo ./inner.sh)\"\n",
                  "inner.sh": "f() { echo \"$1\" >> calls; }\n"})
    res, files = _run(case, runtime, tmp_path, ("calls", "side"))
    if res.exit == 2:
        return  # refused: honoured
    assert res.exit == 0, res.stderr
    assert (files["side"] or "").count("x") <= 1, f"ran per step: {files['side']!r}"


@pytest.mark.parametrize("runtime", ALL, indirect=True)
def test_subshell_on_the_line_of_a_command_substitution_runs(runtime: str,
                                                              tmp_path: Path) -> None:
    """MEDIUM. SOURCE-1: a top-level `( subshell )` MUST NOT run.

    Observed: the guard lets a subshell run when it is on the same file:line as an
    assignment with `$(...)` ("a command substitution of the command the guard let run"),
    so `STAMP=$(date +%s); ( echo backup >> backups )` runs the backup once per run (at
    the evaluation of the assignments; `[ -z "$(..)" ] && ( ... )` alike).
    Expected: `backups` never written."""
    res, files = _run(_two_steps("STAMP=$(date +%s); ( echo backup >> backups )\n"),
                      runtime, tmp_path, ("calls", "backups"))
    assert res.exit == 0, res.stderr
    assert files["calls"] == "a\nb\n"
    assert files["backups"] is None, f"top-level subshell ran: {files['backups']!r}"


# --- redirections on commands the guard lets run -----------------------------------------

@pytest.mark.parametrize("runtime", LOCAL)
def test_redirected_double_bracket_test_truncates_in_every_step(runtime: str,
                                                                 tmp_path: Path) -> None:
    """MEDIUM. SOURCE-1: tests run only when "redirected to nothing but /dev/null or a
    descriptor"; `__flowsh_test` exempts any `[[ ... ]]` from the redirection check.

    Observed: `[[ -d . ]] > "$LOG"` empties the log before every step, as `: > "$LOG"`
    did (rt10): step b wipes a's line. Expected: log keeps `a` and `b`."""
    case = _case({"source": "lib.sh", "steps": [{"name": "a", "run": "note a"},
                                                {"name": "b", "run": "note b"}]},
                 {"lib.sh": "LOG=job.log\n[[ -d . ]] > \"$LOG\"\n"
                            "note() { echo \"$1\" >> \"$LOG\"; }\n"})
    res, files = _run(case, runtime, tmp_path, ("job.log",))
    if res.exit == 2:
        # Refused (fix10d): bash performs a `[[ ]]`'s redirection before the DEBUG trap sees
        # it, so it cannot be skipped; refused at validate, FILE:LINE, nothing written.
        assert "lib.sh:2" in res.stderr and files["job.log"] is None, res.stderr
        return
    assert res.exit == 0, res.stderr
    assert files["job.log"] == "a\nb\n"


@pytest.mark.parametrize("runtime", LOCAL)
def test_redirected_source_truncates_in_every_step(runtime: str, tmp_path: Path) -> None:
    """MEDIUM. SOURCE-1: `source`/`.` runs at top level with any redirection (so do
    `declare -f`, `shopt`, `umask`).

    Observed: `. ./inner.sh > "$LOG"` (a library quieting a helper) truncates the log in
    every step. Expected: log keeps `a` and `b`."""
    case = _case({"source": "lib.sh", "steps": [{"name": "a", "run": "note a"},
                                                {"name": "b", "run": "note b"}]},
                 {"lib.sh": "LOG=job.log\n. ./inner.sh > \"$LOG\"\n",
                  "inner.sh": "note() { echo \"$1\" >> \"$LOG\"; }\n"})
    res, files = _run(case, runtime, tmp_path, ("job.log",))
    if res.exit == 2:
        # Refused (fix10d): skipping the source would lose `note`, running it writes the
        # log; refused at validate, FILE:LINE, nothing written.
        assert "lib.sh:2" in res.stderr and files["job.log"] is None, res.stderr
        return
    assert res.exit == 0, res.stderr
    assert files["job.log"] == "a\nb\n"


def test_validate_runs_redirection_of_declare_f(tmp_path: Path) -> None:
    """MEDIUM. SOURCE-1: validate MUST leave no trace.

    Observed: `declare -f f > funcs.txt` (or `shopt -s extglob > x`, `umask 022 > x`,
    `[[ -d . ]] > x`) at top level creates the file when `flowsh validate` reads the
    library. Expected: no file."""
    res = _validate(tmp_path, "declare -f f > funcs.txt\n")
    assert res.returncode == 0, res.stderr
    assert not (tmp_path / "funcs.txt").exists(), "validate ran a top-level redirection"


# --- the guard itself switched off, compound commands, builtins redefined -----------------

@pytest.mark.parametrize("runtime", ALL, indirect=True)
def test_shopt_u_extdebug_switches_the_guard_off(runtime: str, tmp_path: Path) -> None:
    """HIGH. SOURCE-1: `shopt` runs at top level, and `shopt -u extdebug` turns off what
    makes the DEBUG trap skip commands: every later top-level command runs.

    Observed: a library with `shopt -u extdebug` then `echo x >> side` appends to `side`
    in every step (and in `flowsh validate`/export, see the validate test below).
    Expected: `side` never written (or the file refused)."""
    res, files = _run(_two_steps("shopt -u extdebug\necho x >> side\n"), runtime, tmp_path,
                      ("calls", "side"))
    if res.exit == 2:
        return  # refused: honoured
    assert files["side"] is None, f"top-level command ran: {files['side']!r}"


def test_validate_runs_commands_after_shopt_u_extdebug(tmp_path: Path) -> None:
    """HIGH. SOURCE-1: validate MUST run none of a library's commands.

    Observed: `shopt -u extdebug` then `touch pwned`: `flowsh validate` creates `pwned`.
    Expected: no file."""
    res = _validate(tmp_path, "shopt -u extdebug\ntouch pwned\n")
    assert not (tmp_path / "pwned").exists(), "validate ran a top-level command"
    assert res.returncode in (0, 2), res.stderr


@pytest.mark.parametrize("runtime", ALL, indirect=True)
def test_compound_command_redirection_truncates_in_every_step(runtime: str,
                                                               tmp_path: Path) -> None:
    """MEDIUM. SOURCE-1: top-level commands MUST NOT run; a redirection on a top-level
    `{ ...; }`, `if ...; fi`, `while ...; done` is performed before the guard sees the
    commands inside (it skips those, not the redirection).

    Observed: `{ echo started; } > "$LOG"` (a script logging its body) empties the log
    before every step: b wipes a's line. Expected: log keeps `a` and `b`."""
    case = _case({"source": "lib.sh", "steps": [{"name": "a", "run": "note a"},
                                                {"name": "b", "run": "note b"}]},
                 {"lib.sh": "LOG=job.log\nnote() { echo \"$1\" >> \"$LOG\"; }\n"
                            "{ echo started; } > \"$LOG\"\n"})
    res, files = _run(case, runtime, tmp_path, ("job.log",))
    if res.exit == 2:
        # Refused (fix10d): the group's redirection happens before the DEBUG trap sees a
        # command inside it; refused at validate, FILE:LINE, nothing written.
        assert "lib.sh:3" in res.stderr and files["job.log"] is None, res.stderr
        return
    assert res.exit == 0, res.stderr
    assert files["job.log"] == "a\nb\n"


@pytest.mark.parametrize("runtime", LOCAL)
def test_function_named_like_an_allowed_test_runs_in_every_step(runtime: str,
                                                                 tmp_path: Path) -> None:
    """LOW. SOURCE-1: the guard lets `test`/`true`/`[`... run by name; a library that
    defines a function of that name has its function run at top level.

    Observed: `test() { echo x >> side; }` then `test -d . && :` at top level appends to
    `side` in every step. Expected: `side` never written."""
    res, files = _run(_two_steps("test() { echo x >> side; }\ntest -d . && :\n"), runtime,
                      tmp_path, ("calls", "side"))
    assert res.exit == 0, res.stderr
    assert files["side"] is None, f"function named test ran: {files['side']!r}"


# --- regressions: legit libraries refused -------------------------------------------------

@pytest.mark.parametrize("ending", [
    "[ -r ./local.conf ] && . ./local.conf\n",
    "main() { echo main >> calls; }\n[[ \"${BASH_SOURCE[0]}\" == \"$0\" ]] && main \"$@\"\n",
], ids=["optional-include", "bash-source-main-guard"])
@pytest.mark.parametrize("runtime", ALL, indirect=True)
def test_library_ending_in_optional_include_is_refused(runtime: str, ending: str,
                                                        tmp_path: Path) -> None:
    """HIGH (regression). SOURCE-5 refuses a library whose evaluation *fails*; a library
    whose last line is the common optional include `[ -r conf ] && . conf` (conf absent)
    does not fail: bash sources it and its functions work.

    Same for the most common library idiom of all, a last line
    `[[ "${BASH_SOURCE[0]}" == "$0" ]] && main "$@"` (run main only when executed).

    Observed: refused before any step, exit 2, "cannot source lib.sh: bash exited with 1"
    (`flowsh validate` and `flowsh export` too): the guard turns the last command's status
    into the file's. Expected: step runs (writes `calls`)."""
    case = _case({"source": "lib.sh", "steps": [{"name": "a", "run": "f a"}]},
                 {"lib.sh": "f() { echo \"$1\" >> calls; }\n" + ending})
    res, files = _run(case, runtime, tmp_path, ("calls",))
    assert res.exit == 0, res.stderr
    assert files["calls"] == "a\n"


# --- env_file: a value a shell would cut at a control operator -----------------------------

@pytest.mark.parametrize("runtime", LOCAL)
def test_env_file_control_operator_in_unquoted_value_accepted(runtime: str,
                                                              tmp_path: Path) -> None:
    """MEDIUM. ENVFILE-1 (a subset of shell: one meaning) and ENVFILE-2 (what a shell
    would run as a command MUST be refused, FILE:LINE, exit 2).

    Observed: `X=a;rm` (also `X=a|b`, `X=a&b`, `X=a>b`) is accepted on every runtime and
    gives `a;rm`; a shell sourcing the same file sets X=a and runs `rm` (or redirects to a
    file `b`). Expected: refused, exit 2, naming vars.env:1."""
    case = _case({"env_file": "vars.env",
                  "steps": [{"name": "a", "run": "printf '%s' \"$X\" > got"}]},
                 {"vars.env": "X=a;rm\n"})
    res, files = _run(case, runtime, tmp_path, ("got",))
    assert res.exit == 2, f"accepted: X={files['got']!r}"
    assert "vars.env:1" in res.stderr


# --- PARAM-6 / REFUSE-6: names whose value never reaches a step ----------------------------

@pytest.mark.parametrize("name", ["RANDOM", "LINENO", "HISTCMD", "EPOCHSECONDS"])
@pytest.mark.parametrize("runtime", ["run"])  # script and inline refuse them: honoured
def test_param_named_like_a_computed_bash_variable_silently_lost(runtime: str, name: str,
                                                                 tmp_path: Path) -> None:
    """MEDIUM (runtimes disagree). PARAM-6: a param name whose value can never reach a step
    MUST be refused on every runtime (exit 2, naming it); REFUSE-6 lists these for the
    exported script, which does refuse them.

    Observed: `params: {RANDOM: "7"}` (LINENO, HISTCMD, EPOCHSECONDS, SRANDOM,
    BASHPID alike): `flowsh run` accepts it and the step sees bash's own value (a random
    number, 0, 2...), silently; the exported scripts refuse it. Expected: the step sees 7,
    or exit 2 naming the param, on every runtime."""
    case = _case({"params": {name: "7"},
                  "steps": [{"name": "a", "run": f"printf '%s' \"${name}\" > got"}]})
    res, files = _run(case, runtime, tmp_path, ("got",))
    if res.exit == 2:
        assert name in res.stderr
        return
    assert files["got"] == "7", f"param {name}=7 reached the step as {files['got']!r}"


@pytest.mark.skipif(os.geteuid() != 0, reason="bash ignores PS4 from the environment as root")
@pytest.mark.parametrize("runtime", LOCAL)
def test_param_ps4_silently_lost_as_root(runtime: str, tmp_path: Path) -> None:
    """LOW. PARAM-6: a name a step's bash sets itself when it starts MUST be refused.

    Observed (running as root, as in containers and CI): `params: {PS4: "> "}` is accepted
    on every runtime but the step sees `+ `: bash does not import PS4 from the environment
    when its effective uid is 0. Expected: refused (exit 2, naming PS4), or `> ` reaches
    the step."""
    case = _case({"params": {"PS4": "> "},
                  "steps": [{"name": "a", "run": "printf '%s' \"$PS4\" > got"}]})
    res, files = _run(case, runtime, tmp_path, ("got",))
    if res.exit == 2:
        assert "PS4" in res.stderr
        return
    assert files["got"] == "> ", f"PS4 reached the step as {files['got']!r}"


# --- definitions chosen by a branch on a variable the library later changes ---------------

@pytest.mark.parametrize("runtime", ALL, indirect=True)
def test_function_chosen_by_case_on_an_unset_temporary_is_the_wrong_one(
        runtime: str, tmp_path: Path) -> None:
    """HIGH (silently wrong code runs). SOURCE-1/SOURCE-2: a top-level `case`/`if` MUST
    take the branch bash would; the functions a step gets are those bash would define.

    Observed: the portable-helper idiom
    `_os=$(uname -s); case $_os in Linux) f() {linux} ;; *) f() {other} ;; esac; unset _os`
    gives every step the `other` function on Linux: steps re-read the file for definitions
    with the *final* state (where `_os` is unset, or a variable holds its last value:
    `MODE=setup; if [ "$MODE" = setup ]; then f(){..}; fi; MODE=done` alike), not the
    value at that line. `bash -c '. lib.sh; f'` prints linux. Expected: `a:linux`."""
    lib = ("_os=$(uname -s)\n"
           "case $_os in\n"
           "  Linux) f() { echo \"$1:linux\" >> calls; } ;;\n"
           "  *) f() { echo \"$1:other\" >> calls; } ;;\n"
           "esac\n"
           "unset _os\n")
    case = _case({"source": "lib.sh", "steps": [{"name": "a", "run": "f a"}]},
                 {"lib.sh": lib})
    res, files = _run(case, runtime, tmp_path, ("calls",))
    assert os.uname().sysname == "Linux"
    if res.exit == 2:
        # Refused (fix10c, as the brief allows): steps cannot re-take bash's branch on a
        # value the file unset; naming the chosen function's line honours the contract.
        assert "lib.sh:3" in res.stderr and "function f" in res.stderr, res.stderr
        assert files["calls"] is None
        return
    assert res.exit == 0, res.stderr
    assert files["calls"] == "a:linux\n"


# --- REFUSE-3 / SECRET-2: a secret's literal in the --inline script's text -----------------

@pytest.mark.parametrize("line", [
    'API_TOKEN=${API_TOKEN:-s3cr3tlit}',
    ': "${API_TOKEN:=s3cr3tlit}"',
    'API_TOKEN+=s3cr3tlit',
    'case x in x) API_TOKEN=s3cr3tlit ;; esac',
], ids=["default-expansion", "colon-default", "append", "in-a-case-branch"])
def test_inline_export_writes_a_library_secret_literal(line: str, tmp_path: Path) -> None:
    """HIGH. REFUSE-3: an `--inline` export of a library that sets a secret-looking variable
    to a literal value MUST be refused (exit 2, FILE:LINE naming it); SECRET-2: secret
    values MUST NOT be written to an exported script's text.

    Observed: `API_TOKEN=s3cr3tlit` is refused, but the everyday default forms
    `API_TOKEN=${API_TOKEN:-s3cr3tlit}` and `: "${API_TOKEN:=s3cr3tlit}"` (the form
    SOURCE-1 blesses), `API_TOKEN+=...` and an assignment in a `case` branch export with
    exit 0 and the literal in the script. Expected: exit 2 naming lib.sh:2 and API_TOKEN,
    and no literal in any output."""
    (tmp_path / "lib.sh").write_text(f"f() {{ :; }}\n{line}\n")
    (tmp_path / "flow.yaml").write_text("source: lib.sh\nsteps:\n  - {name: a, run: f}\n")
    res = _flowsh("export", "--bash", "--inline", "flow.yaml", cwd=tmp_path)
    assert "s3cr3tlit" not in res.stdout, "the secret's literal is in the exported script"
    assert res.returncode == 2 and "lib.sh:2" in res.stderr, res.stderr


@pytest.mark.parametrize("runtime", LOCAL)
def test_env_file_legacy_arithmetic_expansion_taken_as_data(runtime: str,
                                                            tmp_path: Path) -> None:
    """LOW. ENVFILE-1 (a subset of shell) / ENVFILE-4 (expansions MUST be refused, only a
    lone `$` is data).

    Observed: `X=$[1+1]` (and `X="$[2+2]"`), bash's legacy arithmetic expansion, is
    accepted as the literal `$[1+1]` on every runtime; `set -a; . vars.env` gives X=2.
    Expected: refused (exit 2, vars.env:1), like `$((...))`."""
    case = _case({"env_file": "vars.env",
                  "steps": [{"name": "a", "run": "printf '%s' \"$X\" > got"}]},
                 {"vars.env": "X=$[1+1]\n"})
    res, files = _run(case, runtime, tmp_path, ("got",))
    assert res.exit == 2, f"accepted: X={files['got']!r}"
    assert "vars.env:1" in res.stderr


@pytest.mark.parametrize("runtime", ALL, indirect=True)
def test_arithmetic_if_test_silently_takes_the_then_branch(runtime: str,
                                                            tmp_path: Path) -> None:
    """HIGH (silently wrong code runs). SOURCE-1: a top-level `if` takes the branch bash
    would, or, when its test is a command other than the side-effect-free tests, the file
    MUST be refused (exit 2, FILE:LINE).

    Observed: `if (( 1 > 2 )); then f() {wrong}; else f() {right}; fi` (the idiom
    `if (( BASH_VERSINFO[0] >= 5 )); then ...`) is neither run nor refused: the skipped
    `((` reports success and every step gets the `then` function (`let` is refused; `((`
    is missed because the check looks for the command word in the line with parentheses
    blanked out). `(( ... )) && f() {..} || f() {..}` alike. Expected: `a:right`, or
    exit 2 naming lib.sh:1."""
    lib = ("if (( 1 > 2 )); then f() { echo \"$1:wrong\" >> calls; }; "
           "else f() { echo \"$1:right\" >> calls; }; fi\n")
    case = _case({"source": "lib.sh", "steps": [{"name": "a", "run": "f a"}]},
                 {"lib.sh": lib})
    res, files = _run(case, runtime, tmp_path, ("calls",))
    if res.exit == 2:
        assert "lib.sh:1" in res.stderr
        return
    assert files["calls"] == "a:right\n"


@pytest.mark.parametrize("runtime", LOCAL)
def test_if_test_on_a_continuation_line_not_refused(runtime: str, tmp_path: Path) -> None:
    """HIGH (silently wrong values). SOURCE-1: a top-level `if` whose test runs a command
    other than the side-effect-free tests MUST be refused (exit 2, FILE:LINE).

    Observed: `if [ -r lib.sh ] &&\n   grep -q root /dev/null; then IS_X=yes; fi`: the
    check reads only the `if` line, so the skipped grep "reports success" and IS_X=yes
    reaches every step; bash leaves it unset. Expected: exit 2 naming lib.sh:2 (or
    `a:no`)."""
    lib = "if [ -r lib.sh ] &&\n   grep -q root /dev/null; then IS_X=yes; fi\n"
    case = _case({"source": "lib.sh", "steps": [{"name": "a", "run": "f a"}]},
                 {"lib.sh": lib + "f() { echo \"$1:${IS_X:-no}\" >> calls; }\n"})
    res, files = _run(case, runtime, tmp_path, ("calls",))
    if res.exit == 2:
        assert "lib.sh:" in res.stderr
        return
    assert files["calls"] == "a:no\n"


@pytest.mark.parametrize("runtime", LOCAL)
def test_and_list_on_a_skipped_command_takes_the_wrong_branch(runtime: str,
                                                              tmp_path: Path) -> None:
    """MEDIUM (contract gap: SOURCE-1 says a skipped command "reports success", and
    refuses that lie only in an `if` test). One workflow, one meaning: bash's meaning.

    Observed: `grep -q root /dev/null && IS_X=yes` (the `grep -q Ubuntu /etc/os-release
    && IS_UBUNTU=1` idiom): grep is skipped and IS_X=yes reaches every step, on every
    runtime, though bash leaves it unset. Expected: `a:no`, or refused (exit 2,
    lib.sh:1) as the same test in an `if` is."""
    lib = "grep -q root /dev/null && IS_X=yes\n"
    case = _case({"source": "lib.sh", "steps": [{"name": "a", "run": "f a"}]},
                 {"lib.sh": lib + "f() { echo \"$1:${IS_X:-no}\" >> calls; }\n"})
    res, files = _run(case, runtime, tmp_path, ("calls",))
    if res.exit == 2:
        assert "lib.sh:" in res.stderr
        return
    assert files["calls"] == "a:no\n"


# --- --inline: a library's own directory is somewhere else --------------------------------

@pytest.mark.parametrize("runtime", ["inline"])  # run and script give lib's directory
def test_inline_library_dir_points_into_the_unpacked_copy(runtime: str,
                                                           tmp_path: Path) -> None:
    """MEDIUM (runtimes disagree). One workflow, one meaning (ENV-1: library variables are
    part of the step's environment; SOURCE-4 only allows refusing a path at export).

    Observed: the universal idiom `DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)`
    gives, on `--inline`, the run's unpacked copy (`.../runs/<id>/files/root/<path>`),
    not the library's directory: a step reading a data file next to the library
    (`cat "$DIR/data.txt"`) works on `flowsh run` and the plain script and fails on
    `--inline` (the file is not embedded, and the export does not refuse). Expected:
    `got` holds "data" (or the export refused, exit 2)."""
    case = _case({"source": "lib.sh",
                  "steps": [{"name": "a", "run": "cat \"$DIR/data.txt\" > got"}]},
                 {"lib.sh": "DIR=$(cd \"$(dirname \"${BASH_SOURCE[0]}\")\" && pwd)\n",
                  "data.txt": "data\n"})
    res, files = _run(case, runtime, tmp_path, ("got",))
    if res.exit == 2 and "lib.sh" in res.stderr:
        return
    assert res.exit == 0, res.stderr
    assert files["got"] == "data\n"
