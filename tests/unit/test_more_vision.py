"""DeiT, DINOv2, SigLIP and CLIP image classifiers: CP-LRP conservation of the class score on bias-free
float64 copies, the new activations' identity rule by hand, refusals, and an explanation end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lrp_llm.engines.vision import explain_image, image_relevance
from lrp_llm.errors import UnsupportedModelError
from lrp_llm.mechanism.context import lrp_rules
from tests.support.tiny_t5_vit import random_pixels
from tests.support.tiny_towers import TOWER_TYPES, tiny_tower


def _no_patch_left(model):
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
        assert "forward" not in m.__dict__


@pytest.mark.parametrize("model_type", TOWER_TYPES)
def test_cp_lrp_conserves_the_class_score_on_a_bias_free_copy(model_type):
    model = tiny_tower(model_type, dtype=torch.float64, bias_free=True, zero_constants=True)
    x = random_pixels(dtype=torch.float64)
    for target in range(3):
        out = image_relevance(model, x, target, method="cp-lrp")
        assert float(out["pixels"].sum()) / out["logit"] == pytest.approx(1.0, abs=1e-4), target
    _no_patch_left(model)


@pytest.mark.parametrize("model_type", TOWER_TYPES)
def test_attnlrp_changes_the_gradient_and_restores_after_an_exception(model_type):
    model = tiny_tower(model_type, dtype=torch.float64)
    x = random_pixels(dtype=torch.float64)
    ref = model(pixel_values=x).logits
    attn = image_relevance(model, x, 1, method="attnlrp")["pixels"]
    plain = image_relevance(model, x, 1, method="grad-x-input")["pixels"]
    assert (attn - plain).abs().max() > 1e-3 * float(plain.abs().max())
    with pytest.raises(RuntimeError, match="boom"):
        with lrp_rules(model, "attnlrp"):
            raise RuntimeError("boom")
    _no_patch_left(model)
    assert torch.equal(model(pixel_values=x).logits, ref)


@pytest.mark.parametrize(
    "model_type,formula",
    [
        ("clip", lambda h: h * torch.sigmoid(1.702 * h)),  # QuickGELU
        ("siglip", lambda h: torch.nn.functional.gelu(h, approximate="tanh")),
        ("dinov2", torch.nn.functional.gelu),
    ],
)
@pytest.mark.parametrize("rules", ["attnlrp", "cp-lrp"])
def test_mlp_activation_gets_the_identity_rule(model_type, formula, rules):
    model = tiny_tower(model_type, dtype=torch.float64)
    act = next(
        m
        for name, m in model.named_modules()
        if name.endswith("layers.0.mlp.activation_fn") or name.endswith("layer.0.mlp.activation_fn")
    )
    h = torch.randn(4, 48, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    with lrp_rules(model, rules):
        hr = h.clone().requires_grad_(True)
        out = act(hr)
        (grad,) = torch.autograd.grad(out.sum(), hr)
    torch.testing.assert_close(out, formula(h), atol=1e-12, rtol=0)
    torch.testing.assert_close(grad, formula(h) / h, atol=1e-10, rtol=0)


def test_dinov2_layer_scale_passes_relevance_unchanged():
    """Layer scale is a constant per-channel factor: under the rules its gradient is lambda times the incoming one."""
    model = tiny_tower("dinov2", dtype=torch.float64)
    scale = model.dinov2.encoder.layer[0].layer_scale1
    h = torch.randn(3, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    c = torch.randn(3, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(10))
    with lrp_rules(model, "attnlrp"):
        hr = h.clone().requires_grad_(True)
        out = scale(hr)
        (grad,) = torch.autograd.grad(out, hr, c)
    torch.testing.assert_close(out, h * scale.lambda1)
    torch.testing.assert_close((hr * grad).sum(), (out * c).sum())  # relevance in = relevance out


def test_dinov2_swiglu_mlp_is_refused_naming_it():
    model = tiny_tower("dinov2", use_swiglu_ffn=True)
    with pytest.raises(UnsupportedModelError, match=r"SwiGLU MLP \(use_swiglu_ffn") as info:
        with lrp_rules(model, "attnlrp"):
            pass
    assert "\n" not in str(info.value)
    _no_patch_left(model)


@pytest.mark.parametrize("model_type", ["clip", "siglip"])
def test_explain_image_reads_the_tower_config(model_type):
    """CLIP's and SigLIP's classifiers keep image size and patch size in ``vision_config``."""
    model = tiny_tower(model_type)
    image = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    result = explain_image(model, None, image, method="cp-lrp")
    assert result.pixel_relevance.shape == (16, 16) and result.patch_relevance.shape == (4, 4)
    assert result.relevance_sum == pytest.approx(float(result.patch_relevance.sum()), rel=1e-4)
