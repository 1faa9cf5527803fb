"""The one validation path: what `flowsh validate`, `flowsh run` and `flowsh resume` check
before anything runs, beyond what loading a file checks.

Loading (`flowsh.loader.load_workflow`) checks the file itself: keys, types, the graph,
that referenced files exist, the env_file's grammar. `check_workflow` adds what needs more
than the file: notify channels (which may come from the user config), the functions steps
call from sourced bash libraries, and the params given on the command line.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from flowsh.bashlib import check_functions
from flowsh.calls import check_calls
from flowsh.errors import FlowshError, OptionError, UsageError, WorkflowError, did_you_mean
from flowsh.loader import positions_of
from flowsh.model import Workflow
from flowsh.notify import check_notify


def check_workflow(wf: Workflow, params: Mapping[str, str] | None = None, *,
                   given: Iterable[str] = (), executor: str | None = None) -> None:
    """Raise the first problem as a FlowshError (exit 2), or return when there is none.

    `params`: the command line's KEY=VALUE pairs, or None when no run is meant (plain
    `flowsh validate`, which then does not ask for required params). `given`: param
    names already supplied another way (the record of a run being resumed). `executor`:
    the one `--executor` names instead of the file's.
    """
    check_executor(wf, executor)
    check_notify(wf)
    check_calls(wf)  # CALL-6: children load, their params exist, no cycle
    errors = check_functions(wf, lambda: positions_of(wf))
    if errors:
        first = errors[0]
        # bashlib's errors already say FILE:LINE:COL; keep them whole.
        raise first if isinstance(first, FlowshError) else WorkflowError(str(first),
                                                                         path=wf.path)
    if params is not None:
        check_params(wf, params, given=given)


def check_executor(wf: Workflow, override: str | None = None) -> None:
    """The executor exists and takes the file's `executor_options`, checked by the
    executor's own `check_options` (no connection made) and pointed at the option's line;
    an executor without one checks them only when the run starts."""
    from flowsh import plugins

    name = override or wf.executor
    executors = plugins.registry("executors")
    if name not in executors:
        known = ", ".join(sorted(executors))
        message = f"unknown executor {name!r} (known: {known}; a plugin may add it)"
        if override:
            raise UsageError(message)
        raise _at(wf, message, ("executor",), key=False)
    check = getattr(executors[name], "check_options", None)
    if check is None:
        return
    try:
        check(dict(wf.executor_options))
    except OptionError as exc:
        loc = ("executor_options", exc.key) if exc.key else ("executor_options",)
        raise _at(wf, exc.message, loc, key=True) from None


def _at(wf: Workflow, message: str, loc: tuple[str, ...], *, key: bool) -> WorkflowError:
    pos = positions_of(wf)
    if pos is None:
        return WorkflowError(message, path=wf.path)
    return pos.error(message, loc, key=key)


def check_params(wf: Workflow, params: Mapping[str, str], *,
                 given: Iterable[str] = ()) -> None:
    """Undeclared names are refused (with "did you mean"); required ones must be present."""
    declared = [*wf.params, *wf.required_params]
    where = f" in {wf.path}" if wf.path else ""
    for key in params:
        if key not in declared:
            hint = did_you_mean(key, declared) or (
                f" (declared: {', '.join(declared)})" if declared else
                " (the workflow declares no params)")
            raise UsageError(f"unknown parameter {key!r}: not declared in params{where}{hint}")
    have = set(params) | set(given)
    missing = [k for k in wf.required_params if k not in have]
    if missing:
        names = ", ".join(missing)
        raise UsageError(
            f"parameter {names} needs a value (declared without a default{where}): "
            f"pass {missing[0]}=VALUE"
        )
