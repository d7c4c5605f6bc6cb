"""RWKV-4 (``RwkvForCausalLM``): blocks of time mixing (token shift, WKV recurrence, receptance gate)
and channel mixing (token shift, squared-ReLU key, receptance gate); LayerNorms with bias.

No published LRP rule covers RWKV. These follow MambaLRP's recipe (hold the input-dependent
weights constant so that the mixer is linear in its input, the uniform rule on products, the
identity rule on activations):

=========================  ==============================================================
part                       rule
=========================  ==============================================================
token shift, time mixes    linear (a shift and constant per-channel mixing): unchanged
WKV                        ``wkv_t = sum_i w_ti v_i / sum_i w_ti`` with
                           ``w_ti = exp(-(t-1-i) exp(decay) + k_i)`` (``exp(first + k_t)`` at
                           ``i = t``): the keys held constant under every rule set (the weights
                           and their normaliser are constants), so ``wkv`` is linear in ``v``
``sigmoid(r) * wkv``       the gated-MLP rule: uniform under AttnLRP and RelP (``wkv`` x 1/2,
                           sigmoid identity rule x 1/2), ``sigmoid(r)`` held constant under CP-LRP
``relu(k)^2``              identity rule (relevance passes unchanged)
``sigmoid(r) * value(.)``  the same gate rule as the time mixing's
LayerNorm (with bias)      ``1 / sigma`` held constant
=========================  ==============================================================

Under CP-LRP the model is then linear in the token embeddings apart from the norms' biases,
so on a bias-free model the relevance sums to the explained logit exactly. The mixers'
forwards are replaced on the instance (the same arithmetic with the rules; the WKV is
transformers' own ``rwkv_linear_attention`` on the detached keys, the CPU loop or the CUDA
kernel alike: a kernel's gradient with respect to ``v`` is the partial derivative, which is
the rule's once the keys are constants).
"""

from __future__ import annotations

import torch
from torch import nn

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.blocks import GATE_RULE, install_norms
from lrp_llm.archs.description import BlockPaths, NormParts
from lrp_llm.errors import UnsupportedModelError
from lrp_llm.mechanism.patch import ModelPatch
from lrp_llm.mechanism.primitives import identity_rule, scale_grad

NORMS = NormParts(kind="layer", class_suffix="LayerNorm")
_TIME_MIX = ("time_decay", "time_first", "time_mix_key", "time_mix_value", "time_mix_receptance", "output")
_CHANNEL_MIX = ("time_mix_key", "time_mix_receptance", "key", "receptance", "value")


def _shifted(mixer: nn.Module, hidden: torch.Tensor, state, slot: int) -> torch.Tensor:
    """The previous token's hidden state (batch, L, d): the shift, or the cached one in ``state[slot]``.

    The same state handling as transformers' mixers. For one token the result is a view of the
    cache: :func:`_remember` the new token only once the mixes are computed.
    """
    if hidden.size(1) == 1 and state is not None:
        shifted = state[slot][:, :, mixer.layer_id]
    else:
        shifted = mixer.time_shift(hidden)
        if state is not None:
            shifted[:, 0] = state[slot][:, :, mixer.layer_id]
    return shifted


def _remember(mixer: nn.Module, hidden: torch.Tensor, state, slot: int) -> None:
    """The last token's hidden state into the cache ``state[slot]`` (in place), for the next step's shift."""
    if state is not None:
        state[slot][:, :, mixer.layer_id] = hidden[:, -1]


def _mix(hidden: torch.Tensor, shifted: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return hidden * weight + shifted * (1 - weight)


def _gate(logits: torch.Tensor, uniform: bool) -> torch.Tensor:
    """``sigmoid(logits)``: identity rule x 1/2 (uniform) or held constant."""
    gate = torch.sigmoid(logits)
    return identity_rule(logits, gate, 0.5) if uniform else gate.detach()


def _time_mix_forward(mixer: nn.Module, rules: str):
    from transformers.models.rwkv.modeling_rwkv import rwkv_linear_attention

    uniform = GATE_RULE[rules] == "uniform"

    def make(_original):
        def forward(hidden, state=None, use_cache=False):
            shifted = _shifted(mixer, hidden, state, 1)
            key = mixer.key(_mix(hidden, shifted, mixer.time_mix_key))
            value = mixer.value(_mix(hidden, shifted, mixer.time_mix_value))
            receptance = _gate(mixer.receptance(_mix(hidden, shifted, mixer.time_mix_receptance)), uniform)
            _remember(mixer, hidden, state, 1)
            layer_state = tuple(s[:, :, mixer.layer_id] for s in state[2:]) if state is not None else None
            # the keys are the WKV's weights: constants, so the WKV is a fixed average of the values
            wkv, layer_state = rwkv_linear_attention(
                mixer.time_decay, mixer.time_first, key.detach(), value, state=layer_state, return_state=use_cache
            )
            if layer_state is not None:
                for i, s in enumerate(layer_state):
                    state[2 + i][:, :, mixer.layer_id] = s
            if uniform:
                wkv = scale_grad(wkv, 0.5)
            return mixer.output(receptance * wkv), state

        return forward

    return make


def _channel_mix_forward(mixer: nn.Module, rules: str):
    uniform = GATE_RULE[rules] == "uniform"

    def make(_original):
        def forward(hidden, state=None):
            shifted = _shifted(mixer, hidden, state, 0)
            pre = mixer.key(_mix(hidden, shifted, mixer.time_mix_key))
            key = identity_rule(pre, torch.square(torch.relu(pre)))  # relu(x)^2 / x = relu(x)
            value = mixer.value(key)
            receptance = _gate(mixer.receptance(_mix(hidden, shifted, mixer.time_mix_receptance)), uniform)
            _remember(mixer, hidden, state, 0)
            if uniform:
                value = scale_grad(value, 0.5)
            return receptance * value, state

        return forward

    return make


def mixers(model: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    """The time- and channel-mixing modules of every block, or a one-line error when the layout differs."""
    blocks = getattr(getattr(model, "base_model", model), "blocks", None)
    n = model.config.num_hidden_layers
    found = list(blocks) if isinstance(blocks, nn.ModuleList) else []
    time = [getattr(b, "attention", None) for b in found]
    channel = [getattr(b, "feed_forward", None) for b in found]
    ok = len(found) == n and all(
        m is not None and all(hasattr(m, a) for a in _TIME_MIX + ("layer_id", "time_shift")) for m in time
    )
    ok = ok and all(m is not None and all(hasattr(m, a) for a in _CHANNEL_MIX + ("layer_id",)) for m in channel)
    if not ok:
        raise UnsupportedModelError(
            f"{type(model).__name__}: expected {n} RWKV blocks with time and channel mixing, found {len(found)} blocks; "
            "this checkpoint's layout is not supported"
        )
    return time, channel


def install_rwkv_rules(patch: ModelPatch, model: nn.Module, rules: str) -> None:
    """AttnLRP-style (uniform gate rule), CP-LRP (gates held) or RelP on RWKV-4 (see the module docstring)."""
    time, channel = mixers(model)
    norms = [m for m in model.modules() if type(m).__name__.endswith(NORMS.class_suffix)]
    if len(norms) != 2 * len(time) + 2:  # ln1, ln2 per block; the first block's pre_ln; ln_out
        raise UnsupportedModelError(
            f"{type(model).__name__}: expected {2 * len(time) + 2} LayerNorms, found {len(norms)}; "
            "this checkpoint's layout is not supported"
        )
    install_norms(patch, norms, NORMS)
    for mixer in time:
        patch.override_forward(mixer, _time_mix_forward(mixer, rules))
    for mixer in channel:
        patch.override_forward(mixer, _channel_mix_forward(mixer, rules))


RWKV_FAMILY = register(
    ArchSpec(
        family="rwkv",
        model_types=("rwkv",),
        kind="causal-lm",
        install=install_rwkv_rules,
        patching_rules=("relp",),
        # time mixing is the token mixer; channel mixing the MLP, its neurons the squared-ReLU keys
        blocks=BlockPaths(
            layers="blocks", mixer="attention", mlp="feed_forward", neurons="feed_forward.value", final_norm="ln_out"
        ),
    )
)
