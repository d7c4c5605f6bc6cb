"""AttnLRP and CP-LRP for ViT image classifiers: invariance, conservation, per-step checks, results."""

import json

import numpy as np
import pytest
import torch

from lrp_llm.engines.vision import explain_image, image_relevance, patch_sums
from lrp_llm.errors import InputError
from lrp_llm.mechanism.context import lrp_rules
from lrp_llm.results.image import ImageAttribution
from tests.support.tiny_t5_vit import Tap, random_pixels, tiny_vit


def _no_patch_left(model):
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
        assert "forward" not in m.__dict__


@pytest.mark.parametrize("rules", ["attnlrp", "cp-lrp"])
def test_forward_is_unchanged_under_the_rules_and_after(rules):
    model = tiny_vit()
    x = random_pixels()
    ref = model(pixel_values=x).logits
    with lrp_rules(model, rules):
        got = model(pixel_values=x).logits
    assert (got - ref).abs().max() <= 1e-5
    assert torch.equal(model(pixel_values=x).logits, ref)
    _no_patch_left(model)


def test_restored_after_an_exception_and_a_second_model_is_untouched():
    model, other = tiny_vit(), tiny_vit()
    x = random_pixels().requires_grad_(True)
    (plain,) = torch.autograd.grad(other(pixel_values=x).logits[0, 1], x)
    with pytest.raises(RuntimeError, match="boom"):
        with lrp_rules(model, "cp-lrp"):
            (during,) = torch.autograd.grad(other(pixel_values=x).logits[0, 1], x)
            raise RuntimeError("boom")
    assert torch.equal(plain, during)
    _no_patch_left(model)


def test_cp_lrp_conserves_the_logit_on_a_bias_free_vit():
    model = tiny_vit(dtype=torch.float64, bias_free=True, zero_cls_and_positions=True)
    x = random_pixels(dtype=torch.float64)
    for target in range(3):
        out = image_relevance(model, x, target, method="cp-lrp")
        assert float(out["pixels"].sum()) / out["logit"] == pytest.approx(1.0, abs=1e-4)


def test_cp_lrp_conserves_over_patch_cls_and_position_embeddings():
    """With CLS token and position embeddings (constants added to the patch embeddings), the
    embedding-layer relevance sums to the logit, and the pixels get the patch-embedding share."""
    model = tiny_vit(dtype=torch.float64, bias_free=True)
    x = random_pixels(dtype=torch.float64).requires_grad_(True)
    with lrp_rules(model, "cp-lrp"):
        tap = Tap()
        tap.output("embeddings", model.vit.embeddings)
        tap.output("patches", model.vit.embeddings.patch_embeddings)
        try:
            logit = model(pixel_values=x).logits[0, 2]
            logit.backward()
        finally:
            tap.remove()
    assert tap.rel("embeddings") == pytest.approx(float(logit.detach()), rel=1e-6)
    assert float((x * x.grad).detach().sum()) == pytest.approx(tap.rel("patches"), rel=1e-6)


def test_attnlrp_is_exact_per_step():
    model = tiny_vit(dtype=torch.float64, bias_free=True)
    layers = model.vit.layers
    with lrp_rules(model, "attnlrp"):
        tap = Tap()
        for i, layer in enumerate(layers):
            for name in ("layernorm_before", "layernorm_after", "mlp"):
                tap.input(f"{i}.{name}.in", getattr(layer, name))
                tap.output(f"{i}.{name}.out", getattr(layer, name))
            for proj in ("q_proj", "k_proj", "v_proj"):
                tap.input(f"{i}.{proj}", getattr(layer.attention, proj))
            tap.output(f"{i}.attn.out", layer.attention)
        try:
            x = random_pixels(dtype=torch.float64).requires_grad_(True)
            logit = model(pixel_values=x).logits[0, 0]
            logit.backward()
        finally:
            tap.remove()
    for i in range(len(layers)):
        for name in ("layernorm_before", "layernorm_after", "mlp"):
            assert tap.rel(f"{i}.{name}.in") == pytest.approx(tap.rel(f"{i}.{name}.out"), rel=1e-9, abs=1e-12)
        out = tap.rel(f"{i}.attn.out")
        assert abs(out) > 1e-6
        assert tap.rel(f"{i}.v_proj") == pytest.approx(0.5 * out, rel=1e-9, abs=1e-12)
        assert tap.rel(f"{i}.q_proj") == pytest.approx(tap.rel(f"{i}.k_proj"), rel=1e-9, abs=1e-12)
    ratio = float((x * x.grad).detach().sum()) / float(logit.detach())
    print(f"ViT AttnLRP overall conservation ratio (bias-free, with CLS/positions): {ratio:.3f}")
    assert np.isfinite(ratio)


def test_gelu_identity_rule_passes_relevance_through_the_mlp_activation():
    model = tiny_vit(dtype=torch.float64)
    mlp = model.vit.layers[0].mlp
    g = torch.Generator().manual_seed(5)
    h = torch.randn(6, 48, generator=g, dtype=torch.float64).requires_grad_(True)
    c = torch.randn(6, 48, generator=g, dtype=torch.float64)
    with lrp_rules(model, "cp-lrp"):
        y = mlp.activation_fn(h)
        (y * c).sum().backward()
    # hand-written identity rule: R_in = R_out element by element
    assert torch.allclose(h * h.grad, y.detach() * c, atol=1e-12)


def test_patch_sums_match_a_loop():
    r = np.arange(64, dtype=np.float64).reshape(8, 8)
    got = patch_sums(r, (4, 2))
    want = np.array([[r[i * 4 : i * 4 + 4, j * 2 : j * 2 + 2].sum() for j in range(4)] for i in range(2)])
    assert np.array_equal(got, want)


def test_explain_image_from_array_path_and_tensor(tmp_path):
    from PIL import Image

    model = tiny_vit()
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "x.png")
    a = explain_image(model, None, arr, method="cp-lrp")
    b = explain_image(model, None, tmp_path / "x.png", method="cp-lrp")
    assert a.pixel_relevance.shape == (16, 16) and a.patch_relevance.shape == (4, 4)
    assert np.allclose(a.pixel_relevance, b.pixel_relevance) and b.source == str(tmp_path / "x.png")
    assert np.array_equal(a.image, arr)  # the displayed image is what the model saw
    x = torch.from_numpy(((arr / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)[None].astype(np.float32))
    assert a.label_id == int(model(pixel_values=x).logits.argmax())  # default target: the predicted class
    assert a.top_labels[0][0] == a.label
    assert a.patch_relevance.sum() == pytest.approx(a.pixel_relevance.sum(), rel=1e-4)
    c = explain_image(model, None, arr, target="2", method="attnlrp")
    assert c.label_id == 2 and c.method == "attnlrp"
    with pytest.raises(InputError, match="out of range"):
        explain_image(model, None, arr, target=7)
    with pytest.raises(InputError, match="unknown label"):
        explain_image(model, None, arr, target="zebra")
    back = ImageAttribution.from_json(a.to_json())
    assert np.array_equal(back.image, a.image) and np.allclose(back.pixel_relevance, a.pixel_relevance)
    d = json.loads(a.to_json())
    assert {"label", "logit", "pixel_relevance", "patch_relevance", "image_png", "conservation"} <= set(d)


def test_default_method_is_the_family_default():
    from lrp_llm.archs import get_arch

    model = tiny_vit()
    a = explain_image(model, None, random_pixels())
    assert a.method == get_arch(model).default_method


@pytest.mark.parametrize("method", ["grad-x-input", "saliency", "integrated-gradients", "random"])
def test_baselines_run_on_vit(method):
    out = image_relevance(tiny_vit(), random_pixels(), 0, method=method, steps=4)
    assert out["pixels"].shape == (16, 16) and torch.isfinite(out["pixels"]).all()


@pytest.mark.parametrize("method", ["attnlrp", "cp-lrp", "grad-x-input", "saliency"])
def test_batched_relevance_equals_one_image_at_a_time(method):
    from lrp_llm.engines.vision import batch_image_relevance

    model = tiny_vit(dtype=torch.float64)
    x = torch.cat([random_pixels(seed=s, dtype=torch.float64) for s in range(3)])
    targets = [0, 2, 1]
    batch = batch_image_relevance(model, x, targets, method=method)
    for i, t in enumerate(targets):
        one = image_relevance(model, x[i : i + 1], t, method=method)["pixels"]
        assert torch.allclose(batch[i], one, atol=1e-10)
