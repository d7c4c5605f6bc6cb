"""Registry: which architecture family gets which rules.

Each family module registers an :class:`ArchSpec` for the transformers ``model_type``
values it knows. :func:`get_arch` answers an unknown model with the supported list.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from lrp_llm.errors import UnsupportedModelError
from lrp_llm.mechanism.patch import ModelPatch


@dataclass(frozen=True)
class ArchSpec:
    family: str
    model_types: tuple[str, ...]
    # "causal-lm" for decoders; other families add their own kinds.
    kind: str
    # apply(patch, model, rules) installs the rule set ``rules`` on ``model``.
    apply: Callable[[ModelPatch, nn.Module, str], None]
    rules: tuple[str, ...] = ("attnlrp", "cp-lrp")
    default_method: str = "attnlrp"
    # plain(patch, model): a faster forward with unchanged gradients, installed for the
    # plain-gradient methods (grad-x-input, saliency, IG) when the family has one.
    plain: Callable[[ModelPatch, nn.Module], None] | None = None
    # methods only this family offers (besides its rule sets and the plain-gradient ones)
    extra_methods: tuple[str, ...] = ()
    notes: dict[str, str] = field(default_factory=dict)


_REGISTRY: dict[str, ArchSpec] = {}


def register(spec: ArchSpec) -> ArchSpec:
    for model_type in spec.model_types:
        _REGISTRY[model_type] = spec
    return spec


def supported_model_types() -> list[str]:
    _load_families()
    return sorted(_REGISTRY)


def family_methods() -> frozenset[str]:
    """Methods that only some families offer (the union of their ``extra_methods``)."""
    _load_families()
    return frozenset(m for spec in _REGISTRY.values() for m in spec.extra_methods)


def get_arch(model: nn.Module) -> ArchSpec:
    """The spec for ``model`` (a transformers model), or a one-line error naming the supported types."""
    _load_families()
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    spec = _REGISTRY.get(model_type or "")
    if spec is None:
        name = model_type or type(model).__name__
        raise UnsupportedModelError(
            f"unsupported architecture '{name}'; supported: {', '.join(supported_model_types())}"
        )
    return spec


def find_arch(model: nn.Module) -> ArchSpec | None:
    """The spec for ``model``, or None when its type is not registered."""
    _load_families()
    return _REGISTRY.get(getattr(getattr(model, "config", None), "model_type", None) or "")


def _load_families() -> None:
    # Imported lazily so that registering needs no import order.
    from lrp_llm.archs import (
        bert,  # noqa: F401
        llama,  # noqa: F401
        mamba,  # noqa: F401
        t5,  # noqa: F401
        vit,  # noqa: F401
    )
