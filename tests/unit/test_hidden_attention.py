"""The hidden-attention baseline on Mamba: Ali et al.'s alpha, checked against the scan written as a matrix."""

from __future__ import annotations

import pytest
import torch

from lrp_llm.archs.mamba import mixers, scan_inputs
from lrp_llm.engines.causal_lm import relevance
from lrp_llm.errors import Cancelled, InputError
from lrp_llm.mechanism.ssm_scan import selective_scan
from lrp_llm.methods import methods_for
from tests.support.models import cancel_after, logits_of, model_state, random_ids, tiny_causal_lm
from tests.support.tiny_mamba import MAMBA_FAMILIES, scan_matrix, tiny_mamba


def _captured_scans(model, ids):
    inputs = []
    handles = [m.register_forward_pre_hook(lambda _m, a: inputs.append(a[0].detach())) for m in mixers(model)]
    try:
        logits_of(model, ids)
    finally:
        for h in handles:
            h.remove()
    with torch.no_grad():
        return [scan_inputs(m, x) for m, x in zip(mixers(model), inputs)]


@pytest.mark.parametrize("family", MAMBA_FAMILIES)
def test_rows_are_the_unrolled_scan_averaged_over_channels_and_layers(family):
    model = tiny_mamba(family, dtype=torch.float64, layers=3)
    ids = random_ids(17)
    positions = [9, 16]
    out = relevance(model, ids, positions, method="hidden-attention")
    expected = torch.zeros(len(positions), len(ids), dtype=torch.float64)
    for s in _captured_scans(model, ids):
        M = scan_matrix(s["dt"].double(), s["A"].double(), s["B"].double(), s["C"].double())  # (1, E, t, s)
        # the matrix really is the layer's scan: y = M u
        y = torch.einsum("bets,bse->bte", M, s["u"].double())
        assert torch.allclose(y, selective_scan(s["u"], s["dt"], s["A"], s["B"], s["C"]).double(), atol=1e-9)
        for i, p in enumerate(positions):
            row = M[0, :, p - 1, :p].abs().mean(0)
            expected[i, :p] += row / row.sum()
    expected /= model.config.num_hidden_layers
    assert torch.allclose(out["relevance"], expected, atol=1e-12)
    assert torch.allclose(out["relevance"].sum(1), torch.ones(2, dtype=torch.float64))
    # the logits are those of the plain model
    plain = logits_of(model, ids)[0].double()
    assert torch.allclose(out["logits"], plain[[8, 15], [ids[9], ids[16]]], atol=1e-5)


def test_far_tokens_fade_with_a_strong_decay():
    model = tiny_mamba("mamba", dtype=torch.float64)
    with torch.no_grad():
        for m in mixers(model):
            m.A_log.fill_(4.0)  # A = -e^4: the state forgets within a few steps
    rel = relevance(model, random_ids(30), [29], method="hidden-attention")["relevance"][0]
    assert rel[:10].sum() < 1e-6 * rel[20:29].sum()


def test_offered_on_mamba_only():
    assert "hidden-attention" in methods_for(tiny_mamba("mamba"))
    assert "hidden-attention" in methods_for(tiny_mamba("mamba2"))
    llama = tiny_causal_lm("llama")
    assert "hidden-attention" not in methods_for(llama)
    with pytest.raises(InputError, match="not available for llama"):
        relevance(llama, random_ids(12), [11], method="hidden-attention")


def test_restored_after_use_and_after_cancel():
    model = tiny_mamba("mamba2")
    reference = model_state(model)
    relevance(model, random_ids(12), [11], method="hidden-attention")
    assert model_state(model) == reference
    with pytest.raises(Cancelled):
        relevance(model, random_ids(12), [9, 10, 11], method="hidden-attention", should_cancel=cancel_after(2))
    assert model_state(model) == reference
