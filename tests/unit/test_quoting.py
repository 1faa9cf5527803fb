"""flowsh.quoting: every quoted word expands, in a real bash, to exactly the original text."""

from __future__ import annotations

import subprocess

from hypothesis import given, settings
from hypothesis import strategies as st

from flowsh.quoting import bash_quote, quote_name

# An environment variable / argv cannot hold NUL; everything else must survive.
_TEXT = st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
                max_size=40)


def _bash_expand(words: list[str]) -> list[str]:
    """Each word, as bash expands it, through `printf '%s\\0'`."""
    script = "printf '%s\\0' " + " ".join(words)
    out = subprocess.run(["bash", "-c", script], capture_output=True, check=True).stdout
    return out.decode("utf-8", "surrogateescape").split("\0")[:-1]


@settings(max_examples=25, deadline=None)
@given(st.lists(_TEXT, min_size=1, max_size=8))
def test_bash_quote_round_trips_through_bash(values: list[str]) -> None:
    assert _bash_expand([bash_quote(v) for v in values]) == values


@settings(max_examples=15, deadline=None)
@given(st.lists(_TEXT, min_size=1, max_size=8))
def test_quote_name_round_trips_through_bash(values: list[str]) -> None:
    assert _bash_expand([quote_name(v) for v in values]) == values


def test_tricky_values_by_hand() -> None:
    values = ["it's", "$(touch /tmp/x)", "`id`", "a b", "*", "~", "\n", "'", "''", "!", "\\",
              "${HOME}", "-n", "=x", "a\tb", "é"]
    assert _bash_expand([bash_quote(v) for v in values]) == values


def test_plain_when_harmless_quoted_otherwise() -> None:
    assert bash_quote("abc/def.sh") == "abc/def.sh"
    assert bash_quote("user@host:22") == "user@host:22"
    assert bash_quote("") == "''"
    assert bash_quote(None) == "''"
    assert bash_quote(5) == "5"
    assert bash_quote("-e") == "'-e'"  # never an option to echo/printf
    assert bash_quote("=x") == "'=x'"
    assert bash_quote("a b") == "'a b'"


def test_quote_name_always_quotes() -> None:
    assert quote_name("wait") == "'wait'"
    assert quote_name(None) == "''"
    assert quote_name("a'b") == "'a'\\''b'"
