"""A result file is checked completely on load (lrp_llm.results.base.Fields): a bad file is one
`error:` line naming the field, from `load` and from `xai-tui open`; what loads can be shown."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from lrp_llm.analyses.evaluate import Evaluation
from lrp_llm.errors import InputError
from lrp_llm.results.image import ImageAttribution
from tests.support.result_files import causal, corrupted, evaluation, image, patching, seq2seq, similarity
from tui.cli import main
from tui.commands.open import load_result


def _set(d, path, value):
    for key in path[:-1]:
        d = d[key]
    if value is DROP:
        del d[path[-1]]
    else:
        d[path[-1]] = value


DROP = object()
# (result, the change, the message's words): every class of problem the issue names, and more
CASES = [
    (causal, (("method",), "magic"), "method is 'magic', not one of: attnlrp"),
    (
        causal,
        (("targets", 1, "relevance"), [0.1] * 7),
        "targets[1].relevance has 7 values but the target is at position 3",
    ),
    (causal, (("targets", 0, "position"), 9), "targets[0].position is 9 but the result has 4 tokens"),
    (causal, (("targets", 0, "position"), 0), "targets[0].position is 0, below the smallest allowed value 1"),
    (causal, (("targets", 0, "position"), -3), "targets[0].position is -3"),
    (causal, (("targets", 0, "position"), 1.5), "targets[0].position is a number (1.5), expected a whole number"),
    (causal, (("targets", 0, "relevance", 0), 1e308), "targets[0].relevance[0] is 1e+308: not a finite float32"),
    (causal, (("targets", 0, "relevance", 1), "inf"), "targets[0].relevance[1] is a string ('inf'), expected a number"),
    (causal, (("targets", 0, "token"), " earth"), "targets[0].token is ' earth' but the token at position 2"),
    (causal, (("targets", 0, "id"), 9), "targets[0].id is 9 but input_ids[2] is 6"),
    (causal, (("targets", 0, "logit"), DROP), "targets[0].logit is missing"),
    (causal, (("tokens",), []), "tokens is empty: the result has no tokens to show"),
    (causal, (("tokens", 1), 5), "tokens[1] is a number (5), expected a string"),
    (causal, (("tokens", 1), "\ud800"), "tokens[1] is not valid Unicode"),
    (causal, (("targets",), []), "targets is empty: the result has nothing to show"),
    (causal, (("targets", 0), [1, 2]), "targets[0] is a list, expected an object"),
    (causal, (("input_ids",), [1, 2]), "input_ids has 2 values but there are 4 tokens"),
    (causal, (("prompt_length",), 99), "prompt_length is 99, above the largest allowed value 4"),
    (causal, (("meta",), [1]), "meta is a list, expected an object"),
    (causal, (("schema",), "xai-tui/attribution/2"), "written by a newer xai-tui (schema 'xai-tui/attribution/2'"),
    (causal, (("schema",), "other-tool/v3"), "not an xai-tui result (schema 'other-tool/v3')"),
    (causal, (("schema",), "xai-tui/mystery/1"), "not a result the app can show (schema 'xai-tui/mystery/1')"),
    (causal, (("schema",), DROP), 'it has no "schema"'),
    (
        seq2seq,
        (("targets", 0, "source_relevance"), [1.0]),
        "targets[0].source_relevance has 1 values but the source has 2",
    ),
    (seq2seq, (("source_ids",), [1]), "source_ids has 1 values but there are 2 source tokens"),
    (similarity, (("interactions",), [[0.5]]), "interactions has 1 values but the texts have 2 and 1 tokens"),
    (similarity, (("interactions", 1), [0.5, 1.0]), "interactions[1] has 2 values but the texts have 2 and 1 tokens"),
    (similarity, (("interactions", 0, 0), 1e308), None),  # float64: 1e308 is finite, and shown
    (similarity, (("mode",), "angle"), "mode is 'angle', not one of: cosine, dot"),
    (similarity, (("special_a",), [True]), "special_a has 1 values but text a has 2 tokens"),
    (patching, (("grids", 0, "values", 0), [1.0]), "grids[0].values[0] has 1 values but the grid has 2 rows and 2 col"),
    (patching, (("grids", 0, "kind"), "brain"), "grids[0].kind is 'brain', not one of: resid"),
    (patching, (("grids", 0, "positions"), [0, 7]), "grids[0].positions[1] is 7 but the prompts have 2 tokens"),
    (patching, (("corrupted_ids",), [3]), "corrupted_ids has 1 values but the prompts have 2 tokens"),
    (patching, (("baseline", "clean"), 3), "baseline.clean is a number (3), expected an object"),
    (patching, (("baseline", "corrupted"), DROP), None),  # not known: shown as such
    (image, (("patch_relevance",), [[1.0]]), "patch_relevance has 1 values but the image is 2x2 patches"),
    (image, (("label",), "dog"), None),  # the app's image view shows it
    (evaluation, (("schema",), "xai-tui/evaluation/1"), "this is an evaluation"),
]


@pytest.mark.parametrize(("make", "change", "message"), CASES, ids=[c[2] or "loads" for c in CASES])
def test_a_bad_file_is_one_line_naming_the_field(make, change, message, tmp_path, capsys, monkeypatch):
    data = make().to_dict()
    _set(data, *change)
    path = tmp_path / "result.json"
    path.write_text(json.dumps(data), encoding="utf-8", errors="surrogatepass")
    monkeypatch.setattr("tui.app.run_app", lambda app: 0)
    code = main(["open", str(path)])
    err = capsys.readouterr().err
    if message is None:
        assert code == 0 and err == ""
        return
    assert code == 2 and err == f"error: {path}: {err.split(': ', 2)[2]}"
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_load_names_the_file_and_checks_every_type(tmp_path):
    for make in (causal, seq2seq, similarity, patching, image, evaluation):
        result = make()
        path = tmp_path / f"{make.__name__}.json"
        result.save(path)
        assert type(result).load(path).to_dict() == result.to_dict()  # valid files still load
        data = result.to_dict()
        data["meta"] = "not an object"
        path.write_text(json.dumps(data))
        with pytest.raises(InputError, match=rf"^{path}: meta is a string \('not an object'\), expected an object$"):
            type(result).load(path)
    ev = evaluation().to_dict()
    ev["results"][0]["curves"]["morf_logit"] = [1.0]
    with pytest.raises(InputError, match=r"results\[0\].curves.morf_logit has 1 values but the curve has 3 fractions"):
        Evaluation.from_dict(ev)
    ev["methods"] = ["attnlrp", "nonsense"]
    with pytest.raises(InputError, match=r"methods\[1\] is 'nonsense', not a method of xai-tui"):
        Evaluation.from_dict(ev)
    img = image().to_dict()
    img["patch_relevance"] = [[1.0, 2.0, 3.0]]
    with pytest.raises(InputError, match="patch_relevance has 1 values but the image is 2x2 patches"):
        ImageAttribution.from_dict(img)
    img["image_png"] = "bm90IGEgcG5n"
    with pytest.raises(InputError, match="image_png is not a base64-encoded PNG image"):
        ImageAttribution.from_dict(img)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "is not an xai-tui result: not JSON (Expecting property name"),
        (b"\xff\xfe{}", "is not an xai-tui result: not UTF-8 text (byte 0)"),
        (b"[1, 2]", 'not an xai-tui result: it has no "schema"'),
        (b'"just a string"', 'not an xai-tui result: it has no "schema"'),
        (b"[" * 100000 + b"]" * 100000, "is not an xai-tui result"),
        (b'{"schema": 12}', "schema is a number (12), expected a string"),
        (b"", "not JSON (Expecting value, line 1 column 1)"),
    ],
)
def test_foreign_files_are_one_line(content, message, tmp_path, capsys):
    path = tmp_path / "foreign.json"
    path.write_bytes(content)
    assert main(["open", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_a_bom_and_nan_tokens_of_old_files_still_load(tmp_path):
    path = tmp_path / "old.json"
    text = causal().to_json().replace("null", "NaN")
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    view, result = load_result(str(path))
    assert view == "ask" and math.isnan(result.targets[1].relevance[2])
    data = json.loads(text)
    data["targets"][0]["relevance"][0] = float("inf")
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"targets\[0\].relevance\[0\] is inf: not a finite float32 number"):
        load_result(str(path))


# ------------------------------------------------------------- the fuzz property
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=corrupted())
def test_random_corruptions_load_or_give_one_error_line(case, tmp_path, capsys, monkeypatch):
    kind, data = case
    path = tmp_path / "fuzz.json"
    path.write_text(json.dumps(data, allow_nan=True))
    monkeypatch.setattr("tui.app.run_app", lambda app: 0)
    code = main(["open", str(path)])
    captured = capsys.readouterr()
    assert captured.out == ""
    if code == 0:
        assert captured.err == ""
        view, result = load_result(str(path))  # what loads is consistent enough to show
        if view == "ask":
            for t in result.targets:
                assert 1 <= t.position < len(result.tokens) and len(t.relevance) == t.position
                assert not np.isinf(t.relevance).any()
            result.matrix()
        return
    assert code == 2, captured.err
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: "), captured.err
    assert "XAI_TUI_DEBUG" not in lines[0], lines[0]  # one of our messages, not an unexpected exception
