"""`source:` libraries in an exported script (docs/semantics rule 1, docs/export.md).

Once per run, before the first step, one bash in the workflow's directory with the run's
base environment (env_file < env < params) sources the libraries under flowsh's guard
(`flowsh.bashlib.GUARD`: definitions and top-level assignments, never top-level commands)
and prints, with `declare -p`, every variable the libraries assigned (`eval_script`). The
script records that text in the run directory and hands it to each step as
`FLOWSH_LIBRARY_STATE`; a step (`step_prelude`) notes the values that outrank the
libraries (`FLOWSH_PRECEDENCE` names them: env_file, env, params, upstream outputs, step
env), evals the state, sources the libraries for their definitions only (assignments
skipped too, so `STAMP=$(date ...)` is never evaluated again) and puts the noted values
back. The state is evaluated before the definitions so that a nested
`source "$DIR/inner.sh"` finds its `DIR`.
"""

from __future__ import annotations

from collections.abc import Sequence

from flowsh.bashlib import _CLEANUP, GUARD

_ANCHOR = "  local cmd=$BASH_COMMAND\n"
# Definitions-only reading: with __flowsh_defs_only set, assignments and declarations at a
# file's top level are skipped as well (functions, set/shopt/umask and nested sources stay).
_DEFS_ONLY = r"""  if [[ -n ${__flowsh_defs_only-} ]]; then
    case $cmd in
      declare\ -f*|declare\ -F*|typeset\ -f*) return 0 ;;
      declare|declare\ *|typeset\ *|export\ *|readonly\ *|local\ *|unset\ *) return 1 ;;
    esac
    __flowsh_assign_only "$cmd" && return 1
  fi
"""

# Variables bash itself sets or changes: never part of a library's state.
_DYNAMIC = (
    "__flowsh_*|BASH|BASH_*|BASHOPTS|BASHPID|COLUMNS|COMP_*|DIRSTACK|EPOCHREALTIME|"
    "EPOCHSECONDS|EUID|FUNCNAME|GROUPS|HISTCMD|HOSTNAME|HOSTTYPE|LINENO|LINES|MACHTYPE|"
    "OLDPWD|OPTARG|OPTERR|OPTIND|OSTYPE|PIPESTATUS|PPID|PWD|RANDOM|SECONDS|SHELLOPTS|SHLVL|"
    "SRANDOM|UID|_|[Ff][Ll][Oo][Ww][Ss][Hh]_*"
)


def guard() -> str:
    """The guard's functions, with the definitions-only mode; the script holds them once
    and hands them to steps as FLOWSH_GUARD."""
    if _ANCHOR not in GUARD:
        raise RuntimeError("flowsh.bashlib.GUARD changed: update flowsh.exportlib._ANCHOR")
    return GUARD.strip().replace(_ANCHOR, _ANCHOR + _DEFS_ONLY, 1)


def _sources(refs: Sequence[str]) -> list[str]:
    # One line per file: the trap is set and cleared at top level, around the source.
    return [
        f"__flowsh_source; trap __flowsh_guard DEBUG; builtin source {ref}; "
        f'__flowsh_rc=$?; trap - DEBUG; __flowsh_sourced "$__flowsh_rc" {ref}'
        for ref in refs
    ]


def step_prelude(refs: Sequence[str]) -> str:
    """Bash text run before a step's own: the libraries' state and definitions."""
    return "\n".join([
        'eval "$FLOWSH_GUARD"',
        "__flowsh_keep=",
        '[ -z "${FLOWSH_PRECEDENCE-}" ] || '
        "__flowsh_keep=$(declare -p $FLOWSH_PRECEDENCE 2>/dev/null)",
        'eval "${FLOWSH_LIBRARY_STATE-}"',
        "__flowsh_defs_only=1",
        *_sources(refs),
        'eval "$__flowsh_keep"',
        _CLEANUP + " __flowsh_keep __flowsh_defs_only",
    ])


def eval_script(refs: Sequence[str]) -> str:
    """Bash text that sources the libraries once and prints what they assigned."""
    return "\n".join([
        'eval "$FLOWSH_GUARD"',
        "declare -A __flowsh_before=()",
        "__flowsh_changed=()",
        "for __flowsh_n in $(compgen -v); do",
        '  __flowsh_before[$__flowsh_n]=$(declare -p "$__flowsh_n" 2>/dev/null)',
        "done",
        *_sources(refs),
        "for __flowsh_n in $(compgen -v); do",
        f"  case $__flowsh_n in {_DYNAMIC}) continue ;; esac",
        '  __flowsh_d=$(declare -p "$__flowsh_n" 2>/dev/null) || continue',
        '  [[ ${__flowsh_before[$__flowsh_n]-} == "$__flowsh_d" ]] && continue',
        "  printf '%s\\n' \"$__flowsh_d\"",
        '  __flowsh_changed+=("$__flowsh_n")',
        "done",
        # Then a NUL and `name NUL value NUL` pairs: the script masks secret-named ones.
        "printf '\\0'",
        'for __flowsh_n in "${__flowsh_changed[@]}"; do',
        "  printf '%s\\0%s\\0' \"$__flowsh_n\" \"${!__flowsh_n-}\"",
        "done",
    ]) + "\n"
