"""`source:` libraries in an exported script (docs/semantics rule 1, docs/export.md).

Once per run, before the first step, one bash in the workflow's directory with the run's
base environment (env_file < env < params) sources the libraries under flowsh's guard
(`flowsh.bashguard.GUARD`: definitions and top-level assignments, never top-level commands)
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

from flowsh.bashguard import _CLEANUP, GUARD
from flowsh.bashlib import source_lines, state_capture


def guard() -> str:
    """The guard's functions (definitions-only mode included: ``__flowsh_defs``); the script
    holds them once and hands them to steps as FLOWSH_GUARD."""
    return GUARD.strip()


def step_prelude(refs: Sequence[str]) -> str:
    """Bash text run before a step's own: the libraries' state and definitions."""
    return "\n".join([
        'eval "$FLOWSH_GUARD"',
        "__flowsh_keep=",
        # Only with a name in it: `declare -p` of nothing prints every variable.
        '[[ ${FLOWSH_PRECEDENCE-} != *[![:space:]]* ]] || '
        "__flowsh_keep=$(declare -p $FLOWSH_PRECEDENCE 2>/dev/null)",
        'eval "${FLOWSH_LIBRARY_STATE-}"',
        "__flowsh_defs=1",
        *source_lines(refs),
        # `--inline`: a library variable holding a path into an embedded copy's directory
        # (`DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)`) reaches the step as the path
        # where the library lived at export, as under `flowsh run` (SOURCE-4); the sourcing
        # above used the copies.
        "__flowsh_root=${FLOWSH_FILES-}/root",
        'if [[ -n ${FLOWSH_FILES-} && -d $__flowsh_root ]]; then',
        # The copy's directory as written and resolved (`pwd -P`, `realpath`: the state
        # directory may lie behind a symlink, as /tmp on macOS).
        '  __flowsh_rootp=$(cd "$__flowsh_root" && pwd -P) || __flowsh_rootp=$__flowsh_root',
        '  while IFS= read -r __flowsh_n; do',
        r'    [[ $__flowsh_n =~ ^declare\ -[a-zA-Z-]*\ ([A-Za-z_][A-Za-z0-9_]*)= ]] || continue',
        '    __flowsh_n=${BASH_REMATCH[1]}',
        '    [[ $(declare -p "$__flowsh_n" 2>/dev/null) != "declare -"[aA]* ]] || continue',
        '    if [[ ${!__flowsh_n-} == "$__flowsh_root"/* ]]; then',
        '      printf -v "$__flowsh_n" %s "${!__flowsh_n#"$__flowsh_root"}"',
        '    elif [[ ${!__flowsh_n-} == "$__flowsh_rootp"/* ]]; then',
        '      printf -v "$__flowsh_n" %s "${!__flowsh_n#"$__flowsh_rootp"}"',
        '    fi',
        '  done <<<"${FLOWSH_LIBRARY_STATE-}"',
        'fi',
        'eval "$__flowsh_keep"',
        _CLEANUP + " __flowsh_keep __flowsh_root __flowsh_rootp __flowsh_n",
    ])


def eval_script(refs: Sequence[str]) -> str:
    """Bash text that sources the libraries once and prints what they assigned."""
    return state_capture('eval "$FLOWSH_GUARD"', refs)
