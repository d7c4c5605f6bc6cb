"""MiniMax-01 / MiniMax-Text (``minimax``): lightning-attention blocks (linear attention with constant
per-head decays) beside softmax-attention blocks, each followed by routed experts.

Lightning attention, per head: ``[q | k | v] = silu(qkv_proj(x))``, ``o_i = sum_{j <= i} exp(-s (i - j))
(q_i . k_j) v_j`` with a constant slope ``s`` per head and layer (computed block-wise with a carried
``K^T V`` state: the same sum), then ``out_proj(sigmoid(output_gate(x)) * rms_norm(o))``. The rule follows
the gated DeltaNet's (:mod:`lrp_llm.archs.gated_deltanet`), derived the way MambaLRP was:

==============================  ============================  ==================  ====================
place                           AttnLRP                       CP-LRP              RelP
==============================  ============================  ==================  ====================
silu on q, k, v                 identity rule                 identity rule       identity rule
decays exp(-s (i - j))          constants (not input-dependent)
keys                            held                          held                held
o = sum (q . k) v               uniform: q x 1/2, v x 1/2     q held              q held
RMSNorm of o                    1/rms held                    1/rms held          1/rms held
sigmoid(gate) * norm(o)         uniform: gate x 1/2, o x 1/2  gate held           uniform
==============================  ============================  ==================  ====================

(RelP's column is the rule set patching would install; the family offers no patching sites yet.)

Conservation: with q, k and the gate held, the block is linear in v and the bias-free model conserves
under CP-LRP. The rules are installed without copying the kernel: the activation module's forward
applies the identity rule and hands q, k, v on with their factors (it sees the whole ``qkv_proj``
output, [q | k | v] per head), the gate projection's output is held or halved; the module's own
block-wise arithmetic runs unchanged. The softmax-attention blocks take the shared attention rules,
the experts (transformers' fused layout) the experts' rules; the residual scale factors are constants.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.blocks import ATTENTION_RULE, GATE_RULE, detach_output, install_transformer_rules, scale_output
from lrp_llm.archs.description import AttentionParts, BlockPaths, MoEParts, NormParts, TransformerParts
from lrp_llm.errors import UnsupportedModelError
from lrp_llm.mechanism.patch import ModelPatch
from lrp_llm.mechanism.primitives import identity_rule, scale_grad


def is_lightning(module: nn.Module) -> bool:
    """A lightning-attention module of the layout above (by its parts, not its class name)."""
    return all(hasattr(module, a) for a in ("qkv_proj", "out_proj", "output_gate", "act_fn", "slope_rate", "norm"))


def lightning_factors(rules: str) -> tuple[float | None, float | None]:
    """(q's factor, v's factor) on ``o = sum (q . k) v`` times the output gate's product; None: held."""
    o_factor = 0.5 if GATE_RULE[rules] == "uniform" else 1.0
    if ATTENTION_RULE[rules] == "uniform":
        return 0.5 * o_factor, 0.5 * o_factor
    return None, o_factor


def lightning_activation(module: nn.Module, rules: str):
    """The make-function for the activation's forward: silu by the identity rule, then q, k, v (per head
    [q | k | v] of ``head_dim`` each) with their factors: (..., 3 * heads * head_dim) -> the same."""
    q_factor, v_factor = lightning_factors(rules)
    heads, dim = module.num_attention_heads, module.head_dim

    def make(original):
        def forward(pre):
            out = identity_rule(pre, original(pre))
            q, k, v = out.view(*out.shape[:-1], heads, 3, dim).unbind(dim=-2)
            q = q.detach() if q_factor is None else scale_grad(q, q_factor)
            v = scale_grad(v, v_factor) if v_factor != 1.0 else v
            return torch.stack((q, k.detach(), v), dim=-2).reshape(out.shape)

        return forward

    return make


def install_lightning(patch: ModelPatch, modules: list[nn.Module], rules: str) -> None:
    for module in modules:
        patch.override_forward(module.act_fn, lightning_activation(module, rules))
        hook = detach_output if GATE_RULE[rules] == "detach" else scale_output(0.5)
        patch.hook_output(module.output_gate, hook)


def _kinds(config: Any) -> list[str]:
    return list(config.layer_types)


def _expected(config: Any) -> dict[str, int]:
    attention = sum(k == "full_attention" for k in _kinds(config))
    # two per block, the final one, and the lightning blocks' norm of o
    return {"attention": attention, "norm": 2 * config.num_hidden_layers + 1 + len(_kinds(config)) - attention}


PARTS = TransformerParts(
    attention=AttentionParts(q="q_proj", k="k_proj", v="v_proj"),
    mlps=(),
    norm=NormParts(kind="rms", class_suffix="RMSNorm"),
    expected=_expected,
    moe=MoEParts(),
)


def install(patch: ModelPatch, model: nn.Module, rules: str) -> None:
    """The shared rules (attention, norms, experts) and the lightning attentions'."""
    found = [m for m in model.modules() if is_lightning(m)]
    want = sum(k == "linear_attention" for k in _kinds(model.config))
    if len(found) != want:
        raise UnsupportedModelError(
            f"{type(model).__name__}: expected {want} lightning attention modules, found {len(found)}; "
            "this checkpoint's layout is not supported"
        )
    install_transformer_rules(patch, model, PARTS, rules)
    install_lightning(patch, found, rules)


MINIMAX_FAMILY = register(
    ArchSpec(
        family="minimax",
        model_types=("minimax",),
        kind="causal-lm",
        parts=PARTS,
        install=install,
        # no patching sites: a lightning block's module returns its carried state beside its output
        blocks=BlockPaths(layers="layers", final_norm="norm"),
    )
)
