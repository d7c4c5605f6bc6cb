"""Tiny random T5 (v1.0 and v1.1) and ViT models, seeded, built in well under a second."""

from __future__ import annotations

import torch

T5_VERSIONS = {"v1.0": "relu", "v1.1": "gated-gelu"}


def tiny_t5(version: str = "v1.1", *, seed: int = 0, dtype: torch.dtype = torch.float32, vocab: int = 40):
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(
        vocab_size=vocab,
        d_model=32,
        d_kv=8,
        d_ff=48,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=16,
        dropout_rate=0.1,  # must be switched off by the rules (eval mode)
        feed_forward_proj=T5_VERSIONS[version],
        tie_word_embeddings=version == "v1.0",  # v1.0 ties and rescales the decoder output
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(config)
    with torch.no_grad():  # T5's init is tiny; larger weights make the rules' differences visible
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            elif "relative_attention_bias" in name:
                p.normal_(0.0, 1.0)
            else:
                p.normal_(0.0, 0.3)
    return model.to(dtype).eval()


def tiny_vit(
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    bias_free: bool = False,
    zero_cls_and_positions: bool = False,
    qkv_bias: bool = True,
):
    """A 16 x 16 image, 4 x 4 patches, 2 layers, 3 classes."""
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(
        image_size=16,
        patch_size=4,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        qkv_bias=qkv_bias,
        num_labels=3,
    )
    torch.manual_seed(seed)
    model = ViTForImageClassification(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layernorm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(torch.zeros_like(p) if bias_free else 0.1 * torch.randn_like(p))
            elif name.endswith(("cls_token", "position_embeddings")):
                p.copy_(torch.zeros_like(p) if zero_cls_and_positions else 0.5 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.3)
    return model.to(dtype).eval()


def random_pixels(seed: int = 1, size: int = 16, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 3, size, size, generator=g).to(dtype)


class Tap:
    """Reads relevance (x * x.grad) at module inputs and outputs after a backward pass.

    An input is replaced by an alias (a view), so its gradient comes only from that
    module: its relevance is what the module hands back, not the residual stream's.
    """

    def __init__(self):
        self.tensors: dict[str, torch.Tensor] = {}
        self.handles = []

    def input(self, name, module, index: int = 0, keyword: str | None = None):
        def pre(_m, args, kwargs):
            if keyword is not None and kwargs.get(keyword) is not None:
                alias = kwargs[keyword].view_as(kwargs[keyword])
                alias.retain_grad()
                self.tensors[name] = alias
                return args, {**kwargs, keyword: alias}
            if len(args) <= index:
                return None
            alias = args[index].view_as(args[index])
            alias.retain_grad()
            self.tensors[name] = alias
            return (*args[:index], alias, *args[index + 1 :]), kwargs

        self.handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))

    def output(self, name, module):
        def post(_m, _args, out):
            t = out[0] if isinstance(out, tuple) else out
            t.retain_grad()
            self.tensors[name] = t

        self.handles.append(module.register_forward_hook(post))

    def rel(self, name) -> float:
        t = self.tensors[name]
        return float((t * t.grad).detach().sum())

    def remove(self):
        for h in self.handles:
            h.remove()
