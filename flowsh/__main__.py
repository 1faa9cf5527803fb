"""``python -m flowsh`` and the ``flowsh`` console script."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        _main()
    except KeyboardInterrupt:
        # Ctrl-C before a command took over: while typer, pydantic and flowsh are imported
        # (the first ~50 ms of every command), or between two of a run's Ctrl-Cs. It ends
        # as one during a command does (typer, climain.as_typer_would): quietly, exit 130
        # (flowsh.errors.EXIT_INTERRUPTED, not imported: this may be before any import).
        raise SystemExit(130) from None


def _main() -> None:
    # `flowsh --version` answers before typer, pydantic and the plugins are imported:
    # it is what monitoring and install scripts call, often.
    if sys.argv[1:] == ["--version"]:
        from flowsh import __version__

        print(f"flowsh {__version__}")
        return
    import gc

    if sys.argv[1:2] == ["run"]:
        # `flowsh run FILE ...` without typer when its arguments are plain (climain.py);
        # returns, having run nothing, when typer is to parse them.
        gc.disable()
        try:
            from flowsh.climain import run_fast
        finally:
            gc.freeze()
            gc.enable()
        run_fast(sys.argv[2:])

    # The imports (typer, flowsh) make tens of thousands of objects that live as long as
    # the process: the cycle collector paused while they are made (dozens of collections
    # that find nothing), then told to leave them out of every later collection.
    gc.disable()
    try:
        from flowsh.cli import main as cli_main
    finally:
        gc.freeze()
        gc.enable()
    cli_main()


if __name__ == "__main__":
    main()
