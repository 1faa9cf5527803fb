"""flowsh.modelcheck (the model as pydantic classes) against flowsh.model (the same model
without pydantic): whatever the fast path accepts, pydantic accepts with the same values,
fields set and definition JSON; whatever pydantic refuses, the fast path leaves to it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from flowsh import model, modelcheck
from flowsh.model import LATER_KEYS, LATER_STEP_KEYS, Workflow, definition_json

ROOT = Path(__file__).resolve().parents[2]


def checked_json(wf: modelcheck.Workflow) -> str:
    """definition_json as it was written with pydantic (the hash recorded by every run)."""
    def unset(v: object) -> bool:
        return v is None or v == {} or v == []

    exclude: dict[Any, Any] = {"path": True}
    exclude |= {k: True for k in LATER_KEYS if unset(getattr(wf, k))}
    steps = {i: {k: True for k in LATER_STEP_KEYS if unset(getattr(s, k))}
             for i, s in enumerate(wf.steps)}
    exclude["steps"] = {i: keys for i, keys in steps.items() if keys}
    return wf.model_dump_json(by_alias=True, exclude=exclude)


def fields_sets(obj: Any) -> Any:
    """Every nested model's fields set, to compare the two layers' bookkeeping."""
    if hasattr(obj, "model_fields_set"):
        names = [n for n in type(obj).model_fields]
        return (type(obj).__name__, sorted(obj.model_fields_set),
                [fields_sets(getattr(obj, n)) for n in names])
    if isinstance(obj, list):
        return [fields_sets(v) for v in obj]
    if isinstance(obj, dict):
        return {k: fields_sets(v) for k, v in obj.items()}
    return None


def agree(data: dict[str, Any]) -> None:
    """The fast path either declines or gives pydantic's result; errors are pydantic's."""
    try:
        fast = model.Workflow._fast(json.loads(json.dumps(data)) if _jsonable(data) else data)
    except model._Slow:
        fast = None
    try:
        slow = modelcheck.Workflow.model_validate(data)
    except ValidationError:
        assert fast is None, f"the fast path accepted what pydantic refuses: {data!r}"
        with pytest.raises(ValidationError):
            Workflow.model_validate(data)
        return
    plain = model._plain(slow)
    mine = fast if fast is not None else Workflow.model_validate(data)
    assert mine == plain
    assert mine.model_dump() == slow.model_dump()
    assert fields_sets(mine) == fields_sets(slow)
    assert definition_json(mine) == checked_json(slow)
    assert definition_json(plain) == checked_json(slow)


def _jsonable(data: Any) -> bool:
    try:
        return json.loads(json.dumps(data, allow_nan=False)) == data
    except (TypeError, ValueError):
        return False


def corpus() -> list[tuple[str, Any]]:
    """The repository's workflows: examples/, and every conformance case's workflow and
    the workflow files it writes beside it."""
    out: list[tuple[str, Any]] = []
    for path in sorted((ROOT / "examples").rglob("*.y*ml")):
        out.append((str(path.relative_to(ROOT)), path.read_text()))
    for path in sorted((ROOT / "tests" / "conformance" / "cases").glob("*.yaml")):
        for case in yaml.safe_load(path.read_text()) or []:
            out.append((case["id"], case.get("workflow")))
            for name, text in (case.get("files") or {}).items():
                if name.endswith((".yaml", ".yml")):
                    out.append((f"{case['id']}/{name}", text))
    return out


@pytest.mark.parametrize(("where", "flow"), corpus(), ids=[w for w, _ in corpus()])
def test_files_of_the_repository(where: str, flow: Any) -> None:
    from flowsh.errors import WorkflowError
    from flowsh.yamlsrc import parse_yaml

    try:  # as the loader reads it: a file it refuses (FILE-8's alias loop) never gets here
        data = parse_yaml(flow, None)[0] if isinstance(flow, str) else flow
    except WorkflowError:
        pytest.skip("refused before the model")
    if not isinstance(data, dict) or "steps" not in data:
        pytest.skip("not a workflow")
    data.setdefault("name", "w")
    agree(data)


# Values each key may get: valid ones and the near misses pydantic would coerce or refuse.
TEXT = st.sampled_from(["x", "", " ", "a b", "é", "true", "1h", "\n", "a\0b", "ñame", "a.b-c"])
NUM = st.sampled_from([0, 1, 2, 5, 100, 101, 1000, 1001, -1, 0.0, 0.1, 0.5, 1.5, 1e-5, 2.5e16,
                       1e300, math.inf, math.nan, True, False])
DUR = st.one_of(NUM, st.sampled_from(["90s", "5m", "1h30m", "250ms", "2d", "soon", "400d",
                                      "0", "1.5", " 3 s", "1e3"]))
ANY = st.one_of(TEXT, NUM, DUR, st.none(), st.lists(TEXT, max_size=2),
                st.dictionaries(TEXT, TEXT, max_size=2))
NAMES = st.dictionaries(st.sampled_from(["A", "B_1", "1X", "FLOWSH_X", "PWD", "path", "API_KEY"]),
                        st.one_of(TEXT, NUM, st.none()), max_size=3)
LIST = st.one_of(TEXT, st.lists(TEXT, max_size=3), st.none(), NUM)
CODES = st.one_of(st.lists(st.sampled_from([0, 1, 2, 3, 123, 124, 255, 256, True, 1.0]),
                           max_size=3), st.none(), TEXT)

STEP_VALUES: dict[str, Any] = {
    "description": st.one_of(TEXT, st.none(), NUM), "script": st.one_of(TEXT, st.none()),
    "args": st.one_of(st.lists(st.one_of(TEXT, NUM), max_size=2), TEXT, st.none()),
    "needs": LIST, "env": NAMES, "workdir": st.one_of(TEXT, st.none()), "source": LIST,
    "shell": st.one_of(TEXT, st.none()), "retries": NUM, "retry_delay": DUR, "backoff": NUM,
    "max_delay": DUR, "jitter": NUM, "timeout": st.one_of(DUR, st.none()),
    "if": st.one_of(TEXT, st.none()), "if_": TEXT, "always": st.one_of(st.booleans(), NUM, TEXT),
    "continue_on_failure": st.booleans(), "keep_children": st.one_of(st.booleans(), TEXT),
    "retry_on": CODES, "skip_on": CODES, "success_on": CODES,
    "queue": st.one_of(TEXT, st.sampled_from(["gpu", "a:b@c", "x" * 201])),
    "queue_timeout": st.one_of(DUR, st.none()),
    "pool": st.one_of(TEXT, st.sampled_from(["db", "-db", "d" * 65, "db\n"])),
    "call": st.one_of(TEXT, st.none()), "params": NAMES,
    "foreach": st.one_of(st.lists(st.one_of(TEXT, NUM), max_size=3), st.none(),
                         st.fixed_dictionaries({}, optional={
                             "file": TEXT, "command": TEXT,
                             "output": st.sampled_from(["ITEMS", "1x", "MY_TOKEN", ""])})),
    "max_parallel": st.one_of(NUM, st.none()), "sources": LIST, "generates": LIST,
    "bogus": TEXT,
}
STEP = st.fixed_dictionaries(
    {"name": st.one_of(st.sampled_from(["a", "b", "c-1", "a b", "x" * 129]), NUM),
     "run": st.one_of(TEXT, st.none())},
    optional=STEP_VALUES)

WF_VALUES: dict[str, Any] = {
    "description": st.one_of(TEXT, st.none()), "params": NAMES, "env": NAMES,
    "env_file": st.one_of(TEXT, st.none()), "secrets": LIST, "shell": st.one_of(TEXT, st.none()),
    "strict": st.one_of(st.booleans(), TEXT), "workdir": TEXT, "source": LIST,
    "concurrency": NUM, "overlap": st.sampled_from(["skip", "wait", "allow", "no", None]),
    "lock_timeout": st.one_of(DUR, st.none()), "kill_grace": DUR, "state": TEXT,
    "queue_timeout": st.one_of(DUR, st.none()), "executor": st.one_of(TEXT, st.none()),
    "executor_options": st.one_of(st.dictionaries(TEXT, ANY, max_size=3), st.none()),
    "defaults": st.one_of(st.none(), st.fixed_dictionaries({}, optional={
        k: STEP_VALUES[k] for k in ("retries", "retry_delay", "backoff", "max_delay", "jitter",
                                    "timeout", "bogus")})),
    "notify": st.one_of(st.none(), st.fixed_dictionaries({}, optional={
        "channels": st.dictionaries(TEXT, st.one_of(
            st.fixed_dictionaries({"type": st.one_of(TEXT, NUM)}, optional={
                "url": TEXT, "to": st.lists(TEXT, max_size=2), "timeout": NUM}),
            st.none(), TEXT), max_size=2),
        "routes": st.dictionaries(st.sampled_from(["critical", "info", "loud"]), LIST,
                                  max_size=2),
        "events": st.dictionaries(st.sampled_from(["run_failed", "run_late", "nope"]),
                                  st.sampled_from(["critical", "warning", "meh"]), max_size=2),
        "long_after": st.one_of(DUR, st.none())})),
    "monitor": st.one_of(st.none(), st.fixed_dictionaries({}, optional={
        "csv": st.one_of(st.booleans(), TEXT, NUM), "jsonl": st.booleans(),
        "prometheus": st.one_of(st.booleans(), TEXT), "push": st.one_of(TEXT, st.none())})),
    "pools": st.one_of(st.none(), st.dictionaries(
        st.sampled_from(["db", "-x", "a" * 65]), st.one_of(NUM, st.none()), max_size=2)),
    "schedule": st.one_of(st.sampled_from(["0 2 * * *", "0 2 * *", "CRON_TZ=UTC 5 4 * * *"]),
                          st.lists(st.sampled_from(["0 2 * * *", "bad"]), max_size=2)),
    "catchup": st.one_of(st.none(), st.fixed_dictionaries(
        {"window": DUR}, optional={"policy": st.sampled_from(["latest", "all", "some"])})),
    "deadline": st.one_of(st.none(), st.sampled_from(["06:00", "4h", "25:00", "soon"]), NUM),
    "path": st.one_of(TEXT, st.none()), "name_declared": st.one_of(st.booleans(), TEXT),
    "required_params": st.one_of(st.lists(st.sampled_from(["A", "1X"]), max_size=2), TEXT),
    "bogus": TEXT,
}
WORKFLOW = st.fixed_dictionaries(
    {"name": st.one_of(st.sampled_from(["w", "my-flow", "a b", ""]), NUM),
     "steps": st.one_of(st.lists(STEP, min_size=1, max_size=3), st.just([]), TEXT)},
    optional=WF_VALUES)


# Mostly valid workflows, so the fast path is taken often and its values compared.
VTEXT = st.sampled_from(["x", "true", "echo é", "1h", "a b", "ls\n"])
VNUM = st.sampled_from([0, 1, 2, 3, 10])
VDUR = st.sampled_from([0, 1, 2.5, 0.001, "90s", "5m", "1h30m", "250ms", "2d", " 3 s", "1.5"])
VNAMES = st.dictionaries(st.sampled_from(["A", "B_1", "API_KEY", "x"]),
                         st.one_of(VTEXT, VNUM, st.booleans(), st.just(1.5)), max_size=3)
VLIST = st.one_of(VTEXT, st.lists(VTEXT, max_size=3))
VSTEP_VALUES: dict[str, Any] = {
    "description": VTEXT, "env": VNAMES, "workdir": VTEXT, "source": VLIST, "shell": VTEXT,
    "retries": VNUM, "retry_delay": VDUR, "backoff": st.sampled_from([1, 1.5, 2, 100]),
    "max_delay": VDUR, "jitter": st.sampled_from([0, 0.1, 1, 0.25]),
    "timeout": st.one_of(VDUR, st.none()), "if": VTEXT, "always": st.booleans(),
    "continue_on_failure": st.booleans(), "keep_children": st.booleans(),
    "retry_on": st.one_of(st.none(), st.lists(st.sampled_from([1, 2, 124, 255]), max_size=2)),
    "skip_on": st.lists(st.sampled_from([3, 4]), max_size=2),
    "success_on": st.lists(st.sampled_from([5, 6]), max_size=2),
    "queue": st.sampled_from(["gpu", "a:b@c"]), "queue_timeout": st.sampled_from([1, "5m"]),
    "pool": st.just("db"), "foreach": st.one_of(
        st.lists(st.one_of(VTEXT.filter(lambda t: "\n" not in t), VNUM), max_size=3),
        st.sampled_from([{"file": "f.txt"}, {"command": "ls"}, {"output": "ITEMS"}])),
    "max_parallel": st.sampled_from([1, 4]), "sources": VLIST.filter(
        lambda v: "\n" not in str(v)), "generates": st.just(["out/*"]),
}
VSTEP = st.fixed_dictionaries({"name": st.sampled_from(["a", "b", "c-1", "d.e"]),
                               "run": VTEXT}, optional=VSTEP_VALUES)
VWORKFLOW = st.fixed_dictionaries(
    {"name": st.sampled_from(["w", "my-flow"]), "steps": st.lists(VSTEP, min_size=1,
                                                                   max_size=3)},
    optional={
        "description": VTEXT, "params": st.one_of(VNAMES, st.just({"DAY": None, "N": 1})),
        "env": VNAMES, "secrets": VLIST, "shell": st.sampled_from(["bash", "sh"]),
        "strict": st.booleans(), "workdir": VTEXT, "source": VLIST,
        "concurrency": st.sampled_from([1, 8, 10000]), "overlap": st.sampled_from(
            ["skip", "wait", "allow"]), "lock_timeout": VDUR, "kill_grace": VDUR,
        "state": VTEXT, "queue_timeout": st.sampled_from([1, "1h"]),
        "executor": st.just("local"), "executor_options": st.dictionaries(
            VTEXT, st.one_of(VTEXT, VNUM, st.lists(VNUM, max_size=2), st.none()), max_size=2),
        "defaults": st.fixed_dictionaries({}, optional={
            k: VSTEP_VALUES[k] for k in ("retries", "retry_delay", "backoff", "max_delay",
                                         "jitter", "timeout")}),
        "notify": st.fixed_dictionaries({}, optional={
            "channels": st.dictionaries(st.sampled_from(["ops", "me"]), st.fixed_dictionaries(
                {"type": st.sampled_from(["log", "webhook"])},
                optional={"url": VTEXT, "timeout": VNUM}), max_size=2),
            "routes": st.dictionaries(st.sampled_from(["critical", "info"]), VLIST, max_size=2),
            "events": st.dictionaries(st.sampled_from(["run_failed", "run_late"]),
                                      st.sampled_from(["critical", "warning"]), max_size=2),
            "long_after": VDUR}),
        "monitor": st.fixed_dictionaries({}, optional={
            "csv": st.one_of(st.booleans(), VTEXT), "prometheus": st.booleans(),
            "push": VTEXT}),
        "pools": st.just({"db": 2}), "schedule": st.sampled_from(["0 2 * * *", ["5 4 * * *"]]),
        "deadline": st.sampled_from(["06:00", "4h"]),
    })


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(VWORKFLOW)
def test_random_valid_workflows_agree(data: dict[str, Any]) -> None:
    agree(data)


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(WORKFLOW)
def test_random_workflows_agree(data: dict[str, Any]) -> None:
    agree(data)


def test_typical_files_take_the_fast_path() -> None:
    """A plain file, and one with every common key, never import pydantic's result."""
    data = {"name": "w", "params": {"DAY": None, "N": 3}, "env": {"A": "1"},
            "defaults": {"retries": 2, "timeout": "5m"}, "schedule": "0 2 * * *",
            "catchup": {"window": "2d"}, "pools": {"db": 2}, "deadline": "06:00",
            "notify": {"channels": {"ops": {"type": "webhook", "url": "http://x"}},
                       "routes": {"critical": "ops"}, "events": {"run_failed": "critical"}},
            "monitor": {"prometheus": True},
            "steps": [{"name": "a", "run": "true", "pool": "db", "retry_on": [1],
                       "sources": "src/*", "generates": ["out"]},
                      {"name": "b", "script": "b.sh", "args": [1, "x"], "needs": "a",
                       "foreach": ["x", "y"], "max_parallel": 1, "if": "true"},
                      {"name": "c", "call": "c.yaml", "params": {"X": "1"}},
                      {"name": "d", "run": "x", "foreach": {"output": "ITEMS"}}]}
    wf = model.Workflow._fast(json.loads(json.dumps(data)))
    agree(data)
    assert wf.required_params == ("DAY",) and wf.steps[1].needs == ["a"]


def test_plain_instances_nest_and_copy() -> None:
    """Instances given where a mapping is expected are taken as they are (pydantic's
    default), and a copy with updates is not validated."""
    step = model.Step(name="c", run="z")
    wf = Workflow.model_validate({"name": "w", "steps": [step, {"name": "d", "run": "y"}]})
    assert wf.steps[0].name == "c" and wf.steps[1].needs == ["c"]
    bad = {"name": "w", "steps": [step], "concurrency": "many"}
    with pytest.raises(ValidationError, match="concurrency"):
        Workflow.model_validate(bad)
    assert wf.model_copy(update={"name": "v"}).name == "v" and wf.name == "w"
    with pytest.raises(ValidationError):
        step.name = "x"  # type: ignore[misc]


def test_channel_extras_and_dumps() -> None:
    ch = model.Channel.model_validate({"type": "webhook", "url": "http://x", "n": [1]})
    assert ch.url == "http://x" and ch.model_dump() == {"type": "webhook", "url": "http://x",
                                                         "n": [1]}
    n = model.Notify.model_validate({"channels": {"a": {"type": "log"}}, "long_after": "1h"})
    assert n.model_dump(exclude_unset=True) == {"channels": {"a": {"type": "log"}},
                                                "long_after": 3600.0}
    assert "type" in model.Defaults.model_fields or "retries" in model.Defaults.model_fields


def test_definition_json_falls_back_for_what_json_writes_otherwise() -> None:
    import datetime as dt

    wf = Workflow.model_validate({"name": "w", "steps": [{"name": "a", "run": "x",
                                                          "timeout": 1e-5}],
                                  "executor_options": {"when": dt.date(2026, 1, 2)}})
    slow = modelcheck.Workflow.model_validate({
        "name": "w", "steps": [{"name": "a", "run": "x", "timeout": 1e-5}],
        "executor_options": {"when": dt.date(2026, 1, 2)}})
    assert definition_json(wf) == checked_json(slow)
    assert '"timeout":0.00001' in definition_json(wf) and '"2026-01-02"' in definition_json(wf)
