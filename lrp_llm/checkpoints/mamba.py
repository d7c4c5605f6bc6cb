"""Checkpoints in the original mamba-ssm layout, converted to transformers on load.

mamba-ssm (``state-spaces/mamba-*``, ``mamba2-*``) saves ``config.json`` with
``d_model``, ``n_layer``, ``vocab_size``, ``ssm_cfg`` ... (no ``model_type``) and the
weights as ``backbone.embedding.weight``, ``backbone.layers.N.mixer.*``,
``backbone.layers.N.norm.weight``, ``backbone.norm_f.weight``, ``lm_head.weight``.
transformers' ``MambaForCausalLM`` / ``Mamba2ForCausalLM`` use the same mixer names, so
the conversion is a config translation and one renamed key (``embedding`` ->
``embeddings``). Pickled weights (``pytorch_model.bin``) are read only when the caller
allowed pickle, and then with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lrp_llm.errors import CheckpointError, UnsupportedModelError


def mamba_ssm_model_type(config: dict[str, Any]) -> str | None:
    """ "mamba" or "mamba2" for a mamba-ssm config.json, None for anything else."""
    if "model_type" in config or "d_model" not in config or "n_layer" not in config:
        return None
    ssm_cfg = config.get("ssm_cfg") or {}
    return "mamba2" if str(ssm_cfg.get("layer", "Mamba1")).lower() == "mamba2" else "mamba"


def hf_config(config: dict[str, Any]):
    """The transformers ``MambaConfig`` / ``Mamba2Config`` of a mamba-ssm config.json."""
    from transformers import Mamba2Config, MambaConfig

    model_type = mamba_ssm_model_type({k: v for k, v in config.items() if k != "model_type"})
    if model_type is None:
        raise CheckpointError("config.json is not in the mamba-ssm layout (it needs d_model and n_layer)")
    ssm_cfg = dict(config.get("ssm_cfg") or {})
    d_model, n_layer = int(config["d_model"]), int(config["n_layer"])
    if int(config.get("d_intermediate", 0) or 0) > 0 or config.get("attn_layer_idx"):
        raise UnsupportedModelError(
            "this mamba-ssm checkpoint has MLP or attention layers (d_intermediate / attn_layer_idx); "
            "only pure Mamba and Mamba-2 stacks are supported"
        )
    if not config.get("rms_norm", True):
        raise UnsupportedModelError(
            "this mamba-ssm checkpoint uses LayerNorm (rms_norm: false); only RMSNorm is supported"
        )
    multiple = int(config.get("pad_vocab_size_multiple", 8) or 1)
    vocab = int(config.get("vocab_size", 50277))
    vocab = vocab + (-vocab) % multiple  # mamba-ssm pads the embedding to a multiple
    common = dict(
        vocab_size=vocab,
        hidden_size=d_model,
        num_hidden_layers=n_layer,
        expand=int(ssm_cfg.get("expand", 2)),
        conv_kernel=int(ssm_cfg.get("d_conv", 4)),
        use_bias=bool(ssm_cfg.get("bias", False)),
        use_conv_bias=bool(ssm_cfg.get("conv_bias", True)),
        residual_in_fp32=bool(config.get("residual_in_fp32", True)),
        layer_norm_epsilon=float(config.get("norm_epsilon", 1e-5)),
        tie_word_embeddings=bool(config.get("tie_embeddings", True)),
    )
    if model_type == "mamba":
        dt_rank = ssm_cfg.get("dt_rank", "auto")
        common.update(
            state_size=int(ssm_cfg.get("d_state", 16)),
            time_step_rank=math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank),
        )
        return MambaConfig(**common)
    head_dim = int(ssm_cfg.get("headdim", 64))
    expand = common["expand"]
    if (expand * d_model) % head_dim:
        raise CheckpointError(f"mamba-ssm config: expand * d_model = {expand * d_model} is not a multiple of headdim")
    if ssm_cfg.get("norm_before_gate", False):
        raise UnsupportedModelError("Mamba-2 with norm_before_gate=true is not supported by transformers")
    common.update(
        state_size=int(ssm_cfg.get("d_state", 128)),
        head_dim=head_dim,
        num_heads=expand * d_model // head_dim,
        n_groups=int(ssm_cfg.get("ngroups", 1)),
        chunk_size=int(ssm_cfg.get("chunk_size", 256)),
        time_step_limit=tuple(ssm_cfg.get("dt_limit", (0.0, float("inf")))),
    )
    return Mamba2Config(**common)


def convert_state_dict(state: dict) -> dict:
    """mamba-ssm weight names -> transformers names."""
    out = {}
    for key, value in state.items():
        if key.startswith("backbone.embedding."):
            key = "backbone.embeddings." + key[len("backbone.embedding.") :]
        out[key] = value
    return out


def read_weights(folder: Path, weights: str) -> dict:
    """All tensors of the folder's weight files (safetensors, or pickled with weights_only=True)."""
    import torch

    if weights == "safetensors":
        from safetensors.torch import load_file

        files = sorted(folder.glob("*.safetensors"))
        state: dict = {}
        for f in files:
            state.update(load_file(str(f)))
        return state
    files = sorted([*folder.glob("*.bin"), *folder.glob("*.pt"), *folder.glob("*.pth")])
    state = {}
    for f in files:
        loaded = torch.load(str(f), map_location="cpu", weights_only=True)
        if isinstance(loaded, dict) and "model" in loaded and isinstance(loaded["model"], dict):
            loaded = loaded["model"]
        state.update(loaded)
    return state


def load_mamba_ssm(folder: Path, config: dict[str, Any], weights: str, dtype=None, *, allow_missing: bool = False):
    """``MambaForCausalLM`` / ``Mamba2ForCausalLM`` from a mamba-ssm folder; weights in ``dtype`` (default: as stored).

    Missing, unexpected or mismatched tensors: see
    :func:`lrp_llm.checkpoints.weight_check.check_loaded_weights` (``allow_missing``)."""
    import torch
    from transformers import AutoModelForCausalLM

    from lrp_llm.checkpoints.weight_check import check_loaded_weights

    hf = hf_config(config)
    state = convert_state_dict(read_weights(folder, weights))
    emb = state.get("backbone.embeddings.weight")
    if emb is None:
        raise CheckpointError(f"{folder}: no backbone.embedding.weight in the weights; is this a mamba-ssm checkpoint?")
    if emb.shape[0] != hf.vocab_size:  # vocab_size given unpadded and no multiple in the config
        hf.vocab_size = int(emb.shape[0])
    if hf.tie_word_embeddings and "lm_head.weight" in state and not torch.equal(state["lm_head.weight"], emb):
        hf.tie_word_embeddings = False
    model = AutoModelForCausalLM.from_config(hf)
    expected = model.state_dict()
    # load_state_dict would stop at the first tensor of another shape; name them all instead
    mismatched = [
        (k, tuple(v.shape), tuple(expected[k].shape))
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    state = {k: v for k, v in state.items() if not (k in expected and v.shape != expected[k].shape)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and hf.tie_word_embeddings)]
    missing = [k for k in missing if k not in {m[0] for m in mismatched}]
    check_loaded_weights(
        folder, missing=missing, unexpected=unexpected, mismatched=mismatched, allow_missing=allow_missing
    )
    if hf.tie_word_embeddings:
        model.tie_weights()
    target = dtype if dtype is not None else (emb.dtype if emb.is_floating_point() else torch.float32)
    return model.to(target).eval()
