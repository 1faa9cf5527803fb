"""flowsh.templating: where the jinja2 templates live."""

from __future__ import annotations

import jinja2

from flowsh.templating import templates_dir


def test_templates_dir_holds_the_bash_templates() -> None:
    d = templates_dir()
    assert d.is_dir()
    assert (d / "bash").is_dir()
    assert any(p.is_file() for p in (d / "bash").iterdir())


def test_templates_dir_is_stable() -> None:
    assert templates_dir() == templates_dir()


def test_every_bash_template_parses() -> None:
    d = templates_dir()
    # bash's ${#var} would open a jinja comment: the export's delimiters.
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(d)),
                             comment_start_string="{#jinja", comment_end_string="jinja#}")
    names = [p.relative_to(d).as_posix() for p in (d / "bash").rglob("*") if p.is_file()]
    assert names
    for name in names:
        env.get_template(name)  # raises TemplateSyntaxError on a broken one
