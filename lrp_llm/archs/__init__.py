"""Registry: one description per architecture family, read by every consumer.

Each family module registers an :class:`ArchSpec` for the transformers ``model_type``
values it knows. :func:`get_arch` answers an unknown model with the supported list.
The rule installers, patching's site map, the layer stepper and activation
checkpointing all read the same spec (``parts`` and ``blocks``, see
:mod:`lrp_llm.archs.description` and ``docs/architectures.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from lrp_llm.archs.description import BlockPaths, TransformerParts
from lrp_llm.errors import InputError, UnsupportedModelError
from lrp_llm.mechanism.patch import ModelPatch

# The default method of a causal LM, chosen by measurement (docs/faithful-default.md): the LRP rule sets
# in the order the choice rule of benchmarks/choose_default.py ranks them on the selection half of our
# data; a family gets the first one it offers. Families with their own default set ``default_method``.
CAUSAL_LM_PREFERENCE: tuple[str, ...] = (
    "attnlrp-qk-late",
    "attnlrp-qk-held",
    "cp-lrp",
    "attnlrp-eps",
    "attnlrp-sink",
    "attnlrp",
)


@dataclass(frozen=True)
class ArchSpec:
    family: str
    model_types: tuple[str, ...]
    # "causal-lm" for decoders; other families add their own kinds.
    kind: str
    # the rule sets explanations offer (lrp_rules(model, rules) installs them)
    rules: tuple[str, ...] = ("attnlrp", "cp-lrp")
    # None: a causal LM's is the first of CAUSAL_LM_PREFERENCE the family offers, another kind's "attnlrp"
    default_method: str = None  # type: ignore[assignment]
    # where the shared installers (lrp_llm.archs.blocks) put the rules
    parts: TransformerParts | None = None
    # install(patch, model, rules): a family's own installer, only where the shared one does not fit
    install: Callable[[ModelPatch, nn.Module, str], None] | None = None
    # plain(patch, model): a faster forward with unchanged gradients, installed for the
    # plain-gradient methods (grad-x-input, saliency, IG) when the family has one.
    plain: Callable[[ModelPatch, nn.Module], None] | None = None
    # methods only this family offers (besides its rule sets and the plain-gradient ones)
    extra_methods: tuple[str, ...] = ()
    # rule sets only patching's backward pass uses ("relp"), installed the same way
    patching_rules: tuple[str, ...] = ()
    # variants of AttnLRP's attention rules the family also offers (lrp_llm.archs.attention_variants)
    rule_variants: tuple[str, ...] = ()
    # the blocks and their parts (patching sites, layer stepper, checkpointing)
    blocks: BlockPaths | None = None
    # the spec of this model type built as an encoder-decoder (``config.is_encoder_decoder``):
    # types transformers builds both ways (BART: ``BartForConditionalGeneration`` and, the
    # decoder alone, ``BartForCausalLM``) register their decoder-alone spec with this one attached
    encoder_decoder: ArchSpec | None = None

    def __post_init__(self) -> None:
        if self.default_method is None:
            offered = self.rules + self.rule_variants
            ranked = [m for m in CAUSAL_LM_PREFERENCE if m in offered] if self.kind == "causal-lm" else []
            object.__setattr__(self, "default_method", ranked[0] if ranked else "attnlrp")

    def apply(self, patch: ModelPatch, model: nn.Module, rules: str) -> None:
        """Install the rule set ``rules`` on ``model``, recorded in ``patch``."""
        known = self.rules + self.patching_rules + self.rule_variants
        if rules not in known:
            raise ValueError(f"unknown rule set {rules!r} for {self.family} models; choose from {', '.join(known)}")
        if self.install is not None:
            self.install(patch, model, rules)
        else:
            from lrp_llm.archs.blocks import install_transformer_rules

            install_transformer_rules(patch, model, self.parts, rules)


_REGISTRY: dict[str, ArchSpec] = {}


def register(spec: ArchSpec) -> ArchSpec:
    if spec.parts is None and spec.install is None:
        raise TypeError(f"family {spec.family!r} needs parts or an install function")
    for model_type in spec.model_types:
        _REGISTRY[model_type] = spec
    return spec


# model types that are known not to be explainable, with the part that has no rule (see :func:`refuse`)
_REFUSED: dict[str, str] = {}


def refuse(model_types: tuple[str, ...], reason: str) -> None:
    """Record why ``model_types`` are not supported; :func:`get_arch`'s one-line error gives ``reason``."""
    for model_type in model_types:
        _REFUSED[model_type] = reason


def refusal(model_type: str | None) -> str:
    """`` (why)`` for a refused model type (the part without a rule), else ``""``: for one-line errors."""
    _load_families()
    reason = _REFUSED.get(model_type or "")
    return f" ({reason})" if reason else ""


def supported_model_types() -> list[str]:
    _load_families()
    return sorted(_REGISTRY)


def family_methods() -> frozenset[str]:
    """Methods that only some families offer (the union of their ``extra_methods``)."""
    _load_families()
    return frozenset(m for spec in _REGISTRY.values() for m in spec.extra_methods)


def arch_for_model_type(model_type: str | None, *, encoder_decoder: bool = False) -> ArchSpec | None:
    """The spec registered for a transformers ``model_type`` (e.g. from a checkpoint's config), or None.

    ``encoder_decoder``: the model is built as an encoder-decoder (``config.is_encoder_decoder``);
    for a type registered both ways (:attr:`ArchSpec.encoder_decoder`) that spec is returned.
    """
    _load_families()
    spec = _REGISTRY.get(model_type or "")
    if encoder_decoder and spec is not None and spec.encoder_decoder is not None:
        return spec.encoder_decoder
    return spec


def find_arch(model: nn.Module) -> ArchSpec | None:
    """The spec for ``model``, or None when its type is not registered."""
    config = getattr(model, "config", None)
    return arch_for_model_type(
        getattr(config, "model_type", None), encoder_decoder=bool(getattr(config, "is_encoder_decoder", False))
    )


def get_arch(model: nn.Module) -> ArchSpec:
    """The spec for ``model`` (a transformers model), or a one-line error naming the supported types."""
    spec = find_arch(model)
    if spec is None:
        name = getattr(getattr(model, "config", None), "model_type", None) or type(model).__name__
        raise UnsupportedModelError(
            f"unsupported architecture '{name}'{refusal(name)}; supported: {', '.join(supported_model_types())}"
        )
    return spec


def check_not_encoder(model: nn.Module) -> None:
    """Refuse an encoder (``kind == "encoder"``) where a text generator is explained, with a one-line error.

    transformers also registers encoder types as causal LMs (``BertLMHeadModel``,
    ``RobertaForCausalLM``, ...); their blocks attend both ways and carry biases and
    post-norms the causal-LM rules do not describe, so relevance through their LM head
    would not conserve. They are explained as embedding models (BiLRP) instead.
    """
    spec = find_arch(model)
    if spec is None or spec.kind != "encoder":
        return
    if model.get_output_embeddings() is not None:
        raise InputError(
            f"{type(model).__name__} is an encoder ({spec.family}) with a language-model head; LRP rules for it are "
            "not supported as a causal LM; explain a similarity with `xai-tui similarity`"
        )
    raise InputError(
        "this is an embedding (encoder) model without a language-model head; "
        "explain a similarity with `xai-tui similarity` or lrp_llm.analyses.bilrp"
    )


def _load_families() -> None:
    # Imported lazily so that registering needs no import order.
    from lrp_llm.archs import (
        bart,  # noqa: F401
        bert,  # noqa: F401
        bert_decoders,  # noqa: F401
        biogpt,  # noqa: F401
        bloom,  # noqa: F401
        codegen,  # noqa: F401
        cohere,  # noqa: F401
        cohere_compass,  # noqa: F401
        ctrl,  # noqa: F401
        dbrx,  # noqa: F401
        doge,  # noqa: F401
        dsa,  # noqa: F401
        encoders,  # noqa: F401
        falcon,  # noqa: F401
        fuyu,  # noqa: F401
        gated_attention,  # noqa: F401
        gated_deltanet,  # noqa: F401
        gemma4_unified,  # noqa: F401
        glm,  # noqa: F401
        gpt2,  # noqa: F401
        gpt_neo,  # noqa: F401
        gpt_neox,  # noqa: F401
        gpt_neox_japanese,  # noqa: F401
        gptj,  # noqa: F401
        hybrid,  # noqa: F401
        lfm2,  # noqa: F401
        lfm3,  # noqa: F401
        llama,  # noqa: F401
        mamba,  # noqa: F401
        minimax,  # noqa: F401
        minimax_m3,  # noqa: F401
        mla,  # noqa: F401
        modernbert_decoder,  # noqa: F401
        moe,  # noqa: F401
        moe_more,  # noqa: F401
        moshi,  # noqa: F401
        mpt,  # noqa: F401
        newest,  # noqa: F401
        old_causal,  # noqa: F401
        olmo,  # noqa: F401
        openai_gpt,  # noqa: F401
        opt,  # noqa: F401
        persimmon,  # noqa: F401
        phi,  # noqa: F401
        phi3,  # noqa: F401
        plain_mlp,  # noqa: F401
        recurrent_gemma,  # noqa: F401
        rwkv,  # noqa: F401
        stablelm,  # noqa: F401
        starcoder2,  # noqa: F401
        t5,  # noqa: F401
        vision_towers,  # noqa: F401
        vit,  # noqa: F401
        wrapped_llama,  # noqa: F401
        wrappers,  # noqa: F401
        xglm,  # noqa: F401
        xlstm,  # noqa: F401
    )
