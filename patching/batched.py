"""The batched engine (any family, e.g. Mamba): variants as a batch through the whole
model, each row patched by its own hook, logits at the last position."""

from __future__ import annotations

from .variants import EngineJob, LogitRows, add_edit, pack, row_hooks


def run_batched(job: EngineJob, rows: LogitRows) -> None:
    for _, chunk in pack(job.variants, job.max_tokens, job.T, by_start=False):
        rows.check_cancel()
        edits: dict = {}
        for r, v in enumerate(chunk):
            add_edit(edits, job.sites, v, r, 0, job.cache)
        with row_hooks(edits):
            ids = job.base.expand(len(chunk), -1)
            out = job.model(input_ids=ids, use_cache=False, logits_to_keep=1).logits[:, -1]
        rows.keep(chunk, out)
