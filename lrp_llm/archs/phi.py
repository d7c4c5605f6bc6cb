"""Phi (Phi-1, Phi-1.5, Phi-2): LayerNorm with bias, separate Q/K/V projections with bias (``dense``
after the heads), optional LayerNorms on Q and K, a plain MLP ``fc2(activation_fn(fc1(x)))``, and
attention and MLP in parallel on one LayerNorm's output.

The shared installers cover every part: Q, K, V output hooks (the Q/K LayerNorms, partial
RoPE and the attention kernel come after them; the Q/K norms' 1/sigma is detached like
every norm's), the identity rule on the activation. The parallel block is a sum, linear.
"""

from __future__ import annotations

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.description import AttentionParts, BlockPaths, MLPParts, NormParts, TransformerParts


def _expected(config) -> dict[str, int]:
    n = config.num_hidden_layers
    # one LayerNorm per block and the final one; with qk_layernorm, one each on Q and K
    return {"attention": n, "mlp": n, "norm": n + 1 + (2 * n if config.qk_layernorm else 0)}


PHI_FAMILY = register(
    ArchSpec(
        family="phi",
        model_types=("phi",),
        kind="causal-lm",
        patching_rules=("relp",),
        parts=TransformerParts(
            attention=AttentionParts(q="q_proj", k="k_proj", v="v_proj"),
            mlps=(MLPParts(up="fc1", act="activation_fn", down="fc2"),),
            norm=NormParts(kind="layer", class_suffix="LayerNorm"),
            expected=_expected,
        ),
        blocks=BlockPaths(
            layers="layers",
            attention="self_attn",
            heads="self_attn.dense",
            mlp="mlp",
            neurons="mlp.fc2",
            final_norm="final_layernorm",
            steps_from_keys_values=True,
        ),
    )
)
