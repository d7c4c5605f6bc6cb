"""OPT: LayerNorm (with or without its affine part), separate Q/K/V projections, a plain ReLU MLP whose
parts (``fc1``, ``activation_fn``, ``fc2``) sit in the decoder layer itself, learned positions.

OPT's attention calls transformers' attention function on the outputs of ``q_proj``,
``k_proj`` and ``v_proj`` (the query scaled by a constant in between), so output hooks carry
the rules as for Llama. The learned position embedding is added to every token like a bias
(conservation is exact without it). ``project_in``/``project_out`` (OPT-350m) are linear.
The post-LayerNorm layout (``do_layer_norm_before=False``) has no final LayerNorm.

Patching offers the residual, attention and head sites; not the MLP and its neurons, which
OPT computes on the positions flattened into one dimension (the sites index positions).
"""

from __future__ import annotations

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.description import AttentionParts, BlockPaths, MLPParts, NormParts, TransformerParts


def _expected(config) -> dict[str, int]:
    n = config.num_hidden_layers
    final = int(config.do_layer_norm_before and not getattr(config, "_remove_final_layer_norm", False))
    return {"attention": n, "mlp": n, "norm": 2 * n + final}


OPT_FAMILY = register(
    ArchSpec(
        family="opt",
        model_types=("opt",),
        kind="causal-lm",
        patching_rules=("relp",),
        parts=TransformerParts(
            attention=AttentionParts(q="q_proj", k="k_proj", v="v_proj"),
            mlps=(MLPParts(up="fc1", act="activation_fn", down="fc2"),),
            norm=NormParts(kind="layer", class_suffix="LayerNorm"),
            expected=_expected,
        ),
        blocks=BlockPaths(
            layers="decoder.layers",
            attention="self_attn",
            heads="self_attn.out_proj",
            # no MLP or neuron sites: OPT runs its MLP on the positions flattened to (batch * pos, d_model)
            final_norm="decoder.final_layer_norm",
            steps_from_keys_values=True,
        ),
    )
)
