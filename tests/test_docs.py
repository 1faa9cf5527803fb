"""The docs cannot drift from the code: the CLI reference and the README's set-up commands."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import ROOT


def test_cli_reference_is_generated_from_help() -> None:
    res = subprocess.run([sys.executable, "scripts/gen_cli_docs.py", "--check"], cwd=ROOT,
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_second() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Set up on a fresh machine", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```sh\n(.*?)\n```", section, re.S)
    assert len(commands) == 2, commands
    install_and_example, tests = commands
    assert "examples/etl" in install_and_example
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci  # CI runs the README's test command verbatim
