"""A Gemma-3 multimodal checkpoint folder (the text model beside a vision tower, saved with its
processor) explains text prompts: the CLI loads it, the rules go on the text model only, and the
relevance conserves on a bias-free float64 copy as for the text-only type."""

from __future__ import annotations

import json

import pytest
import torch

from tests.support.models import WORDS
from tui.cli import main

IMAGE_TOKENS = ("<start_of_image>", "<end_of_image>", "<image_soft_token>")


def _processor():
    """Gemma-3's processor over a word-level tokenizer whose last three ids are the image tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import Gemma3ImageProcessor, Gemma3Processor, PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>"]
    words = list(WORDS)[: 61 - len(specials) - len(IMAGE_TOKENS)]
    table = {t: i for i, t in enumerate(specials + words + list(IMAGE_TOKENS))}
    backend = Tokenizer(models.WordLevel(vocab=table, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    names = dict(zip(("boi_token", "eoi_token", "image_token"), IMAGE_TOKENS, strict=True))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens=names,
    )
    template = (
        "{% for m in messages %}{{ '<|' + m['role'] + '|> ' + m['content'] + ' ' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|> ' }}{% endif %}"
    )
    images = Gemma3ImageProcessor(size={"height": 28, "width": 28})
    return Gemma3Processor(image_processor=images, tokenizer=tokenizer, image_seq_length=4, chat_template=template)


@pytest.fixture(scope="module")
def gemma3_dir(tmp_path_factory):
    from tests.support.tiny_any import tiny_model

    path = tmp_path_factory.mktemp("gemma3") / "gemma3-mm"
    model = tiny_model("gemma3")
    assert type(model).__name__ == "Gemma3ForConditionalGeneration"
    model.save_pretrained(str(path))
    _processor().save_pretrained(str(path))
    return path


def test_the_cli_explains_a_text_prompt_on_the_multimodal_checkpoint(gemma3_dir, tmp_path):
    out = tmp_path / "g.json"
    args = ["explain", "--model", str(gemma3_dir), "--prompt", "what country", "--context", "paris is in france"]
    assert main([*args, "--generate", "2", "--method", "cp-lrp", "--json", str(out), "--quiet"]) == 0
    d = json.loads(out.read_text())
    assert d["tokens"][0] == "<|user|>" and len(d["targets"]) == 2
    for t in d["targets"]:
        assert len(t["relevance"]) == t["position"] and any(abs(r) > 0 for r in t["relevance"])


def test_rules_touch_the_text_model_only_and_conserve(gemma3_dir):
    from transformers import AutoModelForCausalLM

    from lrp_llm.engines.causal_lm import relevance
    from lrp_llm.mechanism.context import lrp_rules
    from tests.support.conformance import without_biases_and_position_embeddings
    from tests.support.models import random_ids

    model = AutoModelForCausalLM.from_pretrained(str(gemma3_dir), dtype=torch.float64).eval()
    vision = model.model.vision_tower

    def touched(part):
        return [m for m in part.modules() if m._forward_hooks or m._forward_pre_hooks or "forward" in m.__dict__]

    with lrp_rules(model, "attnlrp"):
        assert touched(model.model.language_model) and not touched(vision)
    model = without_biases_and_position_embeddings(model)
    out = relevance(model, random_ids(10), [7, 9], method="cp-lrp")
    for i in range(2):
        assert float(out["relevance"][i].sum() / out["logits"][i]) == pytest.approx(1.0, abs=1e-6)
