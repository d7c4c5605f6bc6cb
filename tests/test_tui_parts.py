"""Pure parts of the app: distance bins, colour scale, token layout, ranking, help labels."""

from __future__ import annotations

import numpy as np
import pytest
from textual.color import Color

from tui.distance import far_tokens, log_edges, relevance_by_distance
from tui.screens.help import key_label
from tui.widgets.histogram import bar, bin_label
from tui.widgets.sources import compact, ranked_sources
from tui.widgets.tokenflow import NEGATIVE, POSITIVE, display_pieces, relevance_color, relevance_level


def test_relevance_by_distance_by_hand():
    # 6 tokens before the target: distances 6, 5, 4, 3, 2, 1
    r = np.array([1.0, -2.0, 0.5, 0.25, -1.0, 3.0])
    profile = relevance_by_distance(r, far=4)
    assert profile.edges == [1, 2, 4, 8]
    # bins: d=1 -> [3.0]; d in 2..3 -> [-1.0, 0.25]; d in 4..7 -> [0.5, -2.0, 1.0]
    np.testing.assert_allclose(profile.signed, [3.0, -0.75, -0.5])
    np.testing.assert_allclose(profile.absolute, [3.0, 1.25, 3.5])
    assert profile.counts.tolist() == [1, 2, 3]
    assert profile.far_share == pytest.approx(3.5 / 7.75)
    assert profile.share.sum() == pytest.approx(1.0)
    assert far_tokens(r, far=4) == [(1, 5, -2.0), (0, 6, 1.0), (2, 4, 0.5)]
    assert far_tokens(r, far=10) == []
    assert log_edges(1) == [1, 2] and log_edges(8) == [1, 2, 4, 8, 16]


def test_relevance_by_distance_zero_relevance():
    profile = relevance_by_distance(np.zeros(5))
    assert profile.far_share == 0.0 and profile.share.tolist() == [0.0] * len(profile.signed)


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
