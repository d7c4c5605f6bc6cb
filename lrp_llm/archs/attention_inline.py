"""Q/K/V rules for attention modules that compute the attention inline from a fused projection.

Two places, each the narrowest one where Q, K and V are separate tensors:

- :class:`AttentionCallParts`: the method the module calls with ``(query, key, value, ...)``
  (``_attn`` in CodeGen, GPT-Neo, GPT-NeoX-Japanese, OpenAI GPT). For the block each module
  gets an instance attribute of that name that applies the factors to its first three
  arguments and calls the class's method; removed at the end.
- :class:`AttentionProjectionParts`: the output of a fused projection that is split into
  three equal contiguous parts without a method (MPT's ``Wqkv``): a forward hook gives each
  third its factor.

The factors are the shared ones (:func:`lrp_llm.archs.blocks._attention_factors`): Q, K x 1/4
and V x 1/2 under AttnLRP; Q, K detached under CP-LRP and RelP. What lies between the place
and the attention product (reshapes, RoPE, scaling, the cache) is linear, so the factors
carry through it unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from lrp_llm.mechanism.patch import ModelPatch, output_tensor


def install_attention_call(
    patch: ModelPatch, attentions: list[nn.Module], method: str, rules: str, *, forward_mode: bool = False
) -> None:
    """Q, K, V of every attention module, where they enter its method ``method`` as the first three arguments."""
    from lrp_llm.archs.blocks import _attention_factors, _rule_on

    factors = _attention_factors(rules)
    for attn in attentions:
        if method in attn.__dict__:
            raise RuntimeError(f"{type(attn).__name__}: LRP rules are already installed on this attention module")
        original = getattr(attn, method)

        def call_with_rules(query, key, value, *args, _original=original, **kwargs):
            query, key, value = (
                _rule_on(t, f, forward_mode) for t, f in zip((query, key, value), factors, strict=True)
            )
            return _original(query, key, value, *args, **kwargs)

        object.__setattr__(attn, method, call_with_rules)
        patch.on_exit(lambda attn=attn: object.__delattr__(attn, method))


def qkv_thirds_hook(rules: str, *, forward_mode: bool = False):
    """Forward hook on a fused ``[query | key | value]`` projection: each third gets its factor, the value unchanged."""
    from lrp_llm.archs.blocks import _attention_factors, _rule_on

    factors = _attention_factors(rules)

    def hook(_module, _args, output):
        fused = output_tensor(output)
        if fused.shape[-1] % 3:
            raise ValueError(f"a fused Q/K/V output of width {fused.shape[-1]} does not split into three equal parts")
        parts = fused.chunk(3, dim=-1)
        return torch.cat([_rule_on(t, f, forward_mode) for t, f in zip(parts, factors, strict=True)], dim=-1)

    return hook


def install_attention_projection(
    patch: ModelPatch, attentions: list[nn.Module], projection: str, rules: str, *, forward_mode: bool = False
) -> None:
    """Q, K, V of every attention module, on the output of its fused projection ``projection`` (equal thirds)."""
    for attn in attentions:
        patch.hook_output(getattr(attn, projection), qkv_thirds_hook(rules, forward_mode=forward_mode))
