"""Parameter values with spaces, quotes, $, backticks, globs and newlines arrive unchanged
through both `flowsh run` and the exported script: as a default baked into the script and
as a KEY=VALUE argument."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.exportkit import export_script, run_engine, run_script

# Shell-meaningful characters, made likely; any other printable text too (no NUL: env).
NASTY = st.sampled_from([*" \t\n'\"$`*?[]{}\\;&|<>()~#!%=-", "$(id)", "`id`", "${HOME}"])
VALUES = st.lists(
    # Controls and line/paragraph separators are left to NASTY: YAML folds or refuses them.
    st.one_of(NASTY, st.text(st.characters(
        blacklist_categories=("Cs", "Cc", "Cf", "Co", "Cn", "Zl", "Zp")), max_size=5)),
    max_size=8,
).map("".join)

FLOW = """\
name: quoting
kill_grace: 0.2s
params: {{value: {default}, other: fixed}}
steps:
  - name: show
    run: |
      printf '%s' "$value" > value.txt
      printf '%s' "$other" > other.txt
"""


def _flow(where: Path, default: str) -> Path:
    where.mkdir(parents=True)
    path = where / "quoting.yaml"
    # A JSON string is a YAML string.
    path.write_text(FLOW.format(default=json.dumps(default, ensure_ascii=False)))
    return path


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(default=VALUES, override=VALUES)
def test_param_values_arrive_unchanged(default: str, override: str) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="flowsh-quoting-"))
    try:
        # The default, baked into the script.
        engine_wf = _flow(tmp / "engine", default)
        code, _ = run_engine(engine_wf)
        assert code == 0
        assert (engine_wf.parent / "value.txt").read_text() == default

        script_wf = _flow(tmp / "script", default)
        script = export_script(script_wf)
        proc = run_script(script)
        assert proc.returncode == 0, proc.stderr
        assert (script_wf.parent / "value.txt").read_text() == default

        # An override on the command line (other params keep their defaults).
        code, _ = run_engine(engine_wf, {"value": override})
        assert code == 0
        assert (engine_wf.parent / "value.txt").read_text() == override
        proc = run_script(script, f"value={override}")
        assert proc.returncode == 0, proc.stderr
        assert (script_wf.parent / "value.txt").read_text() == override
        assert (script_wf.parent / "other.txt").read_text() == "fixed"
    finally:
        shutil.rmtree(tmp)
