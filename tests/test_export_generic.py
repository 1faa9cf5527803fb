"""`flowsh export --format NAME`: a plugin's exporter gets every option, as the built-ins do,
and may write several files (issue 12: no special case for any one exporter)."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from flowsh import hookimpl, plugins
from flowsh.errors import EXIT_PLUGIN
from tests.conftest import cli_in_process


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

        def returns(value: Any) -> Any:
            return lambda workflow, **options: value

        def raising(workflow: Any, **options: Any) -> str:
            raise RuntimeError("exporter boom")

        register("zz-none", returns(None))
        register("zz-bytes", returns(b"#!/bin/sh\n"))
        register("zz-empty", returns({}))
        register("zz-raising", raising)
        register("zz-record", record)
        register("zz-several", several)
        register("zz-escaping", escaping)


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
    code = cli_in_process("export", str(flow), "--format", "zz-record", "--inline", "--cron", "5 * * * *",
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
    assert cli_in_process("export", str(flow), "--format", "zz-several", "-o", str(out)) == 0
    assert (out / "nightly.a").read_text() == "A\n" and (out / "nightly.b").read_text() == "B\n"
    assert stat.S_IMODE((out / "nightly.a").stat().st_mode) == 0o600
    assert capsys.readouterr().out.split() == [str(out / "nightly.a"), str(out / "nightly.b")]


def test_a_file_name_leaving_the_directory_is_refused(
        exporters: _Exporters, flow: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "units"
    assert cli_in_process("export", str(flow), "--format", "zz-escaping", "-o", str(out)) == EXIT_PLUGIN
    err = capsys.readouterr().err
    assert "'../outside'" in err and err.count("\n") == 1
    assert not (tmp_path / "outside").exists()


def test_a_malformed_option_is_one_line_and_exit_2(
        exporters: _Exporters, flow: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_in_process("export", str(flow), "--format", "zz-record", "--option", "novalue") == 2
    err = capsys.readouterr().err
    assert "--option 'novalue' must be KEY=VALUE" in err and err.count("\n") == 1


def test_systemd_is_an_exporter_like_any_other(flow: Path, tmp_path: Path) -> None:
    out = tmp_path / "units"
    assert cli_in_process("export", str(flow), "--format", "systemd", "-o", str(out)) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["flowsh-nightly.service", "flowsh-nightly.timer"]
    assert "OnCalendar=*-*-* 02:00:00" in (out / "flowsh-nightly.timer").read_text()


@pytest.mark.parametrize(("fmt", "what"), [
    ("zz-none", "returned NoneType"), ("zz-bytes", "returned bytes"),
    ("zz-empty", "returned dict"), ("zz-raising", "failed: RuntimeError: exporter boom")])
@pytest.mark.parametrize("to_file", [False, True])
def test_a_broken_exporter_is_one_line_and_writes_nothing(
        exporters: _Exporters, flow: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        fmt: str, what: str, to_file: bool) -> None:
    out = tmp_path / "out.sh"
    argv = ["export", str(flow), "--format", fmt, *(["-o", str(out)] if to_file else [])]
    assert cli_in_process(*argv) == EXIT_PLUGIN
    captured = capsys.readouterr()
    assert f"exporter '{fmt}' {what}" in captured.err and captured.err.count("\n") == 1
    assert captured.out == "" and not out.exists()


@pytest.mark.parametrize("key", ["inline", "script_name", "exprs", "workflow", "path"])
def test_an_option_cannot_stand_in_for_flowshs_own(
        exporters: _Exporters, flow: Path, capsys: pytest.CaptureFixture[str],
        key: str) -> None:
    assert cli_in_process("export", str(flow), "--bash", "--option", f"{key}=x\ntouch PWNED") == 2
    err = capsys.readouterr().err
    assert f"'{key}' is flowsh's own option" in err and err.count("\n") == 1


def test_a_line_break_in_the_scripts_name_stays_in_its_comment(
        flow: Path, tmp_path: Path) -> None:
    out = tmp_path / "odd\ntouch PWNED\n#.sh"
    assert cli_in_process("export", str(flow), "--bash", "-o", str(out)) == 0
    import subprocess

    subprocess.run(["bash", str(out), "--help"], cwd=tmp_path, capture_output=True,
                   timeout=60, check=False)
    assert not (tmp_path / "PWNED").exists()
    assert "odd?touch PWNED?#.sh --help" in out.read_text()
