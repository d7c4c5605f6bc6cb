"""Persimmon (Adept): ``nn.LayerNorm`` with bias (also on Q and K, ``qk_layernorm``), a fused Q/K/V projection
(``query_key_value``), a non-gated squared-ReLU MLP ``dense_4h_to_h(act(dense_h_to_4h(x)))``.

Q, K and V get their rules where they enter transformers' attention function
(:class:`AttentionFunctionParts`, after the Q/K LayerNorms and partial RoPE, both linear with
the norms' ``1 / sigma`` detached); the activation gets the identity rule.
"""

from __future__ import annotations

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.description import AttentionFunctionParts, BlockPaths, MLPParts, NormParts, TransformerParts


def _expected(config) -> dict[str, int]:
    n = config.num_hidden_layers
    # two LayerNorms per block and the final one; with qk_layernorm, one each on Q and K
    return {"attention": n, "mlp": n, "norm": 2 * n + 1 + (2 * n if config.qk_layernorm else 0)}


PERSIMMON_FAMILY = register(
    ArchSpec(
        family="persimmon",
        model_types=("persimmon",),
        kind="causal-lm",
        patching_rules=("relp",),
        parts=TransformerParts(
            attention=AttentionFunctionParts(projection="query_key_value"),
            mlps=(MLPParts(up="dense_h_to_4h", act="act", down="dense_4h_to_h"),),
            norm=NormParts(kind="layer", class_suffix="LayerNorm"),
            expected=_expected,
        ),
        blocks=BlockPaths(
            layers="layers",
            attention="self_attn",
            heads="self_attn.dense",
            mlp="mlp",
            neurons="mlp.dense_4h_to_h",
            final_norm="final_layernorm",
            steps_from_keys_values=True,
        ),
    )
)
