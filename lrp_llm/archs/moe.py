"""Mixture-of-experts decoders: Llama-layout attention with routed experts in place of (some) MLPs.

The routed experts are transformers 5's fused experts modules; their rules are in
:mod:`lrp_llm.archs.experts` (router scores x expert outputs: uniform rule under AttnLRP,
scores held constant under CP-LRP and RelP; top-k selection piecewise constant). Shared
experts and the dense MLPs of dense layers (``first_k_dense_replace``, ``mlp_only_layers``,
``decoder_sparse_step``) are ordinary gated MLPs; Qwen2-MoE's shared expert has its own
sigmoid gate (:class:`MoEParts`). The MoE block's output is the "mlp" patching site; the
routed experts have no single neuron axis, so neurons are not offered. The experts are
component sites (``layer.{i}.mlp.expert.{e}``, ``layer.{i}.mlp.shared_expert``:
``BlockPaths.experts`` / ``shared_expert``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from lrp_llm.archs import ArchSpec, refuse, register
from lrp_llm.archs.description import (
    AttentionParts,
    BlockPaths,
    FusedGatedMLPParts,
    GatedMLPParts,
    MoEParts,
    NormParts,
    TransformerParts,
)


def _attention_per_block(config: Any) -> dict[str, int]:
    # MLP counts vary with the dense/sparse layer pattern and shared experts: only attention is counted
    return {"attention": config.num_hidden_layers}


_LLAMA_ATTENTION = AttentionParts(q="q_proj", k="k_proj", v="v_proj")
_GATED = GatedMLPParts(gate="gate_proj", up="up_proj", down="down_proj", act="act_fn")
_RMS = NormParts(kind="rms", class_suffix="RMSNorm")


def _blocks(
    mlp: str | None, steps: bool = True, base: str = "", shared: str = "shared_experts", gate: str | None = None
) -> BlockPaths:
    return BlockPaths(
        layers=f"{base}layers",
        attention="self_attn",
        heads="self_attn.o_proj",
        mlp=mlp,
        # the routed experts and the shared expert inside the MoE block (expert sites; absent in dense layers)
        experts=None if mlp is None else f"{mlp}.experts",
        shared_expert=None if mlp is None else f"{mlp}.{shared}",
        shared_gate=None if mlp is None or gate is None else f"{mlp}.{gate}",
        final_norm=f"{base}norm",
        steps_from_keys_values=steps,
    )


def _moe_family(
    family: str,
    model_types: tuple[str, ...],
    *,
    mlp: str | None = "mlp",
    steps: bool = True,
    base: str = "",
    shared: str = "shared_experts",
    shared_gate: str | None = None,
    blocks: BlockPaths | None = None,
    **parts: Any,
) -> ArchSpec:
    """Register a MoE family: Llama-layout attention and gated MLPs unless ``parts`` says otherwise;
    ``base``: the prefix of the block list from ``model.base_model``; ``shared``: the shared expert's
    name inside the MoE block (where a member has one), ``shared_gate`` the projection whose sigmoid scales it;
    ``blocks``: the block paths where they are not the ones these name."""
    fields: dict[str, Any] = dict(
        attention=_LLAMA_ATTENTION, mlps=(_GATED,), norm=_RMS, expected=_attention_per_block, moe=MoEParts()
    )
    fields.update(parts)
    return register(
        ArchSpec(
            family=family,
            model_types=model_types,
            kind="causal-lm",
            patching_rules=("relp",),
            parts=TransformerParts(**fields),
            blocks=blocks or _blocks(mlp, steps, base, shared, shared_gate),
        )
    )


# Routed experts (+ dense layers and ungated shared experts, named like Llama's MLP)
MOE_FAMILY = _moe_family(
    "moe",
    (
        "mixtral",
        "qwen3_moe",
        "olmoe",
        "flex_olmo",
        "minimax_m2",
        "ernie4_5_moe",
        "glm4_moe",
        "solar_open",
        "exaone_moe",
        "hy_v3",
        "kolibri1",
        "aria_text",
        # attention sinks (a learned logit per head, a constant column of the softmax: under
        # CP-LRP/RelP the probabilities are constants anyway; under AttnLRP it takes its share
        # like a bias) and a clamped SwiGLU in the experts (lrp_llm.archs.experts.clamped_swiglu)
        "gpt_oss",
        "dots1",
    ),
)

# Hunyuan-MoE: the same, with its shared expert named shared_mlp (the expert sites' path)
HUNYUAN_MOE_FAMILY = _moe_family("moe", ("hunyuan_v1_moe",), shared="shared_mlp")

# Qwen2-MoE: a shared expert scaled by sigmoid(shared_expert_gate(x))
QWEN2_MOE_FAMILY = _moe_family(
    "qwen2_moe",
    ("qwen2_moe",),
    shared="shared_expert",
    shared_gate="shared_expert_gate",
    moe=MoEParts(shared_gate="shared_expert_gate", shared_expert="shared_expert"),
)

# PhiMoE: the same with LayerNorms (with bias)
PHIMOE_FAMILY = _moe_family("phimoe", ("phimoe",), norm=NormParts(kind="layer", class_suffix="LayerNorm"))

# Granite-MoE: the shared MLP (granitemoeshared) fuses gate and up (``input_linear``, gate first)
GRANITE_MOE_FAMILY = _moe_family(
    "granitemoe",
    ("granitemoe", "granitemoe_swa", "granitemoeshared"),
    mlp="block_sparse_moe",
    mlps=(FusedGatedMLPParts(gate_up="input_linear", down="output_linear", act="activation"),),
)

# Llama-4 (text): the router's sigmoid scores scale the experts' input; a shared expert; dense
# layers where ``moe_layers`` leaves them; L2 q/k norm (an RMSNorm without weight, 1/rms held
# constant like the others: found by the suffix "Norm"); chunked attention is a constant mask
LLAMA4_FAMILY = _moe_family(
    "llama4",
    ("llama4_text",),
    # its MoE block returns (tokens, hidden), reshaped by the layer: no "mlp" patching site. Its experts are
    # component sites: every expert runs on every token, its input scaled by its router score (0 where not
    # selected, and an expert has no bias: its output is 0 there), so expert e's contribution is its output, and
    # the experts' outputs and the shared expert's add up to the block's (lrp_llm.archs.experts.input_scaled_experts).
    # The block adds the experts' sum to the shared expert's output in place: taps hand it a copy.
    blocks=replace(
        _blocks(None, base="model."),
        experts="feed_forward.experts",
        shared_expert="feed_forward.shared_expert",
        outputs_changed_in_place=True,
    ),
    mlp=None,
    # its NoPE layers ask the cache for its length (query temperature by absolute position): the
    # stepper's stand-ins answer it
    steps=True,
    # Llama4ForCausalLM names its base model "language_model" but keeps it at ``model``: base_model is the LM
    base="model.",
    mlps=(GatedMLPParts(gate="gate_proj", up="up_proj", down="down_proj", act="activation_fn"),),
    norm=NormParts(kind="rms", class_suffix="Norm"),
    moe=MoEParts(scores_scale_input=True),
)

# Tried and not supported: the part that has no rule here
refuse(
    ("longcat_flash",), "its unfused experts with identity (zero) experts (LongcatFlashExperts) have no LRP rule here"
)
refuse(("axk2",), "its gated RMSNorm with its own MLP (AXK2GatedRMSNorm) has no LRP rule here")
