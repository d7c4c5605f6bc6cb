"""AttnLRP and CP-LRP for T5 encoder-decoders (T5 v1.0, T5 v1.1 / Flan-T5, mT5).

A T5 block is RMS-style LayerNorm (no mean, no bias), attention with ``q``/``k``/``v``/``o``
(self-attention in both stacks, cross-attention in the decoder, keys and values from the
encoder output) and an MLP: ``wo(relu(wi(x)))`` in v1.0, ``wo(gelu(wi_0(x)) * wi_1(x))``
in v1.1. T5 has no bias anywhere; the relative position bias is a constant added to the
attention scores, so it needs no rule of its own (under AttnLRP it is part of what the
softmax's bias term absorbs, under CP-LRP the probabilities are constants anyway).

==================  ==============================  ==============================
place               AttnLRP (Achtibat et al. 2024)  CP-LRP (Ali et al. 2022)
==================  ==============================  ==============================
T5LayerNorm         1/rms detached                  1/rms detached
q, k                gradient x 1/4                  detached (no relevance via A)
v                   gradient x 1/2                  unchanged
act(wi(x))  (v1.0)  identity rule                   identity rule
act(wi_0(x)) (v1.1) identity rule, gradient x 1/2   detached (gate is a constant)
wi_1  (v1.1)        gradient x 1/2                  unchanged
==================  ==============================  ==============================

For ReLU the identity rule equals the plain gradient; it is installed anyway so that
v1.0-style checkpoints with other activations are covered. Modules are found by their
attributes, not class names, so mT5 (same layout, other class names) works as well.
"""

from __future__ import annotations

from torch import nn

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.llama import _detach_output, _identity_output, _scale_output
from lrp_llm.errors import UnsupportedModelError
from lrp_llm.mechanism.patch import ModelPatch
from lrp_llm.mechanism.primitives import rms_norm_detached


def _norm_forward(module: nn.Module):
    eps = module.variance_epsilon

    def make(_original):
        def forward(hidden_states):
            return rms_norm_detached(hidden_states, module.weight, eps)

        return forward

    return make


def t5_parts(model: nn.Module) -> dict[str, list[nn.Module]]:
    """The attention blocks, norms, plain MLPs and gated MLPs of a T5 model."""
    modules = list(model.modules())
    return {
        "attentions": [m for m in modules if all(hasattr(m, a) for a in ("q", "k", "v", "o", "n_heads"))],
        "norms": [m for m in modules if type(m).__name__.endswith("LayerNorm") and hasattr(m, "variance_epsilon")],
        "mlps": [m for m in modules if all(hasattr(m, a) for a in ("wi", "wo", "act"))],
        "gated_mlps": [m for m in modules if all(hasattr(m, a) for a in ("wi_0", "wi_1", "wo", "act"))],
    }


def apply_t5_rules(patch: ModelPatch, model: nn.Module, rules: str) -> None:
    if rules not in ("attnlrp", "cp-lrp"):
        raise ValueError(f"unknown rule set {rules!r}")
    config = model.config
    n_enc = config.num_layers
    n_dec = config.num_decoder_layers if getattr(config, "num_decoder_layers", None) is not None else n_enc
    parts = t5_parts(model)
    n_mlps = len(parts["mlps"]) + len(parts["gated_mlps"])
    # encoder: self-attention + MLP per block; decoder: self + cross-attention + MLP; one final norm each
    want = (n_enc + 2 * n_dec, 2 * n_enc + 3 * n_dec + 2, n_enc + n_dec)
    found = (len(parts["attentions"]), len(parts["norms"]), n_mlps)
    if found != want:
        raise UnsupportedModelError(
            f"{type(model).__name__}: expected {want[0]} attention blocks, {want[1]} norms and {want[2]} MLPs, "
            f"found {found[0]}, {found[1]} and {found[2]}; this checkpoint's layout is not supported"
        )
    for norm in parts["norms"]:
        patch.override_forward(norm, _norm_forward(norm))
    for attn in parts["attentions"]:
        if rules == "attnlrp":
            patch.hook_output(attn.q, _scale_output(0.25))
            patch.hook_output(attn.k, _scale_output(0.25))
            patch.hook_output(attn.v, _scale_output(0.5))
        else:
            patch.hook_output(attn.q, _detach_output)
            patch.hook_output(attn.k, _detach_output)
    seen: set[int] = set()  # one activation module may serve several MLPs
    for mlp in parts["mlps"]:
        if id(mlp.act) not in seen:
            seen.add(id(mlp.act))
            patch.hook_output(mlp.act, _identity_output(1.0))
    for mlp in parts["gated_mlps"]:
        if id(mlp.act) not in seen:
            seen.add(id(mlp.act))
            patch.hook_output(mlp.act, _identity_output(0.5) if rules == "attnlrp" else _detach_output)
        if rules == "attnlrp":
            patch.hook_output(mlp.wi_1, _scale_output(0.5))


T5_FAMILY = register(
    ArchSpec(
        family="t5",
        model_types=("t5", "mt5"),
        kind="seq2seq",
        apply=apply_t5_rules,
    )
)
