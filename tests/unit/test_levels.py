"""The one colour-level rule (lrp_llm.export.levels) and that the report, its script and the
terminal all use it."""

from __future__ import annotations

import re

import pytest
from textual.color import Color

from lrp_llm.export.common import level_class
from lrp_llm.export.levels import LEVEL_JS, LEVELS, colour_level
from lrp_llm.export.token_section import SCRIPT
from tui.render import relevance_rgb
from tui.widgets.tokenflow import NEGATIVE, POSITIVE, relevance_color, relevance_level

# (value, scale, level) worked out by hand: x = clip(value / scale, -1, 1) * 10, then
# sign(x) * floor(|x| + 0.5).
HAND = [
    (0.0, 1.0, 0),
    (0.04, 1.0, 0),  # x = 0.4
    (0.06, 1.0, 1),  # x = 0.6
    (0.25, 1.0, 3),  # x = 2.5: half-step, away from zero
    (-0.25, 1.0, -3),  # the same strength for the negation
    (0.5, 2.0, 3),  # x = 2.5 again, through the scale
    (-1.5, 4.0, -4),  # x = -3.75
    (0.125, 0.5, 3),  # x = 2.5 (binary-exact)
    (-0.125, 0.5, -3),
    (0.75, 2.0, 4),  # x = 3.75
    (0.05, 1.0, 1),  # x = 0.5
    (-0.35, 1.0, -4),  # x = -3.5
    (1.0, 1.0, LEVELS),
    (-1.0, 1.0, -LEVELS),
    (5.0, 1.0, LEVELS),  # clipped
    (-5.0, 1.0, -LEVELS),
    (0.3, 0.0, 0),  # no scale
    (0.3, -1.0, 0),
    (float("nan"), 1.0, 0),
    (float("inf"), 1.0, 0),
    (1.0, float("inf"), 0),
]


@pytest.mark.parametrize(("value", "scale", "expected"), HAND)
def test_colour_level_against_hand_computed_values(value, scale, expected):
    assert colour_level(value, scale) == expected


def test_half_steps_round_away_from_zero_on_both_sides():
    # (2k + 1) / 20 * 10 is exactly k + 0.5 in float64 for these values
    halves = [0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95]
    assert [colour_level(v, 1.0) for v in halves] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert [colour_level(-v, 1.0) for v in halves] == [-1, -2, -3, -4, -5, -6, -7, -8, -9, -10]


def test_the_report_script_carries_the_same_rule():
    assert LEVEL_JS in SCRIPT and "LEVEL_FUNCTION" not in SCRIPT
    assert re.search(r"Math\.floor\(Math\.abs\(x\) \+ 0\.5\)", LEVEL_JS)
    assert f"* {LEVELS}," in LEVEL_JS


@pytest.mark.parametrize("value", [v for v, s, _ in HAND if s == 1.0] + [0.15, -0.15, 0.45, -0.45, 0.95, -0.95])
def test_terminal_and_html_give_the_same_level(value):
    k = colour_level(value, 1.0)
    # the app's widgets: blended in k / LEVELS
    assert relevance_level(value, 1.0) == k / LEVELS
    bg = Color(0, 0, 0)
    expected = bg if k == 0 else bg.blend(POSITIVE if k > 0 else NEGATIVE, abs(k) / LEVELS)
    assert relevance_color(value, 1.0, bg) == expected
    # the command line's heatmaps: the same level as RGB
    fade = round(255 * (1 - abs(k) / LEVELS))
    assert relevance_rgb(value, 1.0) == ((255, fade, fade) if k >= 0 else (fade, fade, 255))
    # the report: the class of the same level
    assert level_class(k) == (f"p{k}" if k >= 0 else f"n{-k}")
