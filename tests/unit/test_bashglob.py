"""`sources:`/`generates:` globs expanded by bash itself (flowsh/bashglob.py): real files,
real bash, compared with what the exported script's expansion gives."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flowsh.bashglob import Stopped, expand, match_files
from flowsh.uptodate import sha256_file


def _script_glob(pattern: str, cwd: Path) -> list[str]:
    """The exported script's expansion (templates/bash/uptodate.sh.j2, flowsh_utd_files)."""
    code = ('shopt -s globstar nullglob; IFS=; g=($1); for f in "${g[@]}"; do '
            '[[ -f $f ]] && printf "%s\\0" "$f"; done; true')
    out = subprocess.run(["bash", "-c", code, "x", pattern], cwd=cwd, capture_output=True,
                         check=True).stdout
    return sorted({os.fsdecode(p) for p in out.split(b"\0") if p})


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    (data / "sub" / ".hidden").mkdir(parents=True)
    (tmp_path / "real").mkdir()
    for rel in ("a.txt", "x.txt", "^.txt", ".dot.txt", "data/a.txt", "data/sub/b.txt",
                "data/sub/.hidden/c.txt", "real/r.txt", "in\nput.txt"):
        (tmp_path / rel).write_text(rel)
    (data / "self").symlink_to(".")
    (data / "up").symlink_to("..")
    (data / "lnk").symlink_to("../real")
    (data / "sub" / "deep").symlink_to("..")
    (tmp_path / "adir.txt").mkdir()
    return tmp_path


@pytest.mark.parametrize("pattern", [
    "[^x].txt", "[!x].txt", "[\\^].txt", "*.txt", ".*", "**/*.txt", "data/**/*.txt",
    "data/**", "**", "**/a.txt", "data/**/b.txt", "data/*/*.txt", "nothing*", "a.txt",
    "data/sub/.hidden/*", "[[:alpha:]].txt", "in?put.txt",
])
def test_matches_what_the_exported_script_matches(tree: Path, pattern: str) -> None:
    assert match_files([pattern], tree) == _script_glob(pattern, tree)


def test_symlink_loop_ends_and_negation_is_bash_s(tree: Path) -> None:
    got = match_files(["data/**/*.txt", "[^x].txt"], tree)
    assert "a.txt" in got and "^.txt" in got and "x.txt" not in got  # [^x]: not x
    assert "data/sub/b.txt" in got
    # bash lists a symlinked directory as a match of `**` but does not walk into it
    assert not any(p.startswith(("data/self/self/", "data/sub/deep/sub/")) for p in got)


def test_name_with_a_newline_is_one_file(tree: Path) -> None:
    assert match_files(["in*"], tree) == ["in\nput.txt"]


def test_directories_and_empty_patterns_match_no_file(tree: Path) -> None:
    assert match_files(["adir.txt", "data", ""], tree) == []
    assert expand([], tree) == []


def test_hashing_stops_when_asked(tmp_path: Path) -> None:
    f = tmp_path / "big"
    f.write_bytes(b"x" * 10)
    with pytest.raises(Stopped):
        sha256_file(f, lambda: True)
    assert sha256_file(f) is not None


def test_sigterm_stops_a_run_hashing_a_huge_source(tmp_path: Path) -> None:
    """A run reading a huge `sources:` file stops on SIGTERM (exit 130) instead of
    reading it to its end first (a sparse terabyte: hours)."""
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(1 << 40)
    flow = tmp_path / "big.yaml"
    flow.write_text('name: big\nsteps:\n  - name: s\n    sources: "*.bin"\n'
                    "    run: echo ran >> log\n")
    proc = subprocess.Popen([sys.executable, "-m", "flowsh", "run", "-q", str(flow)],
                            cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        fd_dir = Path(f"/proc/{proc.pid}/fd")
        while proc.poll() is None:  # until it holds the file open: it is hashing
            try:
                if any(os.readlink(p) == str(big) for p in fd_dir.iterdir()):
                    break
            except OSError:
                pass
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 130
    assert not (tmp_path / "log").exists()
