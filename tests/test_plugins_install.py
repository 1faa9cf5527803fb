"""Third-party plugins installed with pip into this environment: the models under plugins/,
a scaffolded plugin, and a plugin whose entry point does not import.

The module's fixture runs ``pip install --no-deps -e plugins/flowsh-*`` with this
interpreter, and uninstalls after the module what it installed: the venv is left as found
(checked). Tests that want entry points set FLOWSH_LOAD_ENTRYPOINTS=1 and an allow-list.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli
from tests.notify_servers import (  # noqa: F401 (fixtures)
    http_server_fixture,
)

# It pip-installs into this interpreter, which every flowsh process started meanwhile would
# see: alone, after the rest (scripts/test).
pytestmark = pytest.mark.serial


def pip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, check=False, timeout=300)


def installed() -> set[str]:
    res = pip("list", "--format=json")
    assert res.returncode == 0, res.stderr
    return {d["name"].lower() for d in json.loads(res.stdout)}


@pytest.fixture(scope="session", autouse=True)
def _venv_left_as_found() -> Iterator[None]:
    """Every test here that pip-installs uninstalls what it installed: a plugin left in the
    venv is loaded by every later flowsh of a developer who allows entry points. Checked
    at the session's end, after every fixture here has let go."""
    before = installed()
    yield
    assert installed() == before, "the venv's distributions changed"


MODELS = ("flowsh-slack", "flowsh-healthchecks")


@pytest.fixture(scope="module")
def model_plugins() -> Iterator[None]:
    had = installed()
    try:
        res = pip("install", "-q", "--no-deps",
                  *(a for name in MODELS for a in ("-e", str(ROOT / "plugins" / name))))
        assert res.returncode == 0, res.stderr
        yield
    finally:
        # Only what this fixture installed: a developer's own install of one stays.
        mine = [name for name in MODELS if name not in had]
        if mine:
            pip("uninstall", "-y", *mine)


def _env(allow: str) -> dict[str, str]:
    return {"FLOWSH_LOAD_ENTRYPOINTS": "1", "FLOWSH_PLUGINS": allow}


def test_plugins_lists_the_model_plugins(model_plugins):
    res = run_cli("plugins", "--json", env=_env("slack,healthchecks"))
    assert res.returncode == 0, res.stderr
    info = {p["name"]: p for p in json.loads(res.stdout)}
    assert info["slack"]["distribution"] == "flowsh-slack"
    assert info["slack"]["version"] == "0.1.0" and info["slack"]["builtin"] is False
    assert info["slack"]["hooks"] == ["flowsh_register_notifiers"]
    assert info["healthchecks"]["hooks"] == [
        "flowsh_register_notifiers", "flowsh_run_finished", "flowsh_run_started"]
    # The allow-list keeps other installed plugins out; built-ins always load.
    res = run_cli("plugins", "--json", env=_env("healthchecks"))
    names = {p["name"] for p in json.loads(res.stdout)}
    assert "slack" not in names and "healthchecks" in names and "notify_log" in names


def test_a_run_calls_slack_and_healthchecks(model_plugins, http_server, tmp_path):
    flow = tmp_path / "etl.yaml"
    flow.write_text(textwrap.dedent(f"""\
        name: etl
        steps:
          - {{name: load, run: 'echo "disk full" >&2; exit 5'}}
        notify:
          channels:
            team: {{type: slack, webhook_url: "{http_server.url}/services/T/B/x"}}
            hc: {{type: healthchecks, url: "{http_server.url}/ping/uuid"}}
          routes: {{critical: [team]}}
        """))
    res = run_cli("run", str(flow), "--quiet", env=_env("slack,healthchecks"))
    assert res.returncode == 1, res.stderr
    paths = [r.path.split("?rid=")[0] for r in http_server.requests]
    assert paths[0] == "/ping/uuid/start"
    assert set(paths[1:]) == {"/services/T/B/x", "/ping/uuid/1"}
    [slack] = [r for r in http_server.requests if r.path.startswith("/services")]
    payload = slack.json()
    assert payload["blocks"][0]["text"]["text"].startswith("[CRITICAL] etl: run failed")
    assert "disk full" in payload["blocks"][-1]["text"]["text"]
    [done] = [r for r in http_server.requests if r.path.startswith("/ping/uuid/1?rid=")]
    assert b"disk full" in done.body
    # Without the plugin, the same file is refused with a clear line, not a traceback.
    res = run_cli("notify", "test", "team", str(flow), env=_env("healthchecks"))
    assert res.returncode == 2
    assert "notify channel 'team' key 'type': unknown notifier type 'slack'" in res.stderr


@pytest.mark.parametrize(("kind", "settings"), [
    ("slack", "webhook_url: https://hooks.example/x"),
    ("healthchecks", "url: https://hc.example/ping/uuid"),
])
def test_model_plugins_refuse_a_boolean_count_as_flowsh_does(model_plugins, tmp_path, kind,
                                                             settings):
    """FILE-5 in a plugin's own setting: `retries: yes` is a boolean to YAML, not 1."""
    flow = tmp_path / "flow.yaml"
    flow.write_text(textwrap.dedent(f"""\
        steps:
          - {{name: a, run: "true"}}
        notify:
          channels:
            team: {{type: {kind}, {settings}, retries: yes}}
        """))
    res = run_cli("validate", str(flow), env=_env("slack,healthchecks"))
    assert res.returncode == 2, res.stderr
    assert "notify channel 'team' key 'retries': expected a number, not true" in res.stderr


def test_bad_entry_point_is_reported_once_and_flowsh_still_works(tmp_path):
    dist = tmp_path / "flowsh-broken"
    (dist / "flowsh_broken_ep").mkdir(parents=True)
    (dist / "flowsh_broken_ep" / "__init__.py").write_text("import no_such_module_xyz\n")
    (dist / "pyproject.toml").write_text(textwrap.dedent("""\
        [build-system]
        requires = ["setuptools>=64"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "flowsh-broken-ep-test"
        version = "0.0.1"
        [project.entry-points.flowsh]
        broken = "flowsh_broken_ep"
        [tool.setuptools]
        packages = ["flowsh_broken_ep"]
        """))
    res = run_cli("plugins", "install", str(dist))
    assert res.returncode == 0, res.stderr
    assert "flowsh plugin broken ready (flowsh-broken-ep-test 0.0.1)" in res.stdout
    # A summary, not pip's whole log (issue 18).
    assert "Successfully installed flowsh-broken-ep-test-0.0.1" in res.stdout
    assert "Processing" not in res.stdout + res.stderr
    assert len(res.stdout.splitlines()) == 2, res.stdout
    try:
        res = run_cli("plugins", "--json", env=_env("broken"))
        assert res.returncode == 0
        assert res.stderr.count("plugin broken (flowsh_broken_ep) failed to load: "
                                "ModuleNotFoundError: No module named 'no_such_module_xyz'") == 1
        assert "broken" not in {p["name"] for p in json.loads(res.stdout)}
    finally:
        res = run_cli("plugins", "uninstall", "broken")
    assert res.returncode == 0, res.stderr
    assert pip("show", "flowsh-broken-ep-test").returncode == 1


def test_install_failure_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    res = run_cli("plugins", "install", str(tmp_path / "empty"))
    assert res.returncode == 5
    # One line (bad input: one clear line); pip's full log kept in the file it names.
    [line] = res.stderr.splitlines()
    assert line.startswith("flowsh: error: pip install failed (exit 1): ERROR")
    kept = Path(os.environ["FLOWSH_HOME"]) / "logs" / "pip.log"
    assert line.endswith(f"(pip's full output: {kept})") and res.stdout == ""
    assert any(ln.startswith("ERROR") for ln in kept.read_text().splitlines())
    assert kept.stat().st_mode & 0o777 == 0o600
    assert "Traceback" not in res.stderr


def test_scaffolded_plugin_installs_and_passes_its_own_test(tmp_path):
    res = run_cli("plugins", "new", "pager-duty", "--dir", str(tmp_path))
    assert res.returncode == 0, res.stderr
    target = tmp_path / "flowsh-pager-duty"
    assert (target / "flowsh_pager_duty" / "__init__.py").exists()
    assert 'pager-duty = "flowsh_pager_duty"' in (target / "pyproject.toml").read_text()
    res = pip("install", "-q", "--no-deps", "-e", str(target))
    assert res.returncode == 0, res.stderr
    try:
        test = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               str(target / "tests")], cwd=target, capture_output=True,
                              text=True, timeout=300, check=False)
        assert test.returncode == 0, test.stdout + test.stderr
        assert "4 passed" in test.stdout  # incl. FILE:LINE for a bad key (issue 18)
        res = run_cli("plugins", "--json", env=_env("pager-duty"))
        assert "pager-duty" in {p["name"] for p in json.loads(res.stdout)}
    finally:
        pip("uninstall", "-y", "flowsh-pager-duty")
    again = run_cli("plugins", "new", "pager-duty", "--dir", str(tmp_path))
    assert again.returncode == 2 and "already exists" in again.stderr
    bad = run_cli("plugins", "new", "Pager_Duty", "--dir", str(tmp_path))
    assert bad.returncode == 2 and "lowercase" in bad.stderr
