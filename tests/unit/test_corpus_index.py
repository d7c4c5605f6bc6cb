"""The corpus index: its statistics against a hand loop, resume after cancel, shards, snippets, bad inputs."""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lrp_llm.analyses import corpus_index as ci
from lrp_llm.errors import Cancelled, InputError
from lrp_llm.mechanism.context import lrp_rules
from lrp_llm.methods import default_method, get_method
from tests.support.models import WORDS, cancel_after, model_state, tiny_causal_lm, tiny_tokenizer
from tests.support.torchrun import torchrun

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[2]
WINDOW = 12
TOP_N = 4


def _corpus(path: Path, n: int = 30, seed: int = 0) -> Path:
    r = random.Random(seed)
    words = list(WORDS)[:55]  # the tiny tokenizer's words
    path.write_text("\n".join(" ".join(r.choice(words) for _ in range(r.randint(3, 9))) for _ in range(n)) + "\n")
    return path


def _dump(db: Path) -> dict[str, list[tuple]]:
    """Every table of a store, row by row in a fixed order."""
    with sqlite3.connect(db) as con:
        return {
            t: con.execute(f"SELECT * FROM {t} ORDER BY {order}").fetchall()
            for t, order in [
                ("meta", "key"),
                ("windows", "id"),
                ("indexes", "layer, kind"),
                ("done", "layer, kind, window"),
                ("top", "layer, kind, score, unit, rank"),
            ]
        }


@pytest.fixture(scope="module")
def model64():
    return tiny_causal_lm("llama", dtype=torch.float64)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return _corpus(tmp_path_factory.mktemp("corpus") / "c.txt")


def _hand_scores(model, ids, layer, kind, method):
    """Independent: plain autograd under the method's rules (none for grad-x-input) with a hook that keeps
    the projection's input; activation and relevance h * dy/dh per unit, y the sum of the predicted logits."""
    kept = []
    if kind == "channel":
        module = model.backbone.layers[layer].mixer.out_proj
    elif kind == "neuron":
        module = model.model.layers[layer].mlp.down_proj
    else:
        module = model.model.layers[layer].self_attn.o_proj

    def pre(mod, args):
        h = args[0]
        h.retain_grad()
        kept.append(h)

    handle = module.register_forward_pre_hook(pre)
    try:
        with lrp_rules(model, get_method(method).rules):
            x = model.get_input_embeddings()(torch.tensor([ids])).detach().requires_grad_(True)
            logits = model(inputs_embeds=x, use_cache=False).logits[0]
            y = sum(logits[t, int(logits[t].argmax())] for t in range(len(ids)))
            y.backward()
    finally:
        handle.remove()
    h = kept[0][0].detach().double()
    r = h * kept[0].grad[0].double()
    if kind == "head":
        h4, r4 = h.unflatten(-1, (4, 8)), r.unflatten(-1, (4, 8))
        return {"activation": h4.norm(dim=-1).numpy(), "relevance": r4.sum(-1).numpy()}
    return {"activation": h.numpy(), "relevance": r.numpy()}


@pytest.mark.parametrize(("kind", "method"), [("neuron", "grad-x-input"), ("neuron", "attnlrp"), ("head", "cp-lrp")])
def test_top_entries_equal_a_hand_loop_over_the_windows(model64, corpus, tmp_path, kind, method):
    tok = tiny_tokenizer()
    before = model_state(model64)
    db = tmp_path / "i.sqlite"
    ci.build(model64, tok, [corpus], 1, kind, db=db, method=method, top_n=TOP_N, window=WINDOW)
    assert model_state(model64) == before  # hooks removed, flags restored
    _assert_top_equals_hand_loop(model64, tok, corpus, db, 1, kind, method, 48 if kind == "neuron" else 4)


def test_mamba_channels_equal_a_hand_loop(corpus, tmp_path):
    from tests.support.tiny_mamba import tiny_mamba

    model = tiny_mamba("mamba", dtype=torch.float64)
    tok = tiny_tokenizer()
    db = tmp_path / "m.sqlite"
    before = model_state(model)
    ci.build(model, tok, [corpus], 0, "channel", db=db, top_n=TOP_N, window=WINDOW)
    assert model_state(model) == before
    n_units = model.backbone.layers[0].mixer.out_proj.in_features
    _assert_top_equals_hand_loop(model, tok, corpus, db, 0, "channel", "mambalrp", n_units)


def _assert_top_equals_hand_loop(model, tok, corpus, db, layer, kind, method, n_units):
    windows = ci.make_windows(tok, ci.read_passages([corpus]), WINDOW)
    expected = {s: [[] for _ in range(n_units)] for s in ci.SCORES}
    for w in windows:
        scores = _hand_scores(model, list(w.ids), layer, kind, method)
        for s, values in scores.items():
            for u in range(n_units):
                col = values[:, u]
                p = int(np.argmax(col))
                expected[s][u].append((-col[p], w.id, p))
    rows = _dump(db)["top"]
    # float64 models: the engine and the hand loop run the same operations; only summation order may differ
    tol = 1e-9
    for s in ci.SCORES:
        for u in range(n_units):
            want = sorted(expected[s][u])[:TOP_N]
            got = [(r[5], r[6], r[7]) for r in rows if r[2] == s and r[3] == u and r[1] == kind and r[0] == layer]
            assert [g[1:] for g in got] == [w[1:] for w in want], (s, u)
            assert np.allclose([g[0] for g in got], [-w[0] for w in want], rtol=tol, atol=tol)


def test_the_forward_is_unchanged_and_activations_match_a_plain_forward(model64):
    ids = [5, 9, 14, 22, 7, 30]
    scores = ci.window_scores(model64, ids, 0, "neuron", method="attnlrp")
    kept = []
    handle = model64.model.layers[0].mlp.down_proj.register_forward_pre_hook(lambda m, a: kept.append(a[0]))
    try:
        with torch.no_grad():
            model64(torch.tensor([ids]), use_cache=False)
    finally:
        handle.remove()
    plain = kept[0][0].numpy()
    # HF's RMSNorm computes its variance in float32 even in a float64 model; the rules keep float64:
    # the two agree to float32 rounding (eps 1.2e-7) grown through two norms and an MLP
    np.testing.assert_allclose(scores["activation"], plain, rtol=0, atol=1e-5 * np.abs(plain).max())


def test_a_cancelled_build_resumes_to_the_same_store(model64, corpus, tmp_path, monkeypatch):
    tok = tiny_tokenizer()
    whole = tmp_path / "whole.sqlite"
    ci.build(model64, tok, [corpus], 0, "neuron", db=whole, top_n=TOP_N, window=WINDOW)
    monkeypatch.setattr(ci, "COMMIT_EVERY_WINDOWS", 2)
    part = tmp_path / "part.sqlite"
    before = model_state(model64)
    with pytest.raises(Cancelled):
        ci.build(
            model64, tok, [corpus], 0, "neuron", db=part, top_n=TOP_N, window=WINDOW, should_cancel=cancel_after(5)
        )
    assert model_state(model64) == before  # restored also when the build stops midway
    done = len(_dump(part)["done"])
    assert 0 < done < len(_dump(whole)["done"])
    again = ci.build(model64, tok, [corpus], 0, "neuron", db=part, top_n=TOP_N, window=WINDOW)
    assert again.skipped == done and again.done == again.windows - done
    assert _dump(part) == _dump(whole)
    third = ci.build(model64, tok, [corpus], 0, "neuron", db=part, top_n=TOP_N, window=WINDOW)
    assert third.done == 0 and third.tokens == 0  # a second look computes nothing


def test_shards_built_in_process_merge_to_the_single_store(model64, corpus, tmp_path):
    tok = tiny_tokenizer()
    single = tmp_path / "single.sqlite"
    ci.build(model64, tok, [corpus], 1, "head", db=single, top_n=TOP_N, window=WINDOW)
    merged = tmp_path / "merged.sqlite"
    for rank in range(3):
        ci.build(model64, tok, [corpus], 1, "head", db=merged, top_n=TOP_N, window=WINDOW, rank=rank, world=3)
    shards = [ci.shard_path(merged, r, 3) for r in range(3)]
    assert all(len(_dump(s)["done"]) < len(_dump(single)["done"]) for s in shards)
    ci.merge_shards(merged, shards)
    assert _dump(merged) == _dump(single)


def test_torchrun_with_two_cpu_processes_gives_the_single_process_store(tiny_dir, corpus, tmp_path):
    from lrp_llm.checkpoints.loading import load_model

    args = ["build", "--model", str(tiny_dir), "--corpus", str(corpus), "--layer", "1", "--kind", "neuron"]
    args += ["--top-n", str(TOP_N), "--window", str(WINDOW)]
    sharded = tmp_path / "sharded.sqlite"
    code, out = torchrun("lrp_llm.analyses.corpus_index", [*args, "--db", str(sharded)])
    assert code == 0, out[-2000:]
    assert not list(tmp_path.glob("sharded.sqlite.shard*"))  # the merge removed the shards
    model, tok = load_model(tiny_dir)  # as the workers load it
    # one thread here as in the workers (the module's fixture; float32: the same kernels give the same bits)
    assert torch.get_num_threads() == 1
    single = tmp_path / "single.sqlite"
    ci.build(model, tok, [corpus], 1, "neuron", db=single, top_n=TOP_N, window=WINDOW)
    a, b = _dump(sharded), _dump(single)
    assert a["top"] and a == b


def test_the_fingerprint_is_stable_across_processes_and_tells_models_apart(tiny_dir):
    from transformers import AutoModelForCausalLM

    code = (
        "import sys; from transformers import AutoModelForCausalLM; from lrp_llm.analyses.corpus_index import "
        "model_fingerprint; print(model_fingerprint(AutoModelForCausalLM.from_pretrained(sys.argv[1])))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    other = subprocess.run([sys.executable, "-c", code, str(tiny_dir)], capture_output=True, text=True, env=env)
    here = ci.model_fingerprint(AutoModelForCausalLM.from_pretrained(str(tiny_dir)))
    assert other.stdout.strip() == here
    assert ci.model_fingerprint(tiny_causal_lm("llama", seed=1)) != ci.model_fingerprint(tiny_causal_lm("llama"))


def test_snippets_mark_the_firing_token_and_are_ordered(model64, corpus, tmp_path):
    tok = tiny_tokenizer()
    db = tmp_path / "i.sqlite"
    ci.build(model64, tok, [corpus], 0, "head", db=db, top_n=TOP_N, window=WINDOW)
    windows = {w.id: w for w in ci.make_windows(tok, ci.read_passages([corpus]), WINDOW)}
    for by in ci.SCORES:
        snippets = ci.top_contexts(db, "layer.0.attn.head.2", by=by, k=3, context=2)
        assert [s.rank for s in snippets] == [0, 1, 2]
        assert [s.value for s in snippets] == sorted((s.value for s in snippets), reverse=True)
        for s in snippets:
            ids = windows[s.window].ids
            assert s.token == tok.decode([ids[s.position]])
            assert list(s.before) == [tok.decode([i]) for i in ids[max(0, s.position - 2) : s.position]]
            assert list(s.after) == [tok.decode([i]) for i in ids[s.position + 1 : s.position + 3]]
            assert s.text(("<", ">")) == "".join(s.before) + f"<{s.token}>" + "".join(s.after)
    assert ci.indexed(db) == [
        {"layer": 0, "kind": "head", "method": default_method(model64), "top_n": TOP_N, "n_units": 4}
        | {"done": len(windows)}
        | {"windows": len(windows)}
    ]


def test_passages_windows_and_paragraphs(tmp_path):
    tok = tiny_tokenizer()
    f = tmp_path / "p.txt"
    f.write_text("the big city\nis old\n\nparis is\nin france\n")
    assert ci.read_passages([f]) == [("p.txt:1", "the big city is old"), ("p.txt:4", "paris is in france")]
    lines = tmp_path / "l.txt"
    lines.write_text("one two three four five six seven\neight nine\nten\n")
    windows = ci.make_windows(tok, ci.read_passages([lines]), 4)
    assert [len(w.ids) for w in windows] == [4, 3, 3]  # a long line split; the next two lines packed
    assert [w.source for w in windows] == ["l.txt:1", "l.txt:1", "l.txt:2"]
    shipped = ci.read_passages([ci.shipped_corpus()])
    assert len(shipped) >= 5000


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert len(text.splitlines()) == 1
    return text


def test_bad_inputs_are_one_line_errors(model64, corpus, tmp_path):
    tok = tiny_tokenizer()
    with pytest.raises(InputError) as e:
        ci.build(model64, tok, [tmp_path / "missing.txt"], 0, "neuron", db=tmp_path / "x.sqlite")
    assert "does not exist" in _one_line(e)
    binary = tmp_path / "b.bin"
    binary.write_bytes(b"\x00\x01\x02abc" * 10)
    with pytest.raises(InputError) as e:
        ci.read_passages([binary])
    assert "binary" in _one_line(e)
    latin = tmp_path / "l.txt"
    latin.write_bytes(b"caf\xe9\n")
    with pytest.raises(InputError) as e:
        ci.read_passages([latin])
    assert "UTF-8" in _one_line(e)
    with pytest.raises(InputError) as e:
        ci.build(model64, tok, [corpus], 7, "neuron", db=tmp_path / "x.sqlite")
    assert "out of range" in _one_line(e)
    with pytest.raises(InputError) as e:
        ci.build(model64, tok, [corpus], 0, "mlp", db=tmp_path / "x.sqlite")
    assert "cannot index" in _one_line(e)
    with pytest.raises(InputError) as e:
        ci.build(model64, tok, [corpus], 0, "neuron", db=tmp_path / "x.sqlite", method="saliency")
    assert "gradient x input" in _one_line(e)
    db = tmp_path / "i.sqlite"
    ci.build(model64, tok, [corpus], 0, "neuron", db=db, top_n=2, window=WINDOW, limit=3)
    for site, words in [
        ("layer.0.mlp.nerve.1", "unknown site"),
        ("layer.1.mlp.neuron.1", "not indexed"),
        ("layer.0.mlp.neuron.99", "out of range"),
        ("layer.0.mlp", "not a head, neuron or channel"),
    ]:
        with pytest.raises(InputError) as e:
            ci.top_contexts(db, site)
        assert words in _one_line(e), site
    with pytest.raises(InputError) as e:
        ci.top_contexts(db, "layer.0.mlp.neuron.1", by="size")
    assert "--by" in _one_line(e)
    with pytest.raises(InputError) as e:
        ci.top_contexts(tmp_path / "none.sqlite", "layer.0.mlp.neuron.1")
    assert "no index" in _one_line(e)
    with pytest.raises(InputError) as e:
        ci.top_contexts(binary, "layer.0.mlp.neuron.1")
    assert "not an index database" in _one_line(e)
    # the same database for another model or corpus is refused, not mixed
    with pytest.raises(InputError) as e:
        ci.build(tiny_causal_lm("llama", seed=3), tok, [corpus], 0, "neuron", db=db, window=WINDOW, limit=3)
    assert "another fingerprint" in _one_line(e)
    with pytest.raises(InputError) as e:
        ci.build(model64, tok, [corpus], 0, "neuron", db=db, top_n=3, window=WINDOW, limit=3)
    assert "top 2" in _one_line(e)
