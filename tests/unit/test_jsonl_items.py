"""Evaluation data (JSONL): lines end at "\\n" only, a BOM is accepted, and strings that are
not valid Unicode are refused on load with the line number, before any model work."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lrp_llm.analyses.evaluate import jsonl_lines, load_items
from lrp_llm.errors import InputError

# characters str.splitlines() splits on although JSON allows them raw inside a string (the
# others it splits on are below U+0020, which JSON only has escaped)
LINE_BREAKS_IN_STRINGS = "\u2028\u2029\x85"


@pytest.mark.parametrize("char", list(LINE_BREAKS_IN_STRINGS))
def test_raw_unicode_line_breaks_inside_strings_are_kept(tmp_path, char):
    path = tmp_path / "items.jsonl"
    item = {"id": f"a{char}b", "text": f"one{char}two", "answer": " three"}
    path.write_text(json.dumps(item, ensure_ascii=False) + "\n", encoding="utf-8")
    # before: "items.jsonl line 1 is not valid JSON (Unterminated string ...)"
    (loaded,) = load_items(path)
    assert loaded.text == f"one{char}two" and loaded.id == f"a{char}b"


def test_a_utf8_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "items.jsonl"
    lines = [{"text": "one two", "answer": " three"}, {"text": "four", "answer": " five"}]
    path.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(x) + "\r\n" for x in lines).encode())
    # before: "items.jsonl line 1 is not valid JSON (Unexpected UTF-8 BOM ...)"
    items = load_items(path)
    assert [i.text for i in items] == ["one two", "four"] and items[0].id == "items-1"


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ('{"id": "x\\ud800", "text": "t", "answer": " a"}', "'id'"),
        ('{"text": "t\\udfff", "answer": " a"}', "'text'"),
        ('{"text": "t", "answer": " a\\ud83d"}', "'answer'"),
        ('{"text": "t", "answer": " a", "source": {"note": "\\udc80"}}', "'source'"),
    ],
)
def test_lone_surrogates_are_refused_on_load_with_the_line(tmp_path, line, field):
    path = tmp_path / "items.jsonl"
    path.write_text('{"text": "ok", "answer": " a"}\n\n' + line + "\n")
    # before: accepted; the HTML writer crashed after the whole run (exit 2, JSON already written)
    with pytest.raises(InputError) as info:
        load_items(path)
    text = str(info.value)
    assert text.startswith("items.jsonl line 3: ") and field in text and "lone surrogate" in text


def test_blank_and_comment_lines_keep_their_numbers(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text('# a comment\n\n  \n{"text": "t", "answer": " a"}\n')
    assert jsonl_lines(path) == [(4, '{"text": "t", "answer": " a"}')]


_text = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=20).filter(str.strip)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    items=st.lists(st.fixed_dictionaries({"id": _text, "text": _text, "answer": _text}), min_size=1, max_size=4),
    ascii_only=st.booleans(),
    bom=st.booleans(),
)
def test_any_valid_unicode_round_trips(tmp_path, items, ascii_only, bom):
    path = tmp_path / "items.jsonl"
    body = "".join(json.dumps(x, ensure_ascii=ascii_only) + "\n" for x in items)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + body.encode("utf-8"))
    loaded = load_items(path)
    assert [(i.id, i.text, i.answer) for i in loaded] == [(x["id"], x["text"], x["answer"]) for x in items]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prefix=_text, surrogate=st.integers(0xD800, 0xDFFF), field=st.sampled_from(["id", "text", "answer"]))
def test_any_lone_surrogate_is_refused(tmp_path, prefix, surrogate, field):
    path = tmp_path / "items.jsonl"
    item = {"id": "i", "text": "t", "answer": " a"}
    line = json.dumps(item).replace(f'"{item[field]}"', json.dumps(prefix + chr(surrogate)), 1)
    path.write_text(line + "\n", encoding="utf-8", errors="surrogatepass")
    with pytest.raises(InputError, match=f"line 1: '{field}' holds a lone surrogate"):
        load_items(path)
