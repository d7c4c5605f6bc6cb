"""Vision transformers beyond ViT as image classifiers: DeiT, DINOv2, SigLIP and CLIP vision towers.

All four are pre-LayerNorm blocks with ``q_proj``/``k_proj``/``v_proj`` attention and an MLP
``fc2(act(fc1(x)))``, so the shared rules (:mod:`lrp_llm.archs.blocks`) cover them; the
patch embedding is a convolution (linear), CLS / distillation / register tokens and
position embeddings are constants added to the tokens (they keep the relevance they get,
as biases do). What differs:

==========  ================================================  ===========================================
family      part                                              rule
==========  ================================================  ===========================================
deit        a distillation token beside CLS; the teacher      nothing new (a constant token; the average
            variant averages two linear heads                 of two heads is linear)
dinov2      layer scale ``lambda * x`` after attention and    nothing: a constant per-channel factor
            MLP; the head reads CLS and the mean patch token  (linear); the SwiGLU MLP variant is refused
siglip      GELU (tanh) MLP; the head averages all tokens;    identity rule on the activation; the head
            the attention-pooling head (``vision_use_head``)  is not on the classifier's path (its output,
            computes ``pooler_output`` only                   ``pooler_output``, is not read)
clip        ``pre_layrnorm`` on the embeddings; QuickGELU     identity rule on QuickGELU
            ``x * sigmoid(1.702 x)``; the head averages the
            patch tokens
==========  ================================================  ===========================================
"""

from __future__ import annotations

from torch import nn

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.blocks import install_transformer_rules
from lrp_llm.archs.description import AttentionParts, BlockPaths, MLPParts, NormParts, TransformerParts, per_block
from lrp_llm.errors import UnsupportedModelError
from lrp_llm.mechanism.patch import ModelPatch

TOWER_ATTENTION = AttentionParts(q="q_proj", k="k_proj", v="v_proj")
TOWER_MLP = MLPParts(up="fc1", down="fc2", act="activation_fn")
TOWER_NORM = NormParts(kind="layer", class_suffix="LayerNorm")


def _vision_layers(config) -> int:
    """The number of blocks, from a vision config or from the ``vision_config`` of a CLIP / SigLIP one."""
    return int(getattr(config, "vision_config", config).num_hidden_layers)


def _tower_counts(config) -> dict[str, int]:
    """One attention and one MLP per block; SigLIP's attention-pooling head adds one MLP (its attention is
    ``nn.MultiheadAttention``, which has no q/k/v projections and is not counted)."""
    n = _vision_layers(config)
    head = bool(getattr(getattr(config, "vision_config", config), "vision_use_head", False))
    return {"attention": n, "mlp": n + head}


DEIT_FAMILY = register(
    ArchSpec(
        family="deit",
        model_types=("deit",),
        kind="image-classification",
        default_method="attnlrp",
        parts=TransformerParts(attention=TOWER_ATTENTION, mlps=(TOWER_MLP,), norm=TOWER_NORM, expected=per_block()),
        blocks=BlockPaths(layers="layers"),
    )
)


DINOV2_PARTS = TransformerParts(attention=TOWER_ATTENTION, mlps=(TOWER_MLP,), norm=TOWER_NORM, expected=per_block())


def install_dinov2(patch: ModelPatch, model: nn.Module, rules: str) -> None:
    """The shared rules; the SwiGLU MLP variant (``use_swiglu_ffn``: a functional SiLU times a half of
    ``weights_in``, no activation module to hold a rule) is refused, naming it."""
    if getattr(model.config, "use_swiglu_ffn", False):
        raise UnsupportedModelError(
            f"{type(model).__name__}: DINOv2's SwiGLU MLP (use_swiglu_ffn, the giant checkpoints) has no LRP rule "
            "here; use a checkpoint with the GELU MLP (small, base, large)"
        )
    install_transformer_rules(patch, model, DINOV2_PARTS, rules)


DINOV2_FAMILY = register(
    ArchSpec(
        family="dinov2",
        model_types=("dinov2",),
        kind="image-classification",
        default_method="attnlrp",
        parts=DINOV2_PARTS,
        install=install_dinov2,
        blocks=BlockPaths(layers="encoder.layer"),
    )
)

# CLIP's and SigLIP's classifiers hold the vision tower as ``vision_model`` with the config of
# the text-image pair: no block paths (patching does not offer image classifiers).
TOWER_PARTS = TransformerParts(attention=TOWER_ATTENTION, mlps=(TOWER_MLP,), norm=TOWER_NORM, expected=_tower_counts)

SIGLIP_FAMILY = register(
    ArchSpec(
        family="siglip",
        model_types=("siglip",),
        kind="image-classification",
        default_method="attnlrp",
        parts=TOWER_PARTS,
    )
)

CLIP_FAMILY = register(
    ArchSpec(
        family="clip",
        model_types=("clip",),
        kind="image-classification",
        default_method="attnlrp",
        parts=TOWER_PARTS,
    )
)
