"""ViT image classifiers (transformers' ``ViTForImageClassification``).

The patch embedding is a strided convolution, a linear map of the pixels: it needs
nothing, and the relevance of a pixel is ``pixel * grad`` summed over its channels. The
class score is a linear head on the final LayerNorm of the CLS token; the CLS token and
the position embeddings are additive constants (they keep the relevance they receive, as
biases do). Blocks are pre-LayerNorm attention (``q_proj``/``k_proj``/``v_proj``/``o_proj``)
and an MLP ``fc2(gelu(fc1(x)))``; the rules are the shared ones (:mod:`lrp_llm.archs.blocks`).

The default is AttnLRP: it localises the evidence better than CP-LRP on the synthetic
ground-truth task (``models/synthetic/vit-coloured-object``, 300 held-out images): both
put the most relevant patch on the object in 100 % of images, and AttnLRP puts 70.8 % of
the positive pixel relevance on the object itself against 67.5 % for CP-LRP
(``benchmarks/results/t5_vit_ground_truth.md``).
"""

from __future__ import annotations

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.description import AttentionParts, BlockPaths, MLPParts, NormParts, TransformerParts, per_block

VIT_FAMILY = register(
    ArchSpec(
        family="vit",
        model_types=("vit",),
        kind="image-classification",
        default_method="attnlrp",
        parts=TransformerParts(
            attention=AttentionParts(q="q_proj", k="k_proj", v="v_proj"),
            mlps=(MLPParts(up="fc1", down="fc2", act="activation_fn"),),
            norm=NormParts(kind="layer", class_suffix="LayerNorm"),
            expected=per_block(),
        ),
        blocks=BlockPaths(layers="layers"),
    )
)
