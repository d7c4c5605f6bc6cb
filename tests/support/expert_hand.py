"""For the component tests of every MoE family: the relevance of each expert and shared expert written by hand,
and the check that an error inside the taps leaves the model as it was."""

from __future__ import annotations

import torch

from lrp_llm.archs.sites import SiteMap
from lrp_llm.mechanism.context import lrp_rules


def hand_expert_relevance(model, ids, p, rules):
    """Per MoE layer: {expert: sum over its tokens of w * E(x) . g} with E from transformers' own eager expert loop
    (one expert, weight 1), w and the routing from the experts module's arguments, g the gradient at its output;
    and the shared expert's contribution (sigmoid(gate) * shared, or shared) . g at the MoE block's output."""
    sm = SiteMap(model)
    found = {}

    def keep(i, name):
        def hook(module, args, kwargs, output):
            out = output[0] if isinstance(output, tuple) else output
            out.retain_grad()
            found[i, name] = (args, kwargs, out)

        return hook

    handles = []
    for i in sm.layers_with("expert"):
        handles.append(sm.module(i, "expert").register_forward_hook(keep(i, "experts"), with_kwargs=True))
        handles.append(sm.module(i, "mlp").register_forward_hook(keep(i, "mlp"), with_kwargs=True))
        if sm.has(i, "shared_expert"):
            handles.append(sm.module(i, "shared_expert").register_forward_hook(keep(i, "shared"), with_kwargs=True))
            if sm.shared_gate(i) is not None:
                handles.append(sm.shared_gate(i).register_forward_hook(keep(i, "gate"), with_kwargs=True))
    try:
        with lrp_rules(model, rules):
            e = model.get_input_embeddings()(torch.tensor([ids])).detach().requires_grad_(True)
            logit = model(inputs_embeds=e, use_cache=False).logits[0, p - 1, ids[p]]
            logit.backward()
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
    out = {}
    for i in sm.layers_with("expert"):
        experts = sm.module(i, "expert")
        own = type(experts).forward.__wrapped__  # transformers' eager loop, not the library's forward
        (x, index, weights), _, y = found[i, "experts"]
        per = {}
        with torch.no_grad():
            for t in range(x.shape[0]):
                for k in range(index.shape[1]):
                    ex = int(index[t, k])
                    one = own(experts, x[t : t + 1], torch.tensor([[ex]]), torch.ones(1, 1, dtype=x.dtype))
                    per[ex] = per.get(ex, 0.0) + float(weights[t, k] * (one[0] @ y.grad[t]))
        shared = None
        if (i, "shared") in found:
            mlp_grad = found[i, "mlp"][2].grad.reshape(-1, x.shape[-1])
            s_out = found[i, "shared"][2].detach().reshape(-1, x.shape[-1])
            if (i, "gate") in found:
                s_out = torch.sigmoid(found[i, "gate"][2].detach().reshape(-1, 1)) * s_out
            shared = float((s_out * mlp_grad).sum())
        out[i] = (per, shared)
    return out


def check_restored_after_an_error(model) -> None:
    """An error inside the component taps leaves ``model`` as it was: its state, no expert observers, and the
    experts modules' own forwards back (the taps install the plain routed forward while they are in place)."""
    import pytest

    from lrp_llm.archs import experts as experts_lib
    from lrp_llm.archs.experts import experts_modules
    from lrp_llm.mechanism.components import ComponentRecorder, ComponentSpec
    from tests.support.models import model_state

    before = model_state(model)
    recorder = ComponentRecorder(ComponentSpec(), 1, 8, torch.float64)
    with pytest.raises(RuntimeError, match="inside"):
        with recorder.installed(model):
            assert all("forward" in m.__dict__ for m in experts_modules(model))  # the plain routed forward
            raise RuntimeError("inside")
    assert model_state(model) == before and len(experts_lib._OBSERVERS) == 0
    assert all("forward" not in m.__dict__ for m in experts_modules(model))
