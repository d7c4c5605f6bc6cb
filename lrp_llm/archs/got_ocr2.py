"""GOT-OCR 2.0: the Qwen2 decoder (the Llama family's layout, :mod:`lrp_llm.archs.llama`) behind a vision encoder.

``GotOcr2ForConditionalGeneration`` keeps the Qwen2 model at ``model.language_model`` beside its
SAM-style vision encoder and projector, which run only where a prompt carries an image. Text
prompts run only the language model, so Llama's parts apply inside it (``TransformerParts.within``;
the vision encoder's attention and norms are not touched) and its layers are the blocks; images
are not explained.
"""

from __future__ import annotations

from dataclasses import replace

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.description import DECODER_BLOCKS
from lrp_llm.archs.llama import LLAMA_PARTS

GOT_OCR2_FAMILY = register(
    ArchSpec(
        family="got_ocr2",
        model_types=("got_ocr2",),
        kind="causal-lm",
        patching_rules=("relp",),
        parts=replace(LLAMA_PARTS, within="language_model"),
        blocks=replace(DECODER_BLOCKS, layers="language_model.layers", final_norm="language_model.norm"),
    )
)
