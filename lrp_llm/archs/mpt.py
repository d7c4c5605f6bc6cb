"""MPT: LayerNorm without bias, a fused ``Wqkv`` split inline into equal thirds, ALiBi, a plain GELU MLP.

MPT's attention splits ``Wqkv``'s output with ``chunk(3)`` and computes the scores itself, with
no method to wrap, so the rules on Q, K and V are a hook on ``Wqkv``'s output giving each third
its factor (:class:`AttentionProjectionParts`); the reshapes after it are linear and the ALiBi
bias added to the scores is a constant.

``attn_config.clip_qkv`` clamps the fused output before the split; a clamped entry has no
gradient, so the relevance of a clipped value would be lost: such checkpoints are refused.

Attention and MLP add the residual in the block and inside ``ffn`` respectively, so the MLP
patching site is the output of ``ffn.down_proj``. The layer stepper is not offered: the
blocks take their cache as ``layer_past``.
"""

from __future__ import annotations

from torch import nn

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.description import (
    AttentionProjectionParts,
    BlockPaths,
    MLPParts,
    NormParts,
    TransformerParts,
    per_block,
)
from lrp_llm.errors import UnsupportedModelError
from lrp_llm.mechanism.patch import ModelPatch

_PARTS = TransformerParts(
    attention=AttentionProjectionParts(projection="Wqkv"),
    mlps=(MLPParts(up="up_proj", act="act", down="down_proj"),),
    norm=NormParts(kind="layer", class_suffix="LayerNorm"),
    expected=per_block(),
)


def install_mpt_rules(patch: ModelPatch, model: nn.Module, rules: str) -> None:
    """The shared installers on MPT's parts; a checkpoint that clips Q/K/V is refused (one-line error)."""
    from lrp_llm.archs.blocks import install_transformer_rules

    clip = getattr(getattr(model.config, "attn_config", None), "clip_qkv", None)
    if clip:
        raise UnsupportedModelError(
            f"{type(model).__name__}: attn_config.clip_qkv={clip} clamps Q/K/V, which has no LRP rule here; "
            "this checkpoint is not supported"
        )
    install_transformer_rules(patch, model, _PARTS, rules)


MPT_FAMILY = register(
    ArchSpec(
        family="mpt",
        model_types=("mpt",),
        kind="causal-lm",
        patching_rules=("relp",),
        parts=_PARTS,
        install=install_mpt_rules,
        blocks=BlockPaths(
            layers="blocks",
            attention="attn",
            heads="attn.out_proj",
            mlp="ffn.down_proj",  # ffn's own output already includes the residual
            neurons="ffn.down_proj",
            final_norm="norm_f",
        ),
    )
)
