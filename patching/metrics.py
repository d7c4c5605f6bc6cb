"""Metrics of a patched run, read from the logits at the last position.

- ``logit_diff``: logit(answer) - logit(wrong).
- ``recovery``: (patched - corrupted) / (clean - corrupted) of the logit difference;
  1 = behaves like the clean run, 0 = like the corrupted run (both directions).
- ``kl``: KL(p_clean || p_patched) of the next-token distributions, in nats.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lrp_llm.errors import InputError

METRICS = ("logit_diff", "recovery", "kl")


def check_metrics(metrics) -> tuple[str, ...]:
    out = tuple(metrics)
    bad = [m for m in out if m not in METRICS]
    if bad or not out:
        raise InputError(f"unknown metric '{bad[0] if bad else ''}'; choose from {', '.join(METRICS)}")
    return out


@dataclass(frozen=True)
class Reference:
    """The two unpatched runs: logit differences and the clean log-distribution."""

    answer_id: int
    wrong_id: int
    clean_logit_diff: float
    corrupted_logit_diff: float
    clean_logprobs: torch.Tensor  # (vocab,) float64

    @property
    def span(self) -> float:
        return self.clean_logit_diff - self.corrupted_logit_diff

    @classmethod
    def from_logits(cls, clean: torch.Tensor, corrupted: torch.Tensor, answer_id: int, wrong_id: int) -> Reference:
        """``clean``/``corrupted``: last-position logits, shape (vocab,)."""
        clean = clean.detach().double().cpu()
        corrupted = corrupted.detach().double().cpu()
        return cls(
            answer_id,
            wrong_id,
            float(clean[answer_id] - clean[wrong_id]),
            float(corrupted[answer_id] - corrupted[wrong_id]),
            torch.log_softmax(clean, dim=-1),
        )

    def recovery(self, logit_diff: torch.Tensor) -> torch.Tensor:
        span = self.span
        if abs(span) < 1e-9:
            return torch.full_like(logit_diff, float("nan"))
        return (logit_diff - self.corrupted_logit_diff) / span

    def kl(self, logits: torch.Tensor) -> torch.Tensor:
        """KL(p_clean || softmax(logits)) per row of ``logits`` (n, vocab)."""
        logq = torch.log_softmax(logits.double().cpu(), dim=-1)
        logp = self.clean_logprobs
        return (logp.exp() * (logp - logq)).sum(-1)


def logit_diff(logits: torch.Tensor, answer_id: int, wrong_id: int) -> torch.Tensor:
    """(n, vocab) -> (n,) float64."""
    return (logits[..., answer_id] - logits[..., wrong_id]).double().cpu()
