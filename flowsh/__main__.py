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
    from flowsh.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
