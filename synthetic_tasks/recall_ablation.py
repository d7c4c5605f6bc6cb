"""Ground truth for component relevance: ablate the components a ranking puts first and measure recall.

On the recall models (``models/synthetic/recall-{llama,mamba}``, task :mod:`synthetic_tasks.recall`),
the answer is known (the value after the query key), so a ranking of the model's components is
good when zero-ablating its first ``k`` components breaks recall. Rankings per held-out sequence:

- ``relevance``: the components' relevance for the answer logit (``components=True`` of the family's
  LRP method: AttnLRP for Llama, MambaLRP for Mamba), highest (most positive) first;
- ``activation``: the activation magnitude summed over positions (a neuron or channel: ``|a|``;
  a head: the L2 norm of its ``head_dim`` slice at ``o_proj``'s input), largest first;
- ``random``: a uniformly random order (seeded).

Components: ``neuron`` (MLP neurons, Llama), ``head`` (attention heads, Llama), ``channel`` (mixer
channels at ``out_proj``'s input, Mamba). Ablation: :func:`patching.ablation.ablated_logits`
(zero at every position, one batched forward pass per ranking and ``k``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from . import recall

LRP = {"llama": "attnlrp", "mamba": "mambalrp", "mamba2": "mambalrp"}
RANKINGS = ("relevance", "activation", "random")
_PART = {"neuron": "mlp.neuron", "head": "attn.head", "channel": "mixer.channel"}


@dataclass
class Curves:
    """Per ranking and ``k``: recall accuracy and mean p(value) with the top ``k`` ablated."""

    kind: str
    ks: tuple[int, ...]
    n: int
    accuracy_before: float
    probability_before: float
    accuracy: dict[str, list[float]]
    probability: dict[str, list[float]]

    def mean_accuracy_drop(self, ranking: str) -> float:
        """The accuracy lost, averaged over the ``k`` values."""
        return float(np.mean([self.accuracy_before - a for a in self.accuracy[ranking]]))


def component_names(n_layers: int, width: int, kind: str) -> np.ndarray:
    """(n_layers * width,) site names, layer-major (the order of the flattened score arrays)."""
    return np.array([f"layer.{i}.{_PART[kind]}.{j}" for i in range(n_layers) for j in range(width)])


def relevance_scores(model, data: recall.Batch, kind: str, method: str) -> np.ndarray:
    """(n, n_layers, width): each component's relevance for the answer of each sequence."""
    from lrp_llm.engines import causal_lm
    from lrp_llm.mechanism.components import ComponentSpec

    spec = ComponentSpec(full=True)
    out = []
    for row, answer in zip(data.ids, data.answer):
        ids = [*row.tolist(), int(answer)]
        c = causal_lm.relevance(model, ids, [len(ids) - 1], method=method, components=spec)["components"][0]
        out.append(np.asarray({"neuron": c.neurons, "head": c.heads, "channel": c.channels}[kind], dtype=np.float64))
    return np.stack(out)


def activation_scores(model, data: recall.Batch, kind: str) -> np.ndarray:
    """(n, n_layers, width): activation magnitude summed over positions (heads: the L2 norm of their slice)."""
    from patching.interventions import run_with_cache

    _, cache = run_with_cache(model, torch.from_numpy(data.ids), [kind])
    by_layer: dict[int, list[np.ndarray]] = {}
    for name, t in cache.items():
        layer = int(name.split(".")[1])
        mag = t.double().norm(dim=-1) if kind == "head" else t.double().abs()  # (n, seq)
        by_layer.setdefault(layer, []).append(mag.sum(1).numpy())
    return np.stack([np.stack(by_layer[i], axis=1) for i in sorted(by_layer)], axis=1)


def ablation_curves(
    model,
    data: recall.Batch,
    kind: str,
    *,
    method: str,
    ks: Sequence[int] = (1, 2, 4, 8),
    random_draws: int = 1,
    seed: int = 0,
) -> Curves:
    """Recall accuracy and mean p(value) after zero-ablating the top ``k`` components of each ranking."""
    from patching.ablation import ablated_logits

    ids = torch.from_numpy(data.ids)
    answer = torch.from_numpy(data.answer).long()
    rows = torch.arange(len(answer))

    def measure(logits: torch.Tensor) -> tuple[float, float]:
        last = logits[:, -1].double()
        p = torch.softmax(last, -1)[rows, answer]
        return float((last.argmax(-1) == answer).double().mean()), float(p.mean())

    with torch.no_grad():
        before = measure(model(input_ids=ids, use_cache=False, logits_to_keep=1).logits)
    rel = relevance_scores(model, data, kind, method)
    n, n_layers, width = rel.shape
    names = component_names(n_layers, width, kind)
    orders = {
        "relevance": np.argsort(-rel.reshape(n, -1), axis=1, kind="stable"),
        "activation": np.argsort(-activation_scores(model, data, kind).reshape(n, -1), axis=1, kind="stable"),
    }
    rng = np.random.default_rng(seed)
    randoms = [np.argsort(rng.random((n, n_layers * width)), axis=1) for _ in range(random_draws)]
    accuracy: dict[str, list[float]] = {r: [] for r in RANKINGS}
    probability: dict[str, list[float]] = {r: [] for r in RANKINGS}
    for k in ks:
        for ranking in RANKINGS:
            draws = randoms if ranking == "random" else [orders[ranking]]
            got = [measure(ablated_logits(model, ids, [list(names[o[:k]]) for o in order])) for order in draws]
            accuracy[ranking].append(float(np.mean([a for a, _ in got])))
            probability[ranking].append(float(np.mean([p for _, p in got])))
    return Curves(kind, tuple(int(k) for k in ks), n, before[0], before[1], accuracy, probability)


__all__ = ["LRP", "RANKINGS", "Curves", "ablation_curves", "activation_scores", "component_names", "relevance_scores"]
