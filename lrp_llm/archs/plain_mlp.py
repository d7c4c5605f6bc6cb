"""Llama's q/k/v attention with a non-gated MLP ``down(act(up(x)))``: squared ReLU (Arcee, Nemotron, Jais-2,
NanoChat) or xIELU (Apertus).

The activation gets the identity rule (value ``f(x)``, local gradient ``f(x) / x``), whatever
``f`` is, so its relevance passes whole; the forward is the activation's own output. The norms
differ by family: RMSNorm (Arcee, Apertus with Q/K norms; NanoChat's has no weight), ``nn.LayerNorm``
with bias (Jais-2), Nemotron's ``LayerNorm1P`` (``(1 + weight)``, read from the module by
:mod:`lrp_llm.archs.layer_norm`). NanoChat soft-caps its final logits (identity rule on the tanh).
"""

from __future__ import annotations

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.description import AttentionParts, BlockPaths, MLPParts, NormParts, TransformerParts, per_block

_ATTENTION = AttentionParts(q="q_proj", k="k_proj", v="v_proj")
_UP_DOWN = MLPParts(up="up_proj", act="act_fn", down="down_proj")


def _blocks(neurons: str) -> BlockPaths:
    return BlockPaths(
        layers="layers",
        attention="self_attn",
        heads="self_attn.o_proj",
        mlp="mlp",
        neurons=neurons,
        final_norm="norm",
        steps_from_keys_values=True,
    )


RMS_PLAIN_MLP_FAMILY = register(
    ArchSpec(
        family="rms_plain_mlp",
        model_types=("arcee", "apertus"),
        kind="causal-lm",
        patching_rules=("relp",),
        parts=TransformerParts(
            attention=_ATTENTION,
            mlps=(_UP_DOWN,),
            norm=NormParts(kind="rms", class_suffix="RMSNorm"),
            expected=per_block(norms=None),  # Apertus adds Q/K norms
        ),
        blocks=_blocks("mlp.down_proj"),
    )
)

NANOCHAT_FAMILY = register(
    ArchSpec(
        family="nanochat",
        model_types=("nanochat",),
        kind="causal-lm",
        patching_rules=("relp",),
        parts=TransformerParts(
            attention=_ATTENTION,
            mlps=(MLPParts(up="fc1", act="activation_fn", down="fc2"),),
            norm=NormParts(kind="rms", class_suffix="RMSNorm"),
            expected=per_block(norms=None),  # Q/K norms; the final norm also runs on the embeddings
            logit_softcap="final_logit_softcapping",
        ),
        blocks=_blocks("mlp.fc2"),
    )
)

JAIS2_FAMILY = register(
    ArchSpec(
        family="jais2",
        model_types=("jais2",),
        kind="causal-lm",
        patching_rules=("relp",),
        parts=TransformerParts(
            attention=_ATTENTION,
            mlps=(_UP_DOWN,),
            norm=NormParts(kind="layer", class_suffix="LayerNorm"),
            expected=per_block(),
        ),
        blocks=_blocks("mlp.down_proj"),
    )
)

NEMOTRON_FAMILY = register(
    ArchSpec(
        family="nemotron",
        model_types=("nemotron",),
        kind="causal-lm",
        patching_rules=("relp",),
        parts=TransformerParts(
            attention=_ATTENTION,
            mlps=(_UP_DOWN,),
            norm=NormParts(kind="layer", class_suffix="LayerNorm1P"),
            expected=per_block(),
        ),
        blocks=_blocks("mlp.down_proj"),
    )
)
