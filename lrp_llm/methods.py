"""The attribution methods: one table that the engines, the evaluation, the CLI and the app all read.

Torch-free (``xai-tui --help`` lists the choices without loading torch); the arch
registry is imported inside the functions that need a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from lrp_llm.errors import InputError

if TYPE_CHECKING:
    from torch import nn

# Model kinds (``ArchSpec.kind``) the token-level methods explain.
TOKEN_KINDS: tuple[str, ...] = ("causal-lm", "seq2seq", "image-classification")


@dataclass(frozen=True)
class Method:
    """One attribution method.

    ``rules``: the rule set installed with :func:`lrp_llm.mechanism.context.lrp_rules` (None:
    plain gradients, or a method that installs none); ``kinds``: the model kinds
    (``ArchSpec.kind``) it applies to; ``family_only``: offered only by families that
    list it in ``ArchSpec.extra_methods``; ``takes_steps``: spelled ``name:N`` with N
    integration steps; ``aliases``: other accepted spellings; ``computation``: what the
    gradient engine (:mod:`lrp_llm.mechanism.gradients`) computes for it:
    ``"gradient-x-input"`` (also every LRP rule set: gradient x input under the rules),
    ``"gradient-norm"`` (saliency), ``"integrated-gradients"``, ``"random"``, or
    ``"own"`` for a method with its own computation (hidden attention, the similarity methods).
    """

    name: str
    label: str
    kinds: tuple[str, ...]
    rules: str | None = None
    family_only: bool = False
    takes_steps: bool = False
    aliases: tuple[str, ...] = ()
    computation: str = "gradient-x-input"

    @property
    def batchable(self) -> bool:
        """One backward pass serves a batch of independent examples (evaluation over a data set)."""
        return self.computation in ("gradient-x-input", "gradient-norm")

    def steps_or_none(self, steps: int) -> int | None:
        """``steps`` for a method that integrates (a result's ``meta``), else None."""
        return steps if self.takes_steps else None


METHOD_TABLE: tuple[Method, ...] = (
    Method("attnlrp", "AttnLRP", TOKEN_KINDS, rules="attnlrp"),
    Method("cp-lrp", "CP-LRP", TOKEN_KINDS, rules="cp-lrp"),
    Method("mambalrp", "MambaLRP", ("causal-lm",), rules="mambalrp"),
    Method("grad-x-input", "Gradient × input", TOKEN_KINDS, aliases=("gxi",)),
    Method("saliency", "Saliency", TOKEN_KINDS, computation="gradient-norm"),
    Method(
        "integrated-gradients",
        "Integrated gradients",
        TOKEN_KINDS,
        takes_steps=True,
        aliases=("ig",),
        computation="integrated-gradients",
    ),
    Method("hidden-attention", "Hidden attention", ("causal-lm",), family_only=True, computation="own"),
    Method("random", "Random", TOKEN_KINDS, computation="random"),
    # AttnLRP with another attention rule (lrp_llm.archs.attention_variants); Llama-family decoders
    Method("attnlrp-qk-held", "AttnLRP, Q/K held", ("causal-lm",), rules="attnlrp-qk-held"),
    Method("attnlrp-qk-late", "AttnLRP, Q/K held late", ("causal-lm",), rules="attnlrp-qk-late"),
    Method("attnlrp-eps", "AttnLRP, softmax ε", ("causal-lm",), rules="attnlrp-eps"),
    Method("attnlrp-sink", "AttnLRP, sink apart", ("causal-lm",), rules="attnlrp-sink"),
    # similarity of two texts under an embedding model (lrp_llm.analyses.bilrp)
    Method("bilrp", "BiLRP", ("encoder",), computation="own"),
    Method("grad-x-input-products", "Gradient × input products", ("encoder",), computation="own"),
    Method("embedding-dot", "Token embedding dot products", ("encoder",), computation="own"),
)

_BY_NAME: dict[str, Method] = {m.name: m for m in METHOD_TABLE}
_BY_ALIAS: dict[str, Method] = {a: m for m in METHOD_TABLE for a in m.aliases}


def method_names(kind: str) -> tuple[str, ...]:
    """Names of the methods for models of ``kind`` ("causal-lm", "seq2seq", "image-classification", "encoder")."""
    return tuple(m.name for m in METHOD_TABLE if kind in m.kinds)


# the methods of causal language models: the choices of ``xai-tui explain`` and the app
METHODS: tuple[str, ...] = method_names("causal-lm")


def get_method(name: str, kind: str | None = None) -> Method:
    """The method called ``name``, for ``kind`` models when given.

    An unknown name raises a one-line :class:`InputError` naming the choices. Aliases
    are spellings of :func:`parse_method` only.
    """
    method = _BY_NAME.get(name)
    choices = method_names(kind) if kind is not None else tuple(_BY_NAME)
    if method is None or (kind is not None and kind not in method.kinds):
        raise InputError(f"unknown method '{name}'; choose one of: {', '.join(choices)}")
    return method


def label(name: str) -> str:
    """Display label of a method ("attnlrp" -> "AttnLRP"); an unknown name as it is."""
    method = _BY_NAME.get(name)
    return name if method is None else method.label


def parse_method(spec: str, kind: str = "causal-lm") -> tuple[str, int | None]:
    """``"integrated-gradients:64"`` -> ("integrated-gradients", 64); ``"attnlrp"`` -> ("attnlrp", None).

    Aliases resolve to the full name (``"ig:4"`` -> ("integrated-gradients", 4)).
    """
    name, _, steps = spec.strip().partition(":")
    method = _BY_NAME.get(name) or _BY_ALIAS.get(name)
    if method is None or kind not in method.kinds:
        raise InputError(
            f"unknown method '{name}'; choose from: {', '.join(method_names(kind))} (IG steps as integrated-gradients:N)"
        )
    if not steps:
        return method.name, None
    if not method.takes_steps:
        raise InputError(f"'{spec}': only integrated-gradients takes a step count (integrated-gradients:N)")
    if not steps.isdigit() or int(steps) < 1:
        raise InputError(f"'{spec}': the step count must be a positive integer")
    return method.name, int(steps)


def default_method(model: nn.Module) -> str:
    """The family's default method: for causal LMs chosen by measurement (``lrp_llm.archs.CAUSAL_LM_PREFERENCE``,
    docs/faithful-default.md: "attnlrp-qk-late" for the Llama family, "cp-lrp" for other decoders), "mambalrp"
    for Mamba, "cp-lrp" for encoders, "attnlrp" for image classifiers and encoder-decoders."""
    from lrp_llm.archs import get_arch

    return get_arch(model).default_method


def methods_for(model: nn.Module) -> tuple[str, ...]:
    """The methods ``model``'s family offers, its default first.

    A method is offered when it applies to the family's kind and, if it installs a rule
    set, the family has that rule set (or that variant, ``ArchSpec.rule_variants``); a family-only method when the family lists it in
    ``extra_methods``. An unregistered architecture gets the plain-gradient causal-LM methods.
    """
    from lrp_llm.archs import find_arch

    spec = find_arch(model)
    if spec is None:
        return tuple(m.name for m in METHOD_TABLE if "causal-lm" in m.kinds and m.rules is None and not m.family_only)
    offered = [
        m.name
        for m in METHOD_TABLE
        if spec.kind in m.kinds
        and (m.rules is None or m.rules in spec.rules or m.rules in spec.rule_variants)
        and (not m.family_only or m.name in spec.extra_methods)
    ]
    if spec.default_method not in offered:
        return tuple(offered)
    return (spec.default_method, *[m for m in offered if m != spec.default_method])


def check_offered(model: nn.Module, name: str) -> Method:
    """The method ``name`` if ``model``'s family offers it, else a one-line :class:`InputError` naming those it does."""
    from lrp_llm.archs import find_arch, get_arch

    method = get_method(name)
    if method.rules is not None or method.family_only:
        get_arch(model)  # an unsupported architecture: its own message, naming the supported ones
    offered = methods_for(model)
    if name not in offered:
        family = getattr(find_arch(model), "family", None) or type(model).__name__
        raise InputError(f"method '{name}' is not available for {family} models; choose one of: {', '.join(offered)}")
    return method


__all__ = [
    "METHODS",
    "METHOD_TABLE",
    "Method",
    "check_offered",
    "default_method",
    "get_method",
    "label",
    "method_names",
    "methods_for",
    "parse_method",
]
