"""The result base (lrp_llm.results.base): one NaN policy, the run metadata, files of the
previous version, and the date in every report kind."""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import torch

from lrp_llm.analyses.evaluate import Curves, Evaluation, ItemResult
from lrp_llm.errors import InputError
from lrp_llm.results.attribution import Attribution, TargetRelevance
from lrp_llm.results.base import as_float, float_array, json_ready, run_meta, write_atomic
from lrp_llm.results.image import ImageAttribution
from lrp_llm.results.similarity import SimilarityExplanation
from patching.result import Grid, PatchingResult

NAN, INF = float("nan"), float("inf")
RUN_KEYS = {"kind", "method", "rules", "steps", "dtype", "device", "date", "torch", "version"}


def strict_loads(text: str):
    """``json.loads`` that refuses the non-standard NaN / Infinity tokens."""

    def refuse(token: str):
        raise AssertionError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


# ------------------------------------------------------------------ the policy
def test_json_ready_writes_non_finite_floats_as_null():
    data = {"a": NAN, "b": [1.5, INF, -INF], "c": np.array([[1.0, np.nan]], dtype=np.float32), "d": np.int64(3)}
    assert json_ready(data) == {"a": None, "b": [1.5, None, None], "c": [[1.0, None]], "d": 3}
    assert json_ready({"t": (True, np.bool_(False), "x", None)}) == {"t": [True, False, "x", None]}
    assert type(json_ready(np.float32(0.5))) is float and type(json_ready(np.int32(2))) is int


def test_null_reads_back_as_nan():
    assert math.isnan(as_float(None)) and as_float(2) == 2.0 and as_float(-0.5) == -0.5
    arr = float_array([[1, None], [None, 4.5]])
    assert arr.dtype == np.float32 and arr.shape == (2, 2)
    assert arr[0, 0] == 1.0 and arr[1, 1] == 4.5 and np.isnan(arr[0, 1]) and np.isnan(arr[1, 0])
    assert float_array([0.1], np.float64)[0] == 0.1


def test_run_meta_has_the_same_keys_for_every_kind():
    before = datetime.now(timezone.utc).replace(microsecond=0)
    meta = run_meta("causal-lm", method="attnlrp", rules="attnlrp", dtype=torch.bfloat16, device=torch.device("cpu"))
    assert set(meta) == RUN_KEYS
    assert meta["kind"] == "causal-lm" and meta["dtype"] == "bfloat16" and meta["device"] == "cpu"
    assert meta["torch"] == torch.__version__ and meta["steps"] is None
    date = datetime.fromisoformat(meta["date"])
    assert date.utcoffset() == timedelta(0) and before <= date <= datetime.now(timezone.utc)
    assert set(run_meta("patching")) == RUN_KEYS


def test_write_atomic_replaces_the_whole_file(tmp_path):
    path = tmp_path / "r.json"
    path.write_text("old and longer text")
    write_atomic(path, "new")
    assert path.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["r.json"]


# ----------------------------------------------------------- five result types
def _attribution() -> Attribution:
    """An encoder-decoder explanation (no long-range statistics) with NaN in both relevance arrays."""
    t = TargetRelevance(
        position=1, token="c", id=3, logit=NAN, probability=0.5, relevance=[0.25], source_relevance=[NAN, -1.0]
    )
    return Attribution(
        "m", "attnlrp", ["<s>", "c"], [0, 3], 1, [t], 0.5, meta={"date": "d", "x": NAN},
        source_tokens=["a", "b"], source_ids=[1, 2],
    )  # fmt: skip


def _image() -> ImageAttribution:
    pixels = np.array([[1.0, NAN], [INF, -2.0]], dtype=np.float32)
    return ImageAttribution(
        model="vit", method="cp-lrp", label="cat", label_id=1, logit=2.0, probability=NAN,
        image=np.zeros((2, 2, 3), dtype=np.uint8), pixel_relevance=pixels, patch_relevance=[[NAN]],
        patch_size=(2, 2), top_labels=[("cat", NAN)],
    )  # fmt: skip


def _similarity() -> SimilarityExplanation:
    return SimilarityExplanation(
        model="enc", method="bilrp", rules="cp-lrp", pooling="mean", mode="cosine", text_a="x y", text_b="z",
        tokens_a=["x", "y"], tokens_b=["z"], interactions=[[0.5], [NAN]], similarity=NAN, dot=1.0,
        interaction_sum=0.5, seconds=0.1,
    )  # fmt: skip


def _patching() -> PatchingResult:
    grid = Grid("resid", "sweep", "denoise", "logit_diff", ["layer.0.resid"], ["a", "b"], [[0.5, NAN]])
    return PatchingResult(
        model="m", clean_tokens=["a", "b"], corrupted_tokens=["c", "b"], clean_ids=[1, 2], corrupted_ids=[3, 2],
        answer=" x", wrong=" y", answer_id=5, wrong_id=6,
        baseline={"clean": {"logit_diff": 2.0, "kl": NAN}, "corrupted": {"logit_diff": -1.0}},
        grids=[grid], correlations=[{"kind": "resid", "pearson_r": NAN}],
    )  # fmt: skip


def _evaluation() -> Evaluation:
    """Two items of one method; one has a NaN probability curve and no localisation."""
    fractions = [0.0, 0.5, 1.0]
    first = Curves(
        np.array(fractions), np.array([2.0, 1.0, 0.0]), np.array([2.0, 2.0, 0.0]),
        np.array([0.5, 0.25, 0.0]), np.array([0.5, NAN, 0.0]),
    )  # fmt: skip
    second = Curves(*(np.array(fractions) for _ in range(5)))
    return Evaluation(
        model="m", methods=["attnlrp"], strategy="zero", steps=2, n_items=2, n_answered=1,
        results=[
            ItemResult("a", "attnlrp", True, 4, 5, 0.25, first, localisation={"top1": 1.0, "mass": NAN}, distance=3),
            ItemResult("b", "attnlrp", False, 2, 3, 0.5, second),
        ],
        meta={"date": "d", "ig_steps": 32},
    )  # fmt: skip


def test_nan_round_trips_through_strict_json_for_every_type(tmp_path):
    a = _attribution()
    back = Attribution.from_json(a.to_json())
    assert strict_loads(a.to_json())["targets"][0]["source_relevance"] == [None, -1.0]
    assert math.isnan(back.targets[0].logit) and back.targets[0].relevance_sum == 0.25  # NaN sum = "not given"
    assert np.isnan(back.targets[0].source_relevance[0]) and back.targets[0].source_relevance[1] == -1.0
    assert back.targets[0].relevance.tolist() == [0.25]
    assert back.meta == {"date": "d", "x": None}  # meta is free-form: its nulls stay None

    img = _image()
    d = strict_loads(img.to_json())
    assert d["pixel_relevance"] == [[1.0, None], [None, -2.0]] and d["probability"] is None
    img.save(tmp_path / "i.json")
    back_img = ImageAttribution.load(tmp_path / "i.json")
    assert math.isnan(back_img.probability) and math.isnan(back_img.top_labels[0][1])
    assert np.isnan(back_img.pixel_relevance[0, 1]) and np.isnan(back_img.pixel_relevance[1, 0])
    assert back_img.pixel_relevance[1, 1] == -2.0 and np.isnan(back_img.patch_relevance[0, 0])

    e = _similarity()
    assert strict_loads(e.to_json())["interactions"] == [[0.5], [None]]
    back_e = SimilarityExplanation.from_json(e.to_json())
    assert math.isnan(back_e.similarity) and np.isnan(back_e.interactions[1, 0]) and back_e.interactions[0, 0] == 0.5

    r = _patching()
    d = strict_loads(r.to_json())
    assert d["grids"][0]["values"] == [[0.5, None]] and d["baseline"]["clean"]["kl"] is None
    back_r = PatchingResult.from_json(r.to_json())
    assert np.isnan(back_r.grids[0].values[0, 1]) and math.isnan(back_r.baseline["clean"]["kl"])
    assert math.isnan(back_r.correlations[0]["pearson_r"])
    ev = _evaluation()
    d = strict_loads(ev.to_json())
    assert (
        d["results"][0]["curves"]["lerf_prob"] == [0.5, None, 0.0] and d["results"][0]["localisation"]["mass"] is None
    )
    # the first item's ABPC of probabilities is NaN (a NaN point), so is the method's mean
    assert d["results"][0]["abpc_prob"] is None and d["summary"][0]["abpc_prob"] is None
    ev.save(tmp_path / "e.json")
    back_ev = Evaluation.load(tmp_path / "e.json")
    assert [r.item_id for r in back_ev.results] == ["a", "b"] and back_ev.results[1].localisation is None
    first = back_ev.results[0]
    assert first.curves.morf_logit.tolist() == [2.0, 1.0, 0.0] and np.isnan(first.curves.lerf_prob[1])
    assert first.distance == 3 and first.localisation["top1"] == 1.0 and math.isnan(first.localisation["mass"])
    # ABPC of the first item: AUC(LeRF) - AUC(MoRF) = 1.5 - 1.0 by the trapezoid rule; the second's is 0
    assert back_ev.summary()[0].abpc == pytest.approx((0.5 + 0.0) / 2)
    assert (back_ev.n_items, back_ev.n_answered, back_ev.meta) == (2, 1, {"date": "d", "ig_steps": 32})
    assert [x["schema"] for x in (a.to_dict(), img.to_dict(), e.to_dict(), r.to_dict(), ev.to_dict())] == [
        "xai-tui/attribution/1",
        "xai-tui/image-attribution/1",
        "xai-tui/similarity/1",
        "xai-tui/patching/1",
        "xai-tui/evaluation/1",
    ]


def test_a_file_of_another_type_is_refused():
    with pytest.raises(InputError, match="expected 'xai-tui/patching/1'"):
        PatchingResult.from_json(_similarity().to_json())
    with pytest.raises(InputError, match="not a SimilarityExplanation"):
        SimilarityExplanation.from_json(_attribution().to_json())


# ------------------------------------------------ files of the previous version
OLD_ATTRIBUTION = """{"schema": "xai-tui/attribution/1", "model": "m", "method": "attnlrp",
 "tokens": ["a", "b", "c"], "input_ids": [1, 2, 3], "prompt_length": 2, "seconds": 0.5, "timings": {},
 "meta": {"rules": "attnlrp", "steps": null, "date": "2025-05-06T07:08:09+00:00", "torch": "2.5.0"},
 "targets": [{"position": 2, "token": "c", "id": 3, "logit": NaN, "probability": 0.5,
   "relevance": [0.25, NaN], "relevance_sum": NaN, "conservation": NaN}]}"""

OLD_SIMILARITY = """{"schema": "xai-tui/similarity/1", "model": "enc", "method": "bilrp", "rules": "cp-lrp",
 "pooling": "mean", "mode": "cosine", "text_a": "x", "text_b": "z", "tokens_a": ["x"], "tokens_b": ["z"],
 "special_a": [false], "special_b": [false], "interactions": [[NaN]], "similarity": Infinity, "dot": 1.0,
 "interaction_sum": NaN, "conservation": NaN, "seconds": 0.1, "timings": {},
 "meta": {"conservation_a": NaN, "conservation_b": 1.0, "dimensions": 4}}"""

OLD_PATCHING = """{"schema": "xai-tui/patching/1", "model": "m", "clean_tokens": ["a"], "corrupted_tokens": ["c"],
 "clean_ids": [1], "corrupted_ids": [3], "answer": " x", "wrong": " y", "answer_id": 5, "wrong_id": 6,
 "baseline": {"clean": {"logit_diff": 2.0, "kl": null}}, "directions": {},
 "grids": [{"kind": "resid", "method": "sweep", "direction": "denoise", "metric": "logit_diff",
   "axes": ["layer", "position"], "rows": ["layer.0.resid"], "columns": ["a"], "values": [[null]], "positions": [0]}],
 "correlations": [{"kind": "resid", "pearson_r": null}], "seconds": 1.0, "timings": {},
 "meta": {"created": "2025-05-06T07:08:09+00:00", "sites": ["resid"], "method": "sweep"}}"""


OLD_EVALUATION = """{"schema": "xai-tui/evaluation/1", "model": "m", "methods": ["attnlrp", "random"],
 "strategy": "zero", "steps": 2, "n_items": 1, "n_answered": 1,
 "meta": {"date": "2025-05-06T07:08:09+00:00", "torch": "2.5.0", "ig_steps": 32, "neutral": null,
   "only_answered": false, "data": "qa.jsonl"},
 "summary": [{"method": "attnlrp", "n": 1, "abpc": 1.5, "abpc_ci": NaN, "abpc_prob": 0.5, "morf_auc": 0.5,
   "lerf_auc": 2.0, "seconds": 0.1, "top1": 1.0, "mass": 0.75, "n_localised": 1}],
 "results": [{"item": "q1", "method": "attnlrp", "answered": true, "position": 7, "n_tokens": 8,
   "seconds": 0.1, "abpc": 1.5, "abpc_prob": 0.5, "morf_auc": 0.5, "lerf_auc": 2.0,
   "localisation": {"top1": 1.0, "top3": 1.0, "mass": 0.75}, "distance": null,
   "curves": {"fractions": [0.0, 0.5, 1.0], "morf_logit": [2.0, 0.0, 0.0], "lerf_logit": [2.0, 2.0, 2.0],
     "morf_prob": [1.0, 0.0, 0.0], "lerf_prob": [1.0, 1.0, NaN]}}]}"""


def test_files_written_by_the_previous_version_still_load():
    a = Attribution.from_json(OLD_ATTRIBUTION)
    t = a.targets[0]
    assert math.isnan(t.logit) and t.relevance[0] == 0.25 and np.isnan(t.relevance[1])
    assert a.meta["date"] == "2025-05-06T07:08:09+00:00"
    e = SimilarityExplanation.from_json(OLD_SIMILARITY)
    assert e.similarity == INF and np.isnan(e.interactions[0, 0]) and math.isnan(e.interaction_sum)
    r = PatchingResult.from_json(OLD_PATCHING)
    assert np.isnan(r.grids[0].values[0, 0]) and math.isnan(r.baseline["clean"]["kl"])
    # the old name of the date becomes the one every report reads
    assert r.meta["date"] == "2025-05-06T07:08:09+00:00" and "created" not in r.meta
    ev = Evaluation.from_json(OLD_EVALUATION)
    (item,) = ev.results
    assert (item.item_id, item.position, item.distance, item.localisation) == (
        "q1",
        7,
        None,
        {"top1": 1.0, "top3": 1.0, "mass": 0.75},
    )
    assert item.curves.abpc == 1.5 and np.isnan(item.curves.lerf_prob[2])
    (summary,) = ev.summary()  # "random" has no result in the file: no row
    assert (summary.method, summary.abpc, summary.top1, summary.mass) == ("attnlrp", 1.5, 1.0, 0.75)
    assert math.isnan(summary.abpc_ci) and ev.meta["data"] == "qa.jsonl"
    # and what loads is written back as strict JSON
    for result in (e, r, ev):
        strict_loads(result.to_json())


# ------------------------------------------------------- the date in every report
DATE_ROW = re.compile(r"<th>date</th><td>(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00)</td>")


@pytest.fixture(scope="module")
def real_results():
    """One result of every kind, each made by its engine on a tiny model (so each carries run_meta)."""
    from lrp_llm.analyses.bilrp import SimilarityExplainer
    from lrp_llm.engines.explain import explain
    from lrp_llm.engines.vision import explain_image
    from patching.experiment import run_patching
    from synthetic_tasks import copy_reverse
    from synthetic_tasks.shared_nouns import make_tokenizer
    from tests.support.encoders import tiny_encoder
    from tests.support.models import tiny_causal_lm, tiny_tokenizer
    from tests.support.tiny_t5_vit import random_pixels, tiny_t5, tiny_vit

    tok = tiny_tokenizer()
    lm = tiny_causal_lm()
    t5_tok = copy_reverse.make_tokenizer()
    return {
        "explanation": explain(lm, tok, "the old city", generate=2, method="attnlrp"),
        "seq2seq": explain(tiny_t5("v1.0", vocab=len(t5_tok), seed=2), t5_tok, "copy d e", generate=2),
        "image": explain_image(tiny_vit(), None, random_pixels(), method="cp-lrp"),
        "similarity": SimilarityExplainer(tiny_encoder(dtype=torch.float32), make_tokenizer()).explain(
            "a cat", "a dog"
        ),
        "patching": run_patching(lm, tok, "the old city", "the new city", " of", " the", sites=("resid",)),
    }


def test_every_engine_writes_the_same_run_metadata(real_results):
    kinds = {name: r.meta["kind"] for name, r in real_results.items()}
    assert kinds == {
        "explanation": "causal-lm",
        "seq2seq": "seq2seq",
        "image": "image-classification",
        "similarity": "similarity",
        "patching": "patching",
    }
    for r in real_results.values():
        assert RUN_KEYS <= set(r.meta) and r.meta["torch"] == torch.__version__ and r.meta["dtype"] == "float32"


def test_each_report_kind_shows_a_real_date(real_results):
    from lrp_llm.analyses.evaluate import Evaluation
    from lrp_llm.export.report import (
        evaluation_report,
        explanation_report,
        image_report,
        patching_report,
        similarity_report,
    )

    pages = {
        "explanation": explanation_report(real_results["explanation"]),
        "seq2seq": explanation_report(real_results["seq2seq"]),
        "image": image_report(real_results["image"]),
        "similarity": similarity_report(real_results["similarity"]),
        "patching": patching_report(real_results["patching"]),
        # a result loaded from JSON shows its date too
        "patching (loaded)": patching_report(PatchingResult.from_json(real_results["patching"].to_json())),
        "evaluation": evaluation_report(
            Evaluation(
                model="m",
                methods=[],
                strategy="remove",
                steps=2,
                results=[],
                n_items=0,
                n_answered=0,
                meta={"date": "2025-05-06T07:08:09+00:00"},
            )
        ),  # fmt: skip
    }
    for name, page in pages.items():
        found = DATE_ROW.search(page)
        assert found, f"{name}: no date row"
        datetime.fromisoformat(found.group(1))
        assert "Content-Security-Policy" in page, name
