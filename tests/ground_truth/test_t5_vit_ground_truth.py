"""The committed synthetic T5 and ViT models: explanations point at the known evidence.

The models are trained by ``models/synthetic/train_*.py`` (seeded; never in CI); the
held-out examples here use seeds the training never saw.
"""

import numpy as np
import pytest
import torch

from lrp_llm.archs import get_arch
from lrp_llm.checkpoints.loading import load_model
from synthetic_tasks import coloured_object, copy_reverse
from tests.support import REPO_ROOT

MODELS = REPO_ROOT / "models" / "synthetic"


@pytest.fixture(scope="module")
def t5():
    return load_model(MODELS / "t5-copy-reverse")


@pytest.fixture(scope="module")
def vit():
    return load_model(MODELS / "vit-coloured-object")


def test_t5_solves_copy_or_reverse(t5):
    model, tok = t5
    items = copy_reverse.examples(100, seed=11)
    enc = tok([e.source for e in items], padding=True, return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=copy_reverse.MAX_LEN + 1, do_sample=False)
    got = [text.split() for text in tok.batch_decode(out, skip_special_tokens=True)]
    assert sum(g == list(e.target_symbols) for g, e in zip(got, items)) / len(items) >= 0.95


def test_t5_top1_source_token_is_the_aligned_one(t5):
    model, tok = t5
    method = get_arch(model).default_method
    acc = copy_reverse.alignment_accuracy(model, tok, copy_reverse.examples(60, seed=12), method)
    print(f"T5 copy/reverse, {method}: top-1 source token aligned for {acc:.1%} of output letters")
    assert acc >= 0.95


def test_vit_classifies_and_its_top_patch_is_the_object(vit):
    model, _ = vit
    items = coloured_object.samples(100, seed=13)
    x = torch.from_numpy(coloured_object.pixel_values(np.stack([s.image for s in items])))
    with torch.no_grad():
        pred = model(pixel_values=x).logits.argmax(-1)
    assert (pred == torch.tensor([s.label for s in items])).float().mean() >= 0.95
    found = {m: coloured_object.scores(model, items, m) for m in ("attnlrp", "cp-lrp")}
    for m, s in found.items():
        print(f"ViT coloured object, {m}: top patch = object for {s['top_patch']:.1%} of images, "
              f"{s['object_mass']:.1%} of positive relevance on the object")  # fmt: skip
    default = get_arch(model).default_method
    assert found[default]["top_patch"] >= 0.95
    # the default is the method that measures better (documented in lrp_llm/archs/vit.py)
    other = "cp-lrp" if default == "attnlrp" else "attnlrp"
    assert (found[default]["top_patch"], found[default]["object_mass"]) >= (
        found[other]["top_patch"],
        found[other]["object_mass"],
    )


def test_vit_processor_matches_the_training_preprocessing(vit):
    model, processor = vit
    s = coloured_object.samples(1, seed=14)[0]
    got = processor(images=s.image, return_tensors="pt")["pixel_values"]
    want = torch.from_numpy(coloured_object.pixel_values(s.image[None]))
    assert torch.allclose(got, want, atol=1e-6)
