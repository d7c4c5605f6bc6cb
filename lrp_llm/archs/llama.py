"""AttnLRP and CP-LRP for Llama-family decoders.

Llama (SmolLM2), Mistral, Qwen2, Qwen3, Gemma, Gemma-2 and Gemma-3 (text) share one
shape: RMSNorm, attention with ``q_proj``/``k_proj``/``v_proj``/``o_proj`` (RoPE and any
q/k norm between the projections and the attention kernel are linear once norms are
detached), and a gated MLP ``down(act(gate(x)) * up(x))``.

The rules touch only module outputs, never the attention kernel, so SDPA stays:

==============  =============================  ==============================
place           AttnLRP (Achtibat et al. 2024)  CP-LRP (Ali et al. 2022)
==============  =============================  ==============================
RMSNorm         1/rms detached                  1/rms detached
q_proj, k_proj  gradient x 1/4                  detached (no relevance via A)
v_proj          gradient x 1/2                  unchanged
act(gate)       identity rule, gradient x 1/2   detached (gate is a constant)
up_proj         gradient x 1/2                  unchanged
==============  =============================  ==============================

Gemma-2's attention logit soft-cap (``cap * tanh(s / cap)``, cap 50) sits inside the
eager kernel and keeps its plain gradient; below the cap it is close to the identity.
"""

from __future__ import annotations

from torch import nn

from lrp_llm.archs import ArchSpec, register
from lrp_llm.errors import UnsupportedModelError
from lrp_llm.mechanism.patch import ModelPatch, output_tensor
from lrp_llm.mechanism.primitives import identity_rule, rms_norm_detached, scale_grad, silu_ratio


def _norm_forward(module: nn.Module):
    eps = getattr(module, "variance_epsilon", getattr(module, "eps", 1e-6))
    offset = 1.0 if "Gemma" in type(module).__name__ else 0.0
    weight = getattr(module, "weight", None)

    def make(_original):
        def forward(hidden_states, *args, **kwargs):
            return rms_norm_detached(hidden_states, module.weight if weight is not None else None, eps, offset=offset)

        return forward

    return make


def _scale_output(factor: float):
    def hook(_module, _args, output):
        return scale_grad(output_tensor(output), factor)

    return hook


def _detach_output(_module, _args, output):
    return output_tensor(output).detach()


def _identity_output(factor: float):
    def hook(module, args, output):
        # SiLU (Llama, Mistral, Qwen, OLMo, Granite): the ratio silu(x)/x is sigmoid(x), one operation
        ratio = (
            silu_ratio(args[0]) if isinstance(module, nn.SiLU) or type(module).__name__ == "SiLUActivation" else None
        )
        return identity_rule(args[0], output_tensor(output), factor, ratio)

    return hook


def _find(model: nn.Module, *attrs: str) -> list[nn.Module]:
    return [m for m in model.modules() if all(hasattr(m, a) for a in attrs)]


def apply_llama_rules(patch: ModelPatch, model: nn.Module, rules: str) -> None:
    if rules not in ("attnlrp", "cp-lrp"):
        raise ValueError(f"unknown rule set {rules!r}")
    n_layers = model.config.num_hidden_layers
    attentions = _find(model, "q_proj", "k_proj", "v_proj", "o_proj")
    mlps = _find(model, "gate_proj", "up_proj", "down_proj", "act_fn")
    if len(attentions) != n_layers or len(mlps) != n_layers:
        raise UnsupportedModelError(
            f"{type(model).__name__}: expected {n_layers} attention and gated-MLP blocks, found "
            f"{len(attentions)} and {len(mlps)}; this checkpoint's layout is not supported"
        )
    for module in model.modules():
        if type(module).__name__.endswith("RMSNorm"):
            patch.override_forward(module, _norm_forward(module))
    for attn in attentions:
        if rules == "attnlrp":
            patch.hook_output(attn.q_proj, _scale_output(0.25))
            patch.hook_output(attn.k_proj, _scale_output(0.25))
            patch.hook_output(attn.v_proj, _scale_output(0.5))
        else:
            patch.hook_output(attn.q_proj, _detach_output)
            patch.hook_output(attn.k_proj, _detach_output)
    seen_acts: set[int] = set()  # one activation module may serve several MLPs
    for mlp in mlps:
        if id(mlp.act_fn) not in seen_acts:
            seen_acts.add(id(mlp.act_fn))
            if rules == "attnlrp":
                patch.hook_output(mlp.act_fn, _identity_output(0.5))
            else:
                patch.hook_output(mlp.act_fn, _detach_output)
        if rules == "attnlrp":
            patch.hook_output(mlp.up_proj, _scale_output(0.5))


LLAMA_FAMILY = register(
    ArchSpec(
        family="llama",
        model_types=("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "olmo2", "granite"),
        kind="causal-lm",
        apply=apply_llama_rules,
    )
)
