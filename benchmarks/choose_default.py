"""Choose the default explanation method by measurement on one half of the items, report it on the other.

    .venv/bin/python -m benchmarks.choose_default [--json benchmarks/results/faithfulness.json]

Reads the per-item scores that ``python -m benchmarks.faithfulness --json PATH`` wrote (one file per
data set: ``PATH.qa.json``, ``PATH.next_token.json``, ``PATH.long.json``) and splits every data set in
two by the items' order in its file: even places (0, 2, 4, ...) are the *selection* half, odd places
the *report* half. The rule, fixed before the numbers were seen, is applied to the selection half:

1. candidates: the LRP rule sets the family offers (AttnLRP, CP-LRP and the AttnLRP variants);
2. eligible: on every data set, the candidate's ABPC plus its 95 % confidence half-width reaches the
   ABPC of every other method evaluated (LRP or not: saliency, integrated gradients, ...);
3. among the eligible, the highest QA evidence top-1 rate (the pointing game); within 0.01 of it,
   the highest ABPC summed over the data sets;
4. if none is eligible, the candidate whose largest shortfall (another method's ABPC minus its
   ABPC + half-width) is smallest.

The chosen method's numbers are then reported on the report half, with the issue's goals checked
there: evidence top-1 >= 0.95 on QA, ABPC within its confidence interval of every other method's
on QA and next-token items. Writes benchmarks/results/default_choice.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from benchmarks.common import RESULTS, write_table

SETS = ("qa", "next_token", "long")


def split(ev, half: int):
    """The results of the items at even (``half`` 0) or odd (1) places of the data file, as an Evaluation."""
    order: list[str] = []
    for r in ev.results:
        if r.item_id not in order:
            order.append(r.item_id)
    keep = set(order[half::2])
    return dataclasses.replace(ev, results=[r for r in ev.results if r.item_id in keep])


def summaries(evaluations: dict, half: int) -> dict[str, dict[str, object]]:
    """data set -> method -> MethodSummary on one half."""
    return {name: {s.method: s for s in split(ev, half).summary()} for name, ev in evaluations.items()}


def shortfall(m: str, by_set: dict[str, dict[str, object]]) -> float:
    """The largest amount by which another method's ABPC exceeds ``m``'s ABPC + half-width (<= 0: eligible)."""
    worst = float("-inf")
    for table in by_set.values():
        own = table[m]
        reach = own.abpc + (own.abpc_ci if own.abpc_ci == own.abpc_ci else 0.0)
        worst = max(worst, *(s.abpc - reach for k, s in table.items() if k != m))
    return worst


def choose(by_set: dict[str, dict[str, object]], candidates: list[str]) -> tuple[str, str]:
    """The chosen method and the reason, by the rule of the module docstring."""
    eligible = [m for m in candidates if shortfall(m, by_set) <= 0]
    if eligible:
        qa = by_set.get("qa", {})
        top1 = {m: (qa[m].top1 if m in qa and qa[m].top1 is not None else 0.0) for m in eligible}
        best = max(top1.values())
        near = [m for m in eligible if top1[m] >= best - 0.01]
        total = {m: sum(t[m].abpc for t in by_set.values()) for m in near}
        pick = max(near, key=lambda m: (total[m], -candidates.index(m)))
        why = (
            f"eligible (ABPC + CI reaches every other method's on every set): {', '.join(eligible)}; "
            f"highest QA evidence top-1 {best:.2f}: {', '.join(near)}; highest summed ABPC: {pick} ({total[pick]:.2f})"
        )
        return pick, why
    pick = min(candidates, key=lambda m: shortfall(m, by_set))
    return pick, f"no candidate eligible; smallest shortfall {shortfall(pick, by_set):.2f}: {pick}"


def paired_difference(ev, half: int, a: str, b: str) -> tuple[float, float, int]:
    """Mean and 95 % CI half-width of ABPC(a) - ABPC(b) over the items of one half, item by item (both methods
    scored on the same items, so the items' own spread cancels), and the number of items."""
    from lrp_llm.analyses.evaluate import mean_ci

    by: dict[str, dict[str, float]] = {a: {}, b: {}}
    for r in split(ev, half).results:
        if r.method in by:
            by[r.method][r.item_id] = r.curves.abpc
    items = [i for i in by[a] if i in by[b]]
    mean, ci = mean_ci([by[a][i] - by[b][i] for i in items])
    return mean, ci, len(items)


def ranking(by_set: dict[str, dict[str, object]], candidates: list[str]) -> list[str]:
    """The candidates in the order the rule picks them: the choice, then the choice among the rest, ...
    (a family that does not offer the first takes the first it offers)."""
    left, order = list(candidates), []
    while left:
        pick, _ = choose(by_set, left)
        order.append(pick)
        left.remove(pick)
    return order


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description="choose the default method on one half of the items, report the other")
    ap.add_argument(
        "--json", type=Path, default=RESULTS / "faithfulness.json", help="the --json PATH of the faithfulness run"
    )
    ap.add_argument("--out", type=Path, help="folder for default_choice.md (default benchmarks/results)")
    args = ap.parse_args(argv)

    from lrp_llm.analyses.evaluate import Evaluation
    from lrp_llm.methods import get_method

    evaluations = {}
    for name in SETS:
        path = args.json.with_suffix(f".{name}.json")
        if path.exists():
            evaluations[name] = Evaluation.load(path)
    if "qa" not in evaluations:
        raise SystemExit(
            f"no {args.json.with_suffix('.qa.json')}: run python -m benchmarks.faithfulness --json {args.json}"
        )
    methods = list(evaluations["qa"].methods)
    candidates = [m for m in methods if get_method(m.split(":")[0]).rules is not None]
    select, report = summaries(evaluations, 0), summaries(evaluations, 1)
    pick, why = choose(select, candidates)

    header = ["method", "half"]
    for name in evaluations:
        header += [f"{name} ABPC ± CI", f"{name} top-1"]
    header += ["shortfall"]
    rows = []
    for m in methods:
        for label, by_set in (("selection", select), ("report", report)):
            row = [f"**{m}**" if m == pick else m, label]
            for name in evaluations:
                s = by_set[name][m]
                row += [f"{s.abpc:.2f} ± {s.abpc_ci:.2f}", "–" if s.top1 is None else f"{s.top1:.2f}"]
            row.append(f"{shortfall(m, by_set):.2f}")
            rows.append(row)
    qa = report["qa"][pick]
    goals = [
        f"QA evidence top-1 >= 0.95: {qa.top1:.2f} ({'met' if qa.top1 is not None and qa.top1 >= 0.95 else 'NOT met'})",
    ]
    for name in SETS:
        if name in report:
            s = report[name][pick]
            reach = s.abpc + s.abpc_ci
            beaten = [k for k, o in report[name].items() if k != pick and o.abpc > reach]
            goals.append(
                f"{name}: ABPC {s.abpc:.2f} ± {s.abpc_ci:.2f} reaches every other method's: "
                + ("met" if not beaten else f"NOT met ({', '.join(beaten)} above)")
            )
    # the same comparison item by item: the chosen method minus the best other method on each set
    paired = []
    for name, table in report.items():
        best = max((k for k in table if k != pick), key=lambda k: table[k].abpc)
        mean, ci, n = paired_difference(evaluations[name], 1, pick, best)
        verdict = "below" if mean + ci < 0 else ("above" if mean - ci > 0 else "not distinguishable")
        paired.append(f"{name}: {pick} - {best} = {mean:+.2f} ± {ci:.2f} (n = {n}, {verdict})")
    below_random = []
    for name, table in report.items():
        if "random" in table:
            below_random += [
                f"{m} on {name}" for m in candidates if m in table and table[m].abpc < table["random"].abpc
            ]
    sizes = ", ".join(
        f"{name}: {len({r.item_id for r in split(ev, 0).results})} + {len({r.item_id for r in split(ev, 1).results})}"
        for name, ev in evaluations.items()
    )
    notes = [
        f"Measured {time.strftime('%Y-%m-%d')} from `{args.json.name}` per-item scores (items in the selection + report halves: {sizes}).",
        "Rule (module docstring of `benchmarks/choose_default.py`, fixed before the numbers): among the LRP rule sets, "
        "those whose ABPC + 95 % CI half-width reaches every other method's ABPC on every data set; of those the "
        "highest QA evidence top-1; then the highest summed ABPC. Applied to the selection half only.",
        f"**Chosen: `{pick}`.** {why}.",
        "Ranking by the same rule (a family that does not offer the first takes the first it offers; "
        "`lrp_llm.archs.CAUSAL_LM_PREFERENCE`): " + " > ".join(f"`{m}`" for m in ranking(select, candidates)) + ".",
        "On the report half: " + "; ".join(goals) + ".",
        "Paired per item on the report half (ABPC difference to the best other method, mean ± 95 % CI): "
        + "; ".join(paired)
        + ".",
        "LRP rule sets below random on the report half: " + (", ".join(below_random) if below_random else "none") + ".",
        "shortfall = the largest amount by which another method's ABPC exceeds this one's ABPC + half-width (<= 0: "
        "within its interval of every other method on every set).",
    ]
    return write_table(
        "default_choice",
        "The default method, chosen on half of the items and reported on the other",
        header,
        rows,
        notes,
        out_dir=args.out,
    )


if __name__ == "__main__":
    main()
