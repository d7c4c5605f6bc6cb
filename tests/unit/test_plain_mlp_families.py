"""StarCoder2, GPT-J and Phi: separate Q/K/V projections with LayerNorm and plain MLPs (GPT-J and
Phi with attention and MLP in parallel), on the shared installers. The generic checks (forward
unchanged, restore, sites resolve, conservation) run over them in test_arch_descriptions.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lrp_llm.archs import get_arch
from lrp_llm.archs.blocks import find_parts
from lrp_llm.engines.causal_lm import relevance
from lrp_llm.mechanism.context import lrp_rules
from patching import attribution_patching, sweep
from patching.sites import SiteMap
from patching.stepper import StepperUnsupported
from tests.support.models import random_ids
from tests.support.tiny_gpt import tiny_gpt, without_biases

TYPES = ("starcoder2", "gptj", "phi")


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


@pytest.mark.parametrize("model_type", TYPES)
def test_patching_sweep_engines_agree_and_relp_runs(model_type):
    model = tiny_gpt(model_type)
    sm = SiteMap(model)
    assert sm.family == model_type and sm.n_layers == 2
    assert sm.n_neurons == 48 and sm.n_heads == 4 and sm.head_dim == 8
    clean = random_ids(7, seed=4)
    corrupted = [*clean[:2], 9, *clean[3:]]
    kw = dict(kinds=("resid", "attn", "mlp", "head"), positions=[2, 6], head_positions=[5, 6])
    naive = sweep(model, clean, corrupted, 5, 6, engine="naive", **kw)
    if model_type == "gptj":  # its blocks take their cache as `layer_past`
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
