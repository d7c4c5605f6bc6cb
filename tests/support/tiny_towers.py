"""Tiny random DeiT, DINOv2, SigLIP and CLIP image classifiers (16 x 16 images, 4 x 4 patches, 2 layers, 3 classes)."""

from __future__ import annotations

import torch

TOWER_TYPES = ("deit", "dinov2", "siglip", "clip")
# the bare vision towers (image embeddings: ``pooler_output``)
BARE_TOWER_TYPES = ("clip_vision_model", "siglip_vision_model")
# learned tokens and position embeddings: constants added to the patch tokens
CONSTANT_TOKENS = ("cls_token", "distillation_token", "register_tokens", "position_embedding", "class_embedding")


def _vision_fields(**overrides) -> dict:
    fields = dict(
        image_size=16,
        patch_size=4,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
    )
    fields.update(overrides)
    return fields


def tiny_tower(
    model_type: str = "deit",
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    bias_free: bool = False,
    zero_constants: bool = False,
    **overrides,
):
    """An image classifier (or bare vision tower) of ``model_type`` with large random weights; ``bias_free`` zeroes every bias,
    ``zero_constants`` the CLS / distillation / register tokens and position embeddings."""
    import transformers as tf

    if model_type == "deit":
        model = tf.DeiTForImageClassification(
            tf.DeiTConfig(**_vision_fields(hidden_dropout_prob=0.1, **overrides), num_labels=3)
        )
    elif model_type == "dinov2":
        config = tf.Dinov2Config(**_vision_fields(hidden_dropout_prob=0.1, layerscale_value=0.5, **overrides))
        config.num_labels = 3
        model = tf.Dinov2ForImageClassification(config)
    elif model_type == "siglip":
        config = tf.SiglipConfig(vision_config=_vision_fields(**overrides), num_labels=3)
        model = tf.SiglipForImageClassification(config)
    elif model_type == "clip":
        config = tf.CLIPConfig(vision_config=_vision_fields(**overrides), num_labels=3)
        model = tf.CLIPForImageClassification(config)
    elif model_type == "clip_vision_model":
        model = tf.CLIPVisionModel(tf.CLIPVisionConfig(**_vision_fields(**overrides)))
    elif model_type == "siglip_vision_model":
        model = tf.SiglipVisionModel(tf.SiglipVisionConfig(**_vision_fields(**overrides)))
    else:
        raise ValueError(f"no tiny tower for {model_type}")
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.split(".")[-1]
            if "norm" in name.lower() and leaf == "weight":
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            elif leaf == "bias" or leaf == "in_proj_bias":
                p.copy_(torch.zeros_like(p) if bias_free else 0.1 * torch.randn_like(p))
            elif any(c in name for c in CONSTANT_TOKENS):
                p.copy_(torch.zeros_like(p) if zero_constants else 0.5 * torch.randn_like(p))
            elif leaf == "lambda1":  # DINOv2's layer scale
                p.copy_(0.5 + 0.3 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.3)
    return model.to(dtype).eval()
