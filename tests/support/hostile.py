"""Hostile text for the fuzz tests: strings a terminal would act on, markup-like text, surrogates,
and the check that output holds none of them raw.

``NASTY``: the fixed list (every class the sanitiser handles, each at least once);
``hostile_text()``: a hypothesis strategy mixing those pieces with arbitrary text;
``leaks(output)``: the code points and escape sequences in ``output`` that the program did not
emit for its own styling.
"""

from __future__ import annotations

import re

OSC_TITLE = "\x1b]0;PWNED\x07"
NASTY: list[str] = [
    OSC_TITLE,  # sets the window title
    "\x1b]52;c;cHduZWQ=\x07",  # writes the clipboard
    "\x1b]8;;https://evil.example/\x1b\\click\x1b]8;;\x1b\\",  # a hyperlink
    "\x1b[2J\x1b[H",  # clears the screen
    "\x1b[31mred\x1b[0m",  # styling from data
    "\x1bP+q\x1b\\",  # DCS
    "\x9b2J",  # C1 CSI
    "\x9d0;PWNED\x9c",  # C1 OSC ... ST
    "\x85next line",  # C1 NEL
    "\x00\x01\x07\x08\x0b\x0c\r\x7f",  # C0 and DEL
    "admin\u202egnp.exe\u202c",  # bidi override
    "\u2066isolate\u2069\u200f",  # bidi isolate, mark
    "line\u2028sep\u2029",  # line / paragraph separators
    "[/b]",  # closes a tag that is not open: a markup error
    "[@click=app.quit]quit[/]",  # a clickable action
    "[link=https://evil.example]link[/link]",
    "[b]bold[/b] [red on blue]x[/]",
    ":thumbs_up: $name \\[x]",  # emoji codes, template variables, escapes
    "\udcff\udc80",  # undecodable bytes (surrogateescape)
    "\ud800",  # a lone surrogate
]
MARKUP = [s for s in NASTY if s.startswith("[")]

# What the terminal must never get from data: C0 except tab and newline, DEL, C1, bidi controls,
# line separators, surrogates. ESC is checked after the program's own sequences are removed.
_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029\ud800-\udfff]"
)
SGR = r"\x1b\[[0-9;]*m"
"""What a command may emit itself: Select Graphic Rendition (colours, bold)."""
SCREEN = r"\x1b\[[0-9;]*[mH]"
"""What the app's screen updates may hold: SGR and cursor positioning."""


def leaks(output: str, ours: str = SGR) -> list[str]:
    """The unsafe code points left in ``output`` once the sequences matching ``ours`` are removed."""
    return sorted({repr(c) for c in _UNSAFE.findall(re.sub(ours, "", output))})


def hostile_text():
    """Hypothesis strategy: NASTY pieces and arbitrary text (any code point, surrogates included) joined."""
    from hypothesis import strategies as st

    piece = st.one_of(
        st.sampled_from(NASTY),
        st.text(max_size=4),
        st.text(st.characters(min_codepoint=0, max_codepoint=0x9F), max_size=4),
        st.text(st.characters(categories=["Cc", "Cf", "Cs", "Zl", "Zp"]), max_size=3),
    )
    return st.lists(piece, min_size=1, max_size=5).map("".join)
