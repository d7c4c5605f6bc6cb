"""A saved session (lrp_llm.results.session): every entry's numbers survive the file, a bad file
is one line naming the entry and field, and the history keeps one entry per explanation."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from lrp_llm.errors import InputError
from lrp_llm.results.session import Session, SessionEntry
from tests.support.result_files import causal, seq2seq
from tui.cli import main
from tui.commands.open import load_result
from tui.history import entry_of, prompt_text, recorded


def two_entries() -> Session:
    first = SessionEntry("Hello?", causal(), "2026-01-31T12:00:00+01:00", context="a passage\n[bold]x[/]")
    second = SessionEntry("copy: a b", seq2seq(), "2026-01-31T12:01:05+01:00")
    return Session([first, second], {"model": "m"})


def assert_same_attribution(a, b) -> None:
    assert (a.model, a.method, a.tokens, a.input_ids, a.prompt_length) == (
        b.model,
        b.method,
        b.tokens,
        b.input_ids,
        b.prompt_length,
    )
    assert (a.source_tokens, a.source_ids, a.meta, a.seconds) == (b.source_tokens, b.source_ids, b.meta, b.seconds)
    assert len(a.targets) == len(b.targets)
    for x, y in zip(a.targets, b.targets):
        assert (x.position, x.token, x.id, x.logit, x.probability) == (
            y.position,
            y.token,
            y.id,
            y.logit,
            y.probability,
        )
        np.testing.assert_array_equal(x.relevance, y.relevance)  # NaN where NaN, every other value exact
        assert x.relevance.dtype == y.relevance.dtype == np.float32
        assert x.relevance_sum == y.relevance_sum or (np.isnan(x.relevance_sum) and np.isnan(y.relevance_sum))
        if x.source_relevance is None:
            assert y.source_relevance is None
        else:
            np.testing.assert_array_equal(x.source_relevance, y.source_relevance)


def test_a_session_of_two_entries_round_trips_through_its_file(tmp_path):
    session = two_entries()
    path = tmp_path / "session.json"
    session.save(path)
    loaded = Session.load(path)
    assert json.loads(path.read_text())["schema"] == "xai-tui/session/1"
    assert loaded.meta == {"model": "m"} and len(loaded.entries) == 2
    for before, after in zip(session.entries, loaded.entries):
        assert (after.question, after.context, after.time, after.method) == (
            before.question,
            before.context,
            before.time,
            before.method,
        )
        assert_same_attribution(before.attribution, after.attribution)
    assert loaded.to_dict() == session.to_dict()
    assert [p.name for p in tmp_path.iterdir()] == ["session.json"]  # written atomically: no temp file left
    view, opened = load_result(str(path))  # what `xai-tui open` and Ctrl+O read
    assert view == "history" and opened.to_dict() == session.to_dict()


def _set(d, path, value):
    for key in path[:-1]:
        d = d[key]
    d[path[-1]] = value


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ((("entries",), []), "entries is empty: the result has nothing to show"),
        ((("entries", 0), "x"), "entries[0] is a string ('x'), expected an object"),
        ((("entries", 1, "time"), "yesterday"), "entries[1].time is 'yesterday', not a date and time"),
        ((("entries", 0, "question"), 3), "entries[0].question is a number (3), expected a string"),
        (
            (("entries", 1, "attribution", "targets", 0, "position"), 9),
            "entries[1].attribution: targets[0].position is 9 but the result has 2 tokens",
        ),
        ((("entries", 0, "attribution", "method"), "magic"), "entries[0].attribution: method is 'magic'"),
        ((("entries", 0, "attribution"), [1]), "entries[0].attribution is a list, expected an object"),
        ((("schema",), "xai-tui/session/2"), "written by a newer xai-tui (schema 'xai-tui/session/2'"),
    ],
)
def test_a_corrupt_session_is_one_line_of_error(change, message, tmp_path, capsys, monkeypatch):
    data = two_entries().to_dict()
    _set(data, *change)
    path = tmp_path / "session.json"
    path.write_text(json.dumps(data))
    monkeypatch.setattr("tui.app.run_app", lambda app: pytest.fail("a corrupt session must not start the app"))
    assert main(["open", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    with pytest.raises(InputError, match="^" + str(path)):
        Session.load(path)


def test_a_truncated_session_file_is_one_line(tmp_path, capsys, monkeypatch):
    path = tmp_path / "session.json"
    path.write_text(two_entries().to_json()[:-40])
    monkeypatch.setattr("tui.app.run_app", lambda app: pytest.fail("a corrupt session must not start the app"))
    assert main(["open", str(path)]) == 2
    err = capsys.readouterr().err
    assert "not JSON" in err and err.count("\n") == 1


def test_the_history_keeps_one_entry_per_question_and_method():
    a, b = causal(), dataclasses.replace(causal(), method="cp-lrp")
    first = SessionEntry("Hello?", a, "2026-01-31T12:00:00")
    switched = SessionEntry("Hello?", b, "2026-01-31T12:00:10")  # a method switch: an entry of its own
    history = recorded(recorded((), first), switched)
    assert history == (first, switched)
    again = SessionEntry("Hello?", causal(), "2026-01-31T12:05:00")  # the same explanation again replaces it
    assert recorded(history, again) == (switched, again)
    assert entry_of(history, b) is switched and entry_of(history, causal()) is None
    assert prompt_text(a) == "<s> Hello" and prompt_text(seq2seq()) == "ab"
