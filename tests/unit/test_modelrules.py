"""flowsh.modelrules: the checks both model layers share."""

from __future__ import annotations

import pytest

from flowsh.modelrules import (
    IDENT,
    POOL_NAME,
    STEP_NAME,
    as_list,
    check_globs,
    check_idents,
    shell_named,
    str_value,
)


def test_scalars_become_text_as_written_by_yaml() -> None:
    assert [str_value(v) for v in (True, False, 5, 1.5, "x", None)] == \
        ["true", "false", "5", "1.5", "x", None]
    assert as_list("a") == ["a"] and as_list(["a"]) == ["a"]


@pytest.mark.parametrize(("names", "message"), [
    ({"1X": ""}, "not a shell identifier"),
    ({"flowsh_x": ""}, "reserved"),
    ({"PWD": ""}, "the step's bash sets PWD"),
])
def test_names_that_cannot_reach_a_step(names: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_idents(names, "env")
    assert check_idents({"OK_1": "x"}, "env") == {"OK_1": "x"}


def test_blank_shell_and_globs_are_refused() -> None:
    with pytest.raises(ValueError, match="shell is blank"):
        shell_named("  ")
    assert shell_named(None) is None
    with pytest.raises(ValueError, match="not a glob"):
        check_globs(["a\nb"])


def test_grammars() -> None:
    import re

    assert IDENT.match("_a1") and not IDENT.match("a\n")
    assert STEP_NAME.match("a.b-c") and not STEP_NAME.match("-a")
    assert re.match(POOL_NAME, "db") and not re.match(POOL_NAME, "d" * 65)
