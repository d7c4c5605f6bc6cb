"""Sharded `xai-tui evaluate`: two CPU processes under torchrun give the single-process evaluation
(curves, localisation, summary), and :func:`merge_evaluations` orders and sums the parts."""

from __future__ import annotations

import json
import math

import pytest

from lrp_llm.analyses.distributed import Group
from lrp_llm.analyses.evaluate import EvalItem, Evaluation, evaluate, merge_evaluations, prepare_item
from lrp_llm.errors import InputError
from tests.support.torchrun import torchrun
from tui.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

TIMING = {"seconds", "seconds_per_item", "date"}
TEXTS = [
    "the capital of france is",
    "paris is a city in",
    "one two three four",
    "rome is the capital of",
    "the river in the north of",
    "big red old city of germany",
]


@pytest.fixture(scope="module")
def model(tiny_dir):
    from lrp_llm.checkpoints.loading import load_model

    return load_model(tiny_dir)


@pytest.fixture(scope="module")
def data(model, tmp_path_factory):
    """Next-token items, items 1, 2, 4, 5 answered by the model (their answer is its greedy token), 0 and 3
    not: with --only-answered rank 0 evaluates items 2 and 4, evaluated items 1 and 2 of the whole run."""
    m, tok = model
    lines = []
    for i, text in enumerate(TEXTS):
        greedy = prepare_item(m, tok, EvalItem(id="x", text=text, answer="yes")).model_answer
        assert greedy, text
        answer = greedy if i not in (0, 3) else ("no" if greedy != "no" else "yes")
        lines.append({"id": f"item{i}", "text": text, "answer": answer, "evidence": text.split()[1]})
    path = tmp_path_factory.mktemp("data") / "items.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def _same(a, b, where: str = "") -> None:
    """``a`` equals ``b`` in structure, names and counts; numbers to float32 accuracy (the curves are float32
    logits and probabilities: separate processes may reduce in another order, the last bits can differ)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), where
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float | int):
        assert math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-5), f"{where}: {a} != {b}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _without_timing(d: dict) -> dict:
    d = json.loads(json.dumps(d))
    d["meta"] = {k: v for k, v in d["meta"].items() if k not in TIMING}
    for row in d["results"] + d["summary"]:
        del row["seconds"]
    return d


def test_two_torchrun_processes_give_the_single_process_evaluation(tiny_dir, data, tmp_path, capsys):
    args = ["evaluate", "--model", str(tiny_dir), "--data", str(data), "--methods", "attnlrp,random"]
    args += ["--steps", "3", "--only-answered"]
    sharded, page = tmp_path / "sharded.json", tmp_path / "sharded.html"
    code, out = torchrun("tui.cli", [*args, "--json", str(sharded), "--html", str(page)])
    assert code == 0, out[-4000:]
    assert out.count("ABPC = area between") == 1 and out.count("answering: 3/3 (100 %)") == 1, out  # rank 0 only
    single = tmp_path / "single.json"
    assert main([*args, "--json", str(single), "--quiet"]) == 0
    capsys.readouterr()
    a, b = json.loads(sharded.read_text()), json.loads(single.read_text())
    assert a["n_items"] == 6 and a["n_answered"] == 4 and "shard" not in a["meta"]
    assert [r["item"] for r in a["results"]] == [f"item{i}" for i in (1, 1, 2, 2, 4, 4, 5, 5)]
    assert any(r["localisation"] for r in a["results"])
    _same(_without_timing(a), _without_timing(b))
    assert page.read_text().startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sharded.html", "sharded.json", "single.json"]


def test_a_failing_rank_leaves_no_output_files(tiny_dir, tmp_path):
    path = tmp_path / "items.jsonl"
    long = " ".join(["one two three"] * 100)  # 300 tokens: longer than the tiny model's context, on rank 1
    lines = [{"id": "a", "text": "one two", "answer": "three"}, {"id": "b", "text": long, "answer": "four"}]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out_json = tmp_path / "ev.json"
    args = ["evaluate", "--model", str(tiny_dir), "--data", str(path), "--methods", "random", "--steps", "2"]
    code, out = torchrun("tui.cli", [*args, "--json", str(out_json), "--quiet"])
    assert code != 0 and "error: item 'b' has 300 tokens; the model's context is 256" in out, out[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["items.jsonl"]  # no output, no temp file


def test_merged_parts_equal_the_single_process_evaluation(model, data):
    from lrp_llm.analyses.evaluate import load_items

    m, tok = model
    items = load_items(data)
    kwargs = {"steps": 2, "model_name": "tiny"}
    single = evaluate(m, tok, items, ["grad-x-input", "random"], **kwargs)
    parts = [evaluate(m, tok, items, ["grad-x-input", "random"], shard=Group(r, 3), **kwargs) for r in (2, 0, 1)]
    assert [p.meta["shard"]["items"] for p in parts] == [[2, 5], [0, 3], [1, 4]]
    assert [p.n_items for p in parts] == [2, 2, 2]
    merged = merge_evaluations(parts)
    assert [r.item_id for r in merged.results] == [f"item{i}" for i in range(6) for _ in range(2)]
    assert (merged.n_items, merged.n_answered) == (6, single.n_answered) == (6, 4)
    assert _without_timing(merged.to_dict()) == _without_timing(single.to_dict())
    # the parts read back from their JSON files merge too (numbers as rounded in the files)
    again = merge_evaluations([Evaluation.from_json(p.to_json()) for p in parts])
    assert [(r.item_id, r.method) for r in again.results] == [(r.item_id, r.method) for r in single.results]


def test_merge_refuses_parts_of_different_runs(model, data):
    from lrp_llm.analyses.evaluate import load_items

    m, tok = model
    items = load_items(data, limit=2)
    parts = [evaluate(m, tok, items, ["random"], steps=2, shard=Group(r, 2)) for r in range(2)]
    for shards, message in (
        ([], "no evaluation shards"),
        (parts[:1], "ranks are not 0..1"),
        ([parts[0], parts[0]], "ranks are not 0..1"),
        ([parts[0], evaluate(m, tok, items, ["random"], steps=2)], "not a shard of a sharded run"),
        ([parts[0], evaluate(m, tok, items, ["random"], steps=3, shard=Group(1, 2))], "other settings"),
    ):
        with pytest.raises(InputError, match=message):
            merge_evaluations(shards)
    with pytest.raises(InputError, match="shard 2 of 2 does not exist"):
        evaluate(m, tok, items, ["random"], shard=Group(2, 2))
