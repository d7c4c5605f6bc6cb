"""Pure parts of the app: colour scale, token layout, ranking, bars, help labels."""

from __future__ import annotations

from textual.color import Color

from tui.screens.help import key_label
from tui.widgets.histogram import bar, bin_label
from tui.widgets.sources import compact, ranked_sources
from tui.widgets.tokenflow import NEGATIVE, POSITIVE, display_pieces, relevance_color, relevance_level


def test_colour_scale_is_symmetric_and_stepped():
    bg = Color(0, 0, 0)
    assert relevance_level(0.5, 1.0) == 0.5 and relevance_level(-2.0, 1.0) == -1.0
    assert relevance_level(0.04, 1.0) == 0.0 and relevance_level(1.0, 0.0) == 0.0
    assert relevance_color(1.0, 1.0, bg) == POSITIVE and relevance_color(-1.0, 1.0, bg) == NEGATIVE
    assert relevance_color(0.0, 1.0, bg) == bg
    half_pos, half_neg = relevance_color(0.5, 1.0, bg), relevance_color(-0.5, 1.0, bg)
    assert half_pos == bg.blend(POSITIVE, 0.5) and half_neg == bg.blend(NEGATIVE, 0.5)


def test_tokens_are_drawn_with_visible_whitespace_and_no_control_characters():
    assert display_pieces(" Paris") == [(" Paris", False)]
    assert display_pieces(".\n\n") == [(".↵", True), ("↵", True)]
    assert display_pieces("a\tb") == [("a→b", False)]
    assert display_pieces("\x1b[2J") == [("␛[2J", False)]  # an escape sequence is not sent to the terminal
    assert display_pieces("") == [("▯", False)]
    assert compact(" x ") == "' x '" and compact("\n") == "↵" and compact("ab") == "ab"


def test_ranked_sources():
    top, bottom = ranked_sources(["a", "b", "c", "d"], [0.5, -1.0, 2.0, 0.0], distances=[4, 3, 2, 1], k=2, k_negative=1)
    assert [(s.index, s.value, s.distance) for s in top] == [(2, 2.0, 2), (0, 0.5, 4)]
    assert [(s.index, s.value) for s in bottom] == [(1, -1.0)]


def test_bars_and_labels():
    assert bar(0.5, 4) == "██  " and bar(1.0, 2) == "██" and bar(0.0, 3) == "   "
    assert bar(0.5, 1) == "▌" and bar(0.125, 1) == "▏"
    assert bin_label(1, 2) == "1" and bin_label(4, 8) == "4-7"
    assert key_label("f1,question_mark") == "F1 / ?" and key_label("ctrl+s") == "Ctrl+S"
