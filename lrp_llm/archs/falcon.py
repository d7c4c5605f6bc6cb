"""Falcon: LayerNorm, a fused Q/K/V projection (``query_key_value``), RoPE or ALiBi, a plain GELU MLP,
and (by default) attention and MLP in parallel.

Falcon's attention computes SDPA or the eager arithmetic itself instead of calling
transformers' attention function, so the rules on Q, K and V are applied where its
``_split_heads`` returns them from the fused projection (:class:`AttentionSplitParts`);
RoPE and the reshapes after it are linear, and ALiBi is a constant added to the scores.
The layouts (multi-query, the new decoder architecture's grouped K/V broadcast to every
head, one or two LayerNorms per block, sequential or parallel blocks) differ only in
linear maps and in which LayerNorms exist, so one entry covers them.

Parallel blocks compute ``mlp_output += attention_output`` on the MLP's output tensor, so
component taps hand the block a copy of the part outputs (``BlockPaths.outputs_changed_in_place``):
the tapped tensor keeps the MLP's value and gets the gradient the MLP output receives.

The layer stepper is not offered: Falcon's blocks take their cache as ``layer_past``, not
through ``past_key_values`` (the sweep uses the batched engine).
"""

from __future__ import annotations

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.description import AttentionSplitParts, BlockPaths, MLPParts, NormParts, TransformerParts


def _expected(config) -> dict[str, int]:
    n = config.num_hidden_layers
    # sequential blocks, or parallel ones with a LayerNorm each for attention and MLP: two per block
    per_block = 2 if not config.parallel_attn or config.num_ln_in_parallel_attn == 2 else 1
    return {"attention": n, "mlp": n, "norm": per_block * n + 1}


FALCON_FAMILY = register(
    ArchSpec(
        family="falcon",
        model_types=("falcon",),
        kind="causal-lm",
        patching_rules=("relp",),
        parts=TransformerParts(
            attention=AttentionSplitParts(projection="query_key_value", split="_split_heads"),
            mlps=(MLPParts(up="dense_h_to_4h", act="act", down="dense_4h_to_h"),),
            norm=NormParts(kind="layer", class_suffix="LayerNorm"),
            expected=_expected,
        ),
        blocks=BlockPaths(
            layers="h",
            attention="self_attention",
            heads="self_attention.dense",
            mlp="mlp",
            neurons="mlp.dense_4h_to_h",
            final_norm="ln_f",
            # parallel blocks add the attention output to the MLP output in place
            outputs_changed_in_place=True,
        ),
    )
)
