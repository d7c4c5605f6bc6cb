"""The naive engine: one full forward per variant through the public intervention API
(:func:`patching.intervene`), the reference the fast engines are tested and timed against."""

from __future__ import annotations

from .interventions import intervene, replace
from .variants import EngineJob, LogitRows


def run_naive(job: EngineJob, rows: LogitRows) -> None:
    for v in job.variants:
        rows.check_cancel()
        with intervene(job.model, replace(v.site, job.cache, positions=list(v.positions))):
            out = job.model(input_ids=job.base, use_cache=False, logits_to_keep=job.naive_logits_to_keep).logits[:, -1]
        rows.keep([v], out)
