"""xLSTM-7B style models (``xLSTMForCausalLM``): blocks of an mLSTM layer and a gated SiLU MLP, RMSNorms,
a per-head LayerNorm on the mLSTM output, soft-capped logits.

No published LRP rule covers the mLSTM. The rule follows MambaLRP's recipe:

==========================  ==============================================================
part                        rule
==========================  ==============================================================
mLSTM cell                  ``C_t = f_t C_{t-1} + i_t v_t k_t^T``, ``n_t = f_t n_{t-1} + i_t k_t``,
                            ``h_t = C_t q_t / max(|n_t^T q_t|, exp(-m_t))``: the query, the key and
                            the input and forget gates held constant under every rule set (their
                            projections' outputs detached), so the normaliser is a constant and
                            ``h`` is linear in ``v``, whichever kernel computes it
per-head LayerNorm          ``1 / sigma`` held
``sigmoid(o) * h``          the gated-MLP rule: uniform under AttnLRP and RelP (``h`` x 1/2, sigmoid
                            identity rule x 1/2), ``sigmoid(o)`` held under CP-LRP
gated SiLU MLP, RMSNorms    the shared installers
logit soft-cap              identity rule (:func:`lrp_llm.archs.recurrent_gemma.install_forward_softcap`)
==========================  ==============================================================

Only ``weight_mode="single"`` (separate projections, the released checkpoints' layout) is
supported; a fused checkpoint is refused naming the part. transformers runs prompts longer than
``config.max_inference_chunksize`` in chunks under ``torch.no_grad``; for the block the model gets
a config copy without that limit (the same computation in one piece, with gradients).
"""

from __future__ import annotations

import copy
import sys

import torch
from torch import nn

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.blocks import (
    GATE_RULE,
    detach_output,
    identity_output,
    install_mlps,
    install_norms,
    mlp_modules,
)
from lrp_llm.archs.description import BlockPaths, GatedMLPParts, NormParts, TransformerParts
from lrp_llm.archs.recurrent_gemma import install_forward_softcap
from lrp_llm.errors import UnsupportedModelError
from lrp_llm.mechanism.patch import ModelPatch
from lrp_llm.mechanism.primitives import scale_grad

_LAYER = ("q", "k", "v", "igate_preact", "fgate_preact", "ogate_preact", "ogate_act_fn", "multihead_norm", "out_proj")
PARTS = TransformerParts(
    attention=None,  # type: ignore[arg-type]  # no attention: only the MLP and norm entries are read here
    mlps=(GatedMLPParts(gate="proj_up_gate", up="proj_up", down="proj_down", act="act_fn"),),
    norm=NormParts(kind="rms", class_suffix="RMSNorm"),
)


def mlstm_layers(model: nn.Module) -> list[nn.Module]:
    """The mLSTM layer of every block, or a one-line error naming what differs."""
    if getattr(model.config, "weight_mode", "single") != "single":
        raise UnsupportedModelError(
            f"{type(model).__name__}: xLSTM weight_mode {model.config.weight_mode!r} (fused projections) has no "
            "LRP rule here; only weight_mode 'single' is supported"
        )
    n = model.config.num_hidden_layers
    found = [m for m in model.modules() if all(isinstance(getattr(m, a, None), nn.Module) for a in _LAYER)]
    if len(found) != n:
        raise UnsupportedModelError(
            f"{type(model).__name__}: expected {n} mLSTM layers, found {len(found)}; "
            "this checkpoint's layout is not supported"
        )
    return found


def _multihead_norm_forward(norm: nn.Module, factor: float):
    """The per-head LayerNorm (batch, L, heads, head_dim) -> (batch, L, heads * head_dim) with ``1 / sigma``
    held (statistics in float32 at least, as transformers'), the output's gradient times ``factor``."""

    def make(_original):
        def forward(x: torch.Tensor) -> torch.Tensor:
            batch, length = x.shape[:2]
            dtype = x.dtype
            xf = x if dtype == torch.float64 else x.float()
            centred = xf - xf.mean(dim=-1, keepdim=True)
            inv = torch.rsqrt(xf.var(dim=-1, keepdim=True, unbiased=False) + norm.eps).detach()
            y = (centred * inv).to(dtype).reshape(batch, length, -1)
            if norm.weight is not None:
                y = y * norm.weight
            if norm.bias is not None:
                y = y + norm.bias
            return scale_grad(y, factor)

        return forward

    return make


def install_mlstm_layers(patch: ModelPatch, layers: list[nn.Module], rules: str) -> None:
    """The mLSTM rule (q, k, gates held) and the output gate's rule on every layer in ``layers``."""
    uniform = GATE_RULE[rules] == "uniform"
    for layer in layers:
        for name in ("q", "k", "igate_preact", "fgate_preact"):
            patch.hook_output(getattr(layer, name), detach_output)
        patch.override_forward(
            layer.multihead_norm, _multihead_norm_forward(layer.multihead_norm, 0.5 if uniform else 1.0)
        )
        patch.hook_output(layer.ogate_act_fn, identity_output(0.5) if uniform else detach_output)


def install_xlstm_rules(patch: ModelPatch, model: nn.Module, rules: str) -> None:
    """AttnLRP-style (uniform gate rule), CP-LRP (gates held) or RelP on xLSTM (see the module docstring)."""
    layers = mlstm_layers(model)
    norms = [m for m in model.modules() if type(m).__name__.endswith(PARTS.norm.class_suffix)]
    n = model.config.num_hidden_layers
    if len(norms) != 2 * n + 1:
        raise UnsupportedModelError(
            f"{type(model).__name__}: expected {2 * n + 1} RMSNorms, found {len(norms)}; "
            "this checkpoint's layout is not supported"
        )
    ffns = mlp_modules(model, PARTS.mlps[0])
    if len(ffns) != n:
        raise UnsupportedModelError(
            f"{type(model).__name__}: expected {n} gated feed-forward blocks, found {len(ffns)}; "
            "this checkpoint's layout is not supported"
        )
    install_norms(patch, norms, PARTS.norm)
    install_mlps(patch, model, PARTS, rules)
    install_mlstm_layers(patch, layers, rules)
    install_forward_softcap(patch, model, "output_logit_soft_cap")
    # long prompts are otherwise run in chunks under torch.no_grad (no relevance at all)
    unlimited = copy.copy(model.config)
    unlimited.max_inference_chunksize = sys.maxsize
    for owner in (model, model.base_model):
        patch.replace_attribute(owner, "config", unlimited)


XLSTM_FAMILY = register(
    ArchSpec(
        family="xlstm",
        model_types=("xlstm",),
        kind="causal-lm",
        install=install_xlstm_rules,
        patching_rules=("relp",),
        blocks=BlockPaths(
            layers="blocks", mixer="mlstm_layer", mlp="ffn", neurons="ffn.proj_down", final_norm="out_norm"
        ),
    )
)
