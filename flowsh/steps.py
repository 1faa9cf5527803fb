"""How a step becomes a process request: its argv, its environment, its retry delays;
and the plan `--dry-run` prints. Pure functions of the workflow: no state, no I/O but
reading an `env_file`.
"""

from __future__ import annotations

import functools
import os
import random
import shlex
from collections.abc import Iterable, Iterator, Sequence
from typing import Literal

from flowsh import calls
from flowsh.bashguard import XTRACE_ON
from flowsh.bashlib import STATE_EVAL, source_script
from flowsh.envfile import read_env_file
from flowsh.executor import Outcome
from flowsh.graph import Graph
from flowsh.model import IDENT, Step, Workflow
from flowsh.paths import resolve_path, step_cwd

POSIX_SHELLS = {"bash", "sh", "dash", "zsh", "ksh", "mksh", "ash", "busybox"}


def shell_name(shell: Sequence[str]) -> str:
    """The program a `shell:` runs: `bash` for `/usr/bin/env bash` too (env's options and
    NAME=VALUE words skipped), so `source:` and `strict` apply to it as to `bash`."""
    words = iter(shell)
    name = os.path.basename(next(words, ""))
    if name != "env":
        return name
    for word in words:
        if not word.startswith("-") and "=" not in word:
            return os.path.basename(word)
    return name


@functools.lru_cache(maxsize=64)
def shell_words(shell: str) -> tuple[str, ...]:
    """A `shell:` setting split as the shell would (the same few settings at every step)."""
    return tuple(shlex.split(shell))


def build_argv(wf: Workflow, step: Step, keep: Iterable[str] = (),
               *, if_test: bool = False) -> list[str]:
    """The argv of a step. The step's text is the program; values arrive via env only.

    `if_test`: the argv of the step's `if` test instead, with the same libraries (their
    variables and functions are part of the step's environment, IF-1) but not `strict`.

    `keep`: names flowsh sets on purpose (params, env, upstream outputs). A bash library's
    top-level `day=$(date +%F)` is a default; it must not undo `day=2026-11-24` given on
    the command line, so their values are put back after the files are sourced. Only the
    names are written into the text (shell identifiers, validated); the values stay in
    the environment.
    """
    if step.call is not None:
        return calls.argv()
    shell = shell_words(step.shell or wf.shell)
    run = step.if_ if if_test else step.run
    if if_test and (step.script is not None or not library_files(wf, step)):
        return [*shell, "-c", run or "true"]
    if step.script is not None:
        script = resolve_path(wf, step.script, step_cwd(wf, step))
        if os.access(script, os.X_OK):
            return [str(script), *step.args]
        return [*shell, str(script), *step.args]
    name = shell_name(shell)
    if name not in POSIX_SHELLS:
        return [*shell, "-c", step.run or ""]  # python3 -c, node -e users set shell: "node -e"
    prelude = []
    sources = [str(resolve_path(wf, src)) for src in (*wf.source, *step.source)]
    library = bool(sources) and name == "bash"
    if library:
        names = sorted(n for n in set(keep) if IDENT.match(n))
        if names:
            prelude.append(f"__flowsh_keep=$(declare -p {' '.join(names)} 2>/dev/null)")
        # Definitions only: a script's trailing `main "$@"` must not run, and its top-level
        # assignments were evaluated once for the run (FLOWSH_LIBRARY_STATE; bashlib.py).
        prelude.append(STATE_EVAL)
        prelude.append(source_script(sources, definitions_only=True))
        if names:
            prelude.append('eval "$__flowsh_keep"; unset __flowsh_keep')
        sources = []
    for src in sources:
        path = shlex.quote(src)
        prelude.append(f". {path} || {{ echo 'flowsh: cannot source {path}' >&2; exit 2; }}")
    if wf.strict and not if_test:
        prelude.append("set -eo pipefail" if name in ("bash", "zsh", "ksh") else "set -e")
    if library:
        prelude.append(XTRACE_ON)
    text = "\n".join([*prelude, run or ""])
    return [*shell, "-c", text, f"flowsh:{step.name}"]


def library_files(wf: Workflow, step: Step) -> list[str]:
    """The bash libraries a step sources (resolved), or [] when it sources none under the
    guard (a `script` step, or a shell other than bash, which sources them plainly)."""
    if step.script is not None or not (wf.source or step.source):
        return []
    if shell_name(shell_words(step.shell or wf.shell)) != "bash":
        return []
    return [str(resolve_path(wf, src)) for src in (*wf.source, *step.source)]


def retry_delay(step: Step, attempt: int) -> float:
    """Delay before attempt `attempt + 1`: exponential backoff, capped, with jitter."""
    base = (step.retry_delay or 0.0) * (step.backoff or 1.0) ** (attempt - 1)
    base = min(base, step.max_delay if step.max_delay is not None else base)
    jitter = step.jitter or 0.0
    return max(0.0, base * (1 + random.uniform(-jitter, jitter)))


def exit_kind(step: Step, outcome: Outcome) -> Literal["ok", "skip", "fail"]:
    """What an attempt's end means by the step's exit-code policy (docs/semantics.md CODE):
    `success_on` and `skip_on` match only a command's own exit, never a timeout, a signal or
    a command that could not start."""
    if outcome.ok:
        return "ok"
    own_exit = not (outcome.timed_out or outcome.signal or outcome.error or outcome.interrupted)
    if own_exit and outcome.exit_code in step.success_on:
        return "ok"
    if own_exit and outcome.exit_code in step.skip_on:
        return "skip"
    return "fail"


def retryable(step: Step, outcome: Outcome) -> bool:
    """`retry_on` absent: any failure is retried; else only those exit codes (124 is a
    timeout, 128+N signal N, as the record shows)."""
    return step.retry_on is None or outcome.exit_code in step.retry_on


def env_file_values(wf: Workflow) -> dict[str, str]:
    """The workflow's env_file, read (none without one)."""
    return read_env_file(resolve_path(wf, wf.env_file)) if wf.env_file else {}


def base_environment(wf: Workflow, params: dict[str, str],
                     file_env: dict[str, str] | None = None) -> dict[str, str]:
    """os.environ < env_file (`file_env` when the caller read it already) < workflow env <
    params."""
    env = dict(os.environ)
    env.update(env_file_values(wf) if file_env is None else file_env)
    env.update(wf.env)
    env.update(params)
    return env


def describe_plan(wf: Workflow, selected: set[str] | None = None) -> Iterator[str]:
    """Dry-run lines: steps by level with what each would run (only the selected ones when
    --only/--from/--until chose some: the others do not run)."""
    graph = Graph.build(wf)
    steps = {s.name: s for s in wf.steps}  # wf.step() is a linear search: O(N^2) here
    levels = [[n for n in level if selected is None or n in selected]
              for level in graph.levels()]
    for i, level in enumerate((lv for lv in levels if lv), 1):
        yield f"stage {i}: " + ", ".join(level)
        for name in level:
            step = steps[name]
            what = step.run if step.run is not None else f"call {step.call}" if step.call \
                else " ".join(
                [step.script or "", *map(shlex.quote, step.args)])
            extra = []
            if step.retry_count:
                extra.append(f"retries={step.retry_count}")
            if step.timeout:
                extra.append(f"timeout={step.timeout:g}s")
            if step.if_:
                extra.append(f"if={step.if_!r}")
            if step.always:
                extra.append("always")
            if step.continue_on_failure:
                extra.append("continue_on_failure")
            if step.pool:
                extra.append(f"pool={step.pool} (size {wf.pools[step.pool]})")
            if step.foreach is not None:  # items are known only when the step is ready
                each = step.foreach
                extra.append("foreach=" + (", ".join(each) if isinstance(each, list) else
                                           " ".join(f"{k} {v}" for k, v in
                                                    each.model_dump().items())).splitlines()[0]
                             + (f" (max_parallel={step.max_parallel})"
                                if step.max_parallel else ""))
            first = (what or "").strip().splitlines()[0] if (what or "").strip() else ""
            yield f"  {name}: {first}" + (f"  [{', '.join(extra)}]" if extra else "")
