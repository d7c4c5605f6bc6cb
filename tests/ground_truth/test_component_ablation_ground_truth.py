"""Ground truth for component relevance: ablating the most relevant components breaks recall.

The recall models (``models/synthetic/recall-{llama,mamba}``) answer with the value that followed
the query key; zero-ablating the ``k`` components (Llama: MLP neurons; Mamba: mixer channels;
128 of each) that the family's LRP method ranks highest for the answer must drop recall
accuracy clearly more than ablating ``k`` random ones or the ``k`` with the largest activation.
Measured (n = 32, distance 128, seed 31337; ``benchmarks/component_ablation.py`` reports more):
mean accuracy drop over k = 1, 2, 4, 8 -- Llama neurons: relevance 0.27, activation 0.12,
random 0.02; Mamba channels: relevance 0.63, activation 0.44, random 0.00. The margins below
(0.08 over activation, 0.2 over random) are about half the smallest measured gaps (0.15, 0.25);
everything is deterministic on the CPU in float32 (no sampling but the seeded random ranking),
and a one-item change moves a mean accuracy by 1/32 ~ 0.03 at one k, 0.008 averaged over the four.
"""

import pytest

from lrp_llm.checkpoints.loading import load_model
from synthetic_tasks import recall
from synthetic_tasks.recall_ablation import LRP, ablation_curves
from tests.support import REPO_ROOT

MODELS = REPO_ROOT / "models" / "synthetic"
N, DISTANCE = 32, 128
OVER_ACTIVATION, OVER_RANDOM = 0.08, 0.2


@pytest.mark.parametrize(("arch", "kind"), [("llama", "neuron"), ("mamba", "channel")])
def test_ablating_the_most_relevant_components_breaks_recall(arch, kind):
    model, _ = load_model(MODELS / f"recall-{arch}")
    data = recall.held_out(N, DISTANCE, seed=31337)
    curves = ablation_curves(model, data, kind, method=LRP[arch], ks=(1, 2, 4, 8))
    assert curves.accuracy_before == 1.0  # the model recalls every held-out value before the ablation
    rel, act, rnd = (curves.mean_accuracy_drop(r) for r in ("relevance", "activation", "random"))
    assert rel >= act + OVER_ACTIVATION, f"{arch}: relevance {rel:.3f} vs activation {act:.3f}"
    assert rel >= rnd + OVER_RANDOM, f"{arch}: relevance {rel:.3f} vs random {rnd:.3f}"
    # at k = 8 the value's probability falls further under the relevance ranking than under either other
    assert curves.probability["relevance"][-1] < min(
        curves.probability["activation"][-1], curves.probability["random"][-1]
    )
