"""Older causal LMs and BERT-style decoders: each refused type's one-line error names the part without a rule."""

from __future__ import annotations

import pytest
from torch import nn

from lrp_llm.archs import get_arch, supported_model_types
from lrp_llm.errors import UnsupportedModelError

# model type -> a word of the part its error must name
REFUSED_PARTS = {
    "big_bird": "BigBirdBlockSparseAttention",
    "roc_bert": "RoCBertEmbeddings",
    "xlm": "MultiHeadAttention",
    "cpmant": "inputs_embeds",
    "reformer": "LSHSelfAttention",
    "xlnet": "XLNetRelativeAttention",
    "prophetnet": "ProphetNetNgramSelfAttention",
}


def _with_config(model_type: str) -> nn.Module:
    """A module carrying the type's default transformers config: what ``get_arch`` reads of a model."""
    from transformers import AutoConfig

    module = nn.Module()
    module.config = AutoConfig.for_model(model_type)
    return module


@pytest.mark.parametrize("model_type", sorted(REFUSED_PARTS))
def test_refused_type_names_its_part(model_type):
    assert model_type not in supported_model_types()
    with pytest.raises(UnsupportedModelError) as err:
        get_arch(_with_config(model_type))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"unsupported architecture '{model_type}' (")
    assert REFUSED_PARTS[model_type] in message.split("; supported:")[0]


def test_gpt_sw3_is_the_gpt2_layout():
    from lrp_llm.archs import arch_for_model_type

    assert arch_for_model_type("gpt-sw3").family == "gpt2"


def test_bert_decoder_layer_norm_is_the_modules_value_with_sigma_held():
    """Value: torch's own LayerNorm, bit for bit. Gradient: ``inv * (w g - mean(w g))`` with ``inv = 1/sigma``
    a constant (the rule), written out by hand in float64."""
    import torch

    from lrp_llm.archs.bert_decoders import _layer_norm_exact_value
    from lrp_llm.mechanism.patch import ModelPatch

    torch.manual_seed(0)
    norm = nn.LayerNorm(8, eps=1e-5).double()
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    g = torch.randn(3, 8, dtype=torch.float64)
    want = torch.nn.functional.layer_norm(x, (8,), norm.weight, norm.bias, 1e-5)
    with ModelPatch(norm) as patch:
        patch.override_forward(norm, _layer_norm_exact_value(norm))
        out = norm(x)
        (out * g).sum().backward()
    assert torch.equal(out.detach(), want.detach())
    xd = x.detach()
    inv = 1 / torch.sqrt(xd.var(-1, unbiased=False, keepdim=True) + 1e-5)
    wg = norm.weight.detach() * g
    torch.testing.assert_close(x.grad, inv * (wg - wg.mean(-1, keepdim=True)), atol=1e-12, rtol=0)
    assert "forward" not in norm.__dict__  # restored


@pytest.mark.parametrize("model_type", ["roberta-prelayernorm", "xlm-roberta-xl"])
def test_roberta_lm_head_gelu_gets_the_identity_rule(model_type):
    """``decoder(LN(gelu(dense(f))))`` under the rules: the gradient of ``f`` by hand in float64, with GELU's
    derivative replaced by ``gelu(x) / x`` and the LayerNorm's 1/sigma a constant."""
    import torch

    from lrp_llm.mechanism.context import lrp_rules
    from tests.support.conformance import tiny_for

    torch.manual_seed(0)
    model, _ = tiny_for(model_type, dtype=torch.float64)
    head = model.lm_head
    f = torch.randn(2, model.config.hidden_size, dtype=torch.float64, requires_grad=True)
    k = 5
    with lrp_rules(model, "cp-lrp"):
        head(f)[:, k].sum().backward()
    with torch.no_grad():
        pre = head.dense(f)
        a = torch.nn.functional.gelu(pre)
        norm = head.layer_norm
        inv = 1 / torch.sqrt(a.var(-1, unbiased=False, keepdim=True) + norm.eps)
        wg = norm.weight * head.decoder.weight[k]
        g_a = inv * (wg - wg.mean(-1, keepdim=True))
        g_pre = g_a * a / pre
        want = g_pre @ head.dense.weight
    torch.testing.assert_close(f.grad, want, atol=1e-12, rtol=0)


@pytest.mark.parametrize("model_type", ["ctrl", "git"])
@pytest.mark.parametrize("rules", ["attnlrp", "cp-lrp", "relp"])
def test_rules_leave_the_callers_embeddings_unchanged(model_type, rules):
    """CTRL scales ``inputs_embeds`` in place, GIT adds its position embeddings to them in place; under the rules
    the model gets a copy and the gradient still arrives."""
    import torch

    from lrp_llm.mechanism.context import lrp_rules
    from tests.support.conformance import tiny_for

    torch.manual_seed(0)
    model, inputs = tiny_for(model_type, dtype=torch.float64)
    with torch.no_grad():
        want = model(**inputs).logits
        embeds = model.get_input_embeddings()(inputs["input_ids"])
    before = embeds.clone()
    embeds.requires_grad_(True)
    with lrp_rules(model, rules):
        logits = model(inputs_embeds=embeds).logits
        logits[0, -1, 3].backward()
    assert torch.equal(embeds.detach(), before)
    torch.testing.assert_close(logits.detach(), want, atol=1e-12, rtol=0)
    assert embeds.grad is not None and embeds.grad.abs().sum() > 0


@pytest.mark.parametrize("model_type", ["ctrl", "git"])
def test_plain_gradient_methods_run_on_a_leaf(model_type):
    import torch

    from lrp_llm.engines.causal_lm import relevance
    from tests.support.conformance import tiny_for

    torch.manual_seed(0)
    model, _ = tiny_for(model_type)
    out = relevance(model, [3, 7, 1, 9, 4, 2], [4, 5], method="grad-x-input")
    assert torch.isfinite(torch.as_tensor(out["relevance"])).all()
    assert torch.as_tensor(out["relevance"]).abs().sum() > 0


def test_xmod_adapters_get_the_identity_rule():
    """Each language adapter ``dense2(act(dense1(x)))``: by hand in float64, the input's gradient with the
    activation's derivative replaced by ``act(p) / p``."""
    import torch

    from lrp_llm.mechanism.context import lrp_rules
    from tests.support.conformance import tiny_for

    torch.manual_seed(0)
    model, _ = tiny_for("xmod", dtype=torch.float64)
    adapters = model.roberta.encoder.layer[0].output.adapter_modules
    assert list(adapters) == ["en_XX", "de_DE"]
    for adapter in adapters.values():
        x = torch.randn(3, model.config.hidden_size, dtype=torch.float64, requires_grad=True)
        g = torch.randn(3, model.config.hidden_size, dtype=torch.float64)
        with lrp_rules(model, "attnlrp"):
            (adapter(x) * g).sum().backward()
        with torch.no_grad():
            p = adapter.dense1(x)
            want = ((g @ adapter.dense2.weight) * adapter.adapter_act_fn(p) / p) @ adapter.dense1.weight
        torch.testing.assert_close(x.grad, want, atol=1e-12, rtol=0)


def test_xglm_runs_in_float64_with_the_float32_models_values():
    """transformers' XGLM attention raises in float64 (its clamp scalar overflows float32); under the rules and
    for the plain-gradient methods the family's attention forward runs it, with the float32 model's logits."""
    import torch

    from lrp_llm.engines.causal_lm import relevance
    from lrp_llm.mechanism.context import lrp_rules
    from tests.support.conformance import tiny_for

    torch.manual_seed(0)
    model, inputs = tiny_for("xglm")
    with torch.no_grad():
        want = model(**inputs).logits.double()
    model = model.double()
    with pytest.raises(RuntimeError, match="overflow"):
        model(**inputs)  # the unmodified forward: what the family works around
    for rules in ("attnlrp", "cp-lrp", "relp"):
        with lrp_rules(model, rules), torch.no_grad():
            torch.testing.assert_close(model(**inputs).logits, want, atol=1e-5, rtol=1e-5)
    out = relevance(model, [3, 7, 1, 9, 4, 2], [4, 5], method="grad-x-input")
    assert torch.isfinite(torch.as_tensor(out["relevance"])).all()


def test_xglm_attention_forward_continues_a_cache_like_the_original():
    """The family's attention forward appends to the key/value cache as transformers does: a prompt and then one
    more token give the full sequence's last logits (float64, where the original cannot run)."""
    import torch

    from lrp_llm.mechanism.context import lrp_rules
    from tests.support.conformance import tiny_for

    torch.manual_seed(0)
    model, inputs = tiny_for("xglm", dtype=torch.float64)
    ids = inputs["input_ids"]
    with lrp_rules(model, None), torch.no_grad():
        full = model(input_ids=ids, use_cache=False).logits[:, -1]
        first = model(input_ids=ids[:, :-1], use_cache=True)
        step = model(input_ids=ids[:, -1:], past_key_values=first.past_key_values, use_cache=True).logits[:, -1]
    torch.testing.assert_close(step, full, atol=1e-12, rtol=0)
