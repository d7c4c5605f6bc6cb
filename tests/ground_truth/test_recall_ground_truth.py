"""Ground truth for long-range explanations: the committed recall models.

``models/synthetic/recall-{mamba,mamba2,llama}`` were trained by
``models/synthetic/train_recall.py`` (seeded; never in CI) on key-value recall: the
answer is the value that followed the query key once, ``distance`` tokens back. The
far key and value are the evidence; the query key at the end is the question itself
and ``<s>`` the attention sink, so neither is counted as context (the query is always
relevant: under MambaLRP the output gate of every layer hands half of the relevance to
the current token; AttnLRP puts the top relevance on ``<s>`` for a few % of sequences).
"""

import numpy as np
import pytest
import torch

from lrp_llm.checkpoints.loading import load_model
from lrp_llm.mechanism.context import lrp_rules
from synthetic_tasks import recall
from tests.support import REPO_ROOT
from tui.cli import main

MODELS = REPO_ROOT / "models" / "synthetic"
DISTANCE = 1024
N = 50
LRP = {"mamba": "mambalrp", "mamba2": "mambalrp", "llama": "attnlrp"}
MIN_ACCURACY = 0.98


@pytest.fixture(scope="module", params=sorted(LRP))
def trained(request):
    model, tokenizer = load_model(MODELS / f"recall-{request.param}")
    return request.param, model, tokenizer


@pytest.fixture(scope="module")
def held_out():
    return recall.held_out(N, DISTANCE, seed=31337)


def test_the_models_recall_at_distance_1024(trained, held_out):
    _, model, _ = trained
    # the fast scan (for Mamba; equal to transformers' path within 1e-5, see test_mamba.py)
    with torch.no_grad(), lrp_rules(model, None):
        logits = model(input_ids=torch.from_numpy(held_out.ids), use_cache=False, logits_to_keep=1).logits[:, -1]
    assert (logits.argmax(-1).numpy() == held_out.answer).mean() >= MIN_ACCURACY


def test_lrp_points_at_the_far_key_or_value(trained, held_out):
    arch, model, _ = trained
    with torch.no_grad(), lrp_rules(model, None):
        logits = model(input_ids=torch.from_numpy(held_out.ids), use_cache=False, logits_to_keep=1).logits[:, -1]
    correct = logits.argmax(-1).numpy() == held_out.answer
    rel = recall.batch_relevance(model, held_out.ids, held_out.answer, LRP[arch])
    hits = recall.top1_hits(rel, held_out, context_only=True)
    # where the model recalls the value, the explanation must point at the evidence
    assert hits[correct].mean() >= 0.98, f"{arch}: {hits[correct].mean():.2%} of {correct.sum()} recalled"
    assert hits.mean() >= MIN_ACCURACY
    # and the far evidence carries a large share of all relevance
    far = np.abs(rel[np.arange(N), held_out.value_pos]) + np.abs(rel[np.arange(N), held_out.key_pos])
    assert np.median(far / np.abs(rel).sum(1)) > 0.2


@pytest.mark.parametrize("arch", ["mamba", "mamba2"])
def test_the_mamba_models_recall_and_are_explained_at_distance_2048(arch):
    """Both Mamba models were trained up to distance 2048 (the Llama one to about 1024)."""
    model, _ = load_model(MODELS / f"recall-{arch}")
    data = recall.held_out(N, 2048, seed=4711)
    with torch.no_grad(), lrp_rules(model, None):
        logits = model(input_ids=torch.from_numpy(data.ids), use_cache=False, logits_to_keep=1).logits[:, -1]
    assert (logits.argmax(-1).numpy() == data.answer).mean() >= MIN_ACCURACY
    rel = recall.batch_relevance(model, data.ids, data.answer, "mambalrp")
    assert recall.top1_hits(rel, data, context_only=True).mean() >= 0.98


def test_batched_relevance_equals_explain(trained):
    """The batched helper used above gives exactly what ``relevance()`` gives one sequence at a time."""
    from lrp_llm.engines.causal_lm import relevance

    arch, model, _ = trained
    data = recall.held_out(2, 60, seed=5)
    batched = recall.batch_relevance(model, data.ids, data.answer, LRP[arch])
    for i in range(2):
        ids = [*data.ids[i].tolist(), int(data.answer[i])]
        single = relevance(model, ids, [len(ids) - 1], method=LRP[arch])["relevance"][0, :-1].numpy()
        assert np.allclose(batched[i], single, atol=1e-4 * np.abs(single).max())


def test_longrange_cli_finds_the_value(tmp_path, capsys):
    data = recall.held_out(1, 300, seed=2)
    doc = tmp_path / "doc.txt"
    doc.write_text(recall.text(data.ids[0]))
    out = tmp_path / "lr.json"
    code = main(
        ["longrange", "--model", str(MODELS / "recall-mamba"), "--file", str(doc), "--json", str(out), "--quiet"]
    )
    assert code == 0
    import json

    d = json.loads(out.read_text())
    target = d["targets"][0]
    assert target["token"] == recall.VOCAB[data.answer[0]]
    lr = target["longrange"]
    assert lr["far_tokens"]["tokens"][0]["distance"] == 301  # the value, 300 before the query
    assert lr["share_beyond"]["100"] > 0.2
    text = capsys.readouterr().out
    assert "most relevant tokens more than 100 back" in text and "301 back" in text


def test_longrange_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["longrange", "--model", str(MODELS / "recall-mamba"), "--file", str(tmp_path / "nope.txt")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no such file" in err and len(err.splitlines()) == 1
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    assert main(["longrange", "--model", str(MODELS / "recall-mamba"), "--file", str(empty)]) == 2
    assert "empty" in capsys.readouterr().err
