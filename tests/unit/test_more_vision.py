"""DeiT, DINOv2, SigLIP and CLIP image classifiers: CP-LRP conservation of the class score on bias-free
float64 copies, the new activations' identity rule by hand, refusals, and an explanation end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lrp_llm.analyses.image_bilrp import explain_image_similarity, image_patch_map
from lrp_llm.engines.vision import explain_image, image_relevance
from lrp_llm.errors import UnsupportedModelError
from lrp_llm.mechanism.context import lrp_rules
from tests.support.tiny_t5_vit import random_pixels
from tests.support.tiny_towers import BARE_TOWER_TYPES, TOWER_TYPES, tiny_tower


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


# ------------------------------------------------------------------ bare towers: image BiLRP
@pytest.mark.parametrize("model_type", BARE_TOWER_TYPES)
def test_image_bilrp_conserves_on_a_bias_free_tower(model_type):
    model = tiny_tower(model_type, dtype=torch.float64, bias_free=True, zero_constants=True)
    a, b = random_pixels(1, dtype=torch.float64), random_pixels(2, dtype=torch.float64)
    with torch.no_grad():
        phi_a = model(pixel_values=a).pooler_output[0]
    pm = image_patch_map(model, a, chunk=7)  # chunks of dimensions that do not divide 32
    assert pm.grid == (4, 4) and pm.contributions.shape == (32, 16)
    np.testing.assert_allclose(pm.embedding, phi_a.numpy(), atol=1e-12, rtol=0)
    np.testing.assert_allclose(pm.contributions.sum(1), pm.embedding, atol=1e-9, rtol=0)  # each dimension
    e = explain_image_similarity(model, a, b)
    assert e.interactions.shape == (16, 16)
    assert e.interaction_sum == pytest.approx(e.similarity, rel=1e-9)  # patch pairs sum to the cosine
    dot = explain_image_similarity(model, a, b, mode="dot")
    assert dot.interaction_sum == pytest.approx(dot.dot, rel=1e-9)
    _no_patch_left(model)


@pytest.mark.parametrize("rules", ["attnlrp", "cp-lrp"])
def test_siglip_pooling_head_attention_matches_the_hand_formula(rules):
    """The probe (query) is a constant: K gets the scores' whole relevance (times 1/2 for A V under AttnLRP)."""
    model = tiny_tower("siglip_vision_model", dtype=torch.float64)
    mha = model.head.attention
    g = torch.Generator().manual_seed(11)
    h = torch.randn(1, 7, 32, dtype=torch.float64, generator=g)
    cot = torch.randn(1, 1, 32, dtype=torch.float64, generator=g)
    probe = model.head.probe
    with lrp_rules(model, rules):
        hr = h.clone().requires_grad_(True)
        out = mha(probe, hr, hr)[0]
        (grad,) = torch.autograd.grad(out, hr, cot)
    with torch.no_grad():
        plain = mha(probe, h, h)[0]
    torch.testing.assert_close(out, plain, atol=1e-12, rtol=0)
    wq, wk, wv = mha.in_proj_weight.detach().chunk(3)
    bq, bk, bv = mha.in_proj_bias.detach().chunk(3)
    heads, dh = mha.num_heads, 32 // mha.num_heads
    split = lambda t: t.reshape(-1, heads, dh).transpose(0, 1)  # noqa: E731  (heads, rows, dh)
    q, k, v = split(probe[0] @ wq.T + bq), split(h[0] @ wk.T + bk), split(h[0] @ wv.T + bv)
    a = torch.softmax(q @ k.transpose(1, 2) / dh**0.5, -1)  # (heads, 1, 7)
    c = split(cot[0] @ mha.out_proj.weight.detach())  # gradient at the heads' outputs
    if rules == "cp-lrp":
        want = (a.transpose(1, 2) @ c).transpose(0, 1).reshape(7, 32) @ wv
    else:
        dv = 0.5 * a.transpose(1, 2) @ c
        da = 0.5 * c @ v.transpose(1, 2)
        ds = a * (da - (da * a).sum(-1, keepdim=True)) / dh**0.5
        dk = ds.transpose(1, 2) @ q  # the probe is constant: no half for the product q k^T
        merge = lambda t: t.transpose(0, 1).reshape(7, 32)  # noqa: E731
        want = merge(dk) @ wk + merge(dv) @ wv
    torch.testing.assert_close(grad[0], want, atol=1e-12, rtol=0)


def test_a_saved_clip_tower_folder_loads_and_explains_a_pair(tmp_path):
    from lrp_llm.checkpoints.loading import load_model
    from lrp_llm.engines.explain import text_kind
    from lrp_llm.errors import InputError

    tiny_tower("clip_vision_model").save_pretrained(str(tmp_path / "tower"))
    model, processor = load_model(tmp_path / "tower")
    assert type(model).__name__ == "CLIPVisionModel"
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (20, 24, 3), dtype=np.uint8) for _ in range(2)]
    e = explain_image_similarity(model, *images, processor=processor)
    assert e.interactions.shape == (16, 16) and np.isfinite(e.interactions).all()
    with pytest.raises(InputError, match="vision tower .*explain_image_similarity"):
        text_kind(model)
    with pytest.raises(InputError, match="vision towers"):
        image_patch_map(tiny_tower("deit"), random_pixels())


def test_text_similarity_refuses_an_image_tower_in_one_line():
    from lrp_llm.analyses.bilrp import SimilarityExplainer
    from lrp_llm.errors import InputError

    with pytest.raises(InputError, match="image model; text similarity needs a text embedding model") as info:
        SimilarityExplainer(tiny_tower("siglip_vision_model"), None)
    assert "\n" not in str(info.value)
