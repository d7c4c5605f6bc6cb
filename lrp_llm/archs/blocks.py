"""The rule installers every attention family shares, driven by its :class:`TransformerParts`.

==============  ==============================  ==========================  ==========================
place           AttnLRP (Achtibat et al. 2024)  CP-LRP (Ali et al. 2022)    RelP (Rezaei Jafari 2025)
==============  ==============================  ==========================  ==========================
RMS/LayerNorm   1/sigma detached                1/sigma detached            1/sigma detached
q, k            gradient x 1/4                  detached (A constant)       detached (AH-rule)
v               gradient x 1/2                  unchanged                   unchanged
act(gate)       identity rule, gradient x 1/2   detached (gate constant)    identity rule, x 1/2
up (gated)      gradient x 1/2                  unchanged                   gradient x 1/2
act (plain)     identity rule                   identity rule               identity rule
logit soft-cap  identity rule                   identity rule               identity rule
MoE w_k * E_k   uniform (x 1/2)                 w_k detached                w_k detached
o * act(g)      identity rule x 1/2, o x 1/2    detached (gate constant)    identity x 1/2, o x 1/2
==============  ==============================  ==========================  ==========================

Mixture-of-experts blocks (``TransformerParts.moe``) are installed by :mod:`lrp_llm.archs.experts`.

The rules touch only module outputs (and norm forwards), never the attention kernel,
so fused kernels (SDPA) stay. Where Q, K and V come out of one fused projection
(:class:`AttentionFunctionParts`), their rules are applied where they enter
transformers' attention function instead (:func:`install_attention_function`), and the
original function (SDPA, eager, ...) still computes the attention; for modules that compute
the attention themselves (Falcon, :class:`AttentionSplitParts`), where the method that splits
the fused output returns them (:func:`install_attention_split`). ``forward_mode=True`` installs
the detach forms of the same rules (:func:`lrp_llm.mechanism.primitives.scaled_jacobian`, ...), which also hold
under ``torch.func.jvp``.
"""

from __future__ import annotations

import copy
import sys

import torch
from torch import nn

from lrp_llm.archs.description import (
    AttentionCallParts,
    AttentionFunctionParts,
    AttentionParts,
    AttentionProjectionParts,
    AttentionSplitParts,
    FusedGatedMLPParts,
    GatedMLPParts,
    InlineGatedMLPParts,
    MLPParts,
    NormParts,
    TransformerParts,
    resolve,
)
from lrp_llm.errors import UnsupportedModelError
from lrp_llm.mechanism.patch import ModelPatch, output_tensor
from lrp_llm.mechanism.primitives import (
    identity_rule,
    rms_norm_detached,
    scale_grad,
    scaled_jacobian,
    silu_ratio,
)

# rule set -> what attention's Q K^T and A V products get, and what the gated product gets
ATTENTION_RULE = {"attnlrp": "uniform", "cp-lrp": "detach", "relp": "detach"}
GATE_RULE = {"attnlrp": "uniform", "cp-lrp": "detach", "relp": "uniform"}
TRANSFORMER_RULE_SETS = tuple(ATTENTION_RULE)


# ------------------------------------------------------------------- hooks
def scale_output(factor: float, *, forward_mode: bool = False):
    """Forward hook: the output unchanged, its gradient times ``factor``."""
    scale = scaled_jacobian if forward_mode else scale_grad

    def hook(_module, _args, output):
        return scale(output_tensor(output), factor)

    return hook


def scale_second_half(factor: float):
    """Forward hook on a fused gate/up projection: the output unchanged, the gradient of its second half (up) times ``factor``."""

    def hook(_module, _args, output):
        gate, up = output_tensor(output).chunk(2, dim=-1)
        return torch.cat((gate, scale_grad(up, factor)), dim=-1)

    return hook


def detach_output(_module, _args, output):
    """Forward hook: the output as a constant."""
    return output_tensor(output).detach()


def _detached_input(original):
    # Detaching the input (not the output) also spares forward mode the tangents of Q and K.
    def forward(hidden_states):
        return original(hidden_states.detach())

    return forward


def identity_output(factor: float):
    """Forward hook on an activation module: the identity rule (times ``factor``)."""

    def hook(module, args, output):
        # SiLU (Llama, Mistral, Qwen, OLMo, Granite): the ratio silu(x)/x is sigmoid(x), one operation
        is_silu = isinstance(module, nn.SiLU) or type(module).__name__ == "SiLUActivation"
        return identity_rule(args[0], output_tensor(output), factor, silu_ratio(args[0]) if is_silu else None)

    return hook


# ------------------------------------------------------------------- finding the parts
def _having(model: nn.Module, *attrs: str | None) -> list[nn.Module]:
    names = [a for a in attrs if a is not None]
    return [m for m in model.modules() if all(isinstance(getattr(m, a, None), nn.Module) for a in names)]


def mlp_modules(
    model: nn.Module, names: MLPParts | GatedMLPParts | FusedGatedMLPParts | InlineGatedMLPParts
) -> list[nn.Module]:
    """The MLPs of ``model`` that have every part ``names`` names."""
    if isinstance(names, InlineGatedMLPParts):
        return _having(model, names.gate, names.up, names.down)
    if isinstance(names, GatedMLPParts):
        return _having(model, names.gate, names.up, names.down, names.act)
    if isinstance(names, FusedGatedMLPParts):
        return _having(model, names.gate_up, names.down, names.act)
    return _having(model, names.up, names.down, names.act)


def parts_root(model: nn.Module, parts: TransformerParts) -> nn.Module:
    """The module of ``model`` that holds the parts: ``model`` itself, or its ``parts.within``."""
    if parts.within is None:
        return model
    holder = resolve(getattr(model, "base_model", model), parts.within)
    if holder is None:
        raise UnsupportedModelError(f"{type(model).__name__} has no '{parts.within}'; its layout is not supported")
    return holder


def find_parts(model: nn.Module, parts: TransformerParts) -> dict[str, list[nn.Module]]:
    """The attention modules, norms, plain MLPs and gated MLPs of ``model`` (of its ``parts.within``), in module order."""
    model = parts_root(model, parts)
    a = parts.attention
    attention_attrs = (a.q, a.k, a.v) if isinstance(a, AttentionParts) else (a.projection,)
    found: dict[str, list[nn.Module]] = {
        "attentions": _having(model, *attention_attrs),
        "norms": [m for m in model.modules() if type(m).__name__.endswith(parts.norm.class_suffix)],
        "mlps": [],
        "gated_mlps": [],
        "mixers": [m for names in parts.mixers for m in _having(model, names.in_proj, names.conv, names.out_proj)],
    }
    for names in parts.mlps:
        gated = isinstance(names, GatedMLPParts | FusedGatedMLPParts | InlineGatedMLPParts)
        found["gated_mlps" if gated else "mlps"] += mlp_modules(model, names)
    return found


def check_counts(model: nn.Module, parts: TransformerParts, found: dict[str, list[nn.Module]]) -> None:
    """Refuse a checkpoint whose module counts differ from the family's layout (one-line error)."""
    if parts.expected is None:
        return
    got = {
        "attention": len(found["attentions"]),
        "mlp": len(found["mlps"]) + len(found["gated_mlps"]),
        "norm": len(found["norms"]),
        "mixer": len(found["mixers"]),
    }
    # a wrapper's parts are its text model's, counted against the text config
    want = parts.expected(model.config.get_text_config() if parts.within is not None else model.config)
    if any(got[key] != n for key, n in want.items()):
        expected = ", ".join(f"{n} {key} modules" for key, n in want.items())
        found_text = ", ".join(str(got[key]) for key in want)
        raise UnsupportedModelError(
            f"{type(model).__name__}: expected {expected}, found {found_text}; this checkpoint's layout is not supported"
        )


# ------------------------------------------------------------------- installers
def install_norms(patch: ModelPatch, norms: list[nn.Module], norm: NormParts, *, forward_mode: bool = False) -> None:
    """RMSNorm / LayerNorm with the 1/sigma factor detached (Gemma's ``1 + weight`` read from the module)."""
    from lrp_llm.archs.layer_norm import layer_norm_convention, layer_norm_forward

    offsets: dict[type, float] = {}  # the convention is the class's code: probed once per class
    for module in norms:
        if norm.kind == "rms":
            eps = getattr(module, "variance_epsilon", getattr(module, "eps", 1e-6))
            if type(module) not in offsets:
                offsets[type(module)] = rms_norm_offset(module, eps)
            patch.override_forward(module, _rms_norm_forward(module, eps, offsets[type(module)]))
        else:
            # eps and a (1 + weight) offset read from the module (Cohere, OLMo-1, Nemotron); probed per module,
            # as eps is an instance attribute
            patch.override_forward(module, layer_norm_forward(module, layer_norm_convention(module), forward_mode))


def rms_norm_offset(module: nn.Module, eps: float) -> float:
    """The RMSNorm convention of ``module``: 0.0 for ``x / rms(x) * weight``, 1.0 for ``x / rms(x) * (1 + weight)``.

    Read from the module's own forward on a small seeded input (2, d) in its weight's
    dtype, not from its class name (Gemma-3n's norms have no offset): the convention
    whose detached formula reproduces the output within rounding (the two differ by
    ``x / rms(x)``, of order 1). A norm that neither reproduces is refused, naming its class.
    """
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        return 0.0  # no scale: both conventions are x / rms(x)
    dtype = weight.dtype if weight.is_floating_point() else torch.float32
    probe = 3.0 * torch.randn(2, weight.shape[-1], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    probe = probe.to(device=weight.device, dtype=dtype)
    with torch.no_grad():
        actual = output_tensor(module.forward(probe)).double()
        errors = {
            offset: float((rms_norm_detached(probe, weight, eps, offset=offset).double() - actual).abs().max())
            for offset in (0.0, 1.0)
        }
    offset = min(errors, key=errors.__getitem__)
    # transformers' norms compute in float32 at least, also for a float64 model
    rounding = max(torch.finfo(dtype).eps, torch.finfo(torch.float32).eps)
    tolerance = 16 * rounding * (1.0 + float(actual.abs().max()))
    if not errors[offset] <= tolerance:
        raise UnsupportedModelError(
            f"{type(module).__name__}: its output is neither x / rms(x) * weight nor x / rms(x) * (1 + weight) "
            f"(eps {eps}); this norm is not supported"
        )
    return offset


def _rms_norm_forward(module: nn.Module, eps: float, offset: float):
    def make(_original):
        def forward(hidden_states, *args, **kwargs):
            return rms_norm_detached(hidden_states, getattr(module, "weight", None), eps, offset=offset)

        return forward

    return make


def install_attention(
    patch: ModelPatch,
    attentions: list[nn.Module],
    parts: AttentionParts
    | AttentionFunctionParts
    | AttentionSplitParts
    | AttentionCallParts
    | AttentionProjectionParts,
    rules: str,
    *,
    forward_mode: bool = False,
) -> None:
    """Q, K, V of every attention module."""
    if isinstance(parts, AttentionFunctionParts):
        install_attention_function(patch, attentions, rules, forward_mode=forward_mode)
        return
    if isinstance(parts, AttentionSplitParts):
        install_attention_split(patch, attentions, parts.split, rules, forward_mode=forward_mode)
        return
    if isinstance(parts, AttentionCallParts):
        from lrp_llm.archs.attention_inline import install_attention_call

        install_attention_call(patch, attentions, parts.method, rules, forward_mode=forward_mode)
        return
    if isinstance(parts, AttentionProjectionParts):
        from lrp_llm.archs.attention_inline import install_attention_projection

        install_attention_projection(patch, attentions, parts.projection, rules, forward_mode=forward_mode)
        return
    for attn in attentions:
        q, k, v = getattr(attn, parts.q), getattr(attn, parts.k), getattr(attn, parts.v)
        if ATTENTION_RULE[rules] == "uniform":
            patch.hook_output(q, scale_output(0.25, forward_mode=forward_mode))
            patch.hook_output(k, scale_output(0.25, forward_mode=forward_mode))
            patch.hook_output(v, scale_output(0.5, forward_mode=forward_mode))
        elif forward_mode:
            patch.override_forward(q, _detached_input)
            patch.override_forward(k, _detached_input)
        else:
            patch.hook_output(q, detach_output)
            patch.hook_output(k, detach_output)


# The name under which :func:`_attention_with_rules` is registered in transformers' AttentionInterface.
ATTENTION_FUNCTION = "lrp_llm_rules"
# The attribute of an attention module that holds, for the block, (original function, q, k, v factors, forward mode).
_RULES_ATTR = "_lrp_attention_rules"


def _rule_on(x: torch.Tensor, factor: float | None, forward_mode: bool) -> torch.Tensor:
    if factor is None:  # CP-LRP / RelP: the attention probabilities are constants
        return x.detach()
    return scaled_jacobian(x, factor) if forward_mode else scale_grad(x, factor)


def _attention_factors(rules: str) -> tuple[float | None, float | None, float]:
    """The factors of Q, K, V's gradients under ``rules`` (None: detached)."""
    return (0.25, 0.25, 0.5) if ATTENTION_RULE[rules] == "uniform" else (None, None, 1.0)


def _attention_with_rules(module: nn.Module, query, key, value, attention_mask, *args, **kwargs):
    """The attention function registered as :data:`ATTENTION_FUNCTION`: the rules on Q, K, V, then the original."""
    original, q, k, v, forward_mode = getattr(module, _RULES_ATTR)
    query, key, value = (_rule_on(t, f, forward_mode) for t, f in ((query, q), (key, k), (value, v)))
    return original(module, query, key, value, attention_mask, *args, **kwargs)


def _original_attention(attn: nn.Module):
    """The function ``attn`` calls today: the registered one its config names, else its family's eager one."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    name = getattr(attn.config, "_attn_implementation", None)
    eager = getattr(sys.modules[type(attn).__module__], "eager_attention_forward", None)
    if name == ATTENTION_FUNCTION:
        raise RuntimeError(f"{type(attn).__name__}: LRP rules are already installed on this attention module")
    if name is not None and name != "eager" and name in ALL_ATTENTION_FUNCTIONS:
        return ALL_ATTENTION_FUNCTIONS[name]
    if eager is None:
        raise UnsupportedModelError(
            f"{type(attn).__name__}: attention implementation {name!r} has no function the LRP rules can wrap"
        )
    return eager


def install_attention_function(
    patch: ModelPatch,
    attentions: list[nn.Module],
    rules: str,
    *,
    forward_mode: bool = False,
    factors: list[tuple[float | None, float | None, float]] | None = None,
    function=None,
) -> None:
    """Q, K, V of every attention module, where they enter transformers' attention function.

    ``_attention_with_rules`` is registered once under :data:`ATTENTION_FUNCTION`. For the
    block, each attention module gets its own shallow copy of its config naming that
    function (transformers shares one config object between models built from it, and
    the model's own config keeps the original name, so the masks are built for the
    original function), and the original function with the rule factors. The original
    function (SDPA stays SDPA) computes the attention on the ruled Q, K, V.

    The rule variants (:mod:`lrp_llm.archs.attention_variants`) pass ``factors``, one
    (Q, K, V) triple per module (per-layer rules), and ``function``, an attention function
    that replaces the original (the softmax rule with a stabiliser).
    """
    from transformers.modeling_utils import AttentionInterface

    AttentionInterface.register(ATTENTION_FUNCTION, _attention_with_rules)  # a dict entry: idempotent
    per_module = factors if factors is not None else [_attention_factors(rules)] * len(attentions)
    copies: dict[int, object] = {}  # one copy per shared config object
    for attn, module_factors in zip(attentions, per_module, strict=True):
        original = _original_attention(attn) if function is None else function
        if id(attn.config) not in copies:
            ruled = copy.copy(attn.config)
            # the internal field: the property's setter would also rewrite the shared sub-configs
            ruled._attn_implementation_internal = ATTENTION_FUNCTION
            copies[id(attn.config)] = ruled
        patch.replace_attribute(attn, _RULES_ATTR, (original, *module_factors, forward_mode))
        patch.replace_attribute(attn, "config", copies[id(attn.config)])


def install_attention_split(
    patch: ModelPatch, attentions: list[nn.Module], split: str, rules: str, *, forward_mode: bool = False
) -> None:
    """Q, K, V of every attention module, where its method ``split`` returns them from the fused projection.

    For the block, each module gets an instance attribute of that name that calls the
    class's method and applies the rule factors to its ``(query, key, value)``; removed at
    the end, so the class's method is found again.
    """
    factors = _attention_factors(rules)
    for attn in attentions:
        if split in attn.__dict__:
            raise RuntimeError(f"{type(attn).__name__}: LRP rules are already installed on this attention module")
        original = getattr(attn, split)

        def split_with_rules(*args, _original=original, **kwargs):
            query, key, value = _original(*args, **kwargs)
            return tuple(_rule_on(t, f, forward_mode) for t, f in zip((query, key, value), factors, strict=True))

        object.__setattr__(attn, split, split_with_rules)
        patch.on_exit(lambda attn=attn: object.__delattr__(attn, split))


def install_mlps(patch: ModelPatch, model: nn.Module, parts: TransformerParts, rules: str) -> None:
    """The identity rule on plain MLP activations; the gated product split or the gate detached."""
    seen: set[int] = set()  # one activation module may serve several MLPs
    for names in parts.mlps:
        if isinstance(names, InlineGatedMLPParts):
            for mlp in mlp_modules(parts_root(model, parts), names):
                patch.override_forward(mlp, _inline_gated_mlp_forward(mlp, names, rules))
            continue
        gated = isinstance(names, GatedMLPParts | FusedGatedMLPParts)
        for mlp in mlp_modules(parts_root(model, parts), names):
            act = getattr(mlp, names.act)
            if id(act) not in seen:
                seen.add(id(act))
                if not gated:
                    patch.hook_output(act, identity_output(1.0))
                elif GATE_RULE[rules] == "uniform":
                    patch.hook_output(act, identity_output(0.5))
                else:
                    patch.hook_output(act, detach_output)
            if isinstance(names, GatedMLPParts) and GATE_RULE[rules] == "uniform":
                patch.hook_output(getattr(mlp, names.up), scale_output(0.5))
            elif isinstance(names, FusedGatedMLPParts) and GATE_RULE[rules] == "uniform":
                patch.hook_output(getattr(mlp, names.gate_up), scale_second_half(0.5))


def _inline_gated_mlp_forward(mlp: nn.Module, names: InlineGatedMLPParts, rules: str):
    """``down(act(gate(x)) * up(x))`` with the gated product's rules (see :func:`install_mlps`)."""
    act = getattr(torch.nn.functional, names.act)
    gate, up, down = getattr(mlp, names.gate), getattr(mlp, names.up), getattr(mlp, names.down)
    uniform = GATE_RULE[rules] == "uniform"

    def make(_original):
        def forward(x):
            g = gate(x)
            ratio = silu_ratio(g) if names.act == "silu" else None
            a = identity_rule(g, act(g), 0.5, ratio) if uniform else act(g).detach()
            u = scale_grad(up(x), 0.5) if uniform else up(x)
            return down(a * u)

        return forward

    return make


def gated_conv_factors(rules: str) -> tuple[float | None, float | None, float]:
    """The gradient factors of a gated convolution's ``B``, ``C``, ``x`` under ``rules`` (None: held constant)."""
    return (0.25, 0.5, 0.25) if GATE_RULE[rules] == "uniform" else (None, None, 1.0)


def _gated_conv_thirds(factors: tuple[float | None, float | None, float]):
    def hook(_module, _args, output):
        thirds = output_tensor(output).chunk(3, dim=-1)
        return torch.cat(
            [t.detach() if f is None else (t if f == 1.0 else scale_grad(t, f)) for t, f in zip(thirds, factors)],
            dim=-1,
        )

    return hook


def install_gated_convs(patch: ModelPatch, mixers: list[nn.Module], parts: TransformerParts, rules: str) -> None:
    """The gates ``B`` and ``C`` of every gated convolution: their factors on the input projection's thirds."""
    hook = _gated_conv_thirds(gated_conv_factors(rules))
    for mixer in mixers:
        names = next(n for n in parts.mixers if all(hasattr(mixer, a) for a in (n.in_proj, n.conv, n.out_proj)))
        patch.hook_output(getattr(mixer, names.in_proj), hook)


def softcap_output(cap: float):
    """Forward hook on the LM head: ``cap * tanh(logits / cap)`` passed on by the identity rule."""

    def hook(_module, _args, output):
        logits = output_tensor(output)
        # the same operations, in the same order, as the transformers forward it replaces
        return identity_rule(logits, torch.tanh(logits / cap) * cap)

    return hook


def install_logit_softcap(patch: ModelPatch, model: nn.Module, config_attr: str) -> None:
    """A final-logit soft-cap (Gemma-2) under the identity rule: the relevance of the capped logit
    passes to the uncapped one unchanged, so conservation holds for the explained (capped) logit.

    The model's forward applies the cap after the LM head, reading it from ``model.config``;
    transformers shares one config object between models built from it, so instead of
    changing it this instance gets its own shallow copy with the cap off for the block, and
    the LM head's output hook applies the cap.
    """
    config = getattr(model, "config", None)
    cap = getattr(config, config_attr, None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if cap is None or head is None:  # no cap, or a bare model without the head that applies it
        return
    uncapped = copy.copy(config)
    setattr(uncapped, config_attr, None)
    patch.replace_attribute(model, "config", uncapped)
    patch.hook_output(head, softcap_output(float(cap)))


def install_transformer_rules(patch: ModelPatch, model: nn.Module, parts: TransformerParts, rules: str) -> None:
    """The rule set ``rules`` ("attnlrp", "cp-lrp", "relp", or an AttnLRP variant of
    :mod:`lrp_llm.archs.attention_variants`) on every part ``parts`` names."""
    from lrp_llm.archs.attention_variants import VARIANTS, install_variant_attention

    found = find_parts(model, parts)
    check_counts(model, parts, found)
    install_norms(patch, found["norms"], parts.norm)
    if rules in VARIANTS:  # AttnLRP everywhere but the attention, which gets the variant's rules
        install_variant_attention(patch, found["attentions"], parts.attention, VARIANTS[rules])
        rules = VARIANTS[rules].base
    else:
        install_attention(patch, found["attentions"], parts.attention, rules)
    install_mlps(patch, model, parts, rules)
    install_gated_convs(patch, found["mixers"], parts, rules)
    if parts.attention_gate is not None:
        from lrp_llm.archs.attention_gate import install_attention_gates

        install_attention_gates(patch, found["attentions"], parts.attention_gate, rules)
    if parts.moe is not None:
        from lrp_llm.archs.experts import install_moe

        install_moe(patch, model, parts.moe, rules)
    if parts.logit_softcap is not None:
        install_logit_softcap(patch, model, parts.logit_softcap)
