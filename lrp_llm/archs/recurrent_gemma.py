"""RecurrentGemma (Griffin): blocks whose temporal mixer is an RG-LRU recurrent block or local attention,
each followed by a gated MLP; Gemma RMSNorms (``1 + weight``), scaled embeddings, soft-capped logits.

No published LRP rule covers the RG-LRU. These follow MambaLRP's recipe (hold the
input-dependent decays and gates constant so that the recurrence is linear in its input,
the uniform rule on products, the identity rule on activations):

========================  ==============================================================
part                      rule
========================  ==============================================================
RG-LRU                    ``h_t = a_t * h_{t-1} + sqrt(1 - a_t^2) * (i_t * x_t)``: the decay
                          ``a_t = sigmoid(Lambda)^(8 r_t)``, the input gate ``i_t`` and the
                          factor ``sqrt(1 - a_t^2)`` held constant (computed from the detached
                          input), under every rule set: ``h`` is then linear in ``x``
conv1d, linear_x/y/out    linear: unchanged
``h * gelu(y)`` product   the gated-MLP rule: uniform under AttnLRP and RelP (``h`` x 1/2,
                          GELU identity rule x 1/2), ``gelu(y)`` held constant under CP-LRP
attention, MLP, norms     the shared installers (:mod:`lrp_llm.archs.blocks`)
logit soft-cap            identity rule on ``cap * tanh(logits / cap)``
========================  ==============================================================

Under CP-LRP the whole model is, with the held factors, linear in the token embeddings
(times the constant embedding scale), so on a bias-free model the relevance sums to the
explained logit exactly. The soft-cap is applied by the model's own forward (it reads
``config.logits_soft_cap`` unconditionally, so the cap cannot be switched off as for
Gemma-2): the LM head's output gets the gradient factor that turns the tanh's derivative
into the identity rule's ``y / x`` (:func:`install_forward_softcap`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.blocks import GATE_RULE, detach_output, identity_output, install_transformer_rules, scale_output
from lrp_llm.archs.description import AttentionParts, BlockPaths, GatedMLPParts, NormParts, TransformerParts
from lrp_llm.errors import UnsupportedModelError
from lrp_llm.mechanism.patch import ModelPatch, output_tensor
from lrp_llm.mechanism.primitives import identity_rule

RECURRENT = "linear_attention"
_RG_LRU_ATTRS = ("recurrent_param", "input_gate_weight", "input_gate_bias", "recurrent_gate_weight", "_rnn_scan")
_BLOCK_ATTRS = ("linear_x", "linear_y", "linear_out", "conv_1d", "rg_lru", "act_fn")


def _expected(config: Any) -> dict[str, int]:
    n = config.num_hidden_layers
    recurrent = sum(kind == RECURRENT for kind in config.layers_block_type)
    # per block: the temporal and the channel pre-norm; the final norm
    return {"attention": n - recurrent, "mlp": n, "norm": 2 * n + 1}


PARTS = TransformerParts(
    attention=AttentionParts(q="q_proj", k="k_proj", v="v_proj"),
    mlps=(GatedMLPParts(gate="gate_proj", up="up_proj", down="down_proj", act="act_fn"),),
    norm=NormParts(kind="rms", class_suffix="RMSNorm"),
    expected=_expected,
)


def recurrent_blocks(model: nn.Module) -> list[nn.Module]:
    """The RG-LRU recurrent blocks of ``model`` (module order), or a one-line error when the count or layout differs."""
    want = sum(kind == RECURRENT for kind in model.config.layers_block_type)
    found = [m for m in model.modules() if all(isinstance(getattr(m, a, None), nn.Module) for a in _BLOCK_ATTRS)]
    if len(found) != want or not all(all(hasattr(b.rg_lru, a) for a in _RG_LRU_ATTRS) for b in found):
        raise UnsupportedModelError(
            f"{type(model).__name__}: expected {want} RG-LRU recurrent blocks, found {len(found)}; "
            "this checkpoint's layout is not supported"
        )
    return found


def rg_lru_factors(rg_lru: nn.Module, activations: torch.Tensor, position_ids: torch.Tensor):
    """The RG-LRU's input-dependent factors: decay ``a``, input gate ``i``, normaliser ``sqrt(1 - a^2)`` and ``reset``.

    activations (batch, L, lru_width); position_ids (batch, L). Returns ``a``, ``i``,
    ``multiplier`` (batch, L, lru_width) and ``reset`` (batch, L, 1): at position 0 the
    state restarts (``a`` is zeroed by the scan) and the input is not normalised.
    The same operations, in the same order, as transformers' ``RecurrentGemmaRglru.forward``.
    """
    batch, length, width = activations.shape
    heads, block = rg_lru.input_gate_weight.shape[:2]
    reset = position_ids[:, :, None] == 0
    per_head = activations.reshape(batch * length, heads, block).permute(1, 0, 2)
    gate = torch.baddbmm(rg_lru.input_gate_bias[:, None, :], per_head, rg_lru.input_gate_weight)
    input_gate = torch.sigmoid(gate.transpose(0, 1).reshape(batch, length, width))
    gate = torch.baddbmm(rg_lru.recurrent_gate_bias[:, None, :], per_head, rg_lru.recurrent_gate_weight)
    recurrent_gate = torch.sigmoid(gate.transpose(0, 1).reshape(batch, length, width))
    log_a = -8.0 * recurrent_gate * nn.functional.softplus(rg_lru.recurrent_param)
    a = torch.exp(log_a)
    multiplier = torch.sqrt(1 - torch.exp(2 * log_a))
    multiplier = reset + ~reset * multiplier
    return a, input_gate, multiplier, reset


def _rg_lru_forward(rg_lru: nn.Module):
    """The RG-LRU with its factors held constant: the scan (transformers' own) is linear in ``activations``."""

    def make(_original):
        def forward(activations: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
            a, input_gate, multiplier, reset = (
                t.detach() for t in rg_lru_factors(rg_lru, activations.detach(), position_ids)
            )
            normalized = activations * input_gate * multiplier.type(activations.dtype)
            hidden, state = rg_lru._rnn_scan(
                hidden_states=normalized, recurrent_gate=a, reset=reset, recurrent_states=rg_lru.recurrent_states
            )
            rg_lru.recurrent_states = state
            return hidden

        return forward

    return make


def install_recurrent_blocks(patch: ModelPatch, blocks: list[nn.Module], rules: str) -> None:
    """The RG-LRU rule (factors held) and the ``h * gelu(y)`` product's rule on every recurrent block."""
    for block in blocks:
        patch.override_forward(block.rg_lru, _rg_lru_forward(block.rg_lru))
        if GATE_RULE[rules] == "uniform":
            patch.hook_output(block.rg_lru, scale_output(0.5))
            patch.hook_output(block.act_fn, identity_output(0.5))
        else:
            patch.hook_output(block.act_fn, detach_output)


def softcap_gradient_factor(logits: torch.Tensor, cap: float) -> torch.Tensor:
    """The factor that turns the derivative of ``cap * tanh(x / cap)`` into the identity rule's ``y / x``.

    ``(y / x) / (1 - tanh(t)^2) = sinh(2t) / (2t)`` with ``t = x / cap`` (1 at ``x = 0``),
    computed in float64 and bounded by the largest value of ``logits``' dtype (where the
    tanh's own derivative has rounded to 0 in that dtype, the product stays 0, not NaN).
    """
    t = logits.detach().double() / cap
    safe = torch.where(t == 0, torch.ones_like(t), 2 * t)
    factor = torch.where(t == 0, torch.ones_like(t), torch.sinh(2 * t.clamp(-300.0, 300.0)) / safe)
    return factor.clamp(max=torch.finfo(logits.dtype).max).to(logits.dtype)


def install_forward_softcap(patch: ModelPatch, model: nn.Module, config_attr: str) -> None:
    """The identity rule on a logit soft-cap that the model's forward applies after the LM head."""
    cap = getattr(model.config, config_attr, None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if cap is None or head is None:
        return

    def hook(_module, _args, output):
        logits = output_tensor(output)
        return identity_rule(logits, logits, 1.0, softcap_gradient_factor(logits, float(cap)))

    patch.hook_output(head, hook)


def install_recurrent_gemma_rules(patch: ModelPatch, model: nn.Module, rules: str) -> None:
    """AttnLRP, CP-LRP or RelP on RecurrentGemma (see the module docstring)."""
    blocks = recurrent_blocks(model)
    install_transformer_rules(patch, model, PARTS, rules)
    install_recurrent_blocks(patch, blocks, rules)
    install_forward_softcap(patch, model, "logits_soft_cap")


RECURRENT_GEMMA_FAMILY = register(
    ArchSpec(
        family="recurrent_gemma",
        model_types=("recurrent_gemma",),
        kind="causal-lm",
        install=install_recurrent_gemma_rules,
        patching_rules=("relp",),
        # the temporal block (RG-LRU block or local attention) is each block's token mixer
        blocks=BlockPaths(
            layers="layers",
            mixer="temporal_block",
            mlp="mlp_block",
            neurons="mlp_block.down_proj",
            final_norm="final_norm",
        ),
    )
)
