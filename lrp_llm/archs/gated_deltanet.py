"""Gated DeltaNet hybrids (Qwen3-Next, Qwen3.5, OLMo-hybrid) and Kimi delta attention (Kimi Linear,
Bailing hybrid): linear-attention layers beside full attention (with an output gate in Qwen and Bailing).

The gated delta rule, per value head (state S: k_dim x v_dim, decay alpha_t = exp(g_t)):

    S_t = alpha_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T,    o_t = S_t^T q_t

Kimi delta attention decays per key channel: ``S_t = (I - beta_t k_t k_t^T) diag(alpha_t) S_{t-1} + ...``
(alpha from its ``forget_gate`` module), held the same way. No published LRP rule covers either; this one
is derived the way MambaLRP was:

==============================  ==========================  ==========================  ===================
place                           AttnLRP                     CP-LRP                      RelP
==============================  ==========================  ==========================  ===================
alpha (decay), beta, keys       detached: the transition    detached                    detached
                                is a constant, S linear in v
o = S^T q                       uniform: q x 1/2, v x 1/2   q detached (like A)         q detached
L2 norm of q (and k)            1/||q|| detached            (q detached)                (q detached)
SiLU after the short conv       identity rule               identity rule               identity rule
causal depthwise conv, projs    linear: unchanged           unchanged                   unchanged
gated RMSNorm o/rms * act(z)    1/rms detached; o x 1/2,    1/rms detached; act(z)      as AttnLRP
(act: SiLU; Kimi: sigmoid)      act(z) identity rule x 1/2  detached
attention output o * sig(gate)  uniform: o x 1/2, sig(gate)  gate detached               as AttnLRP
                                identity rule x 1/2
==============================  ==========================  ==========================  ===================

(RelP's column is the rule set patching installs; a block holds either a DeltaNet, the "mixer" site, or
attention, the "attn" and head sites.)

Conservation: with alpha, beta, k (and q under CP-LRP) held, the recurrence and its read-out are
linear in v; the convolution and projections are linear, SiLU passes its relevance on by the
identity rule and the gated norm with 1/rms and the gate held is linear, so under CP-LRP each
linear-attention layer is a linear map of its input and the bias-free model conserves exactly.
Under AttnLRP ``o = S^T q`` is a product of two input-dependent factors (the state through v) and
each gets half, as the MLP's gated product.

The rules are installed by a per-instance forward (:func:`deltanet_forward`) with the module's own
arithmetic, that hands the held tensors detached to transformers' kernel
(``torch_chunk_gated_delta_rule`` of the model's module, or a hub kernel registered there): the
kernel computes the recurrence, the rules sit where its arguments enter. The L2 norms are applied
outside the kernel (with 1/||.|| detached) and the kernel's own turned off. A call that continues
from a cached recurrent state (a generation step) runs the original forward.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.blocks import (
    ATTENTION_RULE,
    GATE_RULE,
    install_transformer_rules,
)
from lrp_llm.archs.description import (
    AttentionFunctionParts,
    AttentionOutputGateParts,
    AttentionParts,
    BlockPaths,
    GatedMLPParts,
    MoEParts,
    NormParts,
    TransformerParts,
    by_layer_type,
)
from lrp_llm.errors import UnsupportedModelError
from lrp_llm.mechanism.patch import ModelPatch
from lrp_llm.mechanism.primitives import identity_rule, scale_grad, silu_ratio

# the kernel's own L2 norm (transformers' ``l2norm``): x * rsqrt(sum(x^2) + eps)
_L2_EPS = 1e-6


def l2_normalized(x: torch.Tensor, *, detach_norm: bool) -> torch.Tensor:
    """``x / ||x||`` over the last dim in float32 at least, as transformers' kernel; 1/||x|| detached when asked."""
    x = x if x.dtype == torch.float64 else x.float()
    inv = torch.rsqrt((x * x).sum(dim=-1, keepdim=True) + _L2_EPS)
    return x * (inv.detach() if detach_norm else inv)


def deltanet_factors(rules: str | None) -> tuple[float | None, float]:
    """The gradient factors of q and v where they enter the recurrence under ``rules`` (None: detached)."""
    if rules is None:
        return 1.0, 1.0
    return (0.5, 0.5) if ATTENTION_RULE[rules] == "uniform" else (None, 1.0)


def gated_delta_rule(kernel, q, k, v, g, beta, rules: str | None, **kwargs) -> torch.Tensor:
    """The gated delta rule's output (batch, L, v_heads, v_dim) with the rules on its arguments.

    q, k: (batch, L, k_heads, k_dim), not yet L2-normalised; v: (batch, L, v_heads, v_dim);
    g (log decay), beta: (batch, L, v_heads). ``kernel``: transformers' ``torch_chunk_gated_delta_rule``
    (or one with its signature). ``rules`` None: the plain arithmetic (no rule).
    """
    held = rules is not None
    q_factor, v_factor = deltanet_factors(rules)
    q = l2_normalized(q, detach_norm=held)
    k = l2_normalized(k, detach_norm=held)
    if held:
        k, g, beta = k.detach(), g.detach(), beta.detach()
        q = q.detach() if q_factor is None else scale_grad(q, q_factor)
        v = scale_grad(v, v_factor)
    out, _ = kernel(q, k, v, g=g, beta=beta, initial_state=None, output_final_state=False, **kwargs)
    return out


def gated_rms_norm(norm: nn.Module, x: torch.Tensor, gate: torch.Tensor, rules: str | None) -> torch.Tensor:
    """``weight * x / rms(x) * act(gate)`` (x, gate: (..., v_dim); act: SiLU, or sigmoid where the norm's
    ``activation`` says so), as transformers' gated RMSNorm (norm before gate), with 1/rms detached and
    the gate product's rule under ``rules`` (uniform: the identity rule on act, x 1/2 each side)."""
    dtype = x.dtype
    xf = x.to(torch.float32) if dtype != torch.float64 else x
    inv = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    if rules is not None:
        inv = inv.detach()
    y = norm.weight * (xf * inv).to(dtype)
    gf = gate.to(torch.float32) if gate.dtype != torch.float64 else gate
    sigmoid = getattr(norm, "activation", "silu") == "sigmoid"  # Kimi's gate is a sigmoid
    act = torch.sigmoid(gf) if sigmoid else F.silu(gf)
    if rules is not None:
        if GATE_RULE[rules] == "uniform":
            y, act = scale_grad(y, 0.5), identity_rule(gf, act, 0.5, None if sigmoid else silu_ratio(gf))
        else:
            act = act.detach()
    return (y * act).to(dtype)


def _qkv_z_b_a(mixer: nn.Module, x: torch.Tensor):
    """The projections of one linear-attention module: mixed q|k|v (batch, L, 2 key_dim + value_dim),
    z (the output gate's input, batch, L, value_dim), b, a (batch, L, v_heads)."""
    batch, length = x.shape[:2]
    if hasattr(mixer, "in_proj_qkvz"):  # Qwen3-Next: per key head [q | k | v | z], then [b | a]
        q, k, v, z, b, a = mixer.fix_query_key_value_ordering(mixer.in_proj_qkvz(x), mixer.in_proj_ba(x))
        qkv = torch.cat([t.reshape(batch, length, -1) for t in (q, k, v)], dim=-1)
        return qkv, z.reshape(batch, length, -1), b, a
    if hasattr(mixer, "in_proj_qkv"):  # Qwen3.5: q|k|v fused, the others apart
        return mixer.in_proj_qkv(x), mixer.in_proj_z(x), mixer.in_proj_b(x), mixer.in_proj_a(x)
    # OLMo-hybrid and Kimi delta attention: every projection apart; the output gate from g_proj (or Kimi's
    # low-rank g_a_proj, g_b_proj); Kimi's decay comes from its forget_gate module (a: None)
    qkv = torch.cat([mixer.q_proj(x), mixer.k_proj(x), mixer.v_proj(x)], dim=-1)
    z = mixer.g_b_proj(mixer.g_a_proj(x)) if hasattr(mixer, "g_a_proj") else mixer.g_proj(x)
    a = None if hasattr(mixer, "forget_gate") else mixer.a_proj(x)
    return qkv, z, mixer.b_proj(x), a


def _dims(mixer: nn.Module) -> tuple[int, int, int, int]:
    """key_dim, value_dim (all heads), the key and value head widths."""
    if hasattr(mixer, "forget_gate"):  # Kimi: q, k, v heads alike
        return mixer.qkv_dim, mixer.qkv_dim, mixer.head_dim, mixer.head_dim
    return mixer.key_dim, mixer.value_dim, mixer.head_k_dim, mixer.head_v_dim


def _norm_and_out(mixer: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The gated RMSNorm and the output projection (Qwen: ``norm``, ``out_proj``; OLMo-hybrid: ``o_norm``, ``o_proj``)."""
    if hasattr(mixer, "o_norm"):
        return mixer.o_norm, mixer.o_proj
    return mixer.norm, mixer.out_proj


def deltanet_forward(mixer: nn.Module, rules: str | None):
    """The make-function for a gated DeltaNet module's forward: (batch, L, hidden) -> (batch, L, hidden)."""
    # Kimi delta attention: the same recurrence with a per-channel decay, in its own kernel
    name = "chunk_kimi_delta_attention" if hasattr(mixer, "forget_gate") else "torch_chunk_gated_delta_rule"
    kernel = getattr(sys.modules[type(mixer).__module__], name, None)
    key_dim, value_dim, head_k, head_v = _dims(mixer)
    if kernel is None:
        raise UnsupportedModelError(f"{type(mixer).__name__}: its module has no gated delta rule kernel to wrap")

    def make(original):
        def forward(hidden_states, cache_params=None, attention_mask=None, **kwargs):
            if cache_params is not None and cache_params.get_recurrent_state(mixer.layer_idx, state_idx=0) is not None:
                return original(hidden_states, cache_params=cache_params, attention_mask=attention_mask, **kwargs)
            if attention_mask is not None and attention_mask.dim() == 2:
                hidden_states = (hidden_states * attention_mask[:, :, None]).to(hidden_states.dtype)
            batch, length, _ = hidden_states.shape
            qkv, z, b, a = _qkv_z_b_a(mixer, hidden_states)
            qkv = qkv.transpose(1, 2)  # (batch, channels, L)
            if cache_params is not None:
                qkv = cache_params.update_conv_state(qkv, mixer.layer_idx, conv_kernel_size=mixer.conv_kernel_size)
            # causal depthwise conv (the module pads kernel - 1 on both sides: the first L outputs are causal)
            conv = mixer.conv1d(qkv.to(mixer.conv1d.weight.dtype))[:, :, : qkv.shape[-1]][:, :, -length:]
            act = F.silu(conv)
            if rules is not None:
                act = identity_rule(conv, act, 1.0, silu_ratio(conv))
            act = act.to(hidden_states.dtype).transpose(1, 2)
            q, k, v = torch.split(act, [key_dim, key_dim, value_dim], dim=-1)
            q = q.reshape(batch, length, -1, head_k)
            k = k.reshape(batch, length, -1, head_k)
            v = v.reshape(batch, length, -1, head_v)
            beta = b.sigmoid()
            if getattr(mixer, "allow_neg_eigval", False):  # OLMo-hybrid: beta in (0, 2)
                beta = beta * 2.0
            if a is None:  # Kimi: (batch, L, heads, head_dim), one log decay per channel
                g = mixer.forget_gate(hidden_states)
            else:
                g = -mixer.A_log.float().exp() * F.softplus(a.float() + mixer.dt_bias)
            out = gated_delta_rule(kernel, q, k, v, g, beta, rules)
            if cache_params is not None:
                # the state the original forward would cache, for the next step (no gradient needed there)
                with torch.no_grad():
                    _, state = kernel(
                        l2_normalized(q, detach_norm=True),
                        l2_normalized(k, detach_norm=True),
                        v,
                        g=g,
                        beta=beta,
                        initial_state=None,
                        output_final_state=True,
                    )
                cache_params.update_recurrent_state(state, mixer.layer_idx)
            norm, out_proj = _norm_and_out(mixer)
            out = gated_rms_norm(norm, out.reshape(-1, head_v), z.reshape(-1, head_v), rules)
            return out_proj(out.reshape(batch, length, -1))

        return forward

    return make


def is_deltanet(module: nn.Module) -> bool:
    """A gated DeltaNet module of a layout this family knows (Qwen3-Next's fused, Qwen3.5's or OLMo-hybrid's
    split projections, Kimi delta attention)."""

    def has(*names: str) -> bool:
        return all(hasattr(module, a) for a in names)

    if not has("conv1d", "conv_kernel_size", "layer_idx"):
        return False
    qwen = has("A_log", "dt_bias", "head_k_dim", "norm", "out_proj")
    fused = qwen and has("in_proj_qkvz", "in_proj_ba")
    split = qwen and has("in_proj_qkv", "in_proj_z", "in_proj_b", "in_proj_a")
    olmo = has("A_log", "dt_bias", "head_k_dim", "q_proj", "k_proj", "v_proj", "g_proj", "a_proj", "b_proj", "o_norm")
    kimi = has("forget_gate", "qkv_dim", "head_dim", "q_proj", "k_proj", "v_proj", "b_proj", "o_norm", "o_proj")
    return fused or split or olmo or kimi


def deltanets(model: nn.Module, expected: int) -> list[nn.Module]:
    """The gated DeltaNet modules of ``model``, or a one-line error when there are not ``expected`` of them."""
    found = [m for m in model.modules() if is_deltanet(m)]
    if len(found) != expected:
        raise UnsupportedModelError(
            f"{type(model).__name__}: expected {expected} gated DeltaNet modules, found {len(found)}; "
            "this checkpoint's layout is not supported"
        )
    return found


# ------------------------------------------------------------------- the family
def _kinds(config: Any) -> list[str]:
    return list(config.layer_types)


def _expected(config: Any) -> dict[str, int]:
    # MLP counts vary with the MoE pattern and shared experts: attention and norms are counted
    n = config.num_hidden_layers
    attention = sum(k == "full_attention" for k in _kinds(config))
    # two per block, q/k norms in attention blocks, the final one (the gated norms are the DeltaNets')
    return {"attention": attention, "norm": 2 * n + 2 * attention + 1}


def _n_deltanets(config: Any) -> int:
    return sum(k == "linear_attention" for k in _kinds(config))


PARTS = TransformerParts(
    attention=AttentionFunctionParts(projection="q_proj"),
    mlps=(GatedMLPParts(gate="gate_proj", up="up_proj", down="down_proj", act="act_fn"),),
    norm=NormParts(kind="rms", class_suffix="RMSNorm"),
    expected=_expected,
    moe=MoEParts(shared_gate="shared_expert_gate", shared_expert="shared_expert"),
    # the gate is the second half of each query head: ``o_proj(o * sigmoid(gate))``
    attention_gate=AttentionOutputGateParts(gate="q_proj", output="o_proj", act="sigmoid", source="query_heads"),
)


def install(patch: ModelPatch, model: nn.Module, rules: str) -> None:
    """The rule set ``rules`` on a gated DeltaNet hybrid: the shared rules (with the attention output gates), the
    DeltaNets."""
    found = deltanets(model, _n_deltanets(model.config.get_text_config()))
    install_transformer_rules(patch, model, PARTS, rules)
    for mixer in found:
        patch.override_forward(mixer, deltanet_forward(mixer, rules))


# Each block is a DeltaNet ("linear_attention": the "mixer" site) or attention ("full_attention"),
# then an MLP or experts (an "mlp" site; no neuron sites: the experts are not one MLP). Qwen3-Next / Qwen3.5-MoE:
# the routed experts and the shared expert behind its sigmoid gate are expert sites (absent in dense members)
DELTA_OR_ATTENTION_BLOCKS = BlockPaths(
    layers="layers",
    attention="self_attn",
    heads="self_attn.o_proj",
    mixer="linear_attn",
    mlp="mlp",
    experts="mlp.experts",
    shared_expert="mlp.shared_expert",
    shared_gate="mlp.shared_expert_gate",
    final_norm="norm",
    layer_parts=by_layer_type({"linear_attention": ("mixer", "mlp"), "full_attention": ("attention", "heads", "mlp")}),
)


GATED_DELTANET_FAMILY = register(
    ArchSpec(
        family="gated_deltanet",
        model_types=("qwen3_next", "qwen3_5_text", "qwen3_5_moe_text"),
        kind="causal-lm",
        parts=PARTS,
        install=install,
        patching_rules=("relp",),
        blocks=DELTA_OR_ATTENTION_BLOCKS,
    )
)


# OLMo-hybrid: the same DeltaNet (separate projections, beta up to 2) beside OLMo-2-style attention
# (q/k norms over all heads, found by them: the DeltaNets have q/k/v projections too, no q/k norms;
# the Q and K factors sit on the norms' outputs, linear up to the kernel) and post-norms; no output gate
def _olmo_expected(config: Any) -> dict[str, int]:
    n = config.num_hidden_layers
    attention = sum(k == "full_attention" for k in _kinds(config))
    # attention blocks: two post-norms and q/k norms; DeltaNet blocks: two pre-norms; the final one
    return {"attention": attention, "mlp": n, "norm": 4 * attention + 2 * (n - attention) + 1}


OLMO_PARTS = TransformerParts(
    attention=AttentionParts(q="q_norm", k="k_norm", v="v_proj"),
    mlps=(GatedMLPParts(gate="gate_proj", up="up_proj", down="down_proj", act="act_fn"),),
    norm=NormParts(kind="rms", class_suffix="RMSNorm"),
    expected=_olmo_expected,
)


def install_olmo(patch: ModelPatch, model: nn.Module, rules: str) -> None:
    """The rule set ``rules`` on OLMo-hybrid: the shared rules, then the DeltaNets."""
    found = deltanets(model, _n_deltanets(model.config))
    install_transformer_rules(patch, model, OLMO_PARTS, rules)
    for mixer in found:
        patch.override_forward(mixer, deltanet_forward(mixer, rules))


OLMO_HYBRID_FAMILY = register(
    ArchSpec(
        family="olmo_hybrid",
        model_types=("olmo_hybrid",),
        kind="causal-lm",
        parts=OLMO_PARTS,
        install=install_olmo,
        patching_rules=("relp",),
        blocks=DELTA_OR_ATTENTION_BLOCKS,
    )
)


# Kimi Linear: Kimi delta attention (a per-channel decay from its forget_gate module, a sigmoid output
# gate in its norm) beside DeepSeek MLA attention (its Q, K, V ruled where they enter the attention
# function, as the MLA family's), routed experts with ungated shared experts
def _kimi_expected(config: Any) -> dict[str, int]:
    return {"attention": sum(k == "full_attention" for k in _kinds(config))}


KIMI_PARTS = TransformerParts(
    attention=AttentionFunctionParts(projection="kv_a_proj_with_mqa"),
    mlps=(GatedMLPParts(gate="gate_proj", up="up_proj", down="down_proj", act="act_fn"),),
    norm=NormParts(kind="rms", class_suffix="RMSNorm"),
    expected=_kimi_expected,
    moe=MoEParts(),
)


def _kimi_installer(parts: TransformerParts):
    def install(patch: ModelPatch, model: nn.Module, rules: str) -> None:
        """The shared rules (MLA, MLPs, experts, Bailing's attention output gates), the delta attentions."""
        found = deltanets(model, _n_deltanets(model.config))
        install_transformer_rules(patch, model, parts, rules)
        for mixer in found:
            patch.override_forward(mixer, deltanet_forward(mixer, rules))

    return install


# Each block's token mixer is at ``self_attn``, whichever it is: Kimi delta attention ("linear_attention": the
# "mixer" site) or MLA ("full_attention": the "attn" site, its value heads at ``o_proj``'s input the head sites);
# then an MLP or experts (an "mlp" site; no neuron sites: the experts are not one MLP); the routed experts and the
# ungated shared experts are expert sites (absent in the dense first blocks)
KIMI_BLOCKS = BlockPaths(
    layers="layers",
    attention="self_attn",
    heads="self_attn.o_proj",
    mlp="mlp",
    experts="mlp.experts",
    shared_expert="mlp.shared_experts",
    final_norm="norm",
    layer_parts=by_layer_type(
        {"linear_attention": {"mixer": "self_attn", "mlp": "mlp"}, "full_attention": ("attention", "heads", "mlp")}
    ),
)


def _register_kimi(family: str, model_type: str, parts: TransformerParts) -> ArchSpec:
    return register(
        ArchSpec(
            family=family,
            model_types=(model_type,),
            kind="causal-lm",
            parts=parts,
            install=_kimi_installer(parts),
            blocks=KIMI_BLOCKS,
            patching_rules=("relp",),
        )
    )


KIMI_LINEAR_FAMILY = _register_kimi("kimi_linear", "kimi_linear", KIMI_PARTS)
# Bailing hybrid (Ling): the same delta attention (its decay, lower_bound * sigmoid(...) or -softplus, held
# like Kimi's), MLA with a per-head sigmoid output gate ``g_proj`` (the attention output gate's rule)
BAILING_HYBRID_FAMILY = _register_kimi(
    "bailing_hybrid",
    "bailing_hybrid",
    replace(
        KIMI_PARTS,
        attention_gate=AttentionOutputGateParts(gate="g_proj", output="o_proj", act="sigmoid", groups="head"),
    ),
)
