"""flowsh.secrets: the Masker and the secret-outputs file."""

from __future__ import annotations

import stat
from pathlib import Path

from flowsh.loader import load_workflow
from flowsh.secrets import (
    MASK,
    Masker,
    drop_secret_outputs,
    load_secret_outputs,
    save_secret_outputs,
)


def test_masks_each_value_longest_first() -> None:
    m = Masker(["hunter2", "hunter2-extended"])
    assert m("pw=hunter2-extended and hunter2") == f"pw={MASK} and {MASK}"


def test_short_values_never_masked() -> None:
    m = Masker(["on", "1", "abc"])
    assert not m
    assert m("on 1 abc") == "on 1 abc"


def test_multi_line_value_masked_line_by_line() -> None:
    key = "-----BEGIN KEY-----\r\nAAAAbbbbCCCC\r\n-----END KEY-----"
    m = Masker([key])
    assert m("line: AAAAbbbbCCCC") == f"line: {MASK}"
    assert m("-----END KEY-----") == MASK
    assert "AAAAbbbbCCCC" not in m(key)


def test_learns_values_later_and_regex_metachars() -> None:
    m = Masker()
    assert not m and m("a.b*c") == "a.b*c"
    m.add(["a.b*c(d)"])
    assert m("x a.b*c(d) y aXb*c(d)") == f"x {MASK} y aXb*c(d)"


def test_mapping_masks_secret_names_and_values() -> None:
    m = Masker(["s3cr3tvalue"])
    got = m.mapping({"API_TOKEN": "abc", "PLAIN": "has s3cr3tvalue", "EMPTY_PASSWORD": "",
                     "chosen": "x"}, names={"chosen"})
    assert got == {"API_TOKEN": MASK, "PLAIN": f"has {MASK}", "EMPTY_PASSWORD": "", "chosen": MASK}


def test_for_env_takes_names_and_secret_looking_vars() -> None:
    m = Masker.for_env({"DB_PASSWORD": "pa55word", "MINE": "myvalue1", "OTHER": "visible1"},
                       {"MINE"})
    assert m("pa55word myvalue1 visible1") == f"{MASK} {MASK} visible1"


def test_for_workflow_reads_env_file_params_env(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SERVICE_TOKEN=fromenvfile\n")
    wf_path = tmp_path / "flow.yaml"
    wf_path.write_text("name: w\nenv_file: .env\nsecrets: [PLAIN]\nparams:\n  PLAIN: paramval\n"
                       "env:\n  API_KEY: envvalue\nsteps:\n  - name: a\n    run: 'true'\n")
    m = Masker.for_workflow(load_workflow(wf_path))
    assert m("fromenvfile paramval envvalue") == f"{MASK} {MASK} {MASK}"


def test_secret_outputs_file_round_trip(tmp_path: Path) -> None:
    save_secret_outputs(tmp_path, "step1", {"TOKEN": "v1\nv2"})
    f = tmp_path / "step1.secret-outputs.json"
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert load_secret_outputs(tmp_path, "step1") == {"TOKEN": "v1\nv2"}
    save_secret_outputs(tmp_path, "step1", {})
    assert not f.exists()


def test_load_secret_outputs_tolerates_missing_and_garbage(tmp_path: Path) -> None:
    assert load_secret_outputs(tmp_path, "nope") == {}
    (tmp_path / "a.secret-outputs.json").write_text("[1, 2]")
    assert load_secret_outputs(tmp_path, "a") == {}
    (tmp_path / "b.secret-outputs.json").write_text('{"K": "v", "N": 1}')
    assert load_secret_outputs(tmp_path, "b") == {"K": "v"}


def test_drop_secret_outputs(tmp_path: Path) -> None:
    save_secret_outputs(tmp_path, "a", {"K": "v"})
    save_secret_outputs(tmp_path, "b", {"K": "v"})
    (tmp_path / "keep.log").write_text("x")
    drop_secret_outputs(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.log"]


def test_cut_never_splits_a_value_nor_leaves_a_possible_start_behind() -> None:
    m = Masker(["hunter22"])
    assert m.cut("x" * 20) == 20 - 7  # the last 7 could begin "hunter22"
    text = "x" * 10 + "hunter22" + "yy"
    assert m.cut(text) == 10  # 20 - 7 = 13 falls inside the value: cut before it
    assert Masker().cut("abc") == 3
