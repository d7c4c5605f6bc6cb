"""Integration on the bundled all-MiniLM-L6-v2 (real weights): BiLRP finds the shared word."""

import json

import numpy as np
import pytest
import torch

from lrp_llm.analyses.bilrp import SimilarityExplainer, first_order_map
from lrp_llm.checkpoints.loading import load_encoder
from tui.cli import main

pytestmark = pytest.mark.integration

A = "A man is playing a guitar."
B = "A woman plays the guitar."


@pytest.fixture(scope="module")
def minilm():
    return load_encoder()


@pytest.mark.parametrize("rules", ["cp-lrp", "attnlrp"])
def test_guitar_pair_interacts_most(minilm, rules):
    model, tok = minilm
    e = SimilarityExplainer(model, tok, rules=rules).explain(A, B)
    (i, j, value) = e.top_pairs(1, skip_special=False)[0]  # special tokens included
    assert (e.tokens_a[i], e.tokens_b[j]) == ("guitar", "guitar")
    assert value > 0 and value == pytest.approx(float(e.interactions.max()))
    # the similarity itself is the model's (sentence-transformers: cosine of mean-pooled states)
    with torch.no_grad():
        ea = model(**tok(A, return_tensors="pt")).last_hidden_state.mean(1)
        eb = model(**tok(B, return_tensors="pt")).last_hidden_state.mean(1)
    assert e.similarity == pytest.approx(float(torch.nn.functional.cosine_similarity(ea, eb)), abs=1e-5)
    assert np.isfinite(e.conservation) and e.conservation > 0


def test_playing_plays_is_second(minilm):
    model, tok = minilm
    e = SimilarityExplainer(model, tok).explain(A, B)
    pairs = [(e.tokens_a[i], e.tokens_b[j]) for i, j, _ in e.top_pairs(2)]
    assert pairs == [("guitar", "guitar"), ("playing", "plays")]


def test_cli_default_model(tmp_path, capsys):
    out = tmp_path / "g.json"
    assert main(["similarity", "--a", A, "--b", B, "--json", str(out), "--quiet", "--no-matrix"]) == 0
    d = json.loads(out.read_text())
    m = np.asarray(d["interactions"])
    i, j = np.unravel_index(int(m.argmax()), m.shape)
    assert d["tokens_a"][i] == d["tokens_b"][j] == "guitar"
    assert "guitar@6" in capsys.readouterr().out


@pytest.mark.slow
def test_replay_equals_loop_on_real_model(minilm):
    model, tok = minilm
    ids = tok(A)["input_ids"]
    phi, fast = first_order_map(model, ids, strategy="replay")
    phi_loop, loop = first_order_map(model, ids, strategy="loop")
    assert (fast - loop).abs().max() <= 1e-5
    assert (phi - phi_loop).abs().max() <= 1e-5
