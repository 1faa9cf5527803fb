"""flowsh.templating: where the jinja2 templates live."""

from __future__ import annotations

from flowsh.templating import templates_dir


def test_templates_dir_holds_every_template_family() -> None:
    d = templates_dir()
    assert d.is_dir()
    for family in ("bash", "systemd", "report", "init"):
        assert (d / family).is_dir(), family
    assert (d / "bash" / "script.sh.j2").is_file()
    assert (d / "crontab.j2").is_file()


def test_templates_dir_is_stable_and_absolute() -> None:
    assert templates_dir() == templates_dir()
    assert templates_dir().is_absolute()


def test_the_export_environment_loads_every_bash_template() -> None:
    from flowsh.export import environment

    env = environment()
    d = templates_dir()
    names = [p.relative_to(d).as_posix() for p in (d / "bash").rglob("*.j2")]
    assert names
    for name in names:
        assert env.get_template(name).filename == str(d / name)
