"""ablate_components: the answer's logit and probability and the greedy answer with components ablated
equal those of a hand-written ablation (plain forward hooks, float64); the model is restored, also on
error; unknown sites and bad arguments are one-line errors."""

import pytest
import torch

import patching.ablation as ablation
from lrp_llm.errors import InputError
from patching import ablate_components
from patching.ablation import ablated_logits
from tests.support.models import model_state, random_ids, tiny_causal_lm, tiny_tokenizer

T = 9
D_MLP, HEAD_DIM = 48, 8


@pytest.fixture(scope="module")
def model():
    return tiny_causal_lm("llama", layers=3, dtype=torch.float64)


@pytest.fixture(scope="module")
def ids():
    return random_ids(T, seed=4)


def _hand_hooks(model, neurons=(), heads=(), values=None):
    """Forward pre-hooks on down_proj / o_proj that overwrite the chosen columns: zero, or ``values[(layer, n)]``."""
    handles = []
    for layer in {i for i, _ in neurons} | {i for i, _ in heads}:
        mine = [n for i, n in neurons if i == layer]
        mine_heads = [h for i, h in heads if i == layer]

        def down(_m, args, layer=layer, mine=mine):
            x = args[0].clone()
            for n in mine:
                x[..., n] = 0.0 if values is None else values[(layer, n)]
            return (x,)

        def o_proj(_m, args, mine_heads=mine_heads):
            x = args[0].clone()
            for h in mine_heads:
                x[..., h * HEAD_DIM : (h + 1) * HEAD_DIM] = 0.0
            return (x,)

        block = model.model.layers[layer]
        if mine:
            handles.append(block.mlp.down_proj.register_forward_pre_hook(down))
        if mine_heads:
            handles.append(block.self_attn.o_proj.register_forward_pre_hook(o_proj))
    return handles


def _hand_run(model, ids, n_new):
    """Last-position logits and a greedy continuation without a cache (every step recomputes everything)."""
    with torch.no_grad():
        last = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1]
        seq, out = list(ids), []
        for _ in range(n_new):
            nxt = int(model(input_ids=torch.tensor([seq]), use_cache=False).logits[0, -1].argmax())
            out.append(nxt)
            seq.append(nxt)
    return last, out


def test_zero_ablation_equals_a_hand_run(model, ids):
    before = model_state(model)
    neurons, heads = [(0, 5), (2, 17), (2, 40)], [(1, 2)]
    sites = [f"layer.{i}.mlp.neuron.{n}" for i, n in neurons] + [f"layer.{i}.attn.head.{h}" for i, h in heads]
    res = ablate_components(model, ids, sites, new_tokens=4)
    clean, greedy_clean = _hand_run(model, ids, 4)
    handles = _hand_hooks(model, neurons, heads)
    try:
        ablated, greedy_ablated = _hand_run(model, ids, 4)
    finally:
        for h in handles:
            h.remove()
    a = greedy_clean[0]
    assert res.answer_id == a and res.answer_before == greedy_clean and res.answer_after == greedy_ablated
    tol = 1e-12  # float64 forward passes of the same operations (same order up to the hooks' copies)
    assert res.logit_before == pytest.approx(float(clean[a]), abs=tol)
    assert res.logit_after == pytest.approx(float(ablated[a]), abs=tol)
    assert res.probability_after == pytest.approx(float(torch.softmax(ablated, -1)[a]), abs=tol)
    assert res.probability_before == pytest.approx(float(torch.softmax(clean, -1)[a]), abs=tol)
    assert abs(res.logit_after - res.logit_before) > 1e-3  # the ablation changed something
    assert model_state(model) == before


def test_mean_ablation_uses_the_prompts_mean(model, ids):
    neurons = [(1, 3), (1, 30)]
    captured = {}

    def grab(_m, args):
        captured["x"] = args[0].detach().clone()

    h = model.model.layers[1].mlp.down_proj.register_forward_pre_hook(grab)
    with torch.no_grad():
        model(input_ids=torch.tensor([ids]), use_cache=False)
    h.remove()
    means = {(1, n): captured["x"][0, :, n].mean() for _, n in neurons}
    handles = _hand_hooks(model, neurons, values=means)
    try:
        ablated, greedy = _hand_run(model, ids, 3)
    finally:
        for hd in handles:
            hd.remove()
    answer = 7
    res = ablate_components(
        model, ids, [f"layer.1.mlp.neuron.{n}" for _, n in neurons], how="mean", answer=answer, new_tokens=3
    )
    assert res.how == "mean" and res.answer_id == answer
    assert res.logit_after == pytest.approx(float(ablated[answer]), abs=1e-12)
    assert res.answer_after == greedy  # the mean stays the prompt's while new tokens are generated


def test_text_prompt_and_answer_with_a_tokenizer():
    tok = tiny_tokenizer()
    model = tiny_causal_lm("llama", vocab=len(tok), dtype=torch.float64)
    res = ablate_components(model, "the capital of france is", ["layer.0.mlp"], tokenizer=tok, answer=" paris")
    assert res.answer_id == tok.convert_tokens_to_ids("paris")
    assert res.answer_text == "paris" and isinstance(res.text_after, str)
    d = res.to_dict()
    assert d["sites"] == ["layer.0.mlp"] and set(d["probability"]) == {"before", "after"}


def test_batched_rows_ablate_their_own_sites(model):
    rows = torch.tensor([random_ids(T, seed=s) for s in (1, 2, 3)])
    chosen = [["layer.0.mlp.neuron.1"], [], ["layer.2.attn.head.0", "layer.0.mlp.neuron.1"]]
    got = ablated_logits(model, rows, chosen)[:, -1]
    for i, sites in enumerate(chosen):
        one = ablate_components(model, rows[i], sites or ["layer.0.mlp.neuron.2"], answer=0, new_tokens=1)
        want = one.logit_before if not sites else one.logit_after
        assert float(got[i, 0]) == pytest.approx(want, abs=1e-12)


def test_model_restored_on_error(model, ids, monkeypatch):
    before, logits = model_state(model), model(input_ids=torch.tensor([ids])).logits
    calls = []

    def failing(m, t):
        calls.append(1)
        if len(calls) == 2:  # inside the ablation
            raise RuntimeError("boom")
        return m(input_ids=t, use_cache=False).logits[0, -1].double()

    monkeypatch.setattr(ablation, "_last_logits", failing)
    with pytest.raises(RuntimeError, match="boom"):
        ablate_components(model, ids, ["layer.1.mlp.neuron.0", "layer.0.attn.head.1"])
    assert model_state(model) == before
    assert torch.equal(model(input_ids=torch.tensor([ids])).logits, logits)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"sites": ["layer.7.mlp.neuron.0"]}, "out of range"),
        ({"sites": ["layer.0.mlp.neuron.48"]}, "neuron 48 is out of range"),
        ({"sites": ["layer.0.attn.head.9"]}, "head 9"),
        ({"sites": ["layer.0.mixer.channel.1"]}, "does not exist"),
        ({"sites": ["neuron 5"]}, "unknown site"),
        ({"sites": []}, "nothing to ablate"),
        ({"sites": ["layer.0.mlp"], "how": "noise"}, "unknown ablation"),
        ({"sites": ["layer.0.mlp"], "prompt": "some text"}, "needs a tokenizer"),
        ({"sites": ["layer.0.mlp"], "prompt": []}, "empty"),
        ({"sites": ["layer.0.mlp"], "answer": 10_000}, "outside the vocabulary"),
        ({"sites": ["layer.0.mlp"], "new_tokens": 0}, "at least 1"),
    ],
)
def test_errors_are_one_line(model, ids, kwargs, needle):
    before = model_state(model)
    kwargs = {"prompt": ids, **kwargs}
    with pytest.raises(InputError) as err:
        ablate_components(model, kwargs.pop("prompt"), kwargs.pop("sites"), **kwargs)
    assert needle in str(err.value) and len(str(err.value).splitlines()) == 1
    assert model_state(model) == before


@pytest.mark.parametrize(("rules", "method"), [(None, "grad-x-input"), ("cp-lrp", "cp-lrp"), ("attnlrp", "attnlrp")])
def test_zero_ablation_estimate_is_minus_the_component_relevance(model, ids, rules, method):
    """Attribution patching towards 0 predicts -sum_pos a * g: minus the neurons' and heads' relevance that
    component relevance computes with the same rules (another code path: taps in the gradient engine)."""
    from lrp_llm.engines import causal_lm
    from lrp_llm.mechanism.components import ComponentSpec
    from patching.ablation import zero_ablation_estimate

    before = model_state(model)
    answer = 11
    seq = [*ids, answer]
    comp = causal_lm.relevance(model, seq, [len(seq) - 1], method=method, components=ComponentSpec(full=True))
    c = comp["components"][0]
    neurons = zero_ablation_estimate(model, ids, answer, "neuron", rules=rules)
    heads = zero_ablation_estimate(model, ids, answer, "head", rules=rules)
    scale = float(abs(c.neurons).max())
    assert scale > 0
    # float64 sums of T * width products in different orders
    assert torch.allclose(neurons, -torch.from_numpy(c.neurons), rtol=0, atol=1e-10 * scale)
    assert torch.allclose(heads, -torch.from_numpy(c.heads), rtol=0, atol=1e-10 * float(abs(c.heads).max()))
    assert model_state(model) == before
    with pytest.raises(InputError, match="no 'channel' components"):
        zero_ablation_estimate(model, ids, answer, "channel")
