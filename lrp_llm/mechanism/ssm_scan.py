"""A fast, memory-lean selective scan for Mamba and Mamba-2 in plain torch.

The recurrence (Gu & Dao 2023; Mamba-2 is the special case of one decay per head)::

    h[t] = exp(dt[t] * A) * h[t-1] + dt[t] * u[t] * B[t]      h: (channels, d_state)
    y[t] = h[t] @ C[t]

transformers' torch path runs it step by step under autograd: every step is a graph
node that slices the full (channels, time, d_state) tensors, so the backward pass is
quadratic in the sequence length (minutes for 1024 tokens of a Mamba-130M layer).

Here the scan is one :class:`torch.autograd.Function`. The forward pass walks the
sequence in chunks of ``chunk`` steps; inside a chunk the discretised tensors are built
with a few vectorised operations and the recurrence is one in-place fused multiply-add
per step on a contiguous (batch, channels, d_state) slice. Only the inputs and the state
at each chunk start are kept; the backward pass recomputes a chunk's states, runs the
adjoint recurrence backwards (again one fused op per step) and forms the gradients with
einsums. Memory is O(chunk x channels x d_state) beyond the inputs, time linear in the
length. Gradients of ``dt``, ``A``, ``B`` and ``C`` are only computed when autograd asks
for them: under MambaLRP they are detached, which makes the scan linear in ``u`` and the
backward pass cheaper.

Channels are split into ``G`` equal contiguous groups; group ``g`` reads ``B[:, :, g]``
and ``C[:, :, g]`` (Mamba: ``G = 1``; Mamba-2: ``n_groups``).
"""

from __future__ import annotations

import torch

DEFAULT_CHUNK = 32


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _decay(dt, A, groups):
    """``exp(dt A)`` as chunk tensor (T, batch, G, E/G, N); dt: (batch, T, E), A: (E, N)."""
    b, T, E = dt.shape
    N = A.shape[-1]
    dt_t = dt.transpose(0, 1).contiguous()  # (T, b, E)
    return (dt_t.unsqueeze(-1) * A).exp_().view(T, b, groups, E // groups, N)


def _inputs(u, dt, B, groups):
    """``dt u B`` as chunk tensor (T, batch, G, E/G, N); u, dt: (batch, T, E), B: (batch, T, G, N)."""
    b, T, E = u.shape
    du = (dt * u).transpose(0, 1).contiguous().view(T, b, groups, E // groups, 1)
    return du * B.transpose(0, 1).contiguous().unsqueeze(3)


def _run_states(decay: torch.Tensor, states: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """In place: ``states[t] = decay[t] * states[t-1] + states[t]`` with ``states[-1] = h0``."""
    steps = states.unbind(0)
    decays = decay.unbind(0)
    steps[0].addcmul_(decays[0], h0)
    for t in range(1, len(steps)):
        steps[t].addcmul_(decays[t], steps[t - 1])
    return states


class _SelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, dt, A, B, C, chunk):
        ctx.in_dtypes = [t.dtype for t in (u, dt, A, B, C)]
        cdt = _compute_dtype(u.dtype)
        u, dt, A, B, C = (t.to(cdt).contiguous() for t in (u, dt, A, B, C))
        b, L, E = u.shape
        G, N = B.shape[2], B.shape[3]
        eg = E // G
        y = torch.empty(b, L, E, dtype=cdt, device=u.device)
        h = torch.zeros(b, G, eg, N, dtype=cdt, device=u.device)
        starts = []
        for c0 in range(0, L, chunk):
            c1 = min(L, c0 + chunk)
            starts.append(h)
            decay = _decay(dt[:, c0:c1], A, G)
            states = _run_states(decay, _inputs(u[:, c0:c1], dt[:, c0:c1], B[:, c0:c1], G), h)
            # y[b, t, g, e] = sum_n states[t, b, g, e, n] * C[b, t, g, n]
            y[:, c0:c1] = torch.einsum("tbgen,btgn->btge", states, C[:, c0:c1]).reshape(b, c1 - c0, E)
            h = states[-1].clone()
        ctx.save_for_backward(u, dt, A, B, C, torch.stack(starts))
        ctx.chunk = chunk
        return y.to(ctx.in_dtypes[0])

    @staticmethod
    def backward(ctx, grad_y):
        u, dt, A, B, C, starts = ctx.saved_tensors
        chunk = ctx.chunk
        need_u, need_dt, need_A, need_B, need_C = ctx.needs_input_grad[:5]
        need_params = need_dt or need_A or need_B or need_C
        cdt = u.dtype
        grad_y = grad_y.to(cdt)
        b, L, E = u.shape
        G, N = B.shape[2], B.shape[3]
        eg = E // G
        du = torch.empty_like(u) if need_u else None
        ddt = torch.empty_like(dt) if need_dt else None
        dA = torch.zeros_like(A) if need_A else None
        dB = torch.empty_like(B) if need_B else None
        dC = torch.empty_like(C) if need_C else None
        # carry = decay[t+1] * adjoint[t+1] for the first step after the current chunk
        carry = torch.zeros(b, G, eg, N, dtype=cdt, device=u.device)
        A_g = A.view(G, eg, N)
        n_chunks = starts.shape[0]
        for ci in range(n_chunks - 1, -1, -1):
            c0 = ci * chunk
            c1 = min(L, c0 + chunk)
            T = c1 - c0
            uc, dtc, Bc, Cc = u[:, c0:c1], dt[:, c0:c1], B[:, c0:c1], C[:, c0:c1]
            gy = grad_y[:, c0:c1].reshape(b, T, G, eg).transpose(0, 1).contiguous()  # (T, b, G, eg)
            decay = _decay(dtc, A, G)
            if need_params:  # the states themselves enter the gradients of dt, A and C
                states = _run_states(decay, _inputs(uc, dtc, Bc, G), starts[ci])
            Ct = Cc.transpose(0, 1).unsqueeze(3)  # (T, b, G, 1, N)
            # adjoint recurrence, backwards, with direct[t] = C[t] g[t] (the gradient a state gets from y[t]):
            # adjoint[t] = direct[t] + q[t+1],  q[t] = decay[t] * adjoint[t]
            q = decay * gy.unsqueeze(-1)
            q.mul_(Ct)
            qs = q.unbind(0)
            decays = decay.unbind(0)
            qs[T - 1].addcmul_(decays[T - 1], carry)
            for t in range(T - 2, -1, -1):
                qs[t].addcmul_(decays[t], qs[t + 1])
            # gb[t] = sum_n adjoint[t, n] B[t, n] = g[t] (C[t] . B[t]) + sum_n q[t+1, n] B[t, n]
            gb = gy.transpose(0, 1) * (Cc * Bc).sum(-1).unsqueeze(-1)  # (b, T, G, eg)
            gb[:, :-1] += torch.einsum("tbgen,btgn->btge", q[1:], Bc[:, :-1])
            gb[:, -1] += torch.einsum("bgen,bgn->bge", carry, Bc[:, -1])
            if need_params:
                adjoint = gy.unsqueeze(-1) * Ct
                adjoint[:-1] += q[1:]
                adjoint[-1] += carry
            carry = q[0].clone()
            dtc_g = dtc.view(b, T, G, eg)
            uc_g = uc.view(b, T, G, eg)
            if need_u:
                du[:, c0:c1] = (gb * dtc_g).reshape(b, T, E)
            if need_C:
                dC[:, c0:c1] = torch.einsum("tbge,tbgen->btgn", gy, states)
            if need_B:
                dB[:, c0:c1] = torch.einsum("tbgen,btge->btgn", adjoint, dtc_g * uc_g)
            if need_dt or need_A:
                prev = torch.cat([starts[ci].unsqueeze(0), states[:-1]], dim=0)
                dlog = adjoint * prev * decay  # gradient of the log-decay dt * A
                if need_dt:
                    ddt[:, c0:c1] = (torch.einsum("tbgen,gen->btge", dlog, A_g) + gb * uc_g).reshape(b, T, E)
                if need_A:
                    dA += torch.einsum("tbgen,btge->gen", dlog, dtc_g).reshape(E, N)
        grads = [g if g is None else g.to(dt_) for g, dt_ in zip((du, ddt, dA, dB, dC), ctx.in_dtypes)]
        return (*grads, None)


def selective_scan(
    u: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    *,
    chunk: int = DEFAULT_CHUNK,
) -> torch.Tensor:
    """The selective scan ``y`` (batch, L, E), without the ``D`` skip term.

    u: (batch, L, E) input; dt: (batch, L, E) positive step sizes (softplus applied);
    A: (E, N) negative decay rates; B, C: (batch, L, G, N) with E divisible by G.
    Computed in float32 (float64 for float64 inputs) and returned in ``u``'s dtype.
    """
    if u.dim() != 3 or dt.shape != u.shape:
        raise ValueError(f"u and dt must both be (batch, L, E); got {tuple(u.shape)} and {tuple(dt.shape)}")
    if B.dim() != 4 or B.shape != C.shape or B.shape[:2] != u.shape[:2]:
        raise ValueError(f"B and C must be (batch, L, groups, N); got {tuple(B.shape)} and {tuple(C.shape)}")
    if u.shape[-1] % B.shape[2] or A.shape != (u.shape[-1], B.shape[-1]):
        raise ValueError(f"A must be (E, N) = {(u.shape[-1], B.shape[-1])} and E divisible by the groups")
    if u.shape[1] == 0:
        return u.new_zeros(u.shape)
    return _SelectiveScan.apply(u, dt, A, B, C, max(1, int(chunk)))


def selective_scan_reference(u, dt, A, B, C):
    """The recurrence step by step (float64-friendly, slow): for tests only."""
    b, L, E = u.shape
    G, N = B.shape[2], B.shape[3]
    eg = E // G
    h = u.new_zeros(b, G, eg, N)
    ys = []
    for t in range(L):
        decay = torch.exp(dt[:, t, :, None] * A).view(b, G, eg, N)
        h = decay * h + (dt[:, t] * u[:, t]).view(b, G, eg, 1) * B[:, t].unsqueeze(2)
        ys.append(torch.einsum("bgen,bgn->bge", h, C[:, t]).reshape(b, E))
    return torch.stack(ys, dim=1)
