"""The conformance suite (docs/semantics.md): every case on every runtime it names.

All runs are made once per session, six at a time (they are subprocesses), and each test
then checks one case on one runtime (only the pairs the session selected are run, so
`-k celery` runs the Celery runtime alone). The `celery` runtime needs Redis on
127.0.0.1:6379 (db 6, shared; FLOWSH_CONFORMANCE_REDIS to change it) and starts one real
worker for the session, stopped at its end. A case that does not hold on a runtime fails
here with what differed; a runtime that refuses a workflow must do it as the case expects (exit 2 and
its message), never run it some other way.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.celery_worker import running
from tests.conformance import harness
from tests.conformance.harness import RUNTIMES, Case, Result, load_cases, mismatches, run_case

# The first test waits for every run of the session (a few minutes on 2 loaded cores).
# scripts/test runs this suite in a process of its own (the session fixture runs six pairs
# at a time; under pytest-xdist every worker would run all of them).
pytestmark = pytest.mark.timeout(1800)  # a hang guard: every case runs in one fixture
ROOT = Path(__file__).resolve().parents[2]
SEMANTICS = ROOT / "docs" / "semantics.md"
CASES = load_cases()
PAIRS = [(c, rt) for c in CASES for rt in c.runtimes]
Outcomes = dict[tuple[str, str], "list[tuple[dict[str, Any], Result]] | BaseException"]
REDIS = os.environ.get("FLOWSH_CONFORMANCE_REDIS", "redis://127.0.0.1:6379/6")
# Pool processes of the worker: the suite runs up to six cases at once, some with two steps
# at once (ORDER-2 needs both running together), and ident-lock-dies-with-runner leaves its
# killed runner's step asleep on a slot (issue 13). Idle pool processes cost no CPU.
CELERY_CONCURRENCY = 8


def _selected(session: pytest.Session) -> list[tuple[Case, str]]:
    ids = {item.callspec.id for item in session.items
           if getattr(item, "originalname", "") == "test_case" and hasattr(item, "callspec")}
    if any(getattr(item, "originalname", "") == "test_exported_scripts_pass_shellcheck"
           for item in session.items):
        ids |= {f"{case}@{rt}" for case in SHELLCHECKED for rt in ("script", "inline")}
    return [(c, rt) for c, rt in PAIRS if f"{c.id}@{rt}" in ids]


@pytest.fixture(scope="session")
def celery_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One real worker (flowsh-celery, prefork) on a queue unique to this session."""
    import importlib.util

    import redis

    if importlib.util.find_spec("flowsh_celery") is None:
        pytest.fail("the celery runtime needs plugins/flowsh-celery installed: scripts/test "
                    "does it (pip install --no-deps -e plugins/flowsh-celery)")

    # Never flushed: sessions of other worktrees use this db at the same time, and a flush
    # took their queued tasks and results away mid-run ("no celery worker consumes queue",
    # the celery flake seen in the foreach cases). Each session's worker has a queue of its
    # own (tests/celery_worker.py), and results expire by themselves.
    client = redis.Redis.from_url(REDIS, socket_connect_timeout=2)
    client.ping()
    client.close()
    # What still runs at the end (a step a killed coordinator left behind) is stopped the
    # way flowsh does before the worker's warm shutdown waits for it.
    with running("conformance", broker=REDIS, log=tmp_path_factory.mktemp("celery") /
                 "worker.log", concurrency=CELERY_CONCURRENCY, revoke_active=True
                 ) as w, harness.serving(w):
        yield


@pytest.fixture(scope="session")
def outcomes(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[Outcomes, Path]:
    base = tmp_path_factory.mktemp("conformance")
    pairs = _selected(request.session)
    if any(rt == "celery" for _, rt in pairs):
        request.getfixturevalue("celery_worker")

    def one(pair: tuple[Case, str]) -> tuple[tuple[str, str], Any]:
        case, rt = pair
        try:
            t0 = time.monotonic()
            got = run_case(case, rt, base / rt / case.id)
            with (base / "timings").open("a") as fh:
                fh.write(f"{time.monotonic() - t0:.2f} {case.id}@{rt}\n")
            return (case.id, rt), got
        except BaseException as exc:  # reported by the case's own test
            return (case.id, rt), exc

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = dict(pool.map(one, pairs))
    return results, base


@pytest.mark.parametrize("case, runtime", PAIRS, ids=[f"{c.id}@{rt}" for c, rt in PAIRS])
def test_case(case: Case, runtime: str, outcomes: tuple[Outcomes, Path]) -> None:
    got = outcomes[0][(case.id, runtime)]
    if isinstance(got, BaseException):
        raise got
    for i, (expect, result) in enumerate(got):
        bad = mismatches(expect, result)
        assert not bad, f"{case.source}: {case.id} on {runtime}, invocation {i + 1}:\n" + \
            "\n".join(bad)


# shellcheck takes ~3 s a script, and every script shares the runner: the workflow-specific
# parts are checked on cases that between them use every kind of name and value the
# exporter writes (keywords as step names, libraries, secrets, notify, args, outputs).
SHELLCHECKED = ("file-step-named-keyword", "source-nested-relative", "env-precedence-full-chain",
                "secret-multiline-masked", "notify-command-on-failure",
                "shell-script-args-and-name", "refuse-secret-default-in-script",
                "out-plain-and-multiline", "keep-children-opt-out", "if-sees-params-and-outputs",
                "foreach-unsafe-or-repeated-items-named-by-index",
                "foreach-file-command-and-output-forms")


def test_exported_scripts_pass_shellcheck(outcomes: tuple[Outcomes, Path]) -> None:
    scripts = sorted(str(p) for case in SHELLCHECKED
                     for p in outcomes[1].glob(f"*/{case}/w/flow.sh"))
    assert len(scripts) >= 2 * len(SHELLCHECKED) - 2  # refuse-secret-default: script only
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is not installed (apt-get install shellcheck)")
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda path: subprocess.run(
            ["shellcheck", "-s", "bash", path], capture_output=True, text=True, check=False,
            timeout=300), scripts))
    found = [r.stdout for r in results if r.returncode != 0]
    assert not found, "\n".join(found)[-4000:]


def test_case_ids_are_unique_and_every_runtime_is_exercised() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    # celery: every case but those about exporting or about the `executor:` key itself.
    floors = {"run": 80, "script": 80, "inline": 80, "celery": 130}
    assert set(floors) == set(RUNTIMES)
    for rt in RUNTIMES:
        assert sum(rt in c.runtimes for c in CASES) >= floors[rt], rt
    for case in CASES:
        assert set(case.runtimes) <= set(RUNTIMES), case.id
        assert case.proves, f"{case.id} proves nothing"
        if set(case.runtimes) != set(RUNTIMES):
            assert case.why, f"{case.id} skips a runtime without saying why"


def statements() -> list[str]:
    return re.findall(r"^\*\*([A-Z]+-\d+)\.\*\*", SEMANTICS.read_text(), re.M)


def test_cases_prove_statements_that_exist_and_every_statement_has_a_case() -> None:
    known = statements()
    assert len(known) == len(set(known)), "a statement id is used twice"
    proven = {p for c in CASES for p in c.proves}
    assert not proven - set(known), f"cases prove unknown statements: {sorted(proven - set(known))}"
    assert not set(known) - proven, f"statements without a case: {sorted(set(known) - proven)}"


def test_semantics_covers_every_schema_key() -> None:
    from flowsh.model import json_schema

    schema = json_schema()
    keys = set(schema["properties"])
    for definition in schema.get("$defs", {}).values():
        keys |= set(definition.get("properties", {}))
    text = SEMANTICS.read_text()
    missing = sorted(k for k in keys if f"`{k}`" not in text and f"`{k}:" not in text)
    assert not missing, f"docs/semantics.md never names: {missing}"


def test_semantics_case_lines_are_up_to_date() -> None:
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_semantics_cases.py"),
                          "--check"], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
