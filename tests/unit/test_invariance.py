"""The rules never change the forward pass, and every change to a model is undone."""

import tempfile

import pytest
import torch

from lrp_llm.checkpoints.loading import load_model
from lrp_llm.engines.causal_lm import relevance
from lrp_llm.mechanism.context import lrp_rules
from tests.support.models import (
    FAMILIES,
    cancel_after,
    logits_of,
    model_state,
    random_ids,
    save_tiny_checkpoint,
    tiny_causal_lm,
)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("rules", ["attnlrp", "cp-lrp"])
def test_forward_under_rules_gives_the_same_logits(family, rules):
    model = tiny_causal_lm(family)
    ids = random_ids(16)
    before = logits_of(model, ids)
    with lrp_rules(model, rules):
        during = logits_of(model, ids)
    after = logits_of(model, ids)
    assert (during - before).abs().max() <= 1e-5
    assert torch.equal(after, before)


@pytest.mark.parametrize("method", ["attnlrp", "cp-lrp", "grad-x-input", "integrated-gradients"])
def test_explained_logits_equal_the_plain_forward(method):
    model = tiny_causal_lm("llama")
    ids = random_ids(12)
    plain = logits_of(model, ids)[0]
    out = relevance(model, ids, [6, 11], method=method, steps=4)
    assert torch.allclose(out["logits"], torch.stack([plain[5, ids[6]], plain[10, ids[11]]]), atol=1e-5)


def test_model_is_restored_after_an_exception_inside():
    model = tiny_causal_lm("llama")
    model.train()
    ids = random_ids(10)
    reference = model_state(model)
    with torch.no_grad():
        expected = model.eval()(torch.tensor([ids])).logits
    model.train()
    with pytest.raises(RuntimeError, match="boom"):
        with lrp_rules(model, "attnlrp", checkpoint=True):
            assert model_state(model) != reference
            raise RuntimeError("boom")
    assert model_state(model) == reference
    model.eval()
    assert torch.equal(logits_of(model, ids), expected)


def test_relevance_restores_the_model_when_the_backward_pass_fails():
    model = tiny_causal_lm("llama")
    reference = model_state(model)
    from lrp_llm.errors import Cancelled

    with pytest.raises(Cancelled):  # stopped in the middle of the backward passes
        relevance(model, random_ids(10), [7, 8, 9], method="attnlrp", should_cancel=cancel_after(1), backward_batch=1)
    assert model_state(model) == reference


def test_a_second_model_is_untouched_while_the_first_is_explained():
    first, second = tiny_causal_lm("llama", seed=0), tiny_causal_lm("llama", seed=0)
    ids = random_ids(12)
    reference = logits_of(second, ids)
    clean_state = model_state(second)
    with lrp_rules(first, "attnlrp"):
        assert model_state(second) == clean_state
        embeds = second.get_input_embeddings()(torch.tensor([ids])).detach().requires_grad_(True)
        second(inputs_embeds=embeds).logits[0, -1, 3].backward()
        grad_plain = embeds.grad.clone()
        assert torch.equal(logits_of(second, ids), reference)
    # gradient of the untouched model is the plain gradient, not the rule's
    embeds2 = first.get_input_embeddings()(torch.tensor([ids])).detach().requires_grad_(True)
    with lrp_rules(first, "attnlrp"):
        first(inputs_embeds=embeds2).logits[0, -1, 3].backward()
    assert not torch.allclose(grad_plain, embeds2.grad)


def test_all_targets_in_one_pass_equal_separate_explanations():
    model = tiny_causal_lm("llama", dtype=torch.float64)
    ids = random_ids(14)
    together = relevance(model, ids, [10, 11, 12, 13], method="attnlrp")["relevance"]
    for i, p in enumerate([10, 11, 12, 13]):
        alone = relevance(model, ids[: p + 1], [p], method="attnlrp")["relevance"][0]
        assert torch.allclose(together[i, : p + 1], alone, atol=1e-10)
        assert torch.all(together[i, p:] == 0)


@pytest.mark.parametrize("method", ["attnlrp", "cp-lrp", "saliency", "integrated-gradients"])
def test_batched_backward_passes_equal_one_pass_per_target(method):
    model = tiny_causal_lm("qwen3", dtype=torch.float64)
    ids = random_ids(16)
    positions = list(range(5, 16))
    one = relevance(model, ids, positions, method=method, backward_batch=1, steps=4)["relevance"]
    for batch in (3, 8, 32):
        batched = relevance(model, ids, positions, method=method, backward_batch=batch, steps=4)["relevance"]
        assert torch.allclose(one, batched, atol=1e-12)


def test_checkpointing_gives_the_same_relevance():
    model = tiny_causal_lm("llama", dtype=torch.float64)
    ids = random_ids(20)
    plain = relevance(model, ids, [18, 19], method="attnlrp", checkpoint=False)["relevance"]
    ckpt = relevance(model, ids, [18, 19], method="attnlrp", checkpoint=True)["relevance"]
    assert torch.allclose(plain, ckpt, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_models_give_finite_relevance_close_to_float32(dtype):
    ids = random_ids(16)
    ref = relevance(tiny_causal_lm("llama"), ids, [15], method="attnlrp")["relevance"][0]
    half = relevance(tiny_causal_lm("llama", dtype=dtype), ids, [15], method="attnlrp")["relevance"][0]
    assert torch.isfinite(half).all()
    corr = torch.corrcoef(torch.stack([ref[:15], half[:15].float()]))[0, 1]
    assert corr > 0.9


def test_device_map_with_offloaded_layers_gives_the_same_relevance(tmp_path):
    save_tiny_checkpoint(tmp_path / "tiny")
    plain, _ = load_model(tmp_path / "tiny")
    device_map = {
        "model.embed_tokens": "cpu",
        "model.layers.0": "cpu",
        "model.layers.1": "disk",  # weights live on disk; accelerate hooks load them per forward
        "model.norm": "cpu",
        "model.rotary_emb": "cpu",
        "lm_head": "cpu",
    }
    offloaded, _ = load_model(tmp_path / "tiny", device_map=device_map, offload_folder=tempfile.mkdtemp())
    assert offloaded.model.layers[1].mlp.down_proj.weight.device.type == "meta"
    ids = random_ids(12)
    for method in ("attnlrp", "cp-lrp"):
        a = relevance(plain, ids, [10, 11], method=method)
        b = relevance(offloaded, ids, [10, 11], method=method)
        assert torch.allclose(a["relevance"], b["relevance"], atol=1e-6)
        assert torch.allclose(a["logits"], b["logits"], atol=1e-6)
