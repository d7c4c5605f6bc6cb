"""Gemma-4 "unified" text decoders (``gemma4_unified_text``): Gemma's layout with KV sharing.

The blocks are Gemma-3's (pre/post norms around attention and a gated GELU MLP, q/k norms, a
weightless norm on V, sliding and full layers with their own head widths from
``config.per_layer_config``), times a constant ``layer_scalar``. The norms compute ``weight * x``
without Gemma's ``1 +`` (read from the module, :mod:`lrp_llm.archs.layer_norm`). Two things differ
from the Llama description:

- the last ``num_kv_shared_layers`` layers have no K/V projections and reuse the keys and values
  an earlier layer of their type stored (``shared_kv_states``); and full layers with
  ``attention_k_eq_v`` take V from the K projection (no ``v_proj``). So Q, K and V get their
  rules where they enter the attention function (:class:`AttentionFunctionParts`, found by
  ``q_proj``, which every attention has): a reused K or V is the stored tensor, and its relevance
  flows back into the layer that computed it, as the forward does.
- no patching sites: called with an integer ``logits_to_keep`` (as the patching engines call it),
  transformers slices the inputs of the KV-shared layers to the kept positions
  (``Gemma4UnifiedTextModel._maybe_slice_kv_shared_inputs``), so those layers have no per-position
  sites in a patched forward (and the layer stepper would have to recompute the keys and values of
  the layer each one shares them from).
"""

from __future__ import annotations

from dataclasses import replace

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.description import AttentionFunctionParts, BlockPaths
from lrp_llm.archs.llama import LLAMA_PARTS

GEMMA4_UNIFIED_FAMILY = register(
    ArchSpec(
        family="gemma4_unified",
        model_types=("gemma4_unified_text",),
        kind="causal-lm",
        parts=replace(LLAMA_PARTS, attention=AttentionFunctionParts(projection="q_proj")),
        # the layers for checkpointing; no sites (see above)
        blocks=BlockPaths(layers="layers", final_norm="norm", steps_from_keys_values=False),
    )
)
