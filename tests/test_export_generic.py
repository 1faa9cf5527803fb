"""`flowsh export --format NAME`: a plugin's exporter gets every option, as the built-ins do,
and may write several files (issue 12: no special case for any one exporter)."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from flowsh import hookimpl, plugins
from flowsh.cli import main


class _Exporters:
    def __init__(self) -> None:
        self.seen: dict[str, Any] = {}

    @hookimpl
    def flowsh_register_exporters(self, register: Any) -> None:
        def record(workflow: Any, **options: Any) -> str:
            self.seen = {"workflow": workflow.name, **options}
            return "recorded\n"

        def several(workflow: Any, **options: Any) -> dict[str, str]:
            return {f"{workflow.name}.a": "A\n", f"{workflow.name}.b": "B\n"}

        def escaping(workflow: Any, **options: Any) -> dict[str, str]:
            return {"../outside": "x\n"}

        register("zz-record", record)
        register("zz-several", several)
        register("zz-escaping", escaping)


def _cli(*argv: str) -> int:
    try:
        main(list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.fixture
def exporters() -> _Exporters:
    plugin = _Exporters()
    plugins.get_plugin_manager().register(plugin, name="zz-exporters")
    return plugin


@pytest.fixture
def flow(tmp_path: Path) -> Path:
    path = tmp_path / "nightly.yaml"
    path.write_text("name: nightly\nschedule: '0 2 * * *'\nsteps: [{name: a, run: 'true'}]\n")
    return path


def test_a_plugins_exporter_gets_every_option_and_its_own(
        exporters: _Exporters, flow: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/opt/x/bin:/usr/bin:/bin")
    code = _cli("export", str(flow), "--format", "zz-record", "--inline", "--cron", "5 * * * *",
                "--script", "/srv/nightly.sh", "--path-from-env", "--option", "region=eu west",
                "--option", "empty=")
    assert code == 0, capsys.readouterr().err
    assert capsys.readouterr().out == "recorded\n"
    assert exporters.seen == {
        "workflow": "nightly", "inline": True, "script_name": None, "exprs": ["5 * * * *"],
        "script": "/srv/nightly.sh", "path": "/opt/x/bin:/usr/bin:/bin",
        "region": "eu west", "empty": "",
    }


def test_an_exporter_returning_files_writes_them_into_the_directory(
        exporters: _Exporters, flow: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "units"
    assert _cli("export", str(flow), "--format", "zz-several", "-o", str(out)) == 0
    assert (out / "nightly.a").read_text() == "A\n" and (out / "nightly.b").read_text() == "B\n"
    assert stat.S_IMODE((out / "nightly.a").stat().st_mode) == 0o600
    assert capsys.readouterr().out.split() == [str(out / "nightly.a"), str(out / "nightly.b")]


def test_a_file_name_leaving_the_directory_is_refused(
        exporters: _Exporters, flow: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "units"
    assert _cli("export", str(flow), "--format", "zz-escaping", "-o", str(out)) == 2
    err = capsys.readouterr().err
    assert "'../outside'" in err and err.count("\n") == 1
    assert not (tmp_path / "outside").exists()


def test_a_malformed_option_is_one_line_and_exit_2(
        exporters: _Exporters, flow: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli("export", str(flow), "--format", "zz-record", "--option", "novalue") == 2
    err = capsys.readouterr().err
    assert "--option 'novalue' must be KEY=VALUE" in err and err.count("\n") == 1


def test_systemd_is_an_exporter_like_any_other(flow: Path, tmp_path: Path) -> None:
    out = tmp_path / "units"
    assert _cli("export", str(flow), "--format", "systemd", "-o", str(out)) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["flowsh-nightly.service", "flowsh-nightly.timer"]
    assert "OnCalendar=*-*-* 02:00:00" in (out / "flowsh-nightly.timer").read_text()
