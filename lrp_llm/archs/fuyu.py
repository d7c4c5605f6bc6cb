"""Fuyu (Adept): the Persimmon decoder (:mod:`lrp_llm.archs.persimmon`) behind an image-patch projection.

``FuyuForCausalLM`` keeps the Persimmon model at ``model.language_model`` beside
``vision_embed_tokens`` (a linear map of image patches into the embedding space, used only where a
prompt carries images). Text prompts run only the language model, so Persimmon's parts apply inside
it (``TransformerParts.within``) and its layers are the blocks; images are not explained.
"""

from __future__ import annotations

from dataclasses import replace

from lrp_llm.archs import register
from lrp_llm.archs.persimmon import PERSIMMON_FAMILY

FUYU_FAMILY = register(
    replace(
        PERSIMMON_FAMILY,
        family="fuyu",
        model_types=("fuyu",),
        parts=replace(PERSIMMON_FAMILY.parts, within="language_model"),
        blocks=replace(
            PERSIMMON_FAMILY.blocks, layers="language_model.layers", final_norm="language_model.final_layernorm"
        ),
    )
)
