"""StarCoder2, GPT-J, Phi and Falcon: LayerNorm and plain MLPs (GPT-J, Phi and Falcon with attention
and MLP in parallel), on the shared installers; Falcon's fused Q/K/V gets its rules where its
``_split_heads`` returns them. The generic checks (forward unchanged, restore, sites resolve,
conservation) run over them in test_arch_descriptions.py. Phi-3 (fused Q/K/V and fused gate/up)
shares the patching checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lrp_llm.archs import get_arch
from lrp_llm.archs.blocks import find_parts, install_attention
from lrp_llm.archs.description import AttentionSplitParts
from lrp_llm.engines.causal_lm import relevance
from lrp_llm.mechanism.context import lrp_rules
from lrp_llm.mechanism.patch import ModelPatch
from patching import attribution_patching, sweep
from patching.sites import SiteMap
from patching.stepper import StepperUnsupported
from tests.support.models import random_ids, tiny_causal_lm
from tests.support.tiny_gpt import tiny_gpt, without_biases

TYPES = ("starcoder2", "gptj", "phi", "falcon")


def test_phi_q_k_layernorms_are_found_keep_the_forward_and_conserve():
    model = tiny_gpt("phi", qk_layernorm=True)
    assert len(find_parts(model, get_arch(model).parts)["norms"]) == 2 + 1 + 4  # per block, final, Q and K per block
    ids = torch.tensor([random_ids(9)])
    with torch.no_grad():
        plain = model(ids).logits
    for rules in ("attnlrp", "cp-lrp", "relp"):
        with lrp_rules(model, rules), torch.no_grad():
            torch.testing.assert_close(model(ids).logits, plain, atol=1e-5, rtol=1e-5)
    model = without_biases(tiny_gpt("phi", qk_layernorm=True, dtype=torch.float64))
    out = relevance(model, random_ids(12), [8, 11], method="cp-lrp")
    for i in range(2):
        assert abs(float(out["relevance"][i].sum() / out["logits"][i]) - 1.0) < 1e-4


@pytest.mark.parametrize("model_type", (*TYPES, "phi3"))
def test_patching_sweep_engines_agree_and_relp_runs(model_type):
    model = tiny_causal_lm(model_type) if model_type == "phi3" else tiny_gpt(model_type)
    sm = SiteMap(model)
    assert sm.family == model_type and sm.n_layers == 2
    assert sm.n_neurons == 48 and sm.n_heads == 4 and sm.head_dim == 8
    clean = random_ids(7, seed=4)
    corrupted = [*clean[:2], 9, *clean[3:]]
    kw = dict(kinds=("resid", "attn", "mlp", "head"), positions=[2, 6], head_positions=[5, 6])
    naive = sweep(model, clean, corrupted, 5, 6, engine="naive", **kw)
    if model_type in ("gptj", "falcon"):  # their blocks take their cache as `layer_past`
        with pytest.raises(StepperUnsupported):
            sweep(model, clean, corrupted, 5, 6, kinds=("resid",), engine="stepper")
        engines = ("batched",)
    else:
        engines = ("batched", "stepper")
    for engine in engines:
        fast = sweep(model, clean, corrupted, 5, 6, engine=engine, **kw)
        assert fast.engine == engine
        for key, want in naive.values.items():
            np.testing.assert_allclose(fast.values[key], want, atol=1e-4, rtol=0, err_msg=f"{engine} {key}")
    est = attribution_patching(model, clean, corrupted, 5, 6, method="relp", kinds=("resid", "mlp", "head"))
    for key, values in est.values.items():
        assert np.isfinite(values).all(), key
    assert np.abs(est.values[("resid", "logit_diff")] - est.reference.corrupted_logit_diff).max() > 1e-4


class _Split(torch.nn.Module):
    """A fused projection whose output a method splits into Q, K, V (as Falcon's ``_split_heads``)."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = torch.nn.Linear(4, 12, bias=False, dtype=torch.float64)
        self.qkv.weight.data = torch.randn(12, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        self.qkv.weight.requires_grad_(False)

    def split(self, fused):
        return fused[..., :4], fused[..., 4:8], fused[..., 8:]

    def forward(self, x):
        return self.split(self.qkv(x))


@pytest.mark.parametrize(
    "rules,factors", [("attnlrp", (0.25, 0.25, 0.5)), ("cp-lrp", (0.0, 0.0, 1.0)), ("relp", (0.0, 0.0, 1.0))]
)
@pytest.mark.parametrize("forward_mode", [False, True])
def test_split_installer_scales_q_k_v_gradients_and_restores_the_method(rules, factors, forward_mode):
    attn = _Split()
    x = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    cot = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    parts = AttentionSplitParts(projection="qkv", split="split")
    for i in range(3):
        with ModelPatch(attn) as patch:
            install_attention(patch, [attn], parts, rules, forward_mode=forward_mode)
            xr = x.clone().requires_grad_(True)
            out = attn(xr)[i]
            torch.testing.assert_close(out, attn.qkv(x)[..., 4 * i : 4 * i + 4], atol=0, rtol=0)
            got = torch.autograd.grad(out, xr, cot)[0] if out.requires_grad else torch.zeros_like(x)
        want = factors[i] * (cot @ attn.qkv.weight[4 * i : 4 * i + 4])
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
        assert "split" not in attn.__dict__


FALCON_LAYOUTS = [
    {},  # Falcon-7B: multi-query, parallel blocks, one LayerNorm per block
    dict(new_decoder_architecture=True, num_kv_heads=2),  # Falcon-40B/180B: grouped K/V, two LayerNorms
    dict(new_decoder_architecture=True, num_kv_heads=2, num_ln_in_parallel_attn=1),
    dict(alibi=True),  # Falcon-RW
    dict(parallel_attn=False, multi_query=False),  # sequential blocks
]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("layout", FALCON_LAYOUTS, ids=lambda d: ",".join(d) or "7b")
def test_falcon_layouts_keep_the_forward_restore_and_conserve(layout, attn):
    model = tiny_gpt("falcon", attn=attn, **layout)
    ids = torch.tensor([random_ids(9)])
    with torch.no_grad():
        plain = model(ids).logits
    for rules in ("attnlrp", "cp-lrp", "relp"):
        with lrp_rules(model, rules), torch.no_grad():
            assert all("_split_heads" in a.__dict__ for a in model.modules() if hasattr(a, "query_key_value"))
            torch.testing.assert_close(model(ids).logits, plain, atol=1e-5, rtol=1e-5)
        assert not any("_split_heads" in m.__dict__ for m in model.modules())
    model = without_biases(tiny_gpt("falcon", attn=attn, dtype=torch.float64, **layout))
    cp = relevance(model, random_ids(12), [8, 11], method="cp-lrp")
    for i in range(2):
        assert abs(float(cp["relevance"][i].sum() / cp["logits"][i]) - 1.0) < 1e-4
    attnlrp = relevance(model, random_ids(12), [8, 11], method="attnlrp")
    assert float((attnlrp["relevance"][0] - cp["relevance"][0]).abs().max()) > 1e-3  # the rule sets differ
