"""`plugins.none_declared`: a start with a cold cache finds third-party plugins without
importing `importlib.metadata`, and never misses one it would have found."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import pytest

from flowsh import plugins


def _declared(paths: list[str]) -> list[str]:
    """What importlib.metadata finds in group flowsh on `paths`."""
    from importlib.metadata import distributions

    return [ep.name for d in distributions(path=paths) for ep in d.entry_points
            if ep.group == "flowsh"]


def _dist(where: Path, name: str, entry_points: str | None, kind: str = "dist-info") -> None:
    d = where / f"{name}-1.0.{kind}"
    d.mkdir(parents=True)
    (d / ("METADATA" if kind == "dist-info" else "PKG-INFO")).write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    if entry_points is not None:
        (d / "entry_points.txt").write_text(entry_points)


CASES = {
    "nothing installed": [],
    "no entry points": [("a", None)],
    "console scripts named flowsh": [("a", "[console_scripts]\nflowsh = flowsh.__main__:main\n")],
    "another group": [("a", "[pytest11]\nx = flowsh_x\n")],
    "a plugin": [("a", "[console_scripts]\nx = y\n[flowsh]\nmine = mine_pkg\n")],
    "spaced and CRLF": [("b", "  [flowsh]  \r\n  mine = m:plugin  \r\n")],
    "doubled brackets": [("c", "[[flowsh]]\nmine = m\n")],
    "split by a vertical tab": [("d", "[x]\x0b[flowsh]\x0bmine = m\n")],
    "egg-info": [("e", "[flowsh]\nmine = m\n", "egg-info")],
    "commented out": [("f", "# [flowsh]\n[other]\nx = y\n")],
}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_never_misses_what_importlib_finds(case: str, tmp_path: Path) -> None:
    for spec in CASES[case]:
        _dist(tmp_path, *spec)
    found = _declared([str(tmp_path)])
    if plugins.none_declared([str(tmp_path)]):
        assert found == []
    else:  # only where one may be: the slow scan is not taken for nothing
        assert case in ("a plugin", "spaced and CRLF", "doubled brackets",
                        "split by a vertical tab", "egg-info")
    assert bool(found) == (case in ("a plugin", "spaced and CRLF", "doubled brackets",
                                    "split by a vertical tab", "egg-info"))


def test_a_zip_or_an_egg_on_the_path_asks_importlib(tmp_path: Path) -> None:
    archive = tmp_path / "lib.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("p-1.0.dist-info/METADATA", "Name: p\nVersion: 1.0\n")
        z.writestr("p-1.0.dist-info/entry_points.txt", "[flowsh]\np = p\n")
    assert _declared([str(archive)]) == ["p"]
    assert not plugins.none_declared([str(archive)])
    egg = tmp_path / "x-1.0-py3.11.egg"
    (egg / "EGG-INFO").mkdir(parents=True)
    assert not plugins.none_declared([str(egg)])
    assert plugins.none_declared([str(tmp_path / "absent")])


def test_this_interpreters_path_agrees_with_importlib() -> None:
    from importlib.metadata import entry_points

    found = list(entry_points(group="flowsh"))
    assert not (found and plugins.none_declared())
    assert plugins.none_declared(list(sys.path)) == plugins.none_declared()


def test_another_finder_of_distributions_asks_importlib(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    class Finder:
        @staticmethod
        def find_spec(*args: object) -> None:
            return None

        @staticmethod
        def find_distributions(*args: object) -> list[object]:
            return []

    assert plugins.none_declared([str(tmp_path)])
    monkeypatch.setattr(sys, "meta_path", [*sys.meta_path, Finder])
    assert not plugins.none_declared([str(tmp_path)])
