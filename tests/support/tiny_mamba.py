"""Tiny random Mamba and Mamba-2 causal LMs (seeded, built in milliseconds)."""

from __future__ import annotations

import torch

MAMBA_FAMILIES = ("mamba", "mamba2", "falcon_mamba")


def tiny_mamba(
    family: str = "mamba",
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    layers: int = 2,
    vocab: int = 61,
    bias: bool = False,
    **overrides,
):
    """A ``MambaForCausalLM`` / ``Mamba2ForCausalLM`` with d_model 16 and larger-than-init weights.

    ``bias=False`` leaves out every bias that would absorb relevance (projections, conv1d);
    the dt bias stays (dt is detached under MambaLRP).
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    common = dict(
        vocab_size=vocab,
        hidden_size=16,
        state_size=4,
        num_hidden_layers=layers,
        expand=2,
        conv_kernel=4,
        use_bias=bias,
        use_conv_bias=bias,
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    if family in ("mamba", "falcon_mamba"):  # Falcon-Mamba: the Mamba-1 config (and norms on dt, B, C)
        common.update(time_step_rank=4)
    else:
        common.update(num_heads=4, head_dim=8, n_groups=2, chunk_size=8)
    common.update(overrides)
    config = AutoConfig.for_model(family, **common)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            elif name.endswith("A_log"):
                p.copy_(torch.log(torch.rand_like(p) * 3 + 0.5))
            elif name.endswith("dt_bias") or name.endswith("dt_proj.bias"):
                p.copy_(torch.log(torch.expm1(torch.rand_like(p) * 0.3 + 0.05)))  # dt in [0.05, 0.35]
            elif name.endswith(".D"):
                p.normal_(0.0, 0.5)
            elif p.dim() >= 2:
                p.normal_(0.0, 0.3)
            else:
                p.normal_(0.0, 0.1)
    return model.to(dtype).eval()


def scan_matrix(dt, A, B, C):
    """The scan as an explicit matrix (the hand formula): y[b, t, e] = sum_s M[b, e, t, s] u[b, s, e] with
    M[b, e, t, s] = sum_n C[t, n] exp(A[e, n] * sum_{k=s+1..t} dt[k, e]) dt[s, e] B[s, n] for s <= t."""
    b, L, E = dt.shape
    G = B.shape[2]
    Bc = B.repeat_interleave(E // G, dim=2)  # (b, L, E, N): each channel's group
    Cc = C.repeat_interleave(E // G, dim=2)
    cs = dt.cumsum(1)  # sum_{k=s+1..t} dt[k] = cs[t] - cs[s]
    gap = cs[:, :, None, :] - cs[:, None, :, :]  # (b, t, s, E)
    decay = torch.exp(A[None, None, None] * gap.unsqueeze(-1))  # (b, t, s, E, N)
    M = torch.einsum("bten,btsen,bsen->bets", Cc, decay, Bc) * dt.transpose(1, 2)[:, :, None, :]
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    M = M.masked_fill(~causal, 0.0)
    return M
