"""Text from data (users, models, tokenizers, files) made safe to show in a terminal.

A terminal acts on what it receives: ESC starts sequences that set the window title
(OSC 0), write the clipboard (OSC 52), make links (OSC 8) or clear the screen (CSI 2J);
U+009B is a one-byte CSI; bidi overrides reorder what is shown around them. So every
string from data is passed through :func:`visible` before it reaches a terminal, a
Textual widget or an ``error:`` line; our own styling is added afterwards.

What becomes visible, one code point at a time:

- C0 controls (U+0000-U+001F) and DEL: their Unicode pictures (ESC -> ``␛``, BEL -> ``␇``),
  except the layout characters a caller keeps (``keep``: newline and tab only, for
  multi-line fields);
- C1 controls (U+0080-U+009F, incl. the CSI U+009B): ``\\x9b``;
- bidi controls (U+061C, U+200E/F, U+202A-U+202E, U+2066-U+2069) and the line / paragraph
  separators U+2028/9: ``\\u202e``;
- lone surrogates (from undecodable bytes in paths or files; no encoder accepts them):
  ``\\xff`` for a byte Python smuggled through as U+DC80-U+DCFF, else ``\\udXXX``.

Pure Python, no Rich or Textual: the core and the app share it.
"""

from __future__ import annotations

import re

LAYOUT = "\n\t"
"""The only characters a caller may keep (``visible(text, keep=...)``): they move the cursor
to a place the layout expects, nothing else."""

_C0_PICTURES = {c: chr(0x2400 + c) for c in range(0x20)} | {0x7F: "\u2421"}
_BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f" + _BIDI + "\u2028\u2029\ud800-\udfff]")


def _shown(ch: str) -> str:
    c = ord(ch)
    if c in _C0_PICTURES:
        return _C0_PICTURES[c]
    if c <= 0xFF:
        return f"\\x{c:02x}"
    if 0xDC80 <= c <= 0xDCFF:  # os.fsdecode / surrogateescape: the byte that was not UTF-8
        return f"\\x{c - 0xDC00:02x}"
    return f"\\u{c:04x}"


def visible(text: str, *, keep: str = "") -> str:
    """``text`` with every control, bidi and surrogate code point replaced by a visible stand-in.

    ``keep``: layout characters to leave as they are, a subset of :data:`LAYOUT` (``"\\n"`` for
    a multi-line field). The result is printable, encodes as UTF-8, and ``visible`` of it is
    itself (applying it twice changes nothing).
    """
    if not set(keep) <= set(LAYOUT):
        raise ValueError(f"visible() keeps only newline and tab, not {keep!r}")
    if not _UNSAFE.search(text):
        return text
    return _UNSAFE.sub(lambda m: m.group() if m.group() in keep else _shown(m.group()), text)


def visible_chars(text: str) -> str:
    """Like :func:`visible` but one character for one code point (a text field that is edited
    keeps its cursor positions): C0 and DEL as their pictures, every other unsafe code point
    as U+FFFD (the replacement character)."""
    if not _UNSAFE.search(text):
        return text
    return _UNSAFE.sub(lambda m: _C0_PICTURES.get(ord(m.group()), "\ufffd"), text)


def compact(token: str) -> str:
    """A token on one line: newline ``↵``, tab ``→``, other controls visible; quoted when it has
    outer spaces (or is empty), so ``' the'`` and ``'the'`` read differently."""
    shown = visible(token.replace("\n", "↵").replace("\t", "→"))
    return f"'{shown}'" if shown != shown.strip() or not shown else shown
