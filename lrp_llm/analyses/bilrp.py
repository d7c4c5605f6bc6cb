"""BiLRP: which token pairs make two texts similar to an embedding model.

For a similarity ``y = <phi(a), phi(b)>`` of pooled embeddings the token-pair relevance
is (Eberle et al., TPAMI 2022; Vasileiou & Eberle, NAACL 2024)::

    R[i, j] = sum_m  C_a[m, i] * C_b[m, j]

where ``C_a[m, i]`` is the first-order LRP relevance of token ``i`` of ``a`` for
embedding dimension ``m`` (gradient x input under the rules). For a bias-free model
under CP-LRP ``sum_i C_a[m, i] = phi(a)[m]`` exactly, so ``sum R = y``. For cosine
similarity the two norms are held constant: ``R / (|phi(a)| |phi(b)|)`` sums to the
cosine.

Speed. ``C`` is a (D, n) matrix. Read row by row it needs one backward pass per
embedding dimension (D = 384 for MiniLM; the published code does this: the "loop"
strategy here, kept as the reference). Read column by column, column ``i`` is the
forward-mode product ``J~ x_i`` of the rule-modified Jacobian with token ``i``'s own
input vector (all other tokens zero): one tangent per token, all of a text's tangents
in one batched pass. Strategies, all tested equal to the loop:

- ``replay`` (CP-LRP on BERT-layout encoders, the default there): CP-LRP makes the
  explained function linear in the inputs with coefficients fixed by the actual input;
  :func:`lrp_llm.archs.bert.cp_lrp_replay` computes that linear map explicitly, without
  autograd, on a batch of 1 + n rows (the input, then each token alone, propagated with
  the input's coefficients and no biases): every column for the cost of one batched
  forward pass.
- ``forward``: ``torch.func.vmap(jvp)`` under the rules (any rule set written in
  detach form, and plain gradients).
- ``reverse``: all dimensions as one batch of cotangents (``is_grads_batched``); for
  decoders, whose rules are custom autograd Functions, and for texts longer than the
  embedding is wide.

Per-text maps are cached, so a query against N texts costs N + 1 maps.

Methods (same pairing, different first-order maps):

- ``bilrp``: the LRP rules of the model's family (CP-LRP by default for encoders).
- ``grad-x-input-products``: plain gradient x input maps; ``R`` is then the
  "Hessian x product" interaction ``x_a^T (d^2 y / dx_a dx_b) x_b`` of a dot product.
- ``embedding-dot``: no gradients; ``C[:, t] = w_t h_t`` (pooling weight times the
  last-layer state of token ``t``), i.e. dot products of contextual token embeddings.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lrp_llm.archs import get_arch
from lrp_llm.engines.finite import check_finite
from lrp_llm.errors import InputError, ShouldCancel, check_cancel
from lrp_llm.mechanism.context import lrp_rules
from lrp_llm.mechanism.patch import ModelPatch, freeze_parameters
from lrp_llm.methods import method_names
from lrp_llm.results.base import run_meta
from lrp_llm.results.similarity import SimilarityExplanation

METHODS: tuple[str, ...] = method_names("encoder")
RULES: tuple[str, ...] = ("cp-lrp", "attnlrp")
POOLINGS: tuple[str, ...] = ("mean", "cls", "last")
MODES: tuple[str, ...] = ("cosine", "dot")
STRATEGIES: tuple[str, ...] = ("auto", "replay", "forward", "reverse", "loop")
# Tangents (tokens) or cotangents (dimensions) per batched pass: bounds the memory of one pass.
DEFAULT_CHUNK = 64

Progress = Callable[[int, int], None]


# ------------------------------------------------------------------------ results
@dataclass
class TokenMap:
    """First-order explanation of one text's embedding.

    ``contributions`` (D, n): relevance of token ``i`` for embedding dimension ``m``;
    ``embedding`` (D,): the pooled embedding the model computes.
    """

    text: str
    tokens: list[str]
    input_ids: list[int]
    special: list[bool]
    embedding: np.ndarray
    contributions: np.ndarray
    seconds: float

    @property
    def conservation(self) -> float:
        """``sum C / sum phi`` over dimensions weighted by ``phi`` (1.0 without biases)."""
        phi = self.embedding
        denom = float(phi @ phi)
        return float(phi @ self.contributions.sum(1)) / denom if denom else float("nan")


# ------------------------------------------------------------------ the embedding
def _check(name: str, value: str | None, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise InputError(f"unknown {name} '{value}'; choose one of: {', '.join(allowed)}")


def _base(model: nn.Module) -> nn.Module:
    return getattr(model, "base_model", model)


def is_encoder(model: nn.Module) -> bool:
    return get_arch(model).kind == "encoder"


def default_pooling(model: nn.Module) -> str:
    """The pooling of a sentence-transformers folder (``1_Pooling/config.json``), else mean for
    encoders and last token for decoders."""
    folder = Path(str(getattr(model, "name_or_path", "") or getattr(model.config, "_name_or_path", "")))
    config = folder / "1_Pooling" / "config.json"
    if config.is_file():
        try:
            d = json.loads(config.read_text(encoding="utf-8"))
        except ValueError:
            d = {}
        if d.get("pooling_mode_cls_token"):
            return "cls"
        if d.get("pooling_mode_lasttoken"):
            return "last"
        if d.get("pooling_mode_mean_tokens"):
            return "mean"
    return "mean" if is_encoder(model) else "last"


def _pool(hidden: torch.Tensor, pooling: str) -> torch.Tensor:
    """(batch, n, d) -> (batch, d)."""
    if pooling == "mean":
        return hidden.mean(1)
    if pooling == "cls":
        return hidden[:, 0]
    return hidden[:, -1]


def _pool_weights(n: int, pooling: str) -> np.ndarray:
    from lrp_llm.archs.bert import pool_weights

    return pool_weights(n, pooling, torch.float64, torch.device("cpu"))[:, 0].numpy()


class _Embedder:
    """``phi`` as a function of the token input vectors ``x`` (1, n, d) of one text.

    Encoders: ``x`` replaces the input of the embedding LayerNorm (word + position +
    type embedding), via a pre-hook installed for the lifetime of the rules' patch.
    Decoders: ``x`` is ``inputs_embeds``.
    """

    def __init__(self, model: nn.Module, patch, input_ids: torch.Tensor, pooling: str) -> None:
        self.model = model
        self.base = _base(model)
        self.ids = input_ids
        self.pooling = pooling
        self.encoder = is_encoder(model)
        self._x: torch.Tensor | None = None
        captured: list[torch.Tensor] = []
        if self.encoder:
            from lrp_llm.archs.bert import token_input_norm

            def substitute(_module, args):
                if self._x is None:
                    captured.append(args[0].detach())
                    return None
                return (self._x, *args[1:])

            handle = token_input_norm(model).register_forward_pre_hook(substitute)
            patch.on_exit(handle.remove)
            with torch.no_grad():  # the embedding layer alone: its LayerNorm's input is all we need
                self.base.embeddings(input_ids=input_ids)
            self.x0 = captured[0]
        else:
            with torch.no_grad():
                self.x0 = model.get_input_embeddings()(input_ids).detach()

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """Last-layer states (batch, n, d) with ``x`` as the token inputs."""
        if self.encoder:
            self._x = x
            ids = self.ids if x.dim() < 3 or x.shape[0] == 1 else self.ids.expand(x.shape[0], -1)
            try:
                return self.base(input_ids=ids).last_hidden_state
            finally:
                self._x = None
        return self.base(inputs_embeds=x, use_cache=False).last_hidden_state

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return _pool(self.hidden(x), self.pooling)


# ------------------------------------------------------ first-order maps, 3 ways
def _forward_mode(f: _Embedder, chunk: int, should_cancel: ShouldCancel | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Column ``i`` of C = jvp of phi with tangent x_i (token i's input, zero elsewhere); tangents batched."""
    from torch.func import jvp, vmap
    from torch.nn.attention import SDPBackend, sdpa_kernel

    x0 = f.x0
    n = x0.shape[1]
    cols: list[torch.Tensor] = []
    primal = None

    def column(tangent: torch.Tensor):
        return jvp(f, (x0,), (tangent,))

    # The fused CPU/GPU SDPA kernels have no forward-mode derivative; the math kernel has.
    with sdpa_kernel([SDPBackend.MATH]):
        for start in range(0, n, chunk):
            check_cancel(should_cancel)
            idx = torch.arange(start, min(n, start + chunk), device=x0.device)
            tangents = torch.zeros((len(idx), *x0.shape), dtype=x0.dtype, device=x0.device)
            tangents[torch.arange(len(idx)), 0, idx] = x0[0, idx]
            out, dout = vmap(column)(tangents)  # (c, 1, D) each
            primal = out[0, 0]
            cols.append(dout[:, 0])
    return primal.detach(), torch.cat(cols).T.detach()


def _replay_mode(f: _Embedder, chunk: int, should_cancel: ShouldCancel | None) -> tuple[torch.Tensor, torch.Tensor]:
    """CP-LRP by the explicit replay (:func:`lrp_llm.archs.bert.cp_lrp_replay`): one batch of one-token rows."""
    from lrp_llm.archs.bert import cp_lrp_replay

    phi, contributions = cp_lrp_replay(f.model, f.x0[0], f.pooling, chunk=chunk, should_cancel=should_cancel)
    return phi, contributions.T


def _reverse_mode(
    f: _Embedder, chunk: int, should_cancel: ShouldCancel | None, *, batched: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row ``m`` of C = x * d phi_m / dx; rows in batches of cotangents (or one by one: ``batched=False``)."""
    x0 = f.x0
    with torch.enable_grad():
        x = x0.clone().requires_grad_(True)
        phi = f(x)[0]
        dims = phi.shape[0]
        rows = torch.empty(dims, x0.shape[1], dtype=x0.dtype, device=x0.device)
        if batched:
            eye = torch.eye(dims, dtype=phi.dtype, device=phi.device)
            for start in range(0, dims, chunk):
                check_cancel(should_cancel)
                stop = min(dims, start + chunk)
                (g,) = torch.autograd.grad(
                    phi, x, grad_outputs=eye[start:stop], retain_graph=True, is_grads_batched=True
                )
                rows[start:stop] = (g[:, 0] * x0[0]).sum(-1)
        else:
            for m in range(dims):
                if m % 16 == 0:
                    check_cancel(should_cancel)
                (g,) = torch.autograd.grad(phi[m], x, retain_graph=True)
                rows[m] = (g[0] * x0[0]).sum(-1)
    return phi.detach(), rows


def first_order_map(
    model: nn.Module,
    input_ids: Sequence[int] | torch.Tensor,
    *,
    method: str = "bilrp",
    rules: str | None = "cp-lrp",
    pooling: str = "mean",
    strategy: str = "auto",
    chunk: int = DEFAULT_CHUNK,
    should_cancel: ShouldCancel | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(phi, C)``: the pooled embedding (D,) and the token contributions (D, n) of one text.

    ``strategy``: "replay" (CP-LRP on BERT-layout encoders: the explicit linear replay,
    one batch of one-token rows, no autograd), "forward" (one tangent per token,
    batched), "reverse" (one cotangent per dimension, batched), "loop" (one backward pass
    per dimension: the reference and the published method's cost), "auto" (replay where
    it applies, else forward when the text is shorter than the embedding is wide and the
    rules allow it, else reverse).
    """
    _check("method", method, METHODS)
    _check("pooling", pooling, POOLINGS)
    _check("strategy", strategy, STRATEGIES)
    if method == "bilrp":
        _check("rule set", rules, RULES)
    if chunk < 1:
        raise InputError("chunk must be at least 1")
    ids = torch.as_tensor(input_ids, dtype=torch.long).reshape(1, -1)
    device = model.get_input_embeddings().weight.device
    ids = ids.to(device if device.type != "meta" else torch.device("cpu"))
    if ids.shape[1] == 0:
        raise InputError("nothing to explain: the text has no tokens")
    active_rules = rules if method == "bilrp" else None
    encoder = is_encoder(model)
    from lrp_llm.archs.bert import replay_layers

    replayable = method == "bilrp" and active_rules == "cp-lrp" and encoder and replay_layers(model) is not None
    if strategy == "auto":
        if replayable:
            strategy = "replay"
        else:
            # Forward mode needs rules written as detach forms (encoders) or no rules at all.
            forward_ok = encoder or active_rules is None
            strategy = "forward" if forward_ok and ids.shape[1] <= _base(model).config.hidden_size else "reverse"
    if strategy == "replay":
        if not replayable:
            raise InputError("the replay strategy computes CP-LRP on BERT-layout encoders only; use forward or reverse")
        with ModelPatch(model) as patch:  # only the embedding hook: the replay reads the weights
            return _replay_mode(_Embedder(model, patch, ids, pooling), chunk, should_cancel)
    with lrp_rules(model, active_rules) as patch:
        freeze_parameters(model, patch)
        f = _Embedder(model, patch, ids, pooling)
        if method == "embedding-dot":
            with torch.no_grad():
                hidden = f.hidden(f.x0)[0]  # (n, D)
                weights = torch.as_tensor(
                    _pool_weights(hidden.shape[0], pooling), dtype=hidden.dtype, device=hidden.device
                )
                return _pool(hidden[None], pooling)[0], (hidden * weights[:, None]).T.contiguous()
        if strategy == "forward":
            return _forward_mode(f, chunk, should_cancel)
        return _reverse_mode(f, chunk, should_cancel, batched=strategy == "reverse")


# ------------------------------------------------------------------ explainer
def pair_interactions(map_a: TokenMap, map_b: TokenMap, mode: str = "cosine") -> np.ndarray:
    """(n_a, n_b) interactions ``C_a^T C_b`` (divided by both norms in cosine mode)."""
    _check("mode", mode, MODES)
    r = map_a.contributions.T @ map_b.contributions
    if mode == "cosine":
        norms = float(np.linalg.norm(map_a.embedding) * np.linalg.norm(map_b.embedding))
        r = r / norms if norms else r * 0.0
    return r


def matrix_cosine(explained: np.ndarray, true: np.ndarray) -> float:
    """Cosine similarity of two interaction matrices, flattened (1 = same pattern up to scale)."""
    a, b = np.asarray(explained, dtype=np.float64).ravel(), np.asarray(true, dtype=np.float64).ravel()
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / denom if denom else 0.0


class SimilarityExplainer:
    """Explains similarities of one embedding model, caching each text's first-order map.

    ``explain(a, b)`` costs two maps; ``rank(query, texts)`` costs ``len(texts) + 1``.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        *,
        method: str = "bilrp",
        rules: str | None = "cp-lrp",
        pooling: str | None = None,
        mode: str = "cosine",
        strategy: str = "auto",
        chunk: int = DEFAULT_CHUNK,
        model_name: str | None = None,
    ) -> None:
        _check("method", method, METHODS)
        _check("mode", mode, MODES)
        spec = get_arch(model)  # an unsupported model fails here, with the supported list
        if spec.kind in ("image-classification", "image-encoder"):
            raise InputError(
                f"{spec.family} is an image model; text similarity needs a text embedding model "
                "(image pairs: lrp_llm.analyses.image_bilrp.explain_image_similarity)"
            )
        if method == "bilrp":
            _check("rule set", rules, RULES)
            if rules not in spec.rules:
                raise InputError(f"rule set '{rules}' is not available for {spec.family} models")
        self.model = model
        self.tokenizer = tokenizer
        self.method = method
        self.rules = rules if method == "bilrp" else None
        self.pooling = pooling or default_pooling(model)
        _check("pooling", self.pooling, POOLINGS)
        self.mode = mode
        self.strategy = strategy
        self.chunk = chunk
        self.model_name = model_name or str(getattr(model, "name_or_path", "") or type(model).__name__)
        self._cache: dict[str, TokenMap] = {}
        self.maps_computed = 0

    # -- first-order maps ---------------------------------------------------------
    def tokenize(self, text: str) -> list[int]:
        if not text or not text.strip():
            raise InputError("a text is empty; pass some words to compare")
        ids = [int(i) for i in self.tokenizer(text, add_special_tokens=True)["input_ids"]]
        limit = getattr(_base(self.model).config, "max_position_embeddings", None)
        if isinstance(limit, int) and len(ids) > limit:
            raise InputError(f"a text has {len(ids)} tokens; this model takes at most {limit}: shorten it")
        return ids

    def token_map(self, text: str, *, should_cancel: ShouldCancel | None = None) -> TokenMap:
        cached = self._cache.get(text)
        if cached is not None:
            return cached
        ids = self.tokenize(text)
        t0 = time.perf_counter()
        phi, contributions = first_order_map(
            self.model,
            ids,
            method=self.method,
            rules=self.rules,
            pooling=self.pooling,
            strategy=self.strategy,
            chunk=self.chunk,
            should_cancel=should_cancel,
        )
        seconds = time.perf_counter() - t0
        special = self.tokenizer.get_special_tokens_mask(ids, already_has_special_tokens=True)
        result = TokenMap(
            text=text,
            tokens=[str(t) for t in self.tokenizer.convert_ids_to_tokens(ids)],
            input_ids=ids,
            special=[bool(s) for s in special],
            embedding=phi.double().cpu().numpy(),
            contributions=contributions.double().cpu().numpy(),
            seconds=seconds,
        )
        check_finite(self.model, result.contributions)
        self._cache[text] = result
        self.maps_computed += 1
        return result

    # -- pairs ----------------------------------------------------------------------
    def explain(self, a: str, b: str, *, should_cancel: ShouldCancel | None = None) -> SimilarityExplanation:
        t0 = time.perf_counter()
        map_a = self.token_map(a, should_cancel=should_cancel)
        map_b = self.token_map(b, should_cancel=should_cancel)
        return self._pair(map_a, map_b, time.perf_counter() - t0)

    def rank(
        self,
        query: str,
        texts: Sequence[str],
        *,
        progress: Progress | None = None,
        should_cancel: ShouldCancel | None = None,
    ) -> list[SimilarityExplanation]:
        """One explanation per text, most similar first (``meta["index"]`` is the text's position)."""
        if not texts:
            raise InputError("no texts to compare with")
        t0 = time.perf_counter()
        map_q = self.token_map(query, should_cancel=should_cancel)
        seconds_q = time.perf_counter() - t0
        out = []
        for k, text in enumerate(texts):
            t1 = time.perf_counter()
            map_t = self.token_map(text, should_cancel=should_cancel)
            exp = self._pair(map_q, map_t, time.perf_counter() - t1 + (seconds_q if k == 0 else 0.0))
            exp.meta["index"] = k
            out.append(exp)
            if progress is not None:
                progress(k + 1, len(texts))
        out.sort(key=lambda e: -e.similarity)
        for rank, exp in enumerate(out):
            exp.meta["rank"] = rank + 1
        return out

    def _pair(self, map_a: TokenMap, map_b: TokenMap, seconds: float) -> SimilarityExplanation:
        t0 = time.perf_counter()
        matrix = pair_interactions(map_a, map_b, self.mode)
        phi_a, phi_b = map_a.embedding, map_b.embedding
        dot = float(phi_a @ phi_b)
        norms = float(np.linalg.norm(phi_a) * np.linalg.norm(phi_b))
        pairing = time.perf_counter() - t0
        return SimilarityExplanation(
            model=self.model_name,
            method=self.method,
            rules=self.rules,
            pooling=self.pooling,
            mode=self.mode,
            text_a=map_a.text,
            text_b=map_b.text,
            tokens_a=list(map_a.tokens),
            tokens_b=list(map_b.tokens),
            interactions=matrix,
            similarity=dot / norms if norms else float("nan"),
            dot=dot,
            interaction_sum=float(matrix.sum()),
            seconds=seconds + pairing,
            special_a=list(map_a.special),
            special_b=list(map_b.special),
            timings={"map_a": map_a.seconds, "map_b": map_b.seconds, "pairing": pairing},
            meta={
                **run_meta(
                    "similarity",
                    method=self.method,
                    rules=self.rules,
                    dtype=next(self.model.parameters()).dtype,
                    device=next(self.model.parameters()).device,
                ),
                "conservation_a": map_a.conservation,
                "conservation_b": map_b.conservation,
                "dimensions": int(phi_a.shape[0]),
            },
        )


def explain_similarity(model: nn.Module, tokenizer, a: str, b: str, **kwargs: Any) -> SimilarityExplanation:
    """One pair: ``SimilarityExplainer(model, tokenizer, **kwargs).explain(a, b)``."""
    return SimilarityExplainer(model, tokenizer, **kwargs).explain(a, b)
