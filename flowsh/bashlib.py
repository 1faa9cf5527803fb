"""Bash libraries as steps: sourcing a user's file for its definitions, and checking them.

A `source:` file is often an existing *script*, not a pure library: functions, some settings,
and at the bottom a call that runs the whole thing (`main "$@"`, the seed's
`execute_workflow`). Sourcing it plainly before every step would run that call every time.
So flowsh sources each file under a guard, written in bash so an exported script can use it
too (`flowsh.bashguard.GUARD`, which says what it runs, skips and refuses):

* bash itself parses and runs the file (no regex reading of shell), with ``extdebug`` on and
  a DEBUG trap deciding for each simple command at the file's top level. Function
  definitions are not simple commands, so they always happen; commands inside functions
  never run at source time because calls are skipped.
* ``set ...`` lines are recorded and replayed after the file is read, so a file's
  ``set -euo pipefail`` still applies to its functions but cannot make the guard itself
  (a skipped command, an unset name) kill the step while reading.

Definitions-only mode and the run's library state (shared rule 1). A file's top-level
assignments (``STAMP=$(date +%s)``) are evaluated **once per run**, not once per step:

* before the first step, one bash (the run's base environment, the first step's working
  directory) runs `library_state_script(files)`: the files sourced under the guard as
  above, then every variable they set or changed printed with ``declare -p``. The engine
  records that text (0600, in the run's private directory; a resume reuses it) and hands
  it to each step as ``FLOWSH_LIBRARY_STATE``.
* each step runs `STATE_EVAL` (``eval "${FLOWSH_LIBRARY_STATE-}"``), then
  ``source_script(files, definitions_only=True)``: with ``__flowsh_defs=1`` set the guard
  also skips top-level assignments and ``declare/typeset/export/readonly/local/unset``
  (functions, ``set``, ``shopt``, ``umask`` and nested sources still happen), then puts
  back the values flowsh sets on purpose (env_file, env, params, upstream outputs, step
  env), which win over the library's. The state is evaluated *before* sourcing so a
  nested ``source "$DIR/inner.sh"`` finds the ``DIR`` the library computed; sourcing
  definitions-only cannot change it afterwards, so the order gives the same values.

The exported script uses the same pieces: `GUARD`, ``__flowsh_defs=1`` (or
`source_script(..., definitions_only=True)`), `library_state_script`, `STATE_EVAL`.

Why not a functions-only copy? Extracting function bodies needs a shell parser; bash is
the only correct one, and it also gives us variables and nested sources for free this way.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from flowsh.bashguard import _CLEANUP, GUARD
from flowsh.errors import WorkflowError
from flowsh.yamlsrc import Positions

if TYPE_CHECKING:
    from flowsh.model import Step, Workflow



def source_script(files: Sequence[str], *, definitions_only: bool = False,
                  probe: bool = False) -> str:
    """Bash text that sources `files` in order, each for its definitions (see above).

    `definitions_only`: top-level assignments are skipped too (``__flowsh_defs=1``); the
    caller supplies their values once evaluated (`STATE_EVAL`, `library_state_script`).
    Paths are used as given (relative ones resolve against the step's working directory).
    A file that cannot be read or does not parse ends the step with bash's own message.
    """
    if not files:
        return ""
    parts = [GUARD.strip()]
    if definitions_only:
        parts.append("__flowsh_defs=1")
    if probe:
        # Validate and import read the file and run nothing: an assignment's command
        # substitution runs only if made of dirname, basename, cd, pwd, realpath,
        # readlink, echo, printf (no redirection).
        parts.append("__flowsh_probe=1")
    parts += source_lines([shlex.quote(f) for f in files])
    parts.append(_CLEANUP)
    return "\n".join(parts) + "\n"


def source_lines(refs: Sequence[str]) -> list[str]:
    """The lines that source each file under the guard (already defined); `refs` are bash
    words, quoted by the caller (a path, or an expression such as ``"$DIR"/lib.sh``)."""
    # One line per file: the trap is set and cleared at top level, around the source.
    return [
        f'__flowsh_file={ref} __flowsh_source "$@"; trap __flowsh_guard DEBUG; '
        f'builtin source {ref}; '
        f'__flowsh_rc=$?; trap - DEBUG; __flowsh_sourced "$__flowsh_rc" {ref}'
        for ref in refs
    ]


# --- a library's top-level assignments, once per run ---------------------------------------

# Names bash sets itself, or flowsh's own: never part of a library's state.
_NOT_STATE = (
    "BASH|BASH_*|BASHOPTS|BASHPID|FUNCNAME|PIPESTATUS|LINENO|RANDOM|SRANDOM|SECONDS|"
    "EPOCHREALTIME|EPOCHSECONDS|_|PWD|OLDPWD|SHLVL|SHELLOPTS|PPID|UID|EUID|GROUPS|HOSTNAME|"
    "HOSTTYPE|OSTYPE|MACHTYPE|DIRSTACK|OPTERR|OPTIND|OPTARG|HISTCMD|COLUMNS|LINES|"
    "COMP_*|__flowsh_*|[Ff][Ll][Oo][Ww][Ss][Hh]_*"
)

# The step side: evaluate the recorded state (before sourcing, so that a nested
# `source "$DIR/inner.sh"` finds the DIR the library computed).
STATE_EVAL = 'eval "${FLOWSH_LIBRARY_STATE-}"'


def library_state_script(files: Sequence[str], *, probe: bool = False) -> str:
    """Bash text that sources `files` under the guard, assignments included, and prints the
    variables they set or changed as ``declare -p`` text, then a NUL, then ``name NUL value
    NUL`` for each of them (for masking secrets).

    Run once per run, before the first step, with the run's base environment; its text is
    what every step gets as ``FLOWSH_LIBRARY_STATE``.
    """
    guard = GUARD.strip() + ("\n__flowsh_probe=1" if probe else "")
    return state_capture(guard, [shlex.quote(f) for f in files]) + _CLEANUP + "\n"


def state_capture(guard: str, refs: Sequence[str]) -> str:
    """`library_state_script` around any text that defines the guard (the exported script
    evals its one copy) and any quoted file words."""
    before = (
        "declare -A __flowsh_was=()\n"
        "mapfile -t __flowsh_names < <(compgen -v)\n"
        'for __flowsh_n in "${__flowsh_names[@]}"; do '
        '__flowsh_was[$__flowsh_n]=$(declare -p "$__flowsh_n" 2>/dev/null); done\n'
    )
    after = (
        "mapfile -t __flowsh_names < <(compgen -v)\n"
        "__flowsh_changed=()\n"
        'for __flowsh_n in "${__flowsh_names[@]}"; do\n'
        f"  case $__flowsh_n in {_NOT_STATE}) continue ;; esac\n"
        '  __flowsh_d=$(declare -p "$__flowsh_n" 2>/dev/null) || continue\n'
        '  [[ ${__flowsh_was[$__flowsh_n]-} == "$__flowsh_d" ]] && continue\n'
        # `readonly X=lib` would beat the values that outrank it in every step (SOURCE-3):
        # the state keeps the value, not the attribute.
        '  if [[ $__flowsh_d =~ ^declare\\ -([a-zA-Z]*r[a-zA-Z]*)\\  ]]; then\n'
        '    __flowsh_f=${BASH_REMATCH[1]//r/}\n'
        '    __flowsh_d="declare -${__flowsh_f:--} ${__flowsh_d#"${BASH_REMATCH[0]}"}"\n'
        '  fi\n'
        "  printf '%s\\n' \"$__flowsh_d\"\n"
        '  __flowsh_changed+=("$__flowsh_n")\n'
        "done\n"
        "printf '\\0'\n"
        'for __flowsh_n in "${__flowsh_changed[@]}"; do '
        "printf '%s\\0%s\\0' \"$__flowsh_n\" \"${!__flowsh_n-}\"; done\n"
    )
    # What the files print while read is no state (stdout is the state's text): stderr.
    return (before + guard + "\n{\n" + "\n".join(source_lines(refs)) + "\n} >&2\n"
            + after)


# --- checking that called functions exist ------------------------------------------------

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_:.-]*\Z")
_KEYWORDS = frozenset([
    "if", "then", "else", "elif", "fi", "case", "esac", "for", "select", "while", "until",
    "do", "done", "in", "function", "time", "coproc", "{", "}", "!", "[[", "]]",
])


def first_word(run: str) -> str | None:
    """The command word of a step's first command, if it is a plain name."""
    for line in run.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            return None
        # Leading NAME=value words are environment for the command, not the command.
        while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
            words.pop(0)
        if not words:
            return None
        word = words[0].rstrip(";")
        if word in _KEYWORDS or not _WORD.match(word):
            return None
        return word
    return None


def _clean_env() -> dict[str, str]:
    # PATH stays so external commands are recognised as such; nothing else leaks in.
    return {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "LC_ALL": "C"}


def probe_names(
    files: Sequence[str], names: Iterable[str], cwd: str | os.PathLike[str],
    *, shown: Sequence[str] | None = None,
) -> dict[str, str]:
    """Ask bash what each name is after sourcing `files` (guarded) in a clean environment.

    Returns name -> ``function``, ``builtin``, ``keyword``, ``alias``, ``file`` or ``""``
    (not found). Raises WorkflowError when a file cannot be read or has a syntax error.
    """
    import sh

    names = sorted(set(names))
    lines = []
    for n in names:
        q = shlex.quote(n)
        lines.append(f"printf '%s\\t%s\\n' {q} \"$(type -t -- {q})\"\n")
    script = source_script(files, probe=True) + "".join(lines)
    try:
        result = sh.Command("env")(
            "-i", *(f"{k}={v}" for k, v in _clean_env().items()),
            "bash", "--noprofile", "--norc", "-c", script,
            _cwd=str(cwd), _ok_code=list(range(256)), _in=None, _return_cmd=True,
            _timeout=30,
        )
    except sh.TimeoutException:
        raise WorkflowError(
            f"reading {', '.join(shown or files)} took over 30s (a top-level command waiting?)"
        ) from None
    out = str(result)
    if result.exit_code != 0:
        err = (result.stderr or b"").decode(errors="replace").strip().splitlines()
        detail = err[0] if err else f"bash exited with {result.exit_code}"
        raise WorkflowError(f"cannot source {', '.join(shown or files)}: {detail}")
    kinds: dict[str, str] = {}
    for line in out.splitlines():
        name, _, kind = line.partition("\t")
        kinds[name] = kind
    return kinds


def check_functions(wf: Workflow,
                    locate: Callable[[], Positions | None]) -> list[WorkflowError]:
    """A `run` step calling a name that none of its sourced files defines is an error.

    Only steps with sourced files are checked, and only names bash does not otherwise know
    (a builtin, keyword or a program on PATH is fine): those can only be meant to come from
    the files. One bash per distinct (files, directory), in a clean environment.
    """
    from flowsh.paths import resolve_path, step_cwd

    groups: dict[tuple[tuple[str, ...], Path], list[tuple[int, Step, str]]] = {}
    for i, step in enumerate(wf.steps):
        files = [*wf.source, *step.source]
        if step.run is None or not files:
            continue
        word = first_word(step.run)
        if word is None:
            continue
        groups.setdefault((tuple(files), step_cwd(wf, step)), []).append((i, step, word))
    errors: list[WorkflowError] = []
    # The file's positions, read (`locate`) only if something is wrong.
    found: list[Positions | None] = []

    def at(loc: tuple[str | int, ...], msg: str) -> WorkflowError:
        if not found:
            found.append(locate())
        return _at(found[0], wf, loc, msg)

    for (shown, cwd), items in groups.items():
        try:
            # Resolved as the engine resolves them: against the workflow file's directory.
            paths = [str(resolve_path(wf, f)) for f in shown]
            kinds = probe_names(paths, [w for _, _, w in items], cwd, shown=shown)
        except WorkflowError as exc:
            errors.append(at(("source",), exc.detail))
            continue
        for i, step, word in items:
            if kinds.get(word):
                continue
            names = ", ".join(shown)
            errors.append(at(
                ("steps", i, "run"),
                f"step {step.name!r} calls {word!r}, which is not a function in {names} "
                "(nor a builtin or a command on PATH)",
            ))
    return errors


def _at(pos: Positions | None, wf: Workflow, loc: tuple[str | int, ...],
        msg: str) -> WorkflowError:
    if pos is not None:
        return pos.error(msg, loc)
    return WorkflowError(msg, path=wf.path)
