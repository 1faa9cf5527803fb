"""flowsh/cache.py and the YAML parse cache: right or absent, never stale, never a crash."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from flowsh import cache, yamlsrc
from flowsh.errors import WorkflowError
from flowsh.loader import load_workflow


def _entries(kind: str) -> list[Path]:
    d = cache.directory()
    return sorted(d.glob(f"{kind}-*")) if d.is_dir() else []


def test_a_parsed_file_is_read_back_from_the_cache(tmp_path):
    f = tmp_path / "w.yaml"
    f.write_text("steps:\n  - {name: a, run: 'true', retries: 2}\n")
    first = load_workflow(f)
    [entry] = _entries("yaml")
    again = load_workflow(f)
    assert again == first
    assert _entries("yaml") == [entry]


def test_changed_text_is_parsed_again(tmp_path):
    f = tmp_path / "w.yaml"
    f.write_text("steps:\n  - {name: a, run: 'true'}\n")
    load_workflow(f)
    f.write_text("steps:\n  - {name: b, run: 'true'}\n")
    assert [s.name for s in load_workflow(f).steps] == ["b"]


@pytest.mark.parametrize("damage", [b"", b"garbage", b"flowsh-cache 1 0000\n[]", None])
def test_a_damaged_entry_is_a_miss(tmp_path, damage):
    f = tmp_path / "w.yaml"
    f.write_text("steps:\n  - {name: a, run: 'true'}\n")
    load_workflow(f)
    [entry] = _entries("yaml")
    if damage is None:  # torn: a valid header, half the payload
        data = entry.read_bytes()
        damage = data[: len(data) - 5]
    entry.write_bytes(damage)
    assert [s.name for s in load_workflow(f).steps] == ["a"]


def test_a_model_error_from_a_cached_parse_keeps_its_position(tmp_path):
    f = tmp_path / "w.yaml"
    f.write_text("steps:\n  - {name: a, run: 'true'}\n  - {name: b, run: 'true', bogus: 1}\n")
    for _ in range(2):
        with pytest.raises(WorkflowError) as err:
            load_workflow(f)
        assert (err.value.line, err.value.col) == (3, 28)
    assert len(_entries("yaml")) == 1


def test_a_yaml_error_is_never_cached(tmp_path):
    f = tmp_path / "w.yaml"
    f.write_text("steps:\n  - {name: a, run: 'true'\n")
    for _ in range(2):
        with pytest.raises(WorkflowError) as err:
            load_workflow(f)
        assert err.value.line == 3
    assert _entries("yaml") == []


def test_data_json_cannot_give_back_is_not_cached(tmp_path):
    f = tmp_path / "w.yaml"
    # (A date under params/env is its text, ENV-4; elsewhere YAML still makes it a date.)
    f.write_text("when: 2024-01-01\nsteps:\n  - {name: a, run: 'true'}\n")
    data, _ = yamlsrc.parse_yaml(f.read_text(), f)
    assert _entries("yaml") == []
    assert type(data["when"]).__name__ == "date"


def test_a_file_naming_a_secret_is_not_cached(tmp_path):
    f = tmp_path / "w.yaml"
    f.write_text("env: {API_TOKEN: t0ken}\nsteps:\n  - {name: a, run: 'true'}\n")
    load_workflow(f)
    assert _entries("yaml") == []


def test_concurrent_writers_leave_one_whole_entry(tmp_path):
    payloads = [bytes([65 + i]) * 200_000 for i in range(8)]
    threads = [threading.Thread(target=cache.store, args=("t", "same", p)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.load("t", "same") in payloads
    assert [p.name for p in cache.directory().iterdir() if p.name.startswith(".")] == []


def test_an_unwritable_cache_is_only_slower(tmp_path, monkeypatch):
    home = tmp_path / "ro"
    home.mkdir()
    (home / "cache").write_text("not a directory")
    monkeypatch.setenv("FLOWSH_HOME", str(home))
    f = tmp_path / "w.yaml"
    f.write_text("steps:\n  - {name: a, run: 'true'}\n")
    assert [s.name for s in load_workflow(f).steps] == ["a"]
    assert os.path.isfile(home / "cache")


def test_a_nul_byte_is_refused_from_a_cached_parse_too(tmp_path):
    f = tmp_path / "w.yaml"
    f.write_text('steps:\n  - {name: a, run: "echo \\0"}\n')
    for _ in range(2):
        with pytest.raises(WorkflowError, match="a NUL byte") as err:
            load_workflow(f)
        assert err.value.line == 2
    assert len(_entries("yaml")) == 1


def test_old_entries_are_removed_beyond_the_limit(monkeypatch):
    monkeypatch.setattr(cache, "KEEP", 3)
    for i in range(5):
        cache.store("t", f"k{i}", b"x")
        os.utime(cache.directory() / f"t-k{i}", ns=(i * 10**9, i * 10**9))
    cache.store("t", "k5", b"x")
    assert sorted(p.name for p in cache.directory().glob("t-*")) == ["t-k3", "t-k4", "t-k5"]
    assert cache.load("t", "k5") == b"x"


@pytest.mark.parametrize("module", ["yamlsrc", "yamlevents"])
def test_a_change_to_how_yaml_is_read_is_a_new_key(module):
    # A development checkout's edit of either file that turns text into data must not
    # read back parses the old code made.
    src = Path(yamlsrc.__file__).with_name(f"{module}.py")
    st = src.stat()
    yamlsrc._parser_stamp.cache_clear()
    before = yamlsrc._parser_stamp()
    try:
        os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        yamlsrc._parser_stamp.cache_clear()
        assert yamlsrc._parser_stamp() != before
    finally:
        os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
        yamlsrc._parser_stamp.cache_clear()


def test_an_install_of_pyc_files_alone_parses_yaml(tmp_path):
    # `compileall -b` and the .py files removed (slim images do it): each module's __file__
    # is its .pyc, and there is no yamlevents.py beside yamlsrc.pyc to stat. The parse
    # stamp looked for one, and every YAML file failed ("yamlevents.py: No such file").
    import compileall
    import shutil
    import subprocess
    import sys

    pkg = tmp_path / "lib" / "flowsh"
    shutil.copytree(Path(yamlsrc.__file__).parent, pkg,
                    ignore=shutil.ignore_patterns("__pycache__"))
    assert compileall.compile_dir(pkg, quiet=1, legacy=True)
    for src in pkg.rglob("*.py"):
        src.unlink()
    f = tmp_path / "w.yaml"
    f.write_text("name: w\nsteps:\n  - {name: a, run: 'true'}\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "lib"),
           "FLOWSH_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-m", "flowsh", "validate", str(f)], env=env,
                         capture_output=True, text=True, cwd=tmp_path, check=False)
    assert (out.returncode, out.stderr) == (0, "")
    assert out.stdout == f"{f}: ok (w, 1 step)\n"
