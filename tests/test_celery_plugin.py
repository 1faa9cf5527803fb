"""The flowsh-celery distribution (plugins/flowsh-celery), installed with pip like a user would.

Its own tests need a real Redis (redis://127.0.0.1:6379/8, flushed; db 9 too) and RabbitMQ,
and start real Celery workers; they run here as a separate pytest process, with their own
conftest.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, run_cli

# It pip-installs into this interpreter: alone, after the rest (scripts/test).
pytestmark = pytest.mark.serial

PLUGIN = ROOT / "plugins" / "flowsh-celery"


@pytest.fixture(scope="session")
def celery_plugin() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "install", "-q",
         "--no-deps", "-e", str(PLUGIN)],
        capture_output=True, text=True, check=False, timeout=300)
    assert res.returncode == 0, res.stderr


def test_plugins_lists_the_celery_executor(celery_plugin):
    res = run_cli("plugins", "--json",
                  env={"FLOWSH_LOAD_ENTRYPOINTS": "1", "FLOWSH_PLUGINS": "celery"})
    assert res.returncode == 0, res.stderr
    info = {p["name"]: p for p in json.loads(res.stdout)}
    assert info["celery"]["distribution"] == "flowsh-celery"
    assert info["celery"]["builtin"] is False
    assert info["celery"]["hooks"] == ["flowsh_register_executors"]
    # Importing the plugin at CLI start must not import celery (it is slow).
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, flowsh_celery; print('celery' in sys.modules)"],
        capture_output=True, text=True, check=False)
    assert probe.stdout.strip() == "False", probe.stderr


def test_executor_unknown_without_the_plugin(write_flow):
    flow = write_flow("""
        name: remote
        executor: celery
        steps: [{name: a, run: 'true'}]
        """)
    res = run_cli("run", str(flow), "--quiet")
    assert res.returncode == 2
    assert res.stderr.strip() == (f"flowsh: error: {flow}:2:11: unknown executor 'celery' "
                                  "(known: local; a plugin may add it)")


def test_the_plugins_own_suite_against_redis_and_a_real_worker(celery_plugin):
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(PLUGIN / "tests")],
        cwd=PLUGIN, capture_output=True, text=True, check=False, timeout=900)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]
    assert " passed" in res.stdout and "skipped" not in res.stdout
