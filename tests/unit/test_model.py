"""flowsh.model: the workflow models, their defaults, refusals and JSON schema."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from flowsh.durations import DURATION_PATTERN
from flowsh.loader import load_workflow
from flowsh.model import SECRET_NAME, Step, Workflow, definition_json, json_schema


def wf(**kw: Any) -> Workflow:
    data = {"name": "w", "steps": [{"name": "a", "run": "true"}], **kw}
    return Workflow.model_validate(data)


def test_defaults_flow_into_steps() -> None:
    w = wf(defaults={"retries": 3, "timeout": "5m"},
           steps=[{"name": "a", "run": "x"}, {"name": "b", "run": "x", "retries": 0, "timeout": 10}])
    a, b = w.steps
    assert (a.retries, a.timeout, a.retry_delay, a.backoff) == (3, 300.0, 1.0, 2.0)
    assert (b.retries, b.timeout) == (0, 10.0)
    assert a.shell == w.shell and a.needs == [] and b.needs == ["a"]


def test_scalars_become_text_and_lists_from_strings() -> None:
    w = wf(env={"N": 5, "B": True, "F": 1.5}, params={"P": False}, source="lib.sh",
           steps=[{"name": "a", "run": "x", "needs": []}, {"name": "b", "run": "x", "needs": "a"}])
    assert w.env == {"N": "5", "B": "true", "F": "1.5"} and w.params == {"P": "false"}
    assert w.source == ["lib.sh"] and w.steps[1].needs == ["a"]


@pytest.mark.parametrize(("data", "message"), [
    ({"steps": [{"name": "a"}]}, "exactly one of `run`, `script` or `call`"),
    ({"steps": [{"name": "a", "run": "x", "script": "y"}]}, "exactly one of"),
    ({"steps": [{"name": "a", "run": "x", "args": ["1"]}]}, "`args` goes with `script`"),
    ({"steps": [{"name": "a b", "run": "x"}]}, "may hold only letters"),
    ({"steps": [{"name": "a" * 129, "run": "x"}]}, "at most 128"),
    ({"env": {"1X": "v"}}, "not a shell identifier"),
    ({"params": {"FLOWSH_X": "v"}}, "reserved"),
    ({"steps": [{"name": "a", "run": "x", "retries": -1}]}, "greater than or equal"),
    ({"steps": [{"name": "a", "run": "x", "timeout": "soon"}]}, "invalid duration"),
    ({"steps": [{"name": "a", "run": "x", "shell": "  "}]}, "shell is blank"),
    ({"schedule": "0 2 * *"}, "has 4 fields"),
    ({"steps": [{"name": "a", "run": "x", "bogus": 1}]}, "Extra inputs"),
])
def test_refusals(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        wf(**data)


def test_frozen() -> None:
    w = wf()
    with pytest.raises(ValidationError):
        w.name = "other"  # type: ignore[misc]


def test_required_params_split_out() -> None:
    w = wf(params={"DAY": None, "REGION": "eu"})
    assert w.params == {"REGION": "eu"} and w.required_params == ("DAY",)


def test_step_lookup_follows_copies() -> None:
    w = wf(steps=[{"name": "a", "run": "x"}, {"name": "b", "run": "y"}])
    assert w.step("b").run == "y"
    with pytest.raises(KeyError):
        w.step("zz")
    replaced = w.model_copy(update={"steps": [Step(name="c", run="z")]})
    assert replaced.step("c").run == "z"
    with pytest.raises(KeyError):
        replaced.step("a")


def test_identity_declared_or_from_path() -> None:
    assert wf().identity == "w"
    a = Workflow.model_validate({"name": "nightly", "name_declared": False, "path": "/a/nightly.yaml",
                                 "steps": [{"name": "s", "run": "x"}]})
    b = a.model_copy(update={"path": "/b/nightly.yaml"})
    assert re.fullmatch(r"nightly-[0-9a-f]{8}", a.identity) and a.identity != b.identity


def test_secret_names() -> None:
    w = wf(params={"DB_PASSWORD": "x", "PLAIN": "y"}, env={"SSH_KEY": "k", "KEYBOARD": "k"},
           secrets=["PLAIN"])
    assert w.secret_names() == {"DB_PASSWORD", "SSH_KEY", "PLAIN"}
    for name in ("API_KEY", "apikey", "GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "KEY", "CREDENTIALS"):
        assert SECRET_NAME.search(name), name
    for name in ("KEYBOARD", "MONKEY_BUSINESS", "PATH"):
        assert not SECRET_NAME.search(name), name


def test_json_schema() -> None:
    schema = json_schema()
    assert schema["title"] == "flowsh workflow"
    props = schema["properties"]
    assert "steps" in props and "path" not in props and "required_params" not in props
    assert {"type": "null"} in props["params"]["additionalProperties"]["anyOf"]
    import json

    assert json.dumps(DURATION_PATTERN) in json.dumps(schema)


def test_catchup_is_validated_and_hashed_only_when_set() -> None:
    base = {"name": "w", "steps": [{"name": "a", "run": "true"}]}
    plain = Workflow.model_validate(base)
    assert '"catchup"' not in definition_json(plain)  # the hash of the file before the key
    wf = Workflow.model_validate({**base, "schedule": "0 2 * * *",
                                  "catchup": {"window": "2d"}})
    assert wf.catchup is not None and wf.catchup.window == 172800
    assert wf.catchup.policy == "latest" and '"catchup"' in definition_json(wf)
    with pytest.raises(ValidationError, match="catchup needs a `schedule`"):
        Workflow.model_validate({**base, "catchup": {"window": "2d"}})
    with pytest.raises(ValidationError, match="more than 0"):
        Workflow.model_validate({**base, "schedule": "0 2 * * *", "catchup": {"window": 0}})
    with pytest.raises(ValidationError):
        Workflow.model_validate({**base, "schedule": "0 2 * * *",
                                 "catchup": {"window": "2d", "policy": "some"}})
    assert "catchup" in json_schema()["properties"]


def test_keys_added_later_leave_the_definition_hash_alone_while_unset(tmp_path: Path) -> None:
    """A file that uses none of catchup/pools/pool/call/params hashes as before they
    existed (no 'changed since' warning when a run recorded earlier is resumed)."""
    from flowsh.model import LATER_KEYS, LATER_STEP_KEYS, definition_json

    f = tmp_path / "w.yaml"
    f.write_text("steps:\n  - {name: a, run: 'true'}\n")
    data = json.loads(definition_json(load_workflow(f)))
    assert not set(LATER_KEYS) & set(data)
    assert not set(LATER_STEP_KEYS) & set(data["steps"][0])
    f.write_text("pools: {db: 1}\nsteps:\n  - {name: a, run: 'true', pool: db}\n")
    text = definition_json(load_workflow(f))
    assert '"pools":{"db":1}' in text and '"pool":"db"' in text


def test_foreach_forms_hash_as_written_without_serializer_warnings(tmp_path: Path) -> None:
    import warnings

    from flowsh.model import definition_json

    f = tmp_path / "w.yaml"
    for form, text in (("[eu, 3]", '"foreach":["eu","3"]'),
                       ("{file: l.txt}", '"foreach":{"file":"l.txt"}'),
                       ("{command: ls}", '"foreach":{"command":"ls"}'),
                       ("{output: L}", '"foreach":{"output":"L"}')):
        f.write_text(f"steps:\n  - {{name: a, run: 'true', foreach: {form}}}\n")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert text in definition_json(load_workflow(f))
