"""``lrp_rules``: the rule set of a model's family, installed for one ``with`` block."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn
from torch.utils.checkpoint import checkpoint as _checkpoint

from lrp_llm.archs import find_arch, get_arch
from lrp_llm.mechanism.patch import ModelPatch


def decoder_layers(model: nn.Module) -> nn.ModuleList | None:
    """The list of blocks: from the family's description, else the first ModuleList with one entry per layer."""
    spec = find_arch(model)
    if spec is not None and spec.blocks is not None:
        return spec.blocks.layer_list(model)
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return module
    return None


def _checkpointed(original):
    def forward(*args, **kwargs):
        return _checkpoint(original, *args, use_reentrant=False, **kwargs)

    return forward


@contextmanager
def lrp_rules(model: nn.Module, rules: str | None = "attnlrp", *, checkpoint: bool = False) -> Iterator[ModelPatch]:
    """Install ``rules`` (a rule set of the family: "attnlrp", "cp-lrp", "relp", "mambalrp"; None for
    plain gradients) on ``model``.

    Per instance and reversible: leaving the block restores every hook and forward,
    also on error. ``checkpoint=True`` recomputes each block's activations in the
    backward pass instead of storing them (long inputs).
    """
    patch = ModelPatch(model)
    with patch:
        if rules is not None:
            get_arch(model).apply(patch, model, rules)
        else:
            spec = find_arch(model)
            if spec is not None and spec.plain is not None:
                spec.plain(patch, model)
        if checkpoint:
            layers = decoder_layers(model)
            if layers is not None:
                for layer in layers:
                    patch.override_forward(layer, _checkpointed)
        yield patch
