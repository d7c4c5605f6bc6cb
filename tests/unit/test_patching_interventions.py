"""Interventions on tiny random Llama-family models: each changes what it should, nothing
else, and leaves the model as it was (also on error)."""

import subprocess
import sys

import pytest
import torch

from lrp_llm.errors import InputError
from patching import (
    add,
    cut_edges,
    intervene,
    mean_ablate,
    replace,
    run_with_cache,
    scale,
    scale_edges,
    set_to,
    zero,
)
from patching.edges import ATTENTION_NAME, edit_edges
from patching.sites import Site, site_map
from tests.support.models import random_ids, tiny_causal_lm

T = 9


@pytest.fixture(scope="module")
def llama():
    return tiny_causal_lm("llama", layers=3, dtype=torch.float64)


@pytest.fixture(scope="module")
def ids():
    return torch.tensor([random_ids(T, seed=3)])


def _hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_site_names_parse_and_check(llama):
    sm = site_map(llama)
    assert Site.parse("layer.2.attn.head.3") == Site(2, "head", 3)
    assert Site.parse("layer.0.mlp.neuron.7").name == "layer.0.mlp.neuron.7"
    assert [s.name for s in sm.expand("layer.*.mlp")] == ["layer.0.mlp", "layer.1.mlp", "layer.2.mlp"]
    assert len(sm.expand("head")) == 3 * 4
    for bad in ("layer.9.resid", "layer.0.attn.head.4", "layer.0.mlp.neuron.48", "layer.0.mixer", "layers.0.resid"):
        with pytest.raises(InputError):
            sm.check(bad)


def test_run_with_cache_matches_plain_forward_and_shapes(llama, ids):
    plain = llama(ids).logits
    out, cache = run_with_cache(llama, ids, ["resid", "attn", "mlp", "layer.1.attn.head.2", "layer.1.mlp.neuron.5"])
    assert torch.equal(out.logits, plain)
    assert cache["layer.0.resid"].shape == (1, T, 32)
    assert cache["layer.1.attn.head.2"].shape == (1, T, 8)
    assert cache["layer.1.mlp.neuron.5"].shape == (1, T)
    # resid = resid before + attn + mlp (Llama block), checked from the cache alone
    torch.testing.assert_close(
        cache["layer.2.resid"], cache["layer.1.resid"] + cache["layer.2.attn"] + cache["layer.2.mlp"]
    )
    # o_proj of the heads' slice: the head sites are the input of o_proj
    o_proj = llama.model.layers[1].self_attn.o_proj
    heads = torch.cat(
        [run_with_cache(llama, ids, [f"layer.1.attn.head.{h}"])[1][f"layer.1.attn.head.{h}"] for h in range(4)], -1
    )
    torch.testing.assert_close(o_proj(heads), cache["layer.1.attn"])


def test_replace_changes_the_patched_position_and_only_causally_later_ones(llama, ids):
    other = ids.clone()
    other[0, 2] = 5
    _, src = run_with_cache(llama, other, "resid")
    _, base = run_with_cache(llama, ids, "resid")
    out, got = run_with_cache(llama, ids, "resid", interventions=[replace("layer.0.resid", src, positions=[4])])
    assert torch.equal(got["layer.0.resid"][0, 4], src["layer.0.resid"][0, 4])
    for i in range(3):  # earlier positions never change (causal), later ones do
        assert torch.equal(got[f"layer.{i}.resid"][0, :4], base[f"layer.{i}.resid"][0, :4])
    assert not torch.allclose(got["layer.2.resid"][0, 4:], base["layer.2.resid"][0, 4:])
    assert not torch.allclose(out.logits[0, -1], llama(ids).logits[0, -1])


def test_replace_with_own_values_is_identity(llama, ids):
    plain = llama(ids).logits
    _, cache = run_with_cache(llama, ids, ["mlp", "head", "layer.0.mlp.neuron.3"])
    edits = [
        replace("layer.1.mlp", cache),
        replace("layer.2.attn.head.1", cache),
        replace("layer.0.mlp.neuron.3", cache),
    ]
    with intervene(llama, *edits):
        torch.testing.assert_close(llama(ids).logits, plain, atol=1e-12, rtol=0)


def test_all_heads_replaced_equals_attention_output_replaced(llama, ids):
    other = torch.tensor([random_ids(T, seed=11)])
    _, src = run_with_cache(llama, other, ["head", "attn"])
    with intervene(llama, *[replace(f"layer.1.attn.head.{h}", src) for h in range(4)]):
        by_heads = llama(ids).logits
    with intervene(llama, replace("layer.1.attn", src)):
        by_attn = llama(ids).logits
    torch.testing.assert_close(by_heads, by_attn)


def test_set_add_scale_zero_mean_by_hand(llama, ids):
    _, base = run_with_cache(llama, ids, ["layer.1.mlp", "layer.1.attn.head.2", "layer.0.mlp.neuron.5"])
    v = torch.linspace(-1, 1, 32, dtype=torch.float64)
    cases = [
        (set_to("layer.1.mlp", v, positions=[2, 3]), "layer.1.mlp", lambda x: _put(x, [2, 3], v)),
        (add("layer.1.mlp", v, positions=[-1]), "layer.1.mlp", lambda x: _put(x, [T - 1], x[0, T - 1] + v)),
        (scale("layer.1.attn.head.2", 3.0), "layer.1.attn.head.2", lambda x: 3.0 * x),
        (zero("layer.1.attn.head.2", positions=[0]), "layer.1.attn.head.2", lambda x: _put(x, [0], 0.0)),
        (mean_ablate("layer.1.mlp"), "layer.1.mlp", lambda x: x.mean(1, keepdim=True).expand_as(x)),
        (mean_ablate("layer.1.mlp", v, positions=[1]), "layer.1.mlp", lambda x: _put(x, [1], v)),
        (zero("layer.0.mlp.neuron.5"), "layer.0.mlp.neuron.5", lambda x: torch.zeros_like(x)),
        (
            scale("layer.0.mlp.neuron.5", -2.0, positions=[3]),
            "layer.0.mlp.neuron.5",
            lambda x: _put(x, [3], -2 * x[0, 3]),
        ),
    ]
    for edit, site, expect in cases:
        _, got = run_with_cache(llama, ids, [site], interventions=[edit])
        torch.testing.assert_close(got[site], expect(base[site]), msg=f"{edit.op} at {site}")


def _put(x, positions, value):
    y = x.clone()
    y[0, positions] = value if not isinstance(value, torch.Tensor) else value.to(y.dtype)
    return y


def test_neuron_ablation_moves_mlp_output_by_its_down_projection_column(llama, ids):
    _, base = run_with_cache(llama, ids, ["layer.2.mlp", "layer.2.mlp.neuron.7"])
    _, got = run_with_cache(llama, ids, ["layer.2.mlp"], interventions=[zero("layer.2.mlp.neuron.7")])
    w = llama.model.layers[2].mlp.down_proj.weight[:, 7]
    expected = base["layer.2.mlp"] - base["layer.2.mlp.neuron.7"][..., None] * w
    torch.testing.assert_close(got["layer.2.mlp"], expected)


def test_batch_rows_and_negative_positions(llama):
    ids = torch.tensor([random_ids(T, seed=1), random_ids(T, seed=2)])
    _, base = run_with_cache(llama, ids, ["layer.0.resid"])
    _, got = run_with_cache(
        llama, ids, ["layer.0.resid"], interventions=[zero("layer.0.resid", positions=[-1], batch=[1])]
    )
    assert torch.equal(got["layer.0.resid"][0], base["layer.0.resid"][0])
    assert torch.equal(got["layer.0.resid"][1, :-1], base["layer.0.resid"][1, :-1])
    assert torch.count_nonzero(got["layer.0.resid"][1, -1]) == 0
    with pytest.raises(InputError):
        run_with_cache(llama, ids, ["layer.0.resid"], interventions=[zero("layer.0.resid", positions=[T])])


def test_restored_after_block_and_on_exception_second_model_untouched(llama, ids):
    other = tiny_causal_lm("llama", layers=3, seed=5, dtype=torch.float64)
    other_before = other(ids).logits
    plain = llama(ids).logits
    hooks = _hooks(llama)
    config = llama.model.layers[1].self_attn.config
    with pytest.raises(RuntimeError, match="boom"):
        with intervene(llama, zero("layer.1.mlp"), *cut_edges(1, queries=[-1], keys=[0], renormalize=True)):
            assert _hooks(llama) > hooks
            assert llama.model.layers[1].self_attn.config is not config
            torch.testing.assert_close(other(ids).logits, other_before)  # the other model is untouched
            raise RuntimeError("boom")
    assert _hooks(llama) == hooks
    assert llama.model.layers[1].self_attn.config is config is llama.config
    from transformers.modeling_utils import AttentionInterface

    assert ATTENTION_NAME not in AttentionInterface._global_mapping
    torch.testing.assert_close(llama(ids).logits, plain, atol=0, rtol=0)


# ------------------------------------------------------------------ attention edges
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_edge_cut_changes_only_the_query_position(attn, ids):
    model = tiny_causal_lm("llama", layers=2, attn=attn)
    with torch.no_grad():
        plain = model(ids).logits
        with intervene(model, *scale_edges(0, 1.0, queries=[5], keys=[2, 3], renormalize=False)):
            explicit = model(ids).logits
        with intervene(model, *cut_edges(0, heads=[1], queries=[5], keys=[2, 3], renormalize=True)):
            cut = model(ids).logits
    torch.testing.assert_close(explicit, plain, atol=2e-5, rtol=0)  # the explicit path == the kernel
    diff = (cut - explicit).abs().amax(-1)[0]
    assert float(diff[:5].max()) == 0.0  # positions before the query: untouched
    assert float(diff[5]) > 1e-3  # the query position changes


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_edge_edits_by_hand_one_hot_and_zero(attn, ids):
    """Cut all keys but one with renormalisation: the head's output is that key's value;
    cut every key without renormalisation: the head's output is zero."""
    model = tiny_causal_lm("llama", layers=2, attn=attn, dtype=torch.float64)
    attn_mod = model.model.layers[1].self_attn
    values = {}
    handle = attn_mod.v_proj.register_forward_hook(lambda _m, _a, out: values.__setitem__("v", out.detach()))
    try:
        keep, q, h = 3, 7, 2
        keys = [k for k in range(T) if k != keep]
        _, got = run_with_cache(
            model,
            ids,
            ["layer.1.attn.head.2"],
            interventions=cut_edges(1, heads=[h], queries=[q], keys=keys, renormalize=True),
        )
    finally:
        handle.remove()
    kv_head = h // attn_mod.num_key_value_groups
    v = values["v"][0, keep].view(-1, 8)[kv_head]
    torch.testing.assert_close(got["layer.1.attn.head.2"][0, q], v)
    _, got = run_with_cache(
        model, ids, ["layer.1.attn.head.2"], interventions=cut_edges(1, heads=[h], queries=[q], renormalize=False)
    )
    assert torch.count_nonzero(got["layer.1.attn.head.2"][0, q]) == 0


def test_edge_edits_same_on_sdpa_and_eager(ids):
    edits = edit_edges([], 0.0, renormalize=True) + cut_edges([0, 1], queries=[-1], keys=[1, 2], renormalize=True)
    out = {}
    for attn in ("sdpa", "eager"):
        model = tiny_causal_lm("llama", layers=2, attn=attn)
        with intervene(model, *edits):
            out[attn] = model(ids).logits
        assert model.config._attn_implementation == attn
    torch.testing.assert_close(out["sdpa"], out["eager"], atol=2e-5, rtol=0)


def test_edge_edits_follow_generation_with_a_kv_cache(ids):
    model = tiny_causal_lm("llama", layers=2)
    # absolute positions: the edit waits for position T-1 to be generated
    edits = cut_edges([0, 1], queries=[T - 1], keys=[0, 1, 2], renormalize=True)
    with torch.no_grad(), intervene(model, *edits):
        full = model(ids).logits[0, -1]
        past = model(ids[:, :-1], use_cache=True).past_key_values
        step = model(ids[:, -1:], past_key_values=past, use_cache=True).logits[0, -1]
    torch.testing.assert_close(step, full, atol=2e-5, rtol=0)
    assert not torch.allclose(full, model(ids).logits[0, -1].detach(), atol=1e-3)


def test_patching_never_imports_textual():
    # every module of the package, so that a new one is covered without editing this test
    code = (
        "import importlib, pkgutil, sys, patching\n"
        "names = [m.name for m in pkgutil.iter_modules(patching.__path__, 'patching.')]\n"
        "assert len(names) >= 10, names\n"
        "for name in names: importlib.import_module(name)\n"
        "assert 'textual' not in sys.modules, 'textual imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
