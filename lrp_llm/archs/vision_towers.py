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
from lrp_llm.archs.blocks import ATTENTION_RULE, install_transformer_rules
from lrp_llm.archs.description import AttentionParts, BlockPaths, MLPParts, NormParts, TransformerParts, per_block
from lrp_llm.errors import UnsupportedModelError
from lrp_llm.mechanism.patch import ModelPatch
from lrp_llm.mechanism.primitives import scale_grad

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


# ------------------------------------------------------------------- bare towers (image embeddings)
# ``clip_vision_model`` and ``siglip_vision_model``: the vision towers of CLIP / SigLIP checkpoints,
# whose ``pooler_output`` is the image embedding (CLIP: the final LayerNorm of the CLS token;
# SigLIP: the attention-pooling head). Kind "image-encoder": explained as embeddings
# (:mod:`lrp_llm.analyses.image_bilrp`), not as classifiers.


def _pooling_attention(mha: nn.MultiheadAttention, k_factor: float | None, v_factor: float):
    """``nn.MultiheadAttention(probe, h, h)`` of SigLIP's pooling head, computed out with the rule factors.

    The query is the learned probe, a constant, so in ``q k^T`` the keys are the only
    input-dependent factor: under AttnLRP K gets the scores' whole relevance times 1/2 for
    ``A V`` (``k_factor`` 1/2), V 1/2; under CP-LRP K is detached (None), V unchanged.
    Shapes: query (batch, 1, d), key = value (batch, n, d); returns ((batch, 1, d), None).
    """

    def make(_original):
        def forward(query, key, value, *args, **kwargs):
            batch, d, heads = query.shape[0], mha.embed_dim, mha.num_heads
            wq, wk, wv = mha.in_proj_weight.chunk(3)
            bq, bk, bv = mha.in_proj_bias.chunk(3) if mha.in_proj_bias is not None else (None, None, None)
            q = nn.functional.linear(query, wq, bq)
            k = nn.functional.linear(key, wk, bk)
            v = nn.functional.linear(value, wv, bv)
            k = k.detach() if k_factor is None else scale_grad(k, k_factor)
            v = scale_grad(v, v_factor)

            def split(t):  # (batch, rows, d) -> (batch, heads, rows, d / heads)
                return t.view(batch, -1, heads, d // heads).transpose(1, 2)

            out = nn.functional.scaled_dot_product_attention(split(q), split(k), split(v))
            return mha.out_proj(out.transpose(1, 2).reshape(batch, -1, d)), None

        return forward

    return make


def install_vision_tower(patch: ModelPatch, model: nn.Module, rules: str) -> None:
    """The shared rules on the tower's blocks, and SigLIP's attention-pooling head (:func:`_pooling_attention`)."""
    install_transformer_rules(patch, model, TOWER_PARTS, rules)
    k_factor, v_factor = (0.5, 0.5) if ATTENTION_RULE[rules] == "uniform" else (None, 1.0)
    for module in model.modules():
        if isinstance(module, nn.MultiheadAttention):
            if not module.batch_first or not module._qkv_same_embed_dim or module.bias_k is not None:
                raise UnsupportedModelError(
                    f"{type(model).__name__}: an attention-pooling head laid out other than SigLIP's "
                    "(batch-first, one input projection, no extra key bias) has no LRP rule here"
                )
            patch.override_forward(module, _pooling_attention(module, k_factor, v_factor))


TOWER_FAMILY = register(
    ArchSpec(
        family="vision-tower",
        model_types=("clip_vision_model", "siglip_vision_model"),
        kind="image-encoder",
        default_method="cp-lrp",
        parts=TOWER_PARTS,
        install=install_vision_tower,
    )
)
