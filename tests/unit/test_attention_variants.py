"""AttnLRP's attention variants (attnlrp-qk-held, attnlrp-qk-late, attnlrp-eps) against float64 hand formulas.

The hand formulas are written in explicit LRP form (relevance shares of each product and of
the linearised softmax), not in the gradient x input form the rules are implemented in.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from lrp_llm.archs import attention_variants
from lrp_llm.archs.attention_variants import (
    SOFTMAX_EPSILON,
    VARIANTS,
    AttentionVariant,
    held_layers,
    softmax_epsilon_rule,
)
from lrp_llm.mechanism.context import lrp_rules
from lrp_llm.methods import get_method, methods_for
from tests.support.models import tiny_causal_lm
from tests.support.tiny_mamba import tiny_mamba

RULE_SETS = ("attnlrp", "attnlrp-qk-held", "attnlrp-qk-late", "attnlrp-eps", "attnlrp-sink")
F64_TOL = 1e-10  # float64, a few hundred operations on values of order 1-10


# ------------------------------------------------------------------ hand formulas (numpy, float64)
def hand_softmax_rule(x: np.ndarray, r_out: np.ndarray, eps: float | None) -> np.ndarray:
    """Relevance of the scores ``x`` (one row, unmasked) given the relevance ``r_out`` of the probabilities.

    ``eps=None``: AttnLRP's rule ``x_i sum_j J_ji R_j / y_j``; else the epsilon rule on the
    input part ``z_j = sum_i J_ji x_i``: ``x_i sum_j J_ji R_j / (z_j + eps sign z_j)``.
    """
    y = np.exp(x - x.max())
    y /= y.sum()
    n = len(x)
    jac = np.array([[y[j] * ((i == j) - y[i]) for i in range(n)] for j in range(n)])  # jac[j, i] = dy_j/dx_i
    r_in = np.zeros(n)
    for j in range(n):
        z = sum(jac[j, i] * x[i] for i in range(n))
        denom = y[j] if eps is None else (z + eps if z >= 0 else z - eps)
        for i in range(n):
            r_in[i] += x[i] * jac[j, i] * r_out[j] / denom
    return r_in


def hand_attention_relevance(q, k, v, c, scaling, factors, eps, sink=False):
    """Per-head relevance of Q (heads, T, d), K and V (kv heads, T, d) for the causal attention ``A V`` with
    output cotangent ``c`` (heads, T, d): the uniform rule (A and V half each, Q and K half of the
    scores each) and the softmax rule, or, with Q/K held, A constant and all of ``A V`` to V.
    ``sink``: the relevance of the scores of key 0 is not passed on but summed (returned last)."""
    heads, t_len, _ = q.shape
    groups = heads // k.shape[0]
    r_q, r_k, r_v = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
    held_apart = 0.0
    held = factors[0] is None
    for h in range(heads):
        g = h // groups
        for t in range(t_len):
            keys = t + 1  # causal
            x = np.array([scaling * q[h, t] @ k[g, j] for j in range(keys)])
            y = np.exp(x - x.max())
            y /= y.sum()
            terms = np.array([y[j] * v[g, j] * c[h, t] for j in range(keys)])  # A_tj V_jd c_td
            share_v = 1.0 if held else 0.5
            r_v[g, :keys] += share_v * terms
            if held:
                continue
            r_a = 0.5 * terms.sum(-1)
            r_x = hand_softmax_rule(x, r_a, eps)
            if sink:
                held_apart += r_x[0]
                r_x[0] = 0.0
            for j in range(keys):
                prod = scaling * q[h, t] * k[g, j]  # the terms of the score x_tj
                r_q[h, t] += 0.5 * prod / x[j] * r_x[j]
                r_k[g, j] += 0.5 * prod / x[j] * r_x[j]
    return r_q, r_k, r_v, held_apart


# ------------------------------------------------------------------ the rules
def test_softmax_epsilon_rule_matches_the_hand_formula_and_accounts_for_what_eps_absorbs():
    gen = torch.Generator().manual_seed(3)
    x = 2.0 * torch.randn(3, 6, generator=gen, dtype=torch.float64)
    x[2, 4:] = torch.finfo(torch.float64).min  # masked keys
    g = torch.randn(3, 6, generator=gen, dtype=torch.float64)
    for eps in (SOFTMAX_EPSILON, 0.3, 1e-12):
        leaf = x.clone().requires_grad_(True)
        y = softmax_epsilon_rule(leaf, eps)
        assert torch.equal(y, torch.softmax(x, -1))  # the value is the softmax
        y.backward(g)
        r_in = (leaf.detach() * leaf.grad).numpy()
        r_in[2, 4:] = 0.0 if np.all(leaf.grad[2, 4:].numpy() == 0) else np.nan  # masked keys get no gradient
        for row in range(3):
            keys = 6 if row < 2 else 4
            r_out = (y.detach() * g)[row, :keys].numpy()
            expected = hand_softmax_rule(x[row, :keys].numpy(), r_out, eps)
            np.testing.assert_allclose(r_in[row, :keys], expected, rtol=F64_TOL, atol=F64_TOL)
            # conservation up to eps: the share z_j / (z_j + eps sign z_j) of each R_j is passed on
            yr = y.detach()[row, :keys].numpy()
            xr = x[row, :keys].numpy()
            z = yr * (xr - (yr * xr).sum())
            passed = (r_out * z / np.where(z >= 0, z + eps, z - eps)).sum()
            assert r_in[row].sum() == pytest.approx(passed, rel=F64_TOL, abs=F64_TOL)
            if eps == 1e-12:
                assert r_in[row].sum() == pytest.approx(r_out.sum(), rel=1e-9)  # the bias share is redistributed


def _module_relevance(model, rules: str, layer: int, seq: int = 6):
    """Relevance of Q, K (per head and position) and V (elementwise) of one attention module under ``rules``,
    read as raw projection output x gradient, and the module's inputs for the hand formula."""
    attn = model.model.layers[layer].self_attn
    gen = torch.Generator().manual_seed(5)
    h = torch.randn(1, seq, 32, generator=gen, dtype=torch.float64)
    c_out = torch.randn(1, seq, 32, generator=gen, dtype=torch.float64)
    pos = torch.arange(seq)[None]
    cos, sin = model.model.rotary_emb(h, position_ids=pos)
    raw = {}

    def keep(name):
        def hook(_m, _a, out):
            out.retain_grad()
            raw[name] = out

        return hook

    handles = [getattr(attn, p).register_forward_hook(keep(p)) for p in ("q_proj", "k_proj", "v_proj")]
    held = None
    try:  # registered before the rules, so the hooks see the raw projection outputs
        with lrp_rules(model, rules) as patch:
            sink = patch.accounts.get("sink")
            if sink is not None:
                sink.leaf = torch.ones(1, 1, dtype=torch.float64, requires_grad=True)
            out, _ = attn(h.clone().requires_grad_(True), position_embeddings=(cos, sin), attention_mask=None)
            out.backward(c_out)
            if sink is not None:
                held = float(sink.leaf.grad.sum())
    finally:
        for handle in handles:
            handle.remove()
    d = attn.head_dim

    def per_head(name):
        r = (raw[name].detach() * raw[name].grad).reshape(seq, -1, d)
        return r.permute(1, 0, 2).numpy()  # (heads, T, d)

    with torch.no_grad():
        q = attn.q_proj(h).view(1, seq, -1, d).transpose(1, 2)
        k = attn.k_proj(h).view(1, seq, -1, d).transpose(1, 2)
        v = attn.v_proj(h).view(1, seq, -1, d).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)  # a rotation per position: per-head relevance unchanged
        c = (c_out @ attn.o_proj.weight).view(1, seq, -1, d).transpose(1, 2)
    inputs = (q[0].numpy(), k[0].numpy(), v[0].numpy(), c[0].numpy(), attn.scaling)
    rq = raw["q_proj"].grad is not None
    return per_head("q_proj") if rq else None, per_head("k_proj") if rq else None, per_head("v_proj"), inputs, held


@pytest.mark.parametrize(("rules", "layer"), [(r, 0) for r in RULE_SETS] + [("attnlrp-qk-late", 1)])
def test_one_attention_module_matches_the_hand_formula(rules, layer):
    """attnlrp as published (uniform rule, AttnLRP's softmax rule), held Q/K, the late split, the epsilon rule,
    and the sink held apart (its amount checked too)."""
    model = tiny_causal_lm("llama", dtype=torch.float64, layers=2)
    r_q, r_k, r_v, (q, k, v, c, scaling), held = _module_relevance(model, rules, layer)
    variant = VARIANTS.get(rules, AttentionVariant())
    qk_held = variant.qk == "held" or (variant.qk == "late" and layer in held_layers(2))
    factors = (None, None, 1.0) if qk_held else (0.25, 0.25, 0.5)
    e_q, e_k, e_v, e_held = hand_attention_relevance(q, k, v, c, scaling, factors, variant.softmax_eps, variant.sink)
    if variant.sink:
        assert held == pytest.approx(e_held, rel=1e-9) and abs(e_held) > 1e-3
    else:
        assert held is None
    np.testing.assert_allclose(r_v, e_v, rtol=F64_TOL, atol=F64_TOL)
    if qk_held:
        assert r_q is None and r_k is None  # Q and K are constants: no gradient reaches them
        return
    np.testing.assert_allclose(r_q.sum(-1), e_q.sum(-1), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(r_k.sum(-1), e_k.sum(-1), rtol=1e-9, atol=1e-9)


def test_the_late_split_follows_the_depth():
    assert list(held_layers(30)) == list(range(15, 30))
    assert list(held_layers(2)) == [1] and list(held_layers(3)) == [2] and list(held_layers(1)) == []


# ------------------------------------------------------------------ the model under the variants
def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("rules", RULE_SETS[1:])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_forward_unchanged_and_model_restored(rules, attn):
    model = tiny_causal_lm("llama", layers=3, attn=attn)
    ids = torch.tensor([[1, 5, 9, 13, 17, 21, 25]])
    before = _logits(model, ids)
    configs = [m.self_attn.config for m in model.model.layers]
    with lrp_rules(model, rules):
        under = _logits(model, ids)
    # eager attention / another kernel and float32 rounding: a few ulps of the largest logit per layer
    tol = 64 * torch.finfo(torch.float32).eps * float(before.abs().max())
    assert float((under - before).abs().max()) <= tol
    assert torch.equal(_logits(model, ids), before)
    assert [m.self_attn.config for m in model.model.layers] == configs
    assert all(not hasattr(m.self_attn, "_lrp_attention_rules") for m in model.model.layers)
    with pytest.raises(RuntimeError, match="inside"), lrp_rules(model, rules):
        raise RuntimeError("inside")
    assert torch.equal(_logits(model, ids), before)
    assert all(m.self_attn.config is c for m, c in zip(model.model.layers, configs))


def _input_relevance(model, rules, ids, capture_layer: int | None = None):
    emb = model.get_input_embeddings()(ids).detach()
    captured = {}
    handle = None
    if capture_layer is not None:

        def pre(_m, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            hidden.retain_grad()  # the residual stream entering the layer
            captured["h"] = hidden

        handle = model.model.layers[capture_layer].register_forward_pre_hook(pre, with_kwargs=True)
    try:
        with lrp_rules(model, rules):
            x = emb.clone().requires_grad_(True)
            logits = model(inputs_embeds=x).logits
            target = logits[0, -1].argmax()
            logits[0, -1, target].backward()
    finally:
        if handle is not None:
            handle.remove()
    value = float(logits[0, -1, target].detach())
    hidden_sum = float((captured["h"].detach() * captured["h"].grad).sum()) if captured else None
    return float((x.detach() * x.grad).sum()), value, hidden_sum


def test_conservation_on_a_bias_free_model():
    """qk-held: exact (every block is linear in the propagated path: A constant, the gated product split
    by the uniform rule, 1/sigma constant). qk-late: exact down to the first held layer, AttnLRP's softmax
    rule below it (not exact). attnlrp-eps: exact as eps -> 0 (the softmax's bias share redistributed);
    attnlrp: not exact (the bias share is absorbed)."""
    model = tiny_causal_lm("llama", dtype=torch.float64, layers=4)
    ids = torch.tensor([[1, 7, 3, 22, 40, 9, 31, 15]])
    total, logit, _ = _input_relevance(model, "attnlrp-qk-held", ids)
    assert total == pytest.approx(logit, rel=F64_TOL)
    first_held = held_layers(4)[0]
    total, logit, at_split = _input_relevance(model, "attnlrp-qk-late", ids, capture_layer=first_held)
    assert at_split == pytest.approx(logit, rel=F64_TOL)
    assert abs(total - logit) > 1e-3 * abs(logit)  # the uniform layers below lose the softmax's bias share
    total, logit, _ = _input_relevance(model, "attnlrp", ids)
    assert abs(total - logit) > 1e-3 * abs(logit)


@pytest.mark.parametrize("eps", [SOFTMAX_EPSILON, 1e-12])
def test_epsilon_variant_conserves_up_to_what_eps_absorbs(monkeypatch, eps):
    """Input relevance + the relevance each softmax absorbs (R_j (1 - z_j / (z_j + eps sign z_j)), half of
    A V's relevance being A's) == the logit, exactly. With eps -> 0 only entries with z_j = 0 absorb: the
    one-key rows (the first query attends to itself alone: a constant softmax, all bias)."""
    model = tiny_causal_lm("llama", dtype=torch.float64, layers=3)
    ids = torch.tensor([[1, 7, 3, 22, 40, 9, 31, 15]])
    monkeypatch.setitem(attention_variants.VARIANTS, "attnlrp-eps", AttentionVariant(softmax_eps=eps))
    absorbed = []
    rule = attention_variants.softmax_epsilon_rule

    def recording(scores, eps_, dtype=None):
        weights = rule(scores, eps_, dtype)
        y = weights.detach()
        x = torch.where(y > 0, scores.detach(), torch.zeros_like(y))
        z = y * (x - (y * x).sum(-1, keepdim=True))
        passed = z / torch.where(z >= 0, z + eps_, z - eps_)
        weights.register_hook(lambda g: absorbed.append(float((0.5 * y * g * (1 - passed)).sum())))
        return weights

    monkeypatch.setattr(attention_variants, "softmax_epsilon_rule", recording)
    total, logit, _ = _input_relevance(model, "attnlrp-eps", ids)
    assert len(absorbed) == 3
    assert total + sum(absorbed) == pytest.approx(logit, rel=1e-9)
    assert abs(sum(absorbed)) > 1e-6 * abs(logit)  # the accounting is not vacuous


def test_variants_in_the_table_offered_to_llama_models_only():
    for name in VARIANTS:
        assert get_method(name).rules == name and get_method(name).kinds == ("causal-lm",)
    assert set(VARIANTS) <= set(methods_for(tiny_causal_lm("llama")))
    assert not set(VARIANTS) & set(methods_for(tiny_mamba("mamba")))


@pytest.mark.parametrize("eps", [None, SOFTMAX_EPSILON])
def test_sink_relevance_is_held_apart_and_accounted_for(monkeypatch, eps):
    """The engine reports the held-apart relevance per target; input relevance + held apart + what the
    softmax rule absorbs == the logit, exactly (bias-free model; with AttnLRP's rule the absorbed share is the
    bias term's, R_j (1 - z_j / y_j); with the epsilon rule R_j (1 - z_j / (z_j + eps sign z_j)))."""
    from lrp_llm.engines.causal_lm import relevance

    model = tiny_causal_lm("llama", dtype=torch.float64, layers=3)
    ids = [1, 7, 3, 22, 40, 9, 31, 15]
    absorbed = []
    base = attention_variants.softmax_epsilon_rule

    def recording(scores, eps_, dtype=None):
        weights = base(scores, eps_, dtype)
        y = weights.detach()
        x = torch.where(y > 0, scores.detach(), torch.zeros_like(y))
        z = y * (x - (y * x).sum(-1, keepdim=True))
        passed = z / torch.where(z >= 0, z + eps_, z - eps_) if eps_ else torch.where(y > 0, z / y, 0.0)
        weights.register_hook(lambda g: absorbed.append(float((0.5 * y * g * (1 - passed)).sum())))
        return weights

    monkeypatch.setattr(attention_variants, "softmax_epsilon_rule", recording)
    # AttnLRP's own softmax rule is the epsilon rule's limit with the bias in the denominator: record it the
    # same way by running the epsilon path with eps = 0 and the denominator y_j (passed share z_j / y_j)
    variant = AttentionVariant(softmax_eps=eps if eps is not None else 0.0, sink=True)
    if eps is None:
        monkeypatch.setattr(attention_variants, "softmax_epsilon_factor", lambda s, y, e: torch.ones_like(y))
    monkeypatch.setitem(attention_variants.VARIANTS, "attnlrp-sink", variant)
    out = relevance(model, ids, [7], method="attnlrp-sink")
    held = float(out["held_apart"][0])
    total = float(out["relevance"][0].sum())
    logit = float(out["logits"][0])
    assert len(absorbed) == 3 and abs(held) > 1e-3
    assert total + held + sum(absorbed) == pytest.approx(logit, rel=1e-9)


def test_explain_reports_the_held_apart_relevance_and_the_cli_shows_it():
    from rich.console import Console

    from lrp_llm.engines.explain import explain
    from tests.support.models import tiny_tokenizer
    from tui.render import render_attribution

    model = tiny_causal_lm("llama", layers=2)
    a = explain(model, tiny_tokenizer(), "a b c d", method="attnlrp-sink", generate=2)
    held = a.meta["held_apart"]
    assert len(held) == len(a.targets) == 2 and all(np.isfinite(held))
    assert "held_apart" not in explain(model, tiny_tokenizer(), "a b c d", method="attnlrp", generate=2).meta
    console = Console(record=True, width=200)
    render_attribution(console, a)
    text = console.export_text()
    t = a.targets[0]
    assert "held apart" in text and f"[0] {held[0]:+.2f} ({(t.relevance_sum + held[0]) / t.logit:.3f})" in text


def test_evaluate_takes_the_variants_through_the_table():
    from lrp_llm.analyses.evaluate import EvalItem, check_methods, evaluate
    from tests.support.models import tiny_tokenizer

    tok = tiny_tokenizer()
    model = tiny_causal_lm("llama", vocab=len(tok))
    names = list(VARIANTS)
    assert [m for _, m, _ in check_methods(model, names)] == names
    items = [EvalItem(id="b", text="the capital of france is", answer="paris", evidence="france")]
    ev = evaluate(model, tok, items, names, steps=3, max_new_tokens=2)
    summary = {s.method: s for s in ev.summary()}
    assert list(summary) == names and all(np.isfinite(s.abpc) for s in summary.values())


def test_the_html_report_shows_the_held_apart_relevance():
    from lrp_llm.engines.explain import explain
    from lrp_llm.export.token_section import target_title
    from tests.support.models import tiny_tokenizer

    model = tiny_causal_lm("llama", layers=2)
    a = explain(model, tiny_tokenizer(), "a b c d", method="attnlrp-sink", generate=1)
    assert "held apart" in target_title(a, 0)
    a.meta.pop("held_apart")
    assert "held apart" not in target_title(a, 0)


@pytest.mark.parametrize("family", ["qwen2", "gemma2", "gemma3_text"])
def test_forward_unchanged_in_other_llama_family_layouts(family):
    """Q/K/V biases (Qwen2), the attention-logit soft-cap and eager attention (Gemma-2), sliding windows
    longer than the input (Gemma-3): the variants' own attention gives the model's logits."""
    model = tiny_causal_lm(family, layers=2)
    ids = torch.tensor([[1, *range(3, 23)]])  # 21 tokens: past the sliding window of 16
    before = _logits(model, ids)
    tol = 64 * torch.finfo(torch.float32).eps * float(before.abs().max())
    for rules in VARIANTS:
        with lrp_rules(model, rules):
            assert float((_logits(model, ids) - before).abs().max()) <= tol, rules
    assert torch.equal(_logits(model, ids), before)


def test_qk_held_differs_from_cp_lrp_only_in_the_gated_mlp():
    """Same attention rule as CP-LRP: with the MLPs' output switched off (down_proj = 0) the two give the same
    relevance; with them on, CP-LRP holds act(gate) constant while attnlrp-qk-held splits act(gate) * up."""
    model = tiny_causal_lm("llama", dtype=torch.float64, layers=2)
    ids = torch.tensor([[1, 7, 3, 22, 40, 9]])

    def rel(rules):
        emb = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        with lrp_rules(model, rules):
            logits = model(inputs_embeds=emb).logits
            logits[0, -1, 5].backward()
        return (emb.detach() * emb.grad).sum(-1)

    assert not torch.allclose(rel("attnlrp-qk-held"), rel("cp-lrp"), rtol=1e-3, atol=1e-6)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.mlp.down_proj.weight.zero_()
    torch.testing.assert_close(rel("attnlrp-qk-held"), rel("cp-lrp"), rtol=F64_TOL, atol=F64_TOL)
