"""Red-team reproducers for this session's input-handling fixes (FILE-8's alias bound and
TOML depth, rt7). Each FAILS on main at 7488ff7.

Real `flowsh` processes under a timeout and an address-space limit, as
tests/test_trust_input.py runs them, so a regression fails instead of hanging the suite.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import sigint_default
from tests.test_trust_input import flowsh, refused


def _cache_bytes() -> int:
    cache = Path(os.environ["FLOWSH_HOME"]) / "cache"
    return sum(p.stat().st_size for p in cache.iterdir()) if cache.is_dir() else 0


def test_a_shared_long_string_is_not_expanded_into_the_parse_cache(tmp_path: Path) -> None:
    """FILE-8 bounds the nodes aliases add, not their text: an anchored 10 KB string
    aliased 111,110 times (well under a million nodes) is one string in the data, but the
    parse cache wrote it out as JSON 111,111 times: a 10 KB file ran `validate` out of
    memory (a MemoryError traceback under 1 GiB), or, without a limit, left a 1.1 GB entry
    in $FLOWSH_HOME/cache on every edit."""
    lines = ["steps:", "  - {name: a, run: touch ran}", "x:", "  s0: &s0 " + "y" * 10_000]
    lines += [f"  s{i}: &s{i} [{', '.join([f'*s{i - 1}'] * 10)}]" for i in range(1, 6)]
    (tmp_path / "flow.yaml").write_text("\n".join(lines) + "\n")
    for _ in range(2):  # the second from the cache, if the first kept one
        res = flowsh("validate", "flow.yaml", cwd=tmp_path, timeout=60)
        refused(res, "flow.yaml:3:1: unknown key 'x'")
    assert _cache_bytes() < 1_000_000


def test_the_user_config_is_not_expanded_into_the_parse_cache(tmp_path: Path) -> None:
    config = Path(os.environ["XDG_CONFIG_HOME"]) / "flowsh" / "config.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    lines = ["x:", "  s0: &s0 " + "y" * 10_000]
    lines += [f"  s{i}: &s{i} [{', '.join([f'*s{i - 1}'] * 10)}]" for i in range(1, 6)]
    config.write_text("\n".join(lines) + "\n")
    (tmp_path / "flow.yaml").write_text("steps:\n  - {name: a, run: touch ran}\n")
    res = flowsh("validate", "flow.yaml", cwd=tmp_path, timeout=60)
    refused(res, f"{config}:1:1: unknown key 'x' in the flowsh config; known: notify, "
            "defaults, state, pools")
    assert _cache_bytes() < 1_000_000


# -- FILE-8: TOML keys of many parts -------------------------------------------------------

TOML_STEP = "[[steps]]\nname = 'a'\nrun = 'touch ran'\n"
PARTS = 100_000  # a 200 KB file


@pytest.mark.parametrize("command", [["validate"], ["run"]])
@pytest.mark.parametrize(("text", "where"), [
    # the 100th part is 100 levels down: 1 + 2 * 99
    (TOML_STEP + "[" + ".".join(["k"] * PARTS) + "]\nx = 1\n", "4:200"),
    (TOML_STEP + "[[" + ".".join(["k"] * PARTS) + "]]\nx = 1\n", "4:201"),
    (".".join(["k"] * PARTS) + " = 1\n" + TOML_STEP, "1:199"),
    ("'k'." * PARTS + "k = 1\n" + TOML_STEP, "1:397"),
], ids=["header", "array-of-tables", "bare-key", "quoted-key"])  # the texts are 200 KB: a test
# id that long reaches a child's environment (PYTEST_CURRENT_TEST), past execve's limit
def test_a_toml_key_of_many_parts_is_refused_at_once(tmp_path: Path, command: list[str],
                                                     text: str, where: str) -> None:
    """A dotted key is one table per part, so one of 100 parts or more is refused (FILE-8).
    Both tomllib (its own parse) and the scanner that finds the refusal's position took
    time quadratic in the parts: a 200 KB file of one table header ran validate past 30 s
    (30,000 parts: tomllib 1.7 s, then the scanner 12.6 s)."""
    (tmp_path / "flow.toml").write_text(text)
    res = flowsh(*command, "flow.toml", cwd=tmp_path, timeout=20)
    refused(res, f"flow.toml:{where}: mappings and lists nest deeper than 100 levels")
    assert not (tmp_path / "ran").exists()


# -- YAML's composer errors: the problem alone was half a sentence ----------------------

@pytest.mark.parametrize(("text", "line"), [
    # an anchor redefined (YAML 1.2 allows it; PyYAML refuses): was "malformed YAML:
    # second occurrence"
    ("x: &a 1\ny: &a 2\nsteps:\n  - {name: a, run: touch ran}\n",
     "flow.yaml:2:4: malformed YAML: anchor &a defined twice (first at line 1)"),
    ("x: [&a1 1, &b 2, &a1 3]\nsteps:\n  - {name: a, run: touch ran}\n",
     "flow.yaml:1:18: malformed YAML: anchor &a1 defined twice (first at line 1)"),
    # was "malformed YAML: but found another document"
    ("steps:\n  - {name: a, run: touch ran}\n---\nsteps: []\n",
     "flow.yaml:3:1: malformed YAML: expected a single document in the stream at line 1, "
     "but found another document here"),
])
def test_yaml_composer_errors_say_what_is_wrong(tmp_path: Path, text: str, line: str) -> None:
    (tmp_path / "flow.yaml").write_text(text)
    for command in (["validate"], ["run"]):
        res = flowsh(*command, "flow.yaml", cwd=tmp_path, timeout=30)
        refused(res, line)
    assert not (tmp_path / "ran").exists()


# -- the parse cache's temp files ------------------------------------------------------------

def _big_flow(tmp_path: Path) -> None:
    # a 2.6 MB cache entry: its write is long enough to be interrupted in
    steps = "".join(f"  - name: s{i}\n    run: echo {i} {'x' * 200}\n" for i in range(10_000))
    (tmp_path / "flow.yaml").write_text("name: big\nsteps:\n" + steps)


def test_ctrl_c_while_the_parse_cache_is_written_leaves_no_temp_file(tmp_path: Path) -> None:
    """Ctrl-C while a parse-cache entry was written left its `.yaml-*.tmp` in
    $FLOWSH_HOME/cache for good (store removed it on OSError only, and the trim of old
    entries does not see dot files): 3 of 5 tries here, one file each."""
    _big_flow(tmp_path)
    cache = Path(os.environ["FLOWSH_HOME"]) / "cache"
    hits = 0
    for _ in range(40):
        shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir(parents=True, mode=0o700)
        proc = subprocess.Popen([sys.executable, "-m", "flowsh", "validate", "flow.yaml"],
                                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, preexec_fn=sigint_default)
        while proc.poll() is None and not any(cache.glob(".yaml-*")):
            pass  # poll: the temp file is there for a few milliseconds
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        if any(cache.glob("yaml-*")):
            continue  # the entry was written before the signal landed: no test
        hits += 1
        assert "Traceback" not in err, err
        assert proc.returncode == 130, (proc.returncode, err)
        assert list(cache.glob(".yaml-*")) == []
        if hits == 3:
            break
    assert hits, "never interrupted a write"


def test_a_temp_file_left_by_a_killed_writer_is_removed_in_time(tmp_path: Path) -> None:
    """SIGKILL (or SIGTERM before a run's handlers are in place, or a crash) mid-write
    leaves a temp file that no except clause can remove: the next entry's trim removes the
    ones older than an hour, not a writer's that is under way."""
    cache = Path(os.environ["FLOWSH_HOME"]) / "cache"
    cache.mkdir(parents=True, mode=0o700)
    old, new, other = cache / ".yaml-0123456789ab.tmp", cache / ".yaml-ba9876543210.tmp", \
        cache / ".notes"
    for p in (old, new, other):
        p.write_bytes(b"x")
    hour_ago = time.time() - 3700
    os.utime(old, (hour_ago, hour_ago))
    os.utime(other, (hour_ago, hour_ago))
    (tmp_path / "flow.yaml").write_text("steps:\n  - {name: a, run: 'true'}\n")
    res = flowsh("validate", "flow.yaml", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert any(cache.glob("yaml-*"))
    assert not old.exists()
    assert new.exists() and other.exists()


# -- FILE-5's words: a notify channel's duration written with no value -----------------------

@pytest.mark.parametrize("value", ["", "~", "null"])
@pytest.mark.parametrize(("channel", "key"), [
    ("type: log, timeout: ", "timeout"),
    ("type: webhook, url: 'http://127.0.0.1:9', retry_delay: ", "retry_delay"),
])
def test_a_notify_duration_with_no_value_is_refused_in_file5s_words(
        tmp_path: Path, channel: str, key: str, value: str) -> None:
    """Was "invalid duration None: use e.g. 90s, 5m, 1h30m": Python's spelling of what the
    user wrote as nothing (or ~), as "invalid duration True" was of yes before 47d4d85."""
    col = len("    c: {") + channel.index(f"{key}:") + 1
    (tmp_path / "flow.yaml").write_text(
        f"steps:\n  - {{name: a, run: touch ran}}\nnotify:\n  channels:\n"
        f"    c: {{{channel}{value}}}\n")
    for command in ("validate", "run"):
        res = flowsh(command, "flow.yaml", cwd=tmp_path)
        refused(res, f"{(tmp_path / 'flow.yaml').resolve()}:5:{col}: notify channel 'c' key "
                f"'{key}': expected a duration (e.g. 90s, 5m), not null")
    assert not (tmp_path / "ran").exists()


# -- YAML values the constructor cannot build ------------------------------------------------

@pytest.mark.parametrize(("value", "col", "message"), [
    # a date that is no date (February 30th): read as a timestamp, and datetime refused it
    ("2024-02-30", 4, "'2024-02-30' is not a valid timestamp (day is out of range for month); "
     "quote it to keep it as text"),
    ("2001-02-03T25:00:00", 4, "'2001-02-03T25:00:00' is not a valid timestamp (hour must be "
     "in 0..23); quote it to keep it as text"),
    ("!!bool abc", 4, "'abc' is not a valid bool"),
    ("!!timestamp abc", 4, "'abc' is not a valid timestamp"),
    ("!!int abc", 4, "'abc' is not a valid int (invalid literal for int() with base 10: 'abc')"),
    ("!!float abc", 4, "'abc' is not a valid float (could not convert string to float: 'abc')"),
    ("1" * 5000, 4, "'1111111111…' is not a valid int (Exceeds the limit (4300 digits) for "
     "integer string conversion: value has 5000 digits); quote it to keep it as text"),
])
def test_a_value_yaml_cannot_build_is_refused_at_its_line(tmp_path: Path, value: str, col: int,
                                                          message: str) -> None:
    """Each was a ValueError traceback (exit 1) from PyYAML's constructor, in every command
    that read the file: the event builder leaves any error to the compose path, which caught
    PyYAML's own errors only."""
    (tmp_path / "flow.yaml").write_text(f"steps:\n  - {{name: a, run: touch ran}}\nx: {value}\n")
    for command in (["validate"], ["run"], ["export", "--bash"]):
        res = flowsh(*command, "flow.yaml", cwd=tmp_path)
        refused(res, f"flow.yaml:3:{col}: malformed YAML: {message}")
    assert not (tmp_path / "ran").exists()


# -- FILE-8's depth check: each collection once ----------------------------------------------

def test_the_depth_check_walks_an_aliased_collection_once() -> None:
    """An anchored list of 200,000 items aliased at depths 1 to 97, each deeper than the
    last: the depth check walked the list again at each new depth (97 x 200,000 nodes:
    4.5 s of a 900 KB file's validate, 18 s on a loaded machine) before the alias bound
    refused it. Heights are now summed once per collection."""
    import yaml

    from flowsh import yamlsrc

    lines = ["w: &w [" + ", ".join(["x"] * 200_000) + "]"]
    lines += [f"a{k}: " + "[" * k + "*w" + "]" * k for k in range(1, 98)]
    node = yaml.compose("\n".join(lines) + "\n", Loader=yamlsrc._composer())
    start = time.process_time()
    assert yamlsrc._too_deep(node) is None
    assert time.process_time() - start < 1.0


def test_a_toml_number_past_pythons_digit_limit_is_refused(tmp_path: Path) -> None:
    """tomllib's int() raised ValueError (Python's 4,300-digit limit), not TOMLDecodeError:
    a traceback, exit 1, from validate and run alike."""
    (tmp_path / "flow.toml").write_text(TOML_STEP + "[x]\nn = " + "1" * 5000 + "\n")
    for command in ("validate", "run"):
        res = flowsh(command, "flow.toml", cwd=tmp_path)
        refused(res, "flow.toml:5:5: malformed TOML: Exceeds the limit (4300 digits) for "
                "integer string conversion: value has 5000 digits")
    assert not (tmp_path / "ran").exists()
