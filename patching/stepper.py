"""The layer stepper engine (Llama family, the default).

The base run is recorded once (the hidden state entering every layer, its keys and
values, the arguments each layer receives). A variant that patches layer ``i`` at
position ``p`` starts at layer ``i`` from the recorded state, and -- the model being
causal -- only positions ``p..T-1`` are computed, attending to the recorded keys/values
of positions ``< p``. All variants with the same first position run as one batch, layer
by layer, a variant joining the batch at its layer. Logits are computed at the last
position only, and only for the answer and wrong tokens unless KL is asked for. The
engine checks itself against the model's own forward first; the sweep falls back to
the batched engine if it differs. Which families it runs on is their description's
``BlockPaths.steps_from_keys_values``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lrp_llm.archs.description import resolve

from .interventions import ActivationCache, _first
from .sites import SiteMap
from .variants import EngineJob, LogitRows, Variant, add_edit, pack, row_hooks, source_value


class StepperUnsupported(Exception):
    """The layer stepper cannot reproduce this model's forward; use the batched engine."""


class _KVRecorder:
    """Stands in for a KV cache in one layer of the base run: records keys and values."""

    def __init__(self) -> None:
        self.kv: tuple[torch.Tensor, torch.Tensor] | None = None

    def get_seq_length(self, layer_idx: int | None = 0) -> int:
        """Positions cached before this call: none, the base run starts at position 0 (Llama-4's
        NoPE layers scale queries by their absolute position, read from here)."""
        return 0

    def update(self, key_states, value_states, layer_idx=None, *args, **kwargs):
        self.kv = (key_states.detach(), value_states.detach())
        return key_states, value_states


class _PrefixKV:
    """Stands in for a KV cache in one layer of a variant batch: prepends the base run's
    keys/values of the positions before the batch's first position (shared by all rows)."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        self.keys, self.values = keys, values  # (1, kv_heads, start, dim)

    def get_seq_length(self, layer_idx: int | None = 0) -> int:
        """Positions cached before the batch's first one: the batch computes positions ``start..T-1``."""
        return int(self.keys.shape[2])

    def update(self, key_states, value_states, layer_idx=None, *args, **kwargs):
        n = key_states.shape[0]
        if self.keys.shape[2] == 0:
            return key_states, value_states
        k = torch.cat([self.keys.expand(n, -1, -1, -1), key_states], dim=2)
        v = torch.cat([self.values.expand(n, -1, -1, -1), value_states], dim=2)
        return k, v


class LayerStepper:
    """Runs decoder layers ``i..L-1`` on batches of variants of one recorded base run."""

    def __init__(self, model: nn.Module, ids: torch.Tensor, sm: SiteMap, answer_id: int, wrong_id: int) -> None:
        if not sm.blocks.steps_from_keys_values:
            raise StepperUnsupported(
                f"{sm.family} blocks are not described as reading earlier positions through keys and values only "
                "(BlockPaths.steps_from_keys_values)"
            )
        self.model, self.sm = model, sm
        self.answer_id, self.wrong_id = answer_id, wrong_id
        self.T = ids.shape[1]
        final_norm = sm.blocks.final_norm
        self.norm = None if final_norm is None else resolve(getattr(model, "base_model", model), final_norm)
        self.head = model.get_output_embeddings()
        if self.norm is None or self.head is None:
            raise StepperUnsupported("no final norm / output head found")
        self.softcap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
        # Cohere multiplies the head's output by a constant (``CohereForCausalLM.logit_scale``) before returning it
        self.logit_scale = getattr(model, "logit_scale", None)
        n = sm.n_layers
        self.inputs: list[torch.Tensor | None] = [None] * n
        self.outputs: list[torch.Tensor | None] = [None] * n
        self.kwargs: list[dict | None] = [None] * n
        recorders = [_KVRecorder() for _ in range(n)]
        handles = []
        for j, layer in enumerate(sm.layers):

            def pre(_m, args, kwargs, j=j):
                hidden = args[0] if args else kwargs["hidden_states"]
                self.inputs[j] = hidden.detach()
                kw = {k: v for k, v in kwargs.items() if k != "hidden_states"}
                self.kwargs[j] = kw
                return args, {**kwargs, "past_key_values": recorders[j]}

            def post(_m, _args, out, j=j):
                self.outputs[j] = _first(out).detach()

            handles.append(layer.register_forward_pre_hook(pre, with_kwargs=True))
            handles.append(layer.register_forward_hook(post))
        try:
            with torch.no_grad():
                self.logits = model(input_ids=ids, use_cache=False, logits_to_keep=1).logits[0, -1].detach()
        finally:
            for h in handles:
                h.remove()
        if any(r.kv is None for r in recorders) or any(x is None for x in self.inputs):
            raise StepperUnsupported("the layers do not expose their keys and values")
        self.kv = [r.kv for r in recorders]
        self._sliced: dict[int, list[dict]] = {}

    # -- arguments of each layer for a batch starting at position ``s`` --------------
    def layer_kwargs(self, s: int) -> list[dict]:
        if s in self._sliced:
            return self._sliced[s]
        T = self.T
        out = []
        for j, kw in enumerate(self.kwargs):
            kw = dict(kw)
            mask = kw.get("attention_mask")
            if mask is None:
                if s > 0:  # SDPA's is_causal would align the queries at the start: spell the mask out
                    q = torch.arange(s, T, device=self.logits.device)[:, None]
                    kw["attention_mask"] = (torch.arange(T, device=self.logits.device)[None, :] <= q)[None, None]
            elif isinstance(mask, torch.Tensor) and mask.dim() == 4:
                kw["attention_mask"] = mask[:, :, s:, :]
            else:
                raise StepperUnsupported("attention mask of an unknown form")
            pe = kw.get("position_embeddings")
            if isinstance(pe, (tuple, list)):
                kw["position_embeddings"] = tuple(t[..., s:, :] for t in pe)
            elif isinstance(pe, torch.Tensor) and pe.dim() >= 2 and pe.shape[-2] == T:
                kw["position_embeddings"] = pe[..., s:, :]  # one tensor per position (Llama-4: complex freqs_cis)
            elif pe is not None:
                raise StepperUnsupported("position embeddings of an unknown form")
            for name in ("position_ids", "cache_position"):
                if isinstance(kw.get(name), torch.Tensor):
                    kw[name] = kw[name][..., s:]
            keys, values = self.kv[j]
            kw["past_key_values"] = _PrefixKV(keys[:, :, :s], values[:, :, :s])
            out.append(kw)
        self._sliced = {s: out}  # one start at a time: keep memory flat
        return out

    def readout(self, last: torch.Tensor, full: bool) -> torch.Tensor:
        """(n, d_model) hidden states at the last position -> (n, vocab) or (n, 2) logits."""
        h = self.norm(last[:, None, :])[:, 0]
        if full:
            logits = self.head(h)
        else:
            ids = [self.answer_id, self.wrong_id]
            logits = h @ self.head.weight[ids].T
            if getattr(self.head, "bias", None) is not None:
                logits = logits + self.head.bias[ids]
        if isinstance(self.logit_scale, float | int):
            logits = logits * self.logit_scale
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def run(self, start: int, variants: Sequence[Variant], cache: ActivationCache, full: bool) -> torch.Tensor:
        """Last-position logits of ``variants`` (first positions all >= ``start``), in their order."""
        kws = self.layer_kwargs(start)
        order: list[int] = []
        hidden: torch.Tensor | None = None
        j0 = min(v.layer for v in variants)
        for j in range(j0, self.sm.n_layers):
            pre = [i for i, v in enumerate(variants) if v.layer == j and v.kind != "resid"]
            edits: dict = {}
            if pre:
                rows = self.inputs[j][:, start:].expand(len(pre), -1, -1)
                base_row = 0 if hidden is None else hidden.shape[0]
                hidden = rows if hidden is None else torch.cat([hidden, rows])
                for k, i in enumerate(pre):
                    add_edit(edits, self.sm, variants[i], base_row + k, start, cache)
                order += pre
            if hidden is not None:
                with row_hooks(edits):
                    hidden = _first(self.sm.layers[j](hidden, **kws[j]))
            post = [i for i, v in enumerate(variants) if v.layer == j and v.kind == "resid"]
            if post:
                rows = self.outputs[j][:, start:].repeat(len(post), 1, 1)
                for k, i in enumerate(post):
                    v = variants[i]
                    rows[k, [p - start for p in v.positions]] = source_value(cache, v).to(rows.dtype)
                hidden = rows if hidden is None else torch.cat([hidden, rows])
                order += post
        logits = self.readout(hidden[:, -1], full)
        out = torch.empty_like(logits)
        out[torch.tensor(order, device=logits.device)] = logits
        return out

    def verify(self) -> None:
        """Reproduce the base run's last logits from layer 0 at a mid start position."""
        s = self.T // 2
        kws = self.layer_kwargs(s)
        hidden = self.inputs[0][:, s:]
        with torch.no_grad():
            for j in range(self.sm.n_layers):
                hidden = _first(self.sm.layers[j](hidden, **kws[j]))
            got = self.readout(hidden[:, -1], True)[0]
        want = self.logits
        tol = max(1e-3, 50 * torch.finfo(want.dtype).eps) * max(1.0, float(want.abs().max()))
        err = float((got - want).abs().max())
        if not err <= tol:
            raise StepperUnsupported(f"layer stepping differs from the model's forward by {err:.3g}")


def run_stepper(job: EngineJob, stepper: LayerStepper, rows: LogitRows) -> None:
    """Every variant of ``job`` through a verified ``stepper``, batched by first position."""
    for start, chunk in pack(job.variants, job.max_tokens, job.T, by_start=True):
        rows.check_cancel()
        rows.keep(chunk, stepper.run(start, chunk, job.cache, job.full_logits))
