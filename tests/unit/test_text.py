"""lrp_llm.text: the one sanitiser for text from data (visible, visible_chars, compact)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lrp_llm.text import compact, visible, visible_chars
from tests.support.hostile import NASTY, hostile_text, leaks

ANY_TEXT = st.one_of(hostile_text(), st.text(st.characters(codec=None, categories=None)))


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b]0;PWNED\x07", "␛]0;PWNED␇"),
        ("a\x00b\x7f", "a␀b␡"),
        ("\x9b2J", "\\x9b2J"),
        ("\x85", "\\x85"),
        ("x\u202ey", "x\\u202ey"),
        ("\u2066\u2069", "\\u2066\\u2069"),
        ("\u2028", "\\u2028"),
        ("\udcff", "\\xff"),  # the byte os.fsdecode smuggled through
        ("\ud800", "\\ud800"),
        ("tab\tnew\nline", "tab␉new␊line"),
        ("[/b] [@click=app.quit] é 中 🙂", "[/b] [@click=app.quit] é 中 🙂"),  # markup is not this function's job
    ],
)
def test_visible_examples(raw, shown):
    assert visible(raw) == shown


def test_layout_characters_are_kept_only_when_asked_and_only_those():
    assert visible("a\nb\tc", keep="\n") == "a\nb␉c"
    assert visible("a\nb\tc", keep="\n\t") == "a\nb\tc"
    with pytest.raises(ValueError, match="newline and tab"):
        visible("x", keep="\x1b")


@settings(max_examples=300)
@given(ANY_TEXT)
def test_visible_leaves_nothing_a_terminal_acts_on(text):
    shown = visible(text)
    assert leaks(shown, ours="(?!)") == [] and "\n" not in shown and "\t" not in shown
    shown.encode("utf-8")  # no lone surrogate left for an encoder to choke on
    assert visible(shown) == shown  # idempotent: the app and the console may both apply it
    kept = visible(text, keep="\n")
    assert kept.count("\n") == text.count("\n") and leaks(kept, ours="(?!)") == []


@settings(max_examples=300)
@given(ANY_TEXT)
def test_visible_chars_keeps_one_character_per_code_point(text):
    shown = visible_chars(text)
    assert len(shown) == len(text) and leaks(shown, ours="(?!)") == [] and "\n" not in shown
    assert [a == b for a, b in zip(text, shown)] == [visible(a) == a for a in text]


@given(st.text(st.characters(blacklist_categories=["Cc", "Cf", "Cs", "Zl", "Zp"])))
def test_safe_text_is_unchanged(text):
    assert visible(text) == text == visible_chars(text)


def test_compact_is_one_line_and_visible():
    assert compact(" x ") == "' x '" and compact("\n") == "↵" and compact("\t") == "→" and compact("") == "''"
    for s in NASTY:
        assert leaks(compact(s), ours="(?!)") == [] and "\n" not in compact(s)
