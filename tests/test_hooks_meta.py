"""Meta-tests: every hook is documented in its spec and in docs/plugins.md, and tested."""

from __future__ import annotations

import inspect
import re

import pytest

from flowsh import hookspecs
from tests.conftest import ROOT

HOOKS = sorted(hookspecs._all_hooks())
DOCS = (ROOT / "docs" / "plugins.md").read_text()
TESTS = {p.name: p.read_text() for p in (ROOT / "tests").glob("test_*.py")
         if p.name != "test_hooks_meta.py"}


def test_hooks_found():
    assert len(HOOKS) >= 11 and all(h.startswith("flowsh_") for h in HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_docstring(hook):
    doc = inspect.getdoc(getattr(hookspecs, hook))
    assert doc and len(doc) > 20, f"{hook} needs a docstring saying when it fires"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_in_the_reference(hook):
    assert re.search(rf"^\| `{hook}` \|", DOCS, re.M), f"{hook} missing from docs/plugins.md"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_exercised_by_a_test(hook):
    kind = hook.removeprefix("flowsh_register_")
    used = [name for name, text in TESTS.items()
            if hook in text or (kind != hook and f'"{kind}"' in text
                                and "flowsh_register_" in text)]
    assert used, f"no test exercises {hook}"
