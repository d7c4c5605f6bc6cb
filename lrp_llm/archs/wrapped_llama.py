"""Llama-layout decoders inside a multimodal wrapper: GOT-OCR 2 (Qwen2) and MOSS transcribe-diarize (Qwen3).

Both keep their language model at ``model.language_model`` beside an encoder for the other
modality (GOT-OCR 2: a SAM-style vision encoder and projector; MOSS: a Whisper-style audio encoder
over ``input_features`` and a projector), which runs only where a prompt carries an image or
audio. Text prompts run only the language model, so the Llama family's parts
(:mod:`lrp_llm.archs.llama`) apply inside it (``TransformerParts.within``; the encoder's attention
and norms are not touched) and its layers are the blocks; images and audio are not explained.
"""

from __future__ import annotations

from dataclasses import replace

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.description import DECODER_BLOCKS
from lrp_llm.archs.llama import LLAMA_PARTS

WRAPPED_LLAMA_FAMILY = register(
    ArchSpec(
        family="wrapped_llama",
        model_types=("got_ocr2", "moss_transcribe_diarize"),
        kind="causal-lm",
        patching_rules=("relp",),
        parts=replace(LLAMA_PARTS, within="language_model"),
        blocks=replace(DECODER_BLOCKS, layers="language_model.layers", final_norm="language_model.norm"),
    )
)
