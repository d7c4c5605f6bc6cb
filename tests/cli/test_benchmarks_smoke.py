"""The benchmark code runs end to end on a tiny model and a tiny data set (so it cannot rot);
the real runs are `make bench`. The LXT comparison itself runs only where its environment exists."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from benchmarks import faithfulness, inseq_compare, lxt_compare, run_all
from benchmarks.peers import PeerUnavailable, WorkerProcess, geometric_mean, pearson, venv_python
from lrp_llm.engines.generation import build_prompt_ids, generate_greedy
from tests.support.models import tiny_causal_lm, tiny_tokenizer


@pytest.fixture(scope="module")
def answered_data(tmp_path_factory):
    """Items whose expected answer is what the tiny model says (so they count as answered)."""
    tok = tiny_tokenizer()
    model = tiny_causal_lm("llama", vocab=len(tok))  # the same seed as the saved checkpoint
    special = set(tok.all_special_ids)
    lines = []
    for i, (context, question) in enumerate((("paris is in france", "what country"), ("rome is old", "what city"))):
        gen = generate_greedy(model, build_prompt_ids(tok, question, context), 6)
        said = next(tok.decode([t]) for t in gen if t not in special)
        lines.append({"id": f"q{i}", "context": context, "question": question, "answer": said})
    for i, text in enumerate(("the capital of france is", "one two three")):
        nxt = generate_greedy(model, tok(text)["input_ids"], 1)[0]
        lines.append({"id": f"n{i}", "text": text, "answer": tok.decode([nxt])})
    folder = tmp_path_factory.mktemp("bench-data")
    (folder / "qa.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines[:2]))
    (folder / "nt.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines[2:]))
    return folder


def test_faithfulness_benchmark_writes_its_table(tiny_dir, answered_data, tmp_path):
    data = f"{answered_data / 'qa.jsonl'},{answered_data / 'nt.jsonl'}"
    path = faithfulness.main(
        ["--model", str(tiny_dir), "--data", data, "--methods", "attnlrp,integrated-gradients:2,random"]
        + ["--steps", "2", "--out", str(tmp_path), "--json", str(tmp_path / "ev.json")]
    )
    text = path.read_text()
    assert path == tmp_path / "faithfulness.md"
    assert "2 of 2 items answered" in text and "## `nt.jsonl`" in text
    for method in ("attnlrp", "integrated-gradients:2", "random"):
        assert text.count(f"| {method} | 2 |") == 2  # one row per data set, 2 items each
    per_item = json.loads((tmp_path / "ev.qa.json").read_text())
    assert len(per_item["results"]) == 6
    # --reuse: the tables again from the saved scores, nothing evaluated (no model is loaded)
    again = faithfulness.main(
        ["--model", str(tmp_path / "no-such-model"), "--data", data, "--steps", "2", "--reuse"]
        + ["--out", str(tmp_path / "again"), "--json", str(tmp_path / "ev.json")]
    )
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert [line for line in again.read_text().splitlines() if line.startswith("| ")] == table


def test_lxt_compare_says_so_when_lxt_is_missing(tiny_dir, answered_data, tmp_path):
    path = lxt_compare.main(
        ["--model", str(tiny_dir), "--data", str(answered_data / "nt.jsonl"), "--repeats", "1"]
        + ["--lxt-python", str(tmp_path / "nope" / "python"), "--out", str(tmp_path)]
    )
    text = path.read_text()
    assert "LXT could not be run" in text and "make_lxt_venv.sh" in text


def test_inseq_compare_says_so_when_inseq_is_missing(tiny_dir, answered_data, tmp_path):
    path = inseq_compare.main(
        ["--model", str(tiny_dir), "--data", str(answered_data / "nt.jsonl"), "--repeats", "1"]
        + ["--inseq-python", str(tmp_path / "nope" / "python"), "--out", str(tmp_path)]
    )
    assert "inseq could not be run" in path.read_text() and "make_inseq_venv.sh" in path.read_text()


def test_worker_protocol_with_an_echo_worker(tmp_path):
    script = tmp_path / "echo.py"
    script.write_text(
        textwrap.dedent(
            """
            import json, sys
            print(json.dumps({"ready": True, "name": "echo"}), flush=True)
            for line in sys.stdin:
                if not line.strip():
                    break
                req = json.loads(line)
                print(json.dumps({"double": [2 * x for x in req["x"]]}), flush=True)
            """
        )
    )
    with WorkerProcess(sys.executable, script) as w:
        assert w.info["name"] == "echo"
        assert w.request({"x": [1, 2]}) == {"double": [2, 4]}
    crash = tmp_path / "crash.py"
    crash.write_text("import sys\nprint('boom', file=sys.stderr)\nsys.exit(3)\n")
    with pytest.raises(PeerUnavailable, match="boom"):
        WorkerProcess(sys.executable, crash)
    with pytest.raises(PeerUnavailable, match="not found"):
        WorkerProcess(tmp_path / "no-python", script)


def test_statistics_helpers():
    # cov 4.5 / (sqrt(2) * sqrt(10.1667))
    assert pearson([1, 2, 3], [2, 4, 6.5]) == pytest.approx(4.5 / (2**0.5 * (61 / 6) ** 0.5), abs=1e-9)
    assert pearson([1, 1], [1, 2]) != pearson([1, 1], [1, 2])  # NaN for a constant vector
    assert geometric_mean([1.0, 4.0]) == pytest.approx(2.0)


def test_run_all_discovers_the_benchmarks(capsys):
    assert run_all.main(["--list"]) == 0
    names = capsys.readouterr().out.split()
    assert names[:4] == ["attnlrp_speed", "faithfulness", "choose_default", "lxt_compare"]
    assert not set(names) & run_all.HELPERS
    assert run_all.main(["--only", "no_such_bench"]) == 2


@pytest.mark.slow
@pytest.mark.skipif(not venv_python("lxt").exists(), reason="run sh benchmarks/make_lxt_venv.sh first")
def test_lxt_agrees_with_ours_on_a_tiny_model(tiny_dir, answered_data, tmp_path):
    path = lxt_compare.main(
        ["--model", str(tiny_dir), "--data", str(answered_data / "nt.jsonl"), "--repeats", "1", "--out", str(tmp_path)]
    )
    rows = [r for r in path.read_text().splitlines() if r.startswith("| n")]
    assert len(rows) == 2
    for row in rows:
        r = float(row.split("|")[6])
        assert r > 0.9999


def test_choose_default_reads_the_per_item_scores(tiny_dir, answered_data, tmp_path):
    from benchmarks import choose_default

    data = f"{answered_data / 'qa.jsonl'},{answered_data / 'nt.jsonl'}"
    faithfulness.main(
        ["--model", str(tiny_dir), "--data", data, "--methods", "attnlrp,cp-lrp,random", "--steps", "2"]
        + ["--out", str(tmp_path), "--json", str(tmp_path / "ev.json")]
    )
    path = choose_default.main(["--json", str(tmp_path / "ev.json"), "--out", str(tmp_path)])
    text = path.read_text()
    assert "**Chosen: `attnlrp`.**" in text or "**Chosen: `cp-lrp`.**" in text
    assert "qa: 1 + 1" in text  # the two QA items: one in each half
    assert "Paired per item on the report half" in text
    # the paired difference, item by item on the report half, against the per-item scores written by hand
    from lrp_llm.analyses.evaluate import Evaluation

    ev = Evaluation.load(tmp_path / "ev.nt.json")
    order = list(dict.fromkeys(r.item_id for r in ev.results))
    report = set(order[1::2])
    score = {(r.method, r.item_id): r.curves.abpc for r in ev.results if r.item_id in report}
    want = [score[("cp-lrp", i)] - score[("random", i)] for i in order[1::2]]
    mean, _, n = choose_default.paired_difference(ev, 1, "cp-lrp", "random")
    assert n == len(want) and mean == pytest.approx(sum(want) / len(want), rel=1e-12)


def _summary(method, abpc, ci, top1=None):
    from lrp_llm.analyses.evaluate import MethodSummary

    return MethodSummary(method, 10, abpc, ci, 0.0, 0.0, 0.0, 0.1, top1=top1)


def test_choose_default_rule():
    from benchmarks.choose_default import choose, shortfall

    by_set = {
        "qa": {
            "attnlrp": _summary("attnlrp", 8.0, 0.5, 0.70),
            "cp-lrp": _summary("cp-lrp", 8.2, 0.5, 0.95),
            "saliency": _summary("saliency", 8.4, 0.5, 0.80),
        },
        "next_token": {
            "attnlrp": _summary("attnlrp", -2.0, 1.0),
            "cp-lrp": _summary("cp-lrp", 0.6, 1.0),
            "saliency": _summary("saliency", 1.2, 1.0),
        },
    }
    # attnlrp: saliency's 1.2 is 2.2 above its -2.0 + 1.0; cp-lrp reaches every other method on both sets
    assert shortfall("attnlrp", by_set) == pytest.approx(2.2)
    assert shortfall("cp-lrp", by_set) <= 0
    assert choose(by_set, ["attnlrp", "cp-lrp"])[0] == "cp-lrp"
    # nobody eligible: the smallest shortfall wins
    by_set["next_token"]["saliency"] = _summary("saliency", 5.0, 1.0)
    pick, why = choose(by_set, ["attnlrp", "cp-lrp"])
    assert pick == "cp-lrp" and "no candidate eligible" in why
    from benchmarks.choose_default import ranking

    assert ranking(by_set, ["attnlrp", "cp-lrp"]) == ["cp-lrp", "attnlrp"]
