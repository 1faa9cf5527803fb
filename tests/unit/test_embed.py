"""flowsh.embed: files a step sources, embedded for --inline, or refused at FILE:LINE."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from flowsh.embed import embed, mirror_word
from flowsh.errors import WorkflowError


def test_mirror_word_expands_under_flowsh_files() -> None:
    word = mirror_word("/opt/my lib/x.sh")
    out = subprocess.run(["bash", "-c", f"printf %s {word}"], env={"FLOWSH_FILES": "/f"},
                         capture_output=True, text=True, check=True).stdout
    assert out == "/f/root/opt/my lib/x.sh"


def test_literal_and_self_relative_sources_followed(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "inner.sh").write_text("inner() { :; }\n")
    (tmp_path / "lib" / "deep.sh").write_text("deep() { :; }\n")
    (tmp_path / "x.sh").write_text("helper() { :; }\n")
    main = tmp_path / "main.sh"
    main.write_text('# . not/a/source.sh\n. ./x.sh\nDIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)\n'
                    'source "$DIR/lib/inner.sh"\n. "$(dirname "$0")/lib/deep.sh"\n')
    seen: dict[str, str] = {}
    items = list(embed(main, tmp_path, seen))
    origins = [i["origin"] for i in items]
    assert origins[0] == str(main.resolve())
    assert set(origins) == {str(p.resolve()) for p in (main, tmp_path / "x.sh",
                                                       tmp_path / "lib/inner.sh", tmp_path / "lib/deep.sh")}
    first = items[0]["content"]
    assert mirror_word(str((tmp_path / "x.sh").resolve())) in first  # literal word rewritten
    assert 'source "$DIR/lib/inner.sh"' in first  # relative to itself: unchanged
    assert items[0]["mode"] == "600"


def test_each_file_once_even_in_a_cycle(tmp_path: Path) -> None:
    (tmp_path / "a.sh").write_text(". ./b.sh\n")
    (tmp_path / "b.sh").write_text(". ./a.sh\n")
    items = list(embed(tmp_path / "a.sh", tmp_path, {}))
    assert len(items) == 2


@pytest.mark.parametrize(("line", "message"), [
    ('. "$LIBDIR/x.sh"', "its path is not a literal"),
    (". ./lib/*.sh", "its path is not a literal"),
    (". ./adir", "is not a file"),
])
def test_refused_with_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    main = tmp_path / "main.sh"
    main.write_text(f"f() {{ :; }}\n{line}\n")
    (tmp_path / "adir").mkdir()
    with pytest.raises(WorkflowError, match=message) as exc:
        list(embed(main, tmp_path, {}))
    assert exc.value.path == str(main) and exc.value.line == 2


def test_a_file_missing_at_export_stays_as_written(tmp_path: Path) -> None:
    """REFUSE-4: an optional include has nothing to carry; the script looks for it where
    `flowsh run` does (the word is not rewritten to an embedded copy)."""
    main = tmp_path / "main.sh"
    main.write_text("f() { :; }\n[ -r ./local.conf ] && . ./local.conf\n")
    items = list(embed(main, tmp_path, {}))
    assert len(items) == 1
    assert items[0]["content"] == main.read_text()


def test_unreadable_file(tmp_path: Path) -> None:
    (tmp_path / "bin.sh").write_bytes(b"\xff\xfe")
    with pytest.raises(WorkflowError, match="cannot embed"):
        list(embed(tmp_path / "bin.sh", tmp_path, {}))
