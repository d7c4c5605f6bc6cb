"""The hidden attention of Mamba models (Ali, Zimerman & Wolf, 2024) as an attribution baseline.

Unrolling the selective scan of one channel ``e`` writes its output as an attention over
the positions before it::

    y[t, e] = sum_{s <= t} alpha[t, s, e] * u[s, e]
    alpha[t, s, e] = sum_n C[t, n] * exp(A[e, n] * (S[t, e] - S[s, e])) * dt[s, e] * B[s, n]

with ``S`` the running sum of ``dt`` over time (Mamba-2: ``B`` and ``C`` of the
channel's group, one ``A`` per head). For the token predicted from position ``q`` the
relevance of position ``s`` is, per layer, the channel mean of ``|alpha[q, s, :]|``
normalised to sum 1 over ``s``, averaged over the layers.

Only the explained position's row of each layer's matrix is formed: the cost is
O(layers x q x channels x d_state) per target, in chunks of positions. Attention
rollout (Ali et al.'s "Mamba-Attr" variants) needs every layer's full T x T matrix,
O(T^2 x channels x d_state) per layer, and is left out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from lrp_llm.errors import check_cancel

# elements of one (positions x channels x d_state) block
_BLOCK = 1 << 22


def _row(scan: dict, q: int) -> torch.Tensor:
    """Channel mean of |alpha[q, s, :]| for s = 0 .. q, as float64 (q + 1,)."""
    dt = scan["dt"][0, : q + 1].double()  # (q + 1, E)
    A = scan["A"].double()  # (E, N)
    B, C = scan["B"][0, : q + 1].double(), scan["C"][0, q].double()  # (q + 1, G, N), (G, N)
    E, N = A.shape
    G = B.shape[1]
    group = torch.arange(E, device=A.device) // (E // G)  # channel -> group
    S = dt.cumsum(0)
    Cq = C[group]  # (E, N)
    out = torch.empty(q + 1, dtype=torch.float64, device=A.device)
    step = max(1, _BLOCK // (E * N))
    for lo in range(0, q + 1, step):
        hi = min(q + 1, lo + step)
        decay = torch.exp(A * (S[q] - S[lo:hi]).unsqueeze(-1))  # (c, E, N); A < 0, exponent <= 0
        alpha = (decay * B[lo:hi][:, group] * Cq).sum(-1) * dt[lo:hi]  # (c, E)
        out[lo:hi] = alpha.abs().mean(-1)
    return out


def hidden_attention(
    model: nn.Module,
    ids: torch.Tensor,
    keep: torch.Tensor,
    *,
    progress: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits (n, vocab), relevance (n, seq) float64)`` for the targets predicted at positions ``keep``.

    ``ids`` (1, seq): one sequence; ``keep``: the positions whose next token is explained.
    """
    from lrp_llm.archs.mamba import mixers, scan_inputs
    from lrp_llm.mechanism.context import lrp_rules

    layers = mixers(model)
    inputs: list[torch.Tensor] = []
    seq = ids.shape[1]
    queries: Sequence[int] = [int(q) for q in keep.tolist()]
    total = len(layers) * len(queries)
    with lrp_rules(model, None) as patch:
        for mixer in layers:
            handle = mixer.register_forward_pre_hook(lambda _m, args: inputs.append(args[0].detach()))
            patch.on_exit(handle.remove)
        with torch.no_grad():
            logits = model(input_ids=ids, use_cache=False, logits_to_keep=keep).logits[0]
            rel = torch.zeros(len(queries), seq, dtype=torch.float64)
            done = 0
            for mixer, hidden in zip(layers, inputs):
                scan = scan_inputs(mixer, hidden)
                for i, q in enumerate(queries):
                    check_cancel(should_cancel)
                    row = _row(scan, q)
                    rel[i, : q + 1] += (row / row.sum().clamp_min(1e-300)).cpu()
                    done += 1
                    if progress is not None:
                        progress(done, total)
                del scan
    return logits, rel / len(layers)


__all__ = ["hidden_attention"]
