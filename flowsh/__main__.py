"""``python -m flowsh`` and the ``flowsh`` console script."""

from __future__ import annotations

import sys


def main() -> None:
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
