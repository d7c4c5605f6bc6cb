"""The conformance suite's shared pieces: a tiny random model of every registered model type,
the checks each type must pass, and the supported-families table generated from them.

The checks (run per type by ``tests/unit/test_arch_descriptions.py`` and
``tests/unit/test_conformance.py``):

- every rule set keeps the forward pass and the model is restored afterwards;
- on a bias-free float64 copy the conservative rule set (CP-LRP, MambaLRP) sums to the logit;
- the blocks and patching sites resolve; a small activation-patching sweep gives the same
  numbers with every engine the family offers as with the naive reference engine;
- attribution patching with RelP runs.

``python -m tests.support.conformance`` runs them all and rewrites the table in
``docs/supported.md`` and the README (between the ``supported-types`` markers); a test
checks that both are current.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lrp_llm.archs import arch_for_model_type, supported_model_types

ROOT = Path(__file__).resolve().parents[2]
MARK_START, MARK_END = "<!-- supported-types:start -->", "<!-- supported-types:end -->"
FIRST_LLAMAS = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "olmo2", "granite")
GPT_STYLE = ("gpt2", "gpt_neox", "starcoder2", "gptj", "phi", "falcon")


def tiny_for(model_type: str, *, dtype: torch.dtype = torch.float32):
    """A tiny random model of ``model_type`` and the keyword inputs of one forward pass."""
    from tests.support.encoders import tiny_encoder
    from tests.support.models import tiny_causal_lm
    from tests.support.more_encoders import MORE_ENCODER_TYPES, tiny_more_encoder
    from tests.support.tiny_any import tiny_model
    from tests.support.tiny_gpt import tiny_gpt
    from tests.support.tiny_mamba import tiny_mamba
    from tests.support.tiny_t5_vit import random_pixels, tiny_t5, tiny_vit
    from tests.support.tiny_towers import BARE_TOWER_TYPES, TOWER_TYPES, tiny_tower

    spec = arch_for_model_type(model_type)
    ids = torch.tensor([[3, 7, 1, 9, 4, 2]])
    if spec.family == "mamba":
        return tiny_mamba(model_type).to(dtype), {"input_ids": ids}
    if spec.family == "t5":
        model = tiny_t5("v1.0" if model_type == "t5" else "v1.1")
        if model_type == "mt5":
            from transformers import MT5Config, MT5ForConditionalGeneration

            fields = {k: v for k, v in model.config.to_dict().items() if k != "model_type"}
            model = MT5ForConditionalGeneration(MT5Config(**fields)).eval()
            assert model.config.model_type == "mt5"
        return model.to(dtype), {"input_ids": ids, "decoder_input_ids": ids[:, :3]}
    if model_type in TOWER_TYPES + BARE_TOWER_TYPES:
        return tiny_tower(model_type).to(dtype), {"pixel_values": random_pixels().to(dtype)}
    if spec.family == "vit":
        return tiny_vit().to(dtype), {"pixel_values": random_pixels().to(dtype)}
    if model_type in MORE_ENCODER_TYPES:
        return tiny_more_encoder(model_type).to(dtype), {"input_ids": ids}
    if spec.family == "bert":
        return tiny_encoder(model_type).to(dtype), {"input_ids": ids}
    if model_type in GPT_STYLE:
        return tiny_gpt(model_type, dtype=dtype), {"input_ids": ids}
    if model_type in FIRST_LLAMAS:
        return tiny_causal_lm(model_type, dtype=dtype), {"input_ids": ids}
    return tiny_model(model_type, dtype=dtype), {"input_ids": ids}


def causal_types() -> list[str]:
    return [t for t in supported_model_types() if arch_for_model_type(t).kind == "causal-lm"]


def without_biases_and_position_embeddings(model: nn.Module) -> nn.Module:
    """``model`` with every bias and every learned embedding other than the tokens' zeroed (in place):
    they are added to every token and absorb relevance the token embeddings do not get."""
    tokens = model.get_input_embeddings()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
        for m in model.modules():
            if isinstance(m, nn.Embedding) and m is not tokens:
                m.weight.zero_()
        for name, b in model.named_buffers():
            # fixed sinusoidal encodings (CTRL, XGLM), added to every token like a bias
            if name.endswith("pos_encoding") or name.endswith(".embed_positions.weights"):
                b.zero_()
    return model


def conservative_rules(model_type: str) -> str:
    """The rule set that conserves exactly on a bias-free model: detached attention (CP-LRP) or decays (MambaLRP)."""
    spec = arch_for_model_type(model_type)
    return "cp-lrp" if "cp-lrp" in spec.rules else "mambalrp"


def conservation_ratios(model_type: str) -> list[float]:
    """Relevance sum / logit for two explained positions on a bias-free float64 copy under the conservative rules."""
    from lrp_llm.engines.causal_lm import relevance
    from tests.support.models import random_ids

    torch.manual_seed(0)
    model, _ = tiny_for(model_type, dtype=torch.float64)
    model = without_biases_and_position_embeddings(model)
    out = relevance(model, random_ids(12), [8, 11], method=conservative_rules(model_type))
    return [float(out["relevance"][i].sum() / out["logits"][i]) for i in range(2)]


SWEEP_KINDS = ("resid", "attn", "mlp", "mixer", "head")


# How far a sweep engine's logits may sit from the naive engine's: float32 runs of the same model at other
# batch sizes (other kernels' summation orders) move the logits by ~1e-6 to 1e-5 on the tiny models
LOGIT_ATOL = 1e-4


def sweep_atol(metric: str, span: float) -> float:
    """The tolerance of a sweep metric, the same ``LOGIT_ATOL`` in logit-difference units for each.

    ``logit_diff`` is in logits, ``kl`` in nats (of the order of the logit error too); ``recovery`` is
    ``(ld - corrupted) / span`` (``span``: the clean - corrupted logit difference), so a logit error ``e``
    moves it by ``e / |span|``: its tolerance is ``LOGIT_ATOL / |span|`` where the span is under one logit (on
    a tiny random model it can be small, Zamba2's 0.023, where ``LOGIT_ATOL`` on the recovery itself would ask
    for 2e-6 logits), and ``LOGIT_ATOL`` as before where it is wider (the recovery also moves with the
    engines' reference runs, by ``|recovery| * (span error) / span``, so no tighter than that).
    """
    if metric == "recovery":
        return LOGIT_ATOL / max(min(abs(span), 1.0), 1e-9)
    return LOGIT_ATOL


def sweep_engines(model_type: str) -> tuple[str, ...]:
    """The sweep engines that run on ``model_type``, each checked against the naive engine (raises on a mismatch).

    The stepper is listed where it accepts the model (it verifies itself against the model's forward).
    """
    from patching import sweep
    from patching.sites import SiteMap
    from patching.stepper import StepperUnsupported
    from tests.support.models import random_ids

    model, _ = tiny_for(model_type)
    sm = SiteMap(model)
    kinds = tuple(k for k in SWEEP_KINDS if k in sm.kinds)
    clean = random_ids(7, seed=4)
    corrupted = [*clean[:2], 9, *clean[3:]]
    kw = dict(kinds=kinds, positions=[2, 6], head_positions=[5, 6])
    naive = sweep(model, clean, corrupted, 5, 6, engine="naive", **kw)
    engines = []
    for engine in ("batched", "stepper"):
        try:
            fast = sweep(model, clean, corrupted, 5, 6, engine=engine, **kw)
        except StepperUnsupported:
            continue
        # the engines' reference runs (clean and corrupted logit differences), which the recovery divides by
        got, want = fast.reference, naive.reference
        np.testing.assert_allclose(
            [got.clean_logit_diff, got.corrupted_logit_diff],
            [want.clean_logit_diff, want.corrupted_logit_diff],
            atol=LOGIT_ATOL,
            rtol=0,
            err_msg=f"{model_type} {engine} reference",
        )
        for key, want in naive.values.items():
            np.testing.assert_allclose(
                fast.values[key],
                want,
                atol=sweep_atol(key[1], naive.reference.span),
                rtol=0,
                err_msg=f"{model_type} {engine} {key}",
            )
        engines.append(engine)
    return tuple(engines)


def relp_runs(model_type: str) -> bool:
    """Attribution patching with RelP gives finite estimates that differ from the reference (it did something)."""
    from patching import attribution_patching
    from patching.sites import SiteMap
    from tests.support.models import random_ids

    model, _ = tiny_for(model_type)
    sm = SiteMap(model)
    kinds = tuple(k for k in ("resid", "mlp", "mixer", "head") if k in sm.kinds)
    clean = random_ids(7, seed=4)
    corrupted = [*clean[:2], 9, *clean[3:]]
    est = attribution_patching(model, clean, corrupted, 5, 6, method="relp", kinds=kinds)
    # finite in the rows of blocks that have the kind, NaN in the others (hybrids: not every block has every part)
    finite = all(
        bool(np.isfinite(v[i]).all()) == sm.has(i, kind) and (sm.has(i, kind) or bool(np.isnan(v[i]).all()))
        for (kind, _), v in est.values.items()
        for i in range(sm.n_layers)
    )
    moved = np.abs(est.values[("resid", "logit_diff")] - est.reference.corrupted_logit_diff).max() > 1e-4
    return bool(finite and moved)


# ---------------------------------------------------------------------- the table
def row(model_type: str, engines: tuple[str, ...], relp: bool) -> str:
    spec = arch_for_model_type(model_type)
    rules = ", ".join(spec.rules + spec.extra_methods)
    patching = ", ".join(engines) if engines else "—"
    return f"| `{model_type}` | {spec.family} | {rules} | {patching} | {'yes' if relp else '—'} |"


def patchable(model_type: str) -> bool:
    """Whether the family offers patching sites (its blocks name attention or a mixer)."""
    blocks = arch_for_model_type(model_type).blocks
    return blocks is not None and bool(blocks.attention or blocks.mixer)


def offers_relp(model_type: str) -> bool:
    return patchable(model_type) and "relp" in arch_for_model_type(model_type).patching_rules


def claimed_row(model_type: str) -> str:
    """The row the registry claims for a causal-LM type (what the suite proves): sweep engines and RelP."""
    spec = arch_for_model_type(model_type)
    engines: tuple[str, ...] = ()
    if patchable(model_type):
        engines = ("batched", "stepper") if spec.blocks.steps_from_keys_values else ("batched",)
    return row(model_type, engines, offers_relp(model_type))


def table(rows: list[str]) -> str:
    kinds: dict[str, list[str]] = {}
    for t in supported_model_types():
        spec = arch_for_model_type(t)
        # a type built both ways (BART: decoder alone and encoder-decoder) is listed under both kinds
        for kind in {spec.kind, getattr(spec.encoder_decoder, "kind", spec.kind)} - {"causal-lm"}:
            kinds.setdefault(kind, []).append(f"`{t}`")
    lines = [
        f"{len(rows)} causal-LM model types of transformers pass the conformance suite "
        "(`tests/unit/test_arch_descriptions.py`, `tests/unit/test_conformance.py`): the forward is unchanged "
        "under every rule set and the model restored, the conservative rule set sums to the logit on a "
        "bias-free float64 copy, the patching sweep engines listed agree with the naive one, RelP runs.",
        "",
        "| model type | family | rule sets | patching sweeps | RelP |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "Other kinds: " + "; ".join(f"{kind}: {', '.join(ts)}" for kind, ts in sorted(kinds.items())) + ".",
    ]
    return "\n".join(lines)


def claimed_table() -> str:
    return table([claimed_row(t) for t in causal_types()])


def measured_table() -> str:
    """Run every check on every causal-LM type (raises on the first failure) and build the table from the results."""
    rows = []
    for t in causal_types():
        ratios = conservation_ratios(t)
        if any(abs(r - 1.0) >= 1e-4 for r in ratios):
            raise AssertionError(f"{t}: the conservative rule set sums to {ratios} of the logit")
        engines = sweep_engines(t) if patchable(t) else ()
        relp = relp_runs(t) if offers_relp(t) else False
        rows.append(row(t, engines, relp))
        print(rows[-1], file=sys.stderr, flush=True)
    return table(rows)


def replace_between_markers(text: str, body: str) -> str:
    pattern = re.compile(re.escape(MARK_START) + ".*?" + re.escape(MARK_END), re.S)
    if not pattern.search(text):
        raise ValueError("the supported-types markers are missing")
    return pattern.sub(lambda _: f"{MARK_START}\n{body}\n{MARK_END}", text)


def main() -> None:
    body = measured_table()
    for path in (ROOT / "README.md", ROOT / "docs" / "supported.md"):
        path.write_text(replace_between_markers(path.read_text(), body))
    print(f"wrote the table of {len(causal_types())} causal-LM types to README.md and docs/supported.md")


if __name__ == "__main__":
    main()
