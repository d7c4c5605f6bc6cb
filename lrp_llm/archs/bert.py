"""AttnLRP and CP-LRP for BERT-style encoders (sentence-embedding models).

BERT, RoBERTa, XLM-RoBERTa, CamemBERT, ELECTRA, ERNIE and Data2Vec-text share one
layout in transformers 5: post-norm blocks with LayerNorm (affine, with bias), a
self-attention with ``query``/``key``/``value`` projections and an MLP
``output.dense(act(intermediate.dense(x)))`` with a GELU-like activation. all-MiniLM-L6-v2
is a BERT.

==================  =============================  ==============================
place               AttnLRP (Achtibat et al. 2024)  CP-LRP (Ali et al. 2022)
==================  =============================  ==============================
LayerNorm           1/std detached                  1/std detached
query, key          gradient x 1/4                  input detached (A constant)
value               gradient x 1/2                  unchanged
act(dense(x))       identity rule                   identity rule
==================  =============================  ==============================

CP-LRP is what Vasileiou & Eberle (NAACL 2024) use for BiLRP on sentence encoders. The
attention kernel (SDPA) is never touched: only the projections around it are.

The rules here are written as *detach forms* (``x.detach() + f * (x - x.detach())``)
rather than custom autograd Functions: the value is unchanged and the local Jacobian is
the rule's, in reverse mode (``backward``) and in forward mode (``torch.func.jvp``,
``vmap``) alike. Forward mode is what makes BiLRP fast (:mod:`lrp_llm.analyses.bilrp`: one
tangent per token instead of one backward pass per embedding dimension); for CP-LRP,
:func:`cp_lrp_replay` computes the same columns as an explicit linear map, without
autograd.

Relevance is read at the input of the embedding LayerNorm, i.e. each token's vector is
its word + position + token-type embedding; the position and segment parts are then
part of the token and not lost to a bias.
"""

from __future__ import annotations

import threading
import weakref

import torch
from torch import nn

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.blocks import find_parts, install_attention, install_norms
from lrp_llm.archs.description import AttentionParts, BlockPaths, MLPParts, NormParts, TransformerParts
from lrp_llm.errors import ShouldCancel, UnsupportedModelError, check_cancel
from lrp_llm.mechanism.patch import ModelPatch
from lrp_llm.mechanism.primitives import _safe_ratio, identity_jacobian

BERT_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "camembert", "electra", "ernie", "data2vec-text")


def _mlp_forward(module: nn.Module):
    def make(_original):
        def forward(hidden_states):
            pre = module.dense(hidden_states)
            # the activation of the detached input: forward mode carries no tangent through it
            return identity_jacobian(pre, module.intermediate_act_fn(pre.detach()))

        return forward

    return make


def token_input_norm(model: nn.Module) -> nn.Module:
    """The embedding LayerNorm: its input (word + position + type embedding) is where token relevance is read.

    ``embeddings.LayerNorm`` (BERT, MPNet, DistilBERT, DeBERTa-v2) or ``embeddings.norm`` (ModernBERT).
    """
    base = getattr(model, "base_model", model)
    embeddings = getattr(base, "embeddings", None)
    norm = getattr(embeddings, "LayerNorm", None) or getattr(embeddings, "norm", None)
    if not isinstance(norm, nn.LayerNorm):
        raise UnsupportedModelError(
            f"{type(model).__name__}: no embeddings.LayerNorm; this encoder's layout is not supported"
        )
    return norm


def _check_layout(model: nn.Module, parts: dict[str, list[nn.Module]]) -> None:
    n_layers = model.config.num_hidden_layers
    if len(parts["attentions"]) < n_layers or len(parts["mlps"]) != n_layers:
        raise UnsupportedModelError(
            f"{type(model).__name__}: expected {n_layers} attention and MLP blocks, found "
            f"{len(parts['attentions'])} and {len(parts['mlps'])}; this checkpoint's layout is not supported"
        )


BERT_PARTS = TransformerParts(
    attention=AttentionParts(q="query", k="key", v="value"),
    mlps=(MLPParts(up="dense", act="intermediate_act_fn"),),  # the down projection is in the sibling ``output``
    norm=NormParts(kind="layer", class_suffix="LayerNorm"),
)


def apply_bert_rules(patch: ModelPatch, model: nn.Module, rules: str) -> None:
    """The shared rules in their detach forms (forward mode); the MLP as one detach-form forward."""
    parts = find_parts(model, BERT_PARTS)
    _check_layout(model, parts)
    install_norms(patch, parts["norms"], BERT_PARTS.norm, forward_mode=True)
    install_attention(patch, parts["attentions"], BERT_PARTS.attention, rules, forward_mode=True)
    for mlp in parts["mlps"]:
        patch.override_forward(mlp, _mlp_forward(mlp))


# ------------------------------------------------------------ CP-LRP as a replay
#
# Under CP-LRP the explained function is linear in the token input vectors, with
# coefficients fixed by the actual input: each layer's attention probabilities, the
# 1/std of each LayerNorm and GELU(x)/x of each MLP unit. The replay computes that
# linear map explicitly, without autograd: one batch of rows per text, where row 0 is
# the actual input (it sets the coefficients and takes every bias) and row 1 + j holds
# token j's input vector alone. Row 1 + j at the output is token j's contribution: the
# forward-mode product (jvp) under :func:`apply_bert_rules` with tangent x_j, for the
# cost of one batched forward pass. BiLRP (:mod:`lrp_llm.analyses.bilrp`) needs one such column
# per token, not one backward pass per embedding dimension.


def _layer_parts(layer: nn.Module) -> dict[str, nn.Module] | None:
    """The modules of a BERT-layout encoder layer, or None when it has another layout."""
    attn = getattr(getattr(layer, "attention", None), "self", None)
    self_out = getattr(getattr(layer, "attention", None), "output", None)
    inter, out = getattr(layer, "intermediate", None), getattr(layer, "output", None)
    linear = (
        getattr(attn, "query", None),
        getattr(attn, "key", None),
        getattr(attn, "value", None),
        getattr(self_out, "dense", None),
        getattr(inter, "dense", None),
        getattr(out, "dense", None),
    )
    norms = (getattr(self_out, "LayerNorm", None), getattr(out, "LayerNorm", None))
    if not all(isinstance(m, nn.Linear) for m in linear) or not all(isinstance(m, nn.LayerNorm) for m in norms):
        return None
    if not (
        hasattr(attn, "attention_head_size") and hasattr(attn, "scaling") and hasattr(inter, "intermediate_act_fn")
    ):
        return None
    if getattr(attn, "is_causal", False) or getattr(layer, "is_decoder", False):
        return None
    if getattr(layer, "chunk_size_feed_forward", 0) or getattr(layer, "crossattention", None) is not None:
        return None
    if getattr(attn, "position_embedding_type", None) not in (None, "absolute"):
        return None  # relative positions add terms to the scores that the replay does not compute
    return {"attn": attn, "self_out": self_out, "inter": inter, "out": out}


def replay_layers(model: nn.Module) -> list[dict[str, nn.Module]] | None:
    """Every encoder layer's modules when the whole model has the layout the replay computes, else None."""
    base = getattr(model, "base_model", model)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    norm = getattr(getattr(base, "embeddings", None), "LayerNorm", None)
    if not layers or not isinstance(norm, nn.LayerNorm):
        return None
    proj = getattr(base, "embeddings_project", None)
    if proj is not None and not isinstance(proj, nn.Linear):
        return None
    parts = [_layer_parts(layer) for layer in layers]
    return None if any(p is None for p in parts) else parts


_DERIVED: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, dict[str, torch.Tensor]]] = weakref.WeakKeyDictionary()


def _derived(parts: dict[str, nn.Module], *, first: bool) -> dict[str, torch.Tensor]:
    """Products of one layer's weights that the replay uses, computed once and kept while the weights are unchanged.

    ``qk``: query and key projections stacked (one product for both). ``first``, for the
    first layer: ``out_heads`` (heads, head size, d), each head's slice of the attention
    output projection, transposed, and ``mlp_heads`` (heads, head size, intermediate),
    the MLP's input projection after the LayerNorm's centering and weight composed with
    it, ``(W1 diag(w) C O_h)^T``.
    """
    attn, self_out, inter = parts["attn"], parts["self_out"], parts["inter"]
    n1 = self_out.LayerNorm
    sources = [attn.query.weight, attn.query.bias, attn.key.weight, attn.key.bias]
    if first:
        sources += [self_out.dense.weight, n1.weight, inter.dense.weight]
    # the tensor, its storage and its version counter (bumped by every in-place change)
    stamp = tuple((id(t), t.data_ptr(), t._version, t.dtype, t.device) for t in sources if t is not None)
    held = _DERIVED.get(attn)
    if held is not None and held[0] == stamp:
        return held[1]
    out = {"qk_weight": torch.cat([attn.query.weight, attn.key.weight]).detach()}
    if attn.query.bias is not None and attn.key.bias is not None:
        out["qk_bias"] = torch.cat([attn.query.bias, attn.key.bias]).detach()
    if first:
        w1 = inter.dense.weight.detach()
        if n1.weight is not None:
            w1 = w1 * n1.weight.detach()
        w1 = w1 - w1.mean(1, keepdim=True)  # W1 diag(w) C: the centering folded in
        size = attn.attention_head_size
        composed = w1 @ self_out.dense.weight.detach()  # (intermediate, d)
        out["mlp_heads"] = composed.view(w1.shape[0], -1, size).permute(1, 2, 0).contiguous()
        o = self_out.dense.weight.detach()
        out["out_heads"] = o.view(o.shape[0], -1, size).permute(1, 2, 0).contiguous()
    _DERIVED[attn] = (stamp, out)
    return out


def _row0_probabilities(attn: nn.Module, x0: torch.Tensor, derived: dict[str, torch.Tensor]) -> torch.Tensor:
    """Attention probabilities (heads, n, n) of the actual input ``x0`` (n, d), the ones every replayed row uses."""
    n, size = x0.shape[0], attn.attention_head_size
    qk = nn.functional.linear(x0, derived["qk_weight"], derived.get("qk_bias"))
    d = qk.shape[-1] // 2
    if "qk_bias" not in derived:  # only one of the two projections has a bias
        _add_bias_(qk[:, :d], attn.query.bias)
        _add_bias_(qk[:, d:], attn.key.bias)
    q = qk[:, :d].reshape(n, -1, size).transpose(0, 1)
    k = qk[:, d:].reshape(n, -1, size).transpose(0, 1)
    scores = torch.matmul(q, k.transpose(1, 2)) * attn.scaling
    low = scores.dtype in (torch.float16, torch.bfloat16)
    return torch.softmax(scores.float() if low else scores, dim=-1).to(x0.dtype)


def _norm_stats(x: torch.Tensor, norm: nn.LayerNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """``(LayerNorm(x), 1/std)`` of ``x`` (n, d); 1/std is (n, 1). One fused kernel for both."""
    out, _mean, rstd = torch.native_layer_norm(x, (x.shape[-1],), norm.weight, norm.bias, norm.eps)
    return out, rstd.reshape(x.shape[0], 1).to(x.dtype)


def _center_scale_(x: torch.Tensor, inv: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    """The replayed LayerNorm without its bias, in place: ``(x - mean(x)) * inv * weight``."""
    return x.sub_(x.mean(-1, keepdim=True)).mul_(inv if norm.weight is None else inv * norm.weight)


class _Buffers:
    """Work tensors reused from layer to layer and from call to call (one set per thread).

    On a CPU every fresh multi-megabyte tensor is new memory from the system, paid for
    in page faults as it is first written: 5 to 10 % of a short text's replay when each
    layer allocated its own. Sets over ``KEEP_BYTES`` are dropped after the call.
    """

    KEEP_BYTES = 96 << 20

    def __init__(self) -> None:
        self._held: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        held = self._held.get(name)
        if held is None or held.shape != shape or held.dtype != like.dtype or held.device != like.device:
            held = self._held[name] = like.new_empty(shape)
        return held

    def trim(self) -> None:
        if sum(t.numel() * t.element_size() for t in self._held.values()) > self.KEEP_BYTES:
            self._held.clear()


_PER_THREAD = threading.local()


def _buffers() -> _Buffers:
    """This thread's work tensors (the app explains in worker threads)."""
    bufs = getattr(_PER_THREAD, "buffers", None)
    if bufs is None:
        bufs = _PER_THREAD.buffers = _Buffers()
    return bufs


def _project(x: torch.Tensor, weight: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``x @ weight.T`` (no bias) written into ``out`` (same leading shape as ``x``)."""
    torch.mm(x.reshape(-1, x.shape[-1]), weight.T, out=out.view(-1, out.shape[-1]))
    return out


def _mix(probs: torch.Tensor, v: torch.Tensor, bufs: _Buffers) -> torch.Tensor:
    """Attention output ``sum_s P_h[t, s] v[c, s, h]`` of every row ``c`` (v: (c, n, d); probs: (heads, n, n))."""
    c, n, d = v.shape
    heads = probs.shape[0]
    size = d // heads
    by_head = bufs.get("by_head", (heads, n, c, size), v)
    by_head.copy_(v.view(c, n, heads, size).permute(2, 1, 0, 3))
    mixed = bufs.get("mixed", (heads, n, c, size), v)
    torch.bmm(probs, by_head.view(heads, n, c * size), out=mixed.view(heads, n, c * size))
    out = bufs.get("mix_out", (c, n, d), v)
    out.view(c, n, heads, size).copy_(mixed.permute(2, 1, 0, 3))
    return out


def pool_weights(n: int, pooling: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(n, 1) weights of the positions in the pooled embedding: mean, first ([CLS]) or last token."""
    w = torch.zeros(n, 1, dtype=dtype, device=device)
    if pooling == "mean":
        w[:] = 1.0 / n
    elif pooling == "cls":
        w[0] = 1.0
    else:
        w[-1] = 1.0
    return w


def _add_bias_(x: torch.Tensor, bias: torch.Tensor | None) -> None:
    if bias is not None:
        x += bias


def _replay_first_layer(
    parts: dict[str, nn.Module],
    x: torch.Tensor,
    tokens: torch.Tensor,
    u: torch.Tensor,
    out_rows: torch.Tensor,
    bufs: _Buffers,
) -> torch.Tensor:
    """The first layer: ``x`` (n, d) the actual input; row ``j`` holds ``u[j]`` at position ``tokens[j]`` only.

    A row's value projection is then one vector, its attention output ``sum_h P_h[t, i_j]
    O_h V_h u_j`` a mix of one vector per head, and, the replayed LayerNorm being linear
    per position, the MLP's input projection acts on those ``1 + heads`` vectors instead
    of on all ``n`` positions. Writes the rows into ``out_rows`` (c, n, d) and returns
    the layer's output for ``x`` (n, d).
    """
    attn, self_out, inter, out = parts["attn"], parts["self_out"], parts["inter"], parts["out"]
    n1, n2 = self_out.LayerNorm, out.LayerNorm
    n, d = x.shape
    c = u.shape[0]
    size = attn.attention_head_size
    heads = d // size
    # the actual input: the layer as it is, keeping its coefficients
    derived = _derived(parts, first=True)
    probs = _row0_probabilities(attn, x, derived)  # (heads, n, n)
    v0 = nn.functional.linear(x, attn.value.weight, attn.value.bias).view(n, heads, size).transpose(0, 1)
    ctx0 = torch.matmul(probs, v0).transpose(0, 1).reshape(n, d)
    z0, inv1 = _norm_stats(nn.functional.linear(ctx0, self_out.dense.weight, self_out.dense.bias).add_(x), n1)
    pre0 = nn.functional.linear(z0, inter.dense.weight, inter.dense.bias)
    act0 = inter.intermediate_act_fn(pre0)
    ratio = _safe_ratio(act0, pre0).to(pre0.dtype)  # (n, intermediate)
    h0, inv2 = _norm_stats(nn.functional.linear(act0, out.dense.weight, out.dense.bias).add_(z0), n2)
    # the rows: one value vector each, one attention-output vector per row and head
    vh = nn.functional.linear(u, attn.value.weight).view(c, heads, size)
    vt = vh.transpose(0, 1)  # (heads, c, size)
    g = torch.bmm(vt, derived["out_heads"], out=bufs.get("first_g", (heads, c, d), u)).transpose(0, 1)
    p = probs[:, :, tokens].permute(2, 1, 0)  # (c, n, heads): P_h[t, i_j]
    at = (torch.arange(c, device=u.device), tokens)
    r = torch.bmm(p, g, out=bufs.get("first_a", (c, n, d), u))  # (c, n, d)
    r[at] += u
    z = _center_scale_(r, inv1, n1)
    # the MLP's input projection of the 1 + heads vectors of each row, then mixed as r was
    w1 = n1.weight if n1.weight is not None else 1.0
    kv = nn.functional.linear((u - u.mean(-1, keepdim=True)) * w1, inter.dense.weight)  # (c, intermediate)
    kg = torch.bmm(vt, derived["mlp_heads"], out=bufs.get("first_kg", (heads, c, inter.dense.out_features), u))
    kg = kg.transpose(0, 1)  # (c, heads, intermediate)
    pre = torch.bmm(p, kg, out=bufs.get("first_pre", (c, n, kg.shape[-1]), u))  # (c, n, intermediate)
    pre[at] += kv
    pre.mul_(inv1 * ratio)
    _center_scale_(_project(pre, out.dense.weight, out_rows).add_(z), inv2, n2)
    return h0


def _replayed_add_norm_(
    x: torch.Tensor, co: dict, key: str, dense_bias: torch.Tensor | None, norm: nn.LayerNorm
) -> torch.Tensor:
    """``LayerNorm(dense(.) + residual)`` replayed in place on ``x`` (the sum without the dense bias).

    While ``co[key]`` is unset, row 0 is the actual input: it gets the dense bias, sets
    ``co[key]`` (its 1/std) and gets the LayerNorm's bias; the other rows get no bias.
    """
    actual = key not in co
    if actual:
        _add_bias_(x[0], dense_bias)
        co[key] = _norm_stats(x[0], norm)[1]
    _center_scale_(x, co[key], norm)
    if actual:
        _add_bias_(x[0], norm.bias)
    return x


def _replay_layer(
    parts: dict[str, nn.Module], r: torch.Tensor, co: dict | None, pool: torch.Tensor | None, bufs: _Buffers
):
    """One encoder layer on the rows ``r`` (c, n, d) with the coefficients ``co``; ``r`` is overwritten.

    ``co`` None: row 0 is the actual input; it takes the biases, sets the coefficients
    and they are returned (for the next chunk of rows). ``pool`` (n, 1): the layer is the
    last and returns the pooled rows (c, d): pooling commutes with the output projection
    once each position is weighted by its LayerNorm's 1/std, so that projection runs on
    one vector per row instead of one per position.
    """
    attn, self_out, inter, out = parts["attn"], parts["self_out"], parts["inter"], parts["out"]
    n1, n2 = self_out.LayerNorm, out.LayerNorm
    c, n, d = r.shape
    actual = co is None
    if actual:
        co = {"probs": _row0_probabilities(attn, r[0], _derived(parts, first=False))}
    v = _project(r, attn.value.weight, bufs.get("v", r.shape, r))
    if actual:
        _add_bias_(v[0], attn.value.bias)
    a = _project(_mix(co["probs"], v, bufs), self_out.dense.weight, bufs.get("a", r.shape, r)).add_(r)
    _replayed_add_norm_(a, co, "inv1", self_out.dense.bias, n1)
    pre = _project(a, inter.dense.weight, bufs.get("pre", (c, n, inter.dense.out_features), r))
    if actual:
        _add_bias_(pre[0], inter.dense.bias)
        act0 = inter.intermediate_act_fn(pre[0])
        co["ratio"] = _safe_ratio(act0, pre[0]).to(pre.dtype)
    pre.mul_(co["ratio"])
    if actual:
        pre[0] = act0  # exact for the actual input
    if pool is None:
        h = _project(pre, out.dense.weight, r).add_(a)  # r is no longer needed
        return _replayed_add_norm_(h, co, "inv2", out.dense.bias, n2), co
    if actual:
        co["inv2"] = _norm_stats(nn.functional.linear(act0, out.dense.weight, out.dense.bias).add_(a[0]), n2)[1]
    weights = (pool * co["inv2"]).T  # (1, n)
    h = nn.functional.linear(torch.matmul(weights, pre)[:, 0], out.dense.weight)  # (c, d)
    h.add_(torch.matmul(weights, a)[:, 0])
    if actual:
        _add_bias_(h[0], None if out.dense.bias is None else out.dense.bias * weights.sum())
    h.sub_(h.mean(-1, keepdim=True))
    if n2.weight is not None:
        h.mul_(n2.weight)
    if actual:
        _add_bias_(h[0], None if n2.bias is None else n2.bias * pool.sum())
    return h, co


def cp_lrp_replay(
    model: nn.Module,
    x: torch.Tensor,
    pooling: str | None = "mean",
    *,
    chunk: int = 64,
    should_cancel: ShouldCancel | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CP-LRP token contributions of a BERT-layout encoder, by the explicit replay.

    ``x`` (n, d): the input of the embedding LayerNorm (word + position + type embedding)
    of one text. Returns ``(output, contributions)``: with ``pooling`` ("mean", "cls",
    "last") the pooled embedding (D,) and each token's part of it (n, D); with None the
    last hidden states (n, D) and each token's part of them (n, n, D). Tokens go in
    chunks of ``chunk`` rows; the coefficients are computed once. Without biases the
    contributions add up to the output exactly. Needs :func:`replay_layers` to accept
    the model (else ``UnsupportedModelError``).
    """
    layers = replay_layers(model)
    if layers is None:
        raise UnsupportedModelError(
            f"{type(model).__name__}: the CP-LRP replay computes BERT-layout encoders only; use forward mode"
        )
    base = getattr(model, "base_model", model)
    norm = base.embeddings.LayerNorm
    proj = getattr(base, "embeddings_project", None)
    n = x.shape[0]
    with torch.no_grad():
        h, inv = _norm_stats(x, norm)
        u = _center_scale_(x.clone(), inv, norm)  # token j's vector, no bias
        if proj is not None:
            h = nn.functional.linear(h, proj.weight, proj.bias)
            u = nn.functional.linear(u, proj.weight)
        pool = None if pooling is None else pool_weights(n, pooling, h.dtype, h.device)
        coefficients: list[dict | None] = [None] * len(layers)
        bufs = _buffers()
        output = None
        parts_out = []
        try:
            for start in range(0, n, chunk):
                check_cancel(should_cancel)
                tokens = torch.arange(start, min(n, start + chunk), device=x.device)
                first = output is None  # row 0 of the first chunk: the actual input
                r = h.new_empty((len(tokens) + first, n, h.shape[-1]))
                h0 = _replay_first_layer(layers[0], h, tokens, u[tokens], r[1:] if first else r, bufs)
                if first:
                    r[0] = h0
                for k, parts in enumerate(layers[1:], start=1):
                    last = pool if k == len(layers) - 1 else None
                    r, co = _replay_layer(parts, r, coefficients[k], last, bufs)
                    coefficients[k] = co
                if pool is not None and len(layers) == 1:  # the first layer was the last: pool its positions
                    r = torch.matmul(pool.T, r)[:, 0]
                if first:
                    output = r[0]
                    r = r[1:]
                parts_out.append(r)
        finally:
            bufs.trim()
    return output, torch.cat(parts_out)


BERT_FAMILY = register(
    ArchSpec(
        family="bert",
        model_types=BERT_MODEL_TYPES,
        kind="encoder",
        default_method="cp-lrp",
        parts=BERT_PARTS,
        install=apply_bert_rules,
        blocks=BlockPaths(layers="encoder.layer"),
    )
)
