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
``vmap``) alike. Forward mode is what makes BiLRP fast (:mod:`lrp_llm.bilrp`: one
tangent per token instead of one backward pass per embedding dimension).

Relevance is read at the input of the embedding LayerNorm, i.e. each token's vector is
its word + position + token-type embedding; the position and segment parts are then
part of the token and not lost to a bias.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UnsupportedModelError
from ..patch import ModelPatch
from ..rules import _safe_ratio, layer_norm_detached
from . import ArchSpec, register

BERT_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "camembert", "electra", "ernie", "data2vec-text")


def scaled_jacobian(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``x`` in value; local Jacobian ``factor * I`` in both AD modes (detach form of ``scale_grad``)."""
    if factor == 1.0:
        return x
    xd = x.detach()
    return xd + factor * (x - xd)


def identity_jacobian(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``y = f(x)`` in value; local Jacobian ``diag(f(x) / x)`` (detach form of ``identity_rule``)."""
    xd, yd = x.detach(), y.detach()
    ratio = _safe_ratio(yd, xd).to(y.dtype)
    return yd + ratio * (x - xd)


def layer_norm_jacobian(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float
) -> torch.Tensor:
    """LayerNorm with ``1 / std`` constant (``rules.layer_norm_detached``, same numbers).

    The statistic is computed from ``x.detach()``, so in forward mode it is computed once
    for the primal instead of being carried along with every tangent.
    """
    if x.dtype not in (torch.float32, torch.float64):
        return layer_norm_detached(x, weight, bias, eps)
    inv = torch.rsqrt(x.detach().var(-1, unbiased=False, keepdim=True) + eps)
    out = (x - x.mean(-1, keepdim=True)) * inv
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out


def _layer_norm_forward(module: nn.LayerNorm):
    def make(_original):
        def forward(hidden_states):
            return layer_norm_jacobian(hidden_states, module.weight, module.bias, module.eps)

        return forward

    return make


def _mlp_forward(module: nn.Module):
    def make(_original):
        def forward(hidden_states):
            pre = module.dense(hidden_states)
            # the activation of the detached input: forward mode carries no tangent through it
            return identity_jacobian(pre, module.intermediate_act_fn(pre.detach()))

        return forward

    return make


def _detached_input(_original):
    def forward(hidden_states):
        return _original(hidden_states.detach())

    return forward


def _scaled_output(factor: float):
    def hook(_module, _args, output):
        return scaled_jacobian(output, factor)

    return hook


def bert_parts(model: nn.Module) -> dict[str, list[nn.Module]]:
    """Self-attentions (``query``/``key``/``value``), MLP activations (``intermediate_act_fn``) and LayerNorms."""
    attentions = [
        m for m in model.modules() if all(isinstance(getattr(m, a, None), nn.Linear) for a in ("query", "key", "value"))
    ]
    mlps = [
        m
        for m in model.modules()
        if hasattr(m, "intermediate_act_fn") and isinstance(getattr(m, "dense", None), nn.Linear)
    ]
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    return {"attentions": attentions, "mlps": mlps, "norms": norms}


def token_input_norm(model: nn.Module) -> nn.Module:
    """The embedding LayerNorm: its input (word + position + type embedding) is where token relevance is read."""
    base = getattr(model, "base_model", model)
    norm = getattr(getattr(base, "embeddings", None), "LayerNorm", None)
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


def apply_bert_rules(patch: ModelPatch, model: nn.Module, rules: str) -> None:
    if rules not in ("attnlrp", "cp-lrp"):
        raise ValueError(f"unknown rule set {rules!r}")
    parts = bert_parts(model)
    _check_layout(model, parts)
    for norm in parts["norms"]:
        patch.override_forward(norm, _layer_norm_forward(norm))
    for attn in parts["attentions"]:
        if rules == "attnlrp":
            patch.hook_output(attn.query, _scaled_output(0.25))
            patch.hook_output(attn.key, _scaled_output(0.25))
            patch.hook_output(attn.value, _scaled_output(0.5))
        else:
            # Detaching the input (not the output) also spares forward mode the tangents of Q and K.
            patch.override_forward(attn.query, _detached_input)
            patch.override_forward(attn.key, _detached_input)
    for mlp in parts["mlps"]:
        patch.override_forward(mlp, _mlp_forward(mlp))


# ------------------------------------------------------------ CP-LRP as a replay
def _replay_linear(module: nn.Linear, *, from_first_row: bool):
    def make(_original):
        def forward(x):
            if from_first_row:  # query / key: every row attends exactly like row 0
                y0 = nn.functional.linear(x[:1], module.weight, module.bias)
                return y0.expand(x.shape[0], *y0.shape[1:])
            y = nn.functional.linear(x, module.weight)
            if module.bias is not None:
                y[:1] += module.bias
            return y

        return forward

    return make


def _replay_norm(module: nn.LayerNorm):
    def make(_original):
        def forward(x):
            dtype = x.dtype
            xf = x if dtype in (torch.float32, torch.float64) else x.float()
            inv = _norm_scale(xf[:1], module)
            out = xf - xf.mean(-1, keepdim=True)  # a new tensor: the in-place steps below never touch x
            out.mul_(inv)
            if module.weight is not None:
                out.mul_(module.weight.to(out.dtype))
            if module.bias is not None:
                out[:1] += module.bias.to(out.dtype)
            return out.to(dtype)

        return forward

    return make


def _replay_mlp(module: nn.Module):
    def make(_original):
        def forward(x):
            pre = module.dense(x)
            y0 = module.intermediate_act_fn(pre[:1])
            ratio = _safe_ratio(y0, pre[:1]).to(pre.dtype)
            pre.mul_(ratio)  # pre is this function's own tensor
            pre[:1] = y0
            return pre

        return forward

    return make


def _row0_probabilities(attn: nn.Module, x0: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Attention probabilities (1, heads, n, n) of row 0 (``x0``: (1, n, d)), the ones every replayed row uses."""
    n, size = x0.shape[1], attn.attention_head_size
    q = nn.functional.linear(x0, attn.query.weight, attn.query.bias).view(1, n, -1, size).transpose(1, 2)
    k = nn.functional.linear(x0, attn.key.weight, attn.key.bias).view(1, n, -1, size).transpose(1, 2)
    scores = torch.matmul(q, k.transpose(2, 3)) * attn.scaling
    if attention_mask is not None:
        mask = attention_mask[:1]
        if mask.dtype == torch.bool:  # True = may attend
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + mask.to(scores.dtype)
    low = scores.dtype in (torch.float16, torch.bfloat16)
    return torch.softmax(scores.float() if low else scores, dim=-1).to(x0.dtype)


def _norm_scale(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    """``1 / std`` of a LayerNorm over the last dimension (keepdim)."""
    return torch.rsqrt(x.var(-1, unbiased=False, keepdim=True) + norm.eps)


def _replay_attention(module: nn.Module):
    """Self-attention with row 0's probabilities applied to every row's values (one softmax, not one per row)."""

    def make(_original):
        def forward(hidden_states, attention_mask=None, past_key_values=None, **_kwargs):
            if past_key_values is not None:
                raise UnsupportedModelError("the CP-LRP replay does not run with a key/value cache")
            batch, n = hidden_states.shape[:2]
            size = module.attention_head_size
            probs = _row0_probabilities(module, hidden_states[:1], attention_mask)
            v = module.value(hidden_states).view(batch, n, -1, size).transpose(1, 2)  # replayed: bias in row 0
            out = torch.matmul(probs, v).transpose(1, 2).reshape(batch, n, -1)
            return out, probs

        return forward

    return make


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


def _replay_pooled_output(module: nn.Module, pooling: str):
    """The last layer's ``LayerNorm(dense(a) + residual)``, pooled before ``dense``: every position gets the pooled row.

    The replayed LayerNorm is linear per position with row 0's ``1/std``, so pooling with
    weights ``p_t`` commutes with ``dense`` once each position is weighted by
    ``p_t / std_t``: ``dense`` then runs on one vector per row instead of one per position.
    """

    def make(_original):
        def forward(hidden_states, input_tensor):
            if module.training:  # dropout per position: no pooled shortcut
                return _original(hidden_states, input_tensor)
            norm, dense = module.LayerNorm, module.dense
            rows, n = hidden_states.shape[:2]
            first = dense(hidden_states[:1]) + input_tensor[:1]  # row 0 as usual: it sets the 1/std
            inv = _norm_scale(first[0], norm)  # (n, 1)
            pooled = pool_weights(n, pooling, inv.dtype, inv.device)  # (n, 1), sums to 1
            weights = pooled * inv
            a = torch.einsum("rni,nk->ri", hidden_states, weights)  # (rows, intermediate)
            h = nn.functional.linear(a, dense.weight) + torch.einsum("rnd,nk->rd", input_tensor, weights)
            if dense.bias is not None:
                h[:1] += dense.bias * weights.sum()
            out = h - h.mean(-1, keepdim=True)
            if norm.weight is not None:
                out = out * norm.weight
            if norm.bias is not None:
                out[:1] += norm.bias * pooled.sum()
            return out[:, None, :].expand(rows, n, out.shape[-1])

        return forward

    return make


def _first_layer_parts(layer: nn.Module) -> dict[str, nn.Module] | None:
    """The modules of a BERT-layout layer, or None when it has another layout (then no shortcut)."""
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
    if getattr(layer, "chunk_size_feed_forward", 0) or getattr(layer, "is_decoder", False):
        return None
    return {"attn": attn, "self_out": self_out, "inter": inter, "out": out}


def _replay_first_layer(layer: nn.Module, parts: dict[str, nn.Module]):
    """The first layer when every replayed row holds one token's input vector and zeros elsewhere.

    Row ``1 + j`` is ``v_j`` at its token ``i_j`` only. Its value projection is then one
    vector, the attention output ``sum_h P_h[t, i_j] O_h V_h v_j`` (one vector per head,
    weighted by row 0's probabilities), and, the LayerNorm being linear per position with
    row 0's ``1/std``, the MLP's input projection acts on those ``1 + heads`` vectors
    instead of on all ``n`` positions. Other inputs take the usual path.
    """
    attn, self_out, inter, out = parts["attn"], parts["self_out"], parts["inter"], parts["out"]

    def make(original):
        def forward(hidden_states, attention_mask=None, encoder_hidden_states=None, *args, **kwargs):
            rows, n, d = hidden_states.shape
            rest = hidden_states[1:]
            live = rest.ne(0).any(-1)  # (rows - 1, n)
            usual = layer.training or rows < 2 or encoder_hidden_states is not None or bool(args)
            if usual or kwargs.get("past_key_values") is not None or not bool((live.sum(-1) == 1).all()):
                return original(hidden_states, attention_mask, encoder_hidden_states, *args, **kwargs)
            tok = live.to(torch.int8).argmax(-1)  # each row's token
            v = rest[torch.arange(rows - 1, device=rest.device), tok]  # (c, d)
            x0 = hidden_states[:1]
            heads, size = d // attn.attention_head_size, attn.attention_head_size
            # row 0: the layer as it is, keeping its coefficients
            probs = _row0_probabilities(attn, x0, attention_mask)[0]  # (heads, n, n)
            v0 = nn.functional.linear(x0, attn.value.weight, attn.value.bias).view(1, n, heads, size).transpose(1, 2)
            ctx0 = torch.matmul(probs, v0[0]).transpose(0, 1).reshape(1, n, d)
            r0 = nn.functional.linear(ctx0, self_out.dense.weight, self_out.dense.bias) + x0
            n1, n2 = self_out.LayerNorm, out.LayerNorm
            inv1 = _norm_scale(r0[0], n1)  # (n, 1)
            z0 = nn.functional.layer_norm(r0, (d,), n1.weight, n1.bias, n1.eps)
            pre0 = nn.functional.linear(z0, inter.dense.weight, inter.dense.bias)
            act0 = inter.intermediate_act_fn(pre0)
            ratio = _safe_ratio(act0, pre0).to(pre0.dtype)[0]  # (n, intermediate)
            h0 = nn.functional.linear(act0, out.dense.weight, out.dense.bias) + z0
            inv2 = _norm_scale(h0[0], n2)
            out0 = nn.functional.layer_norm(h0, (d,), n2.weight, n2.bias, n2.eps)
            # rows 1..: one value vector per row, one attention-output vector per row and head
            vh = nn.functional.linear(v, attn.value.weight).view(-1, heads, size)  # (c, heads, size)
            g = torch.einsum("chk,dhk->chd", vh, self_out.dense.weight.view(d, heads, size))  # (c, heads, d)
            p = probs[:, :, tok].permute(2, 1, 0)  # (c, n, heads): P_h[t, i_j]
            at = (torch.arange(rows - 1, device=v.device), tok)
            r = torch.bmm(p, g)  # (c, n, d)
            r[at] += v
            w1 = n1.weight if n1.weight is not None else torch.ones_like(v[0])
            z = r.sub_(r.mean(-1, keepdim=True)).mul_(inv1 * w1)
            # the input projection of the MLP on the 1 + heads vectors per row, then mixed as r is
            basis = torch.cat([v[:, None, :], g], 1)  # (c, 1 + heads, d)
            basis = (basis - basis.mean(-1, keepdim=True)) * w1
            kb = nn.functional.linear(basis, inter.dense.weight)  # (c, 1 + heads, intermediate)
            pre = torch.bmm(p, kb[:, 1:])  # (c, n, intermediate)
            pre[at] += kb[:, 0]
            pre.mul_(inv1 * ratio)
            h = nn.functional.linear(pre, out.dense.weight).add_(z)
            w2 = n2.weight if n2.weight is not None else torch.ones_like(v[0])
            rows_out = h.sub_(h.mean(-1, keepdim=True)).mul_(inv2 * w2)
            return torch.cat([out0, rows_out], 0)

        return forward

    return make


def _last_output(model: nn.Module) -> nn.Module | None:
    """The last encoder layer's ``output`` (``dense`` + ``LayerNorm`` of the sum with the residual), if the layout has one."""
    base = getattr(model, "base_model", model)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not layers:
        return None
    out = getattr(layers[-1], "output", None)
    ok = isinstance(getattr(out, "dense", None), nn.Linear) and isinstance(
        getattr(out, "LayerNorm", None), nn.LayerNorm
    )
    chunked = getattr(layers[-1], "chunk_size_feed_forward", 0)
    return out if ok and not chunked and getattr(out, "dropout", None) is not None else None


def install_cp_lrp_replay(
    patch: ModelPatch, model: nn.Module, pooling: str | None = None, *, one_token_rows: bool = False
) -> None:
    """CP-LRP as an explicit linear replay, without autograd (the fast BiLRP path).

    Under CP-LRP the explained function is linear in the token inputs, with coefficients
    (attention probabilities, 1/std of each LayerNorm, GELU(x)/x) fixed by the actual
    input. After this patch a forward pass over a batch computes row 0 as usual and
    propagates rows 1.. through that linear map: with row 0's coefficients and without
    any bias. Feeding token ``i``'s input vector alone as row ``1 + i`` gives the
    column of token contributions that the forward-mode product (``jvp``) under
    :func:`apply_bert_rules` gives, at the cost of a plain batched forward pass.

    ``pooling`` ("mean", "cls", "last"): the last layer returns the pooled row at every
    position (its output projection runs once per row instead of once per position);
    None keeps the per-position outputs. ``one_token_rows``: the rows after row 0 each
    hold one token's vector (the BiLRP batch), which the first layer exploits.
    """
    parts = bert_parts(model)
    _check_layout(model, parts)
    shared = {id(a.query) for a in parts["attentions"]} | {id(a.key) for a in parts["attentions"]}
    for module in model.modules():
        if isinstance(module, nn.Linear):
            patch.override_forward(module, _replay_linear(module, from_first_row=id(module) in shared))
        elif isinstance(module, nn.LayerNorm):
            patch.override_forward(module, _replay_norm(module))
    for attn in parts["attentions"]:
        # Self-attentions of the transformers 5 layout (head size and scaling as attributes) get the
        # one-softmax replay; anything else keeps the per-row replay of the projections above.
        if hasattr(attn, "attention_head_size") and hasattr(attn, "scaling") and "Cross" not in type(attn).__name__:
            patch.override_forward(attn, _replay_attention(attn))
    for mlp in parts["mlps"]:
        patch.override_forward(mlp, _replay_mlp(mlp))
    layers = getattr(getattr(getattr(model, "base_model", model), "encoder", None), "layer", None)
    first = _first_layer_parts(layers[0]) if one_token_rows and layers else None
    if first is not None:
        patch.override_forward(layers[0], _replay_first_layer(layers[0], first))
    last = _last_output(model) if pooling is not None else None
    if last is not None:
        patch.override_forward(last, _replay_pooled_output(last, pooling))


BERT_FAMILY = register(
    ArchSpec(
        family="bert",
        model_types=BERT_MODEL_TYPES,
        kind="encoder",
        apply=apply_bert_rules,
        default_method="cp-lrp",
        notes={"input": "relevance at the embedding LayerNorm input (word + position + type embedding)"},
    )
)
