"""Cohere Compass (North) text decoders: the Cohere-2 layout under another name.

``CohereCompassDecoderLayer`` runs attention and a gated MLP in parallel on one mean-centred
LayerNorm without bias (``CohereCompassLayerNorm``: ``weight``, ``variance_epsilon``), with
sliding-window layers and NoPE full-attention layers (``rope_parameters`` per layer type, a
multimodal RoPE whose sections all carry the text position for text prompts). RoPE and the
windows are linear in Q and K or a constant mask, so Cohere's parts (:mod:`lrp_llm.archs.cohere`)
describe it unchanged.
"""

from __future__ import annotations

from dataclasses import replace

from lrp_llm.archs import register
from lrp_llm.archs.cohere import COHERE_FAMILY

COHERE_COMPASS_FAMILY = register(replace(COHERE_FAMILY, model_types=("cohere_compass_text",)))
