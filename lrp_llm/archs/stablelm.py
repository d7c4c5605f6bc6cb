"""StableLM: Llama's q/k/v attention (optionally with bias) and gated MLP, ``nn.LayerNorm`` with bias.

Optional per-head LayerNorms on Q and K (``qk_layernorm``: a list of ``nn.LayerNorm``, found
like every LayerNorm) and a parallel block (``use_parallel_residual``: attention and MLP on
one norm's output, summed; linear). Partial RoPE sits after the Q/K output hooks and is linear.
"""

from __future__ import annotations

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.description import (
    DECODER_BLOCKS,
    AttentionParts,
    GatedMLPParts,
    NormParts,
    TransformerParts,
)


def _expected(config) -> dict[str, int]:
    n = config.num_hidden_layers
    per_block = 1 if config.use_parallel_residual else 2
    # qk_layernorm: one LayerNorm per query head and one per key/value head
    qk = n * (config.num_attention_heads + config.num_key_value_heads) if config.qk_layernorm else 0
    return {"attention": n, "mlp": n, "norm": per_block * n + 1 + qk}


STABLELM_FAMILY = register(
    ArchSpec(
        family="stablelm",
        model_types=("stablelm",),
        kind="causal-lm",
        patching_rules=("relp",),
        parts=TransformerParts(
            attention=AttentionParts(q="q_proj", k="k_proj", v="v_proj"),
            mlps=(GatedMLPParts(gate="gate_proj", up="up_proj", down="down_proj", act="act_fn"),),
            norm=NormParts(kind="layer", class_suffix="LayerNorm"),
            expected=_expected,
        ),
        blocks=DECODER_BLOCKS,
    )
)
