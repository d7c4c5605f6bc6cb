"""Conservation: exact with CP-LRP on bias-free models, exact per step with AttnLRP."""

import pytest
import torch

from lrp_llm.engines.causal_lm import relevance
from lrp_llm.mechanism.context import lrp_rules
from tests.support.models import BIAS_FREE, FAMILIES, random_ids, tiny_causal_lm


@pytest.mark.parametrize("family", BIAS_FREE)
def test_cp_lrp_conserves_the_logit_exactly_on_bias_free_models(family):
    model = tiny_causal_lm(family, dtype=torch.float64)
    ids = random_ids(14)
    out = relevance(model, ids, [9, 13], method="cp-lrp")
    for i in range(2):
        total = out["relevance"][i].sum()
        assert abs(float(total / out["logits"][i]) - 1.0) < 1e-4


def test_qwen2_biases_absorb_part_of_the_relevance():
    # q/k/v biases are not bias-free: conservation is only approximate, but finite
    model = tiny_causal_lm("qwen2", dtype=torch.float64)
    out = relevance(model, random_ids(14), [13], method="cp-lrp")
    ratio = float(out["relevance"][0].sum() / out["logits"][0])
    assert 0.5 < ratio < 1.5 and ratio != pytest.approx(1.0, abs=1e-4)


class _Tap:
    """Captures tensors in the graph so their relevance (x * x.grad) can be read after backward."""

    def __init__(self):
        self.tensors = {}
        self.handles = []

    def inputs(self, name, module):
        def pre(_m, args):
            alias = args[0].view_as(args[0])  # its gradient comes only from this module
            alias.retain_grad()
            self.tensors[name] = alias
            return (alias, *args[1:])

        self.handles.append(module.register_forward_pre_hook(pre))

    def outputs(self, name, module):
        def post(_m, _args, out):
            t = out[0] if isinstance(out, tuple) else out
            t.retain_grad()
            self.tensors[name] = t

        self.handles.append(module.register_forward_hook(post))

    def rel(self, name):
        t = self.tensors[name]
        return (t * t.grad).detach()

    def remove(self):
        for h in self.handles:
            h.remove()


@pytest.mark.parametrize("family", ["llama", "qwen3", "gemma3_text"])
def test_attnlrp_is_exact_at_every_norm_mlp_and_value_step(family):
    model = tiny_causal_lm(family, dtype=torch.float64, layers=3)
    ids = torch.tensor([random_ids(12)])
    tap = _Tap()
    # taps first: they see each module's own output, before a rule's hook rewrites it
    for i, layer in enumerate(model.model.layers):
        tap.inputs(f"{i}.norm.in", layer.input_layernorm)
        tap.outputs(f"{i}.norm.out", layer.input_layernorm)
        tap.inputs(f"{i}.mlp.in", layer.mlp)
        tap.outputs(f"{i}.mlp.out", layer.mlp)
        tap.outputs(f"{i}.v", layer.self_attn.v_proj)
        tap.inputs(f"{i}.o.in", layer.self_attn.o_proj)
    try:
        with lrp_rules(model, "attnlrp"):
            embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
            logit = model(inputs_embeds=embeds).logits[0, -1, 5]
            logit.backward()
    finally:
        tap.remove()
    for i in range(3):
        # RMSNorm with detached scale: element-wise conservation
        assert torch.allclose(tap.rel(f"{i}.norm.in"), tap.rel(f"{i}.norm.out"), atol=1e-10)
        # gated MLP (identity rule on the activation, uniform rule on the gate product): per token
        assert torch.allclose(tap.rel(f"{i}.mlp.in").sum(-1), tap.rel(f"{i}.mlp.out").sum(-1), atol=1e-10)
        # value path: exactly half of the attention output's relevance reaches V
        r_v, r_o = tap.rel(f"{i}.v").sum(), tap.rel(f"{i}.o.in").sum()
        assert torch.allclose(r_v, 0.5 * r_o, atol=1e-10)
    # overall: the softmax hands part of the relevance to its bias term, so only finite
    assert torch.isfinite((embeds * embeds.grad).sum() / logit)


@pytest.mark.parametrize("family", FAMILIES)
def test_attnlrp_relevance_is_finite_and_reported(family):
    model = tiny_causal_lm(family)
    out = relevance(model, random_ids(10), [9], method="attnlrp")
    assert torch.isfinite(out["relevance"]).all()
    assert float(out["relevance"][0].abs().sum()) > 0
