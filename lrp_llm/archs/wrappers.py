"""Multimodal wrapper checkpoints whose text model is a registered family, and the types tried and refused.

A Qwen3.5 / Qwen3.5-MoE or Llama-4 checkpoint (``model_type`` ``qwen3_5``, ``qwen3_5_moe``, ``llama4``)
holds a vision tower beside the text model. Loaded as a causal LM (``AutoModelForCausalLM``, as
:mod:`lrp_llm.checkpoints.loading` does) transformers builds the text model alone from the
checkpoint's ``text_config`` (``Qwen3_5ForCausalLM``, ``Llama4ForCausalLM``; the vision weights are
not loaded), so the model explained is the text type's and gets that family's rules unchanged: the
wrapper type is registered with the text type's spec. (Gemma-3's wrapper is different: transformers
builds the whole ``Gemma3ForConditionalGeneration``, hence its own spec with
``TransformerParts.within``, see :mod:`lrp_llm.archs.llama`.)
"""

from __future__ import annotations

from dataclasses import replace

from lrp_llm.archs import ArchSpec, refuse, register
from lrp_llm.archs.description import BlockPaths
from lrp_llm.archs.gated_deltanet import GATED_DELTANET_FAMILY
from lrp_llm.archs.llama import LLAMA_PARTS
from lrp_llm.archs.moe import LLAMA4_FAMILY


def _with_wrappers(text_spec: ArchSpec, *wrapper_types: str) -> ArchSpec:
    """``text_spec`` registered again for its own types and the wrapper types (one spec: the model a wrapper
    checkpoint loads as reports the text type, and its spec names both)."""
    return register(replace(text_spec, model_types=text_spec.model_types + wrapper_types))


GATED_DELTANET_WITH_WRAPPERS = _with_wrappers(GATED_DELTANET_FAMILY, "qwen3_5", "qwen3_5_moe")
LLAMA4_WITH_WRAPPER = _with_wrappers(LLAMA4_FAMILY, "llama4")

# Mllama (Llama-3.2 Vision): Llama self-attention blocks with cross-attention blocks between them that attend
# to the image's states. Loaded as a causal LM it is ``MllamaForCausalLM`` (config type ``mllama_text_model``),
# and for a text-only prompt the text model skips every cross-attention block (nothing to attend to), so
# what runs is Llama's layout and takes Llama's rules (the cross-attention modules are found by their q/k/v
# projections too, and counted, but never called). No patching sites: a site on a skipped block would
# patch nothing, and the stepper would run blocks the model skips.
MLLAMA_FAMILY = register(
    ArchSpec(
        family="mllama",
        model_types=("mllama", "mllama_text_model"),
        kind="causal-lm",
        parts=LLAMA_PARTS,
        # MllamaForCausalLM names its base model "language_model" but keeps it at ``model``: base_model is the LM
        blocks=BlockPaths(layers="model.layers", final_norm="model.norm"),
    )
)

# The tensors of a wrapper checkpoint that its text model does not use (the vision tower and its projector),
# by the prefix of their names, where transformers' causal-LM class does not already ignore them (Qwen3.5's
# does: ``_keys_to_ignore_on_load_unexpected``)
_VISION_PREFIXES = {
    "llama4": ("vision_model.", "multi_modal_projector."),
    "mllama": ("vision_model.", "multi_modal_projector."),
}


def unused_by_text_model(model_type: str | None, names: list[str]) -> list[str]:
    """``names`` (a wrapper checkpoint's tensors the loaded model did not take) without the vision tower's."""
    prefixes = _VISION_PREFIXES.get(model_type or "", ())
    return [n for n in names if not (prefixes and n.startswith(prefixes))]


# Tried and not supported: the part that has no rule here
refuse(
    ("qwen4_exp", "qwen4_exp_text"),
    "its hyper-connection gated residual (Qwen4ExpTextGatedResidual: sigmoid mixing weights of several residual "
    "streams) has no LRP rule here",
)
refuse(
    ("zaya",),
    "its compressed convolutional attention projection (ZayaCCAProjection) and its skip-expert router carrying "
    "state across layers (ZayaRouter) have no LRP rule here",
)
refuse(
    ("jetmoe",),
    "its mixture of attention heads (JetMoeMoA: routed query and output experts) has no LRP rule here",
)
refuse(
    ("zamba",),
    "its multi-head Mamba-1 mixer (ZambaMambaMixer: per-head x_proj_weight / dt_proj_weight tensors) has no "
    "LRP rule here (no MambaLRP forward for that layout)",
)
refuse(
    ("minimax_m3_vl",),
    "its multimodal model (MiniMaxM3SparseForConditionalGeneration) has no LRP rule here and transformers builds "
    "no causal LM from its config; the text model alone (minimax_m3_vl_text) is supported",
)
