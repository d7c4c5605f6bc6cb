"""Patching where blocks differ from layer to layer (LFM2, Bamba, Nemotron-H, Granite-4 hybrid):
sites exist only where a block has the part, every engine agrees with the naive one, RelP fills
exactly the rows that have sites, and naming a site a block lacks is a one-line error. Also the
layer stepper on Llama-4 (NoPE layers that read the cache's length)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lrp_llm.archs.description import BlockPaths, by_layer_type
from lrp_llm.errors import InputError, UnsupportedModelError
from patching import attribution_patching, sweep
from patching.edges import cut_edges
from patching.interventions import intervene, replace, run_with_cache
from patching.sites import SiteMap
from patching.stepper import StepperUnsupported
from patching.sweeps import sweep_kinds
from tests.support.conformance import tiny_for
from tests.support.models import random_ids

CLEAN = random_ids(7, seed=4)
CORRUPTED = [*CLEAN[:2], 9, *CLEAN[3:]]


@pytest.fixture(scope="module")
def lfm2():
    torch.manual_seed(0)
    return tiny_for("lfm2", dtype=torch.float64)[0]  # layer_types: conv, full_attention


@pytest.fixture(scope="module")
def nemotron():
    torch.manual_seed(0)
    return tiny_for("nemotron_h", dtype=torch.float64)[0]  # linear_attention, full_attention, mlp


def test_sites_exist_only_where_the_block_has_the_part(lfm2, nemotron):
    sm = SiteMap(lfm2)
    assert sm.kinds == ("resid", "attn", "mlp", "mixer", "head", "neuron")
    assert sm.layers_with("mixer") == [0] and sm.layers_with("attn") == sm.layers_with("head") == [1]
    assert sm.layers_with("mlp") == sm.layers_with("neuron") == [0, 1] == sm.layers_with("resid")
    assert [s.name for s in sm.expand(["attn", "mixer"])] == ["layer.1.attn", "layer.0.mixer"]
    assert [s.name for s in sm.expand("head")] == [f"layer.1.attn.head.{h}" for h in range(sm.n_heads)]
    assert sm.locate("layer.0.mixer").module is lfm2.model.layers[0].conv
    assert sm.locate("layer.1.attn.head.0").module is lfm2.model.layers[1].self_attn.out_proj
    assert sm.describe_layer(0) == "resid, mlp, mixer, neuron"

    sm = SiteMap(nemotron)
    layers = nemotron.model.layers
    assert [sm.describe_layer(i) for i in range(3)] == [
        "resid, mixer, channel",
        "resid, attn, head",
        "resid, mlp, neuron",
    ]
    # one attribute ("mixer") holds a different kind of module in each block: the config says which
    assert sm.module(0, "mixer") is layers[0].mixer and sm.module(1, "attn") is layers[1].mixer
    assert sm.locate("layer.1.attn.head.2").module is layers[1].mixer.o_proj
    assert sm.locate("layer.2.mlp.neuron.3").module is layers[2].mixer.down_proj
    assert sm.locate("layer.0.mixer.channel.3").module is layers[0].mixer.out_proj  # the Mamba-2 block's channels


@pytest.mark.parametrize(
    "site, message",
    [
        ("layer.0.attn", r"site 'layer.0.attn' does not exist: block 0 .* has resid, mlp, mixer, neuron; attn sites "),
        ("layer.1.mixer", r"block 1 .* has resid, attn, mlp, head, neuron; mixer sites are in layers 0$"),
        ("layer.0.attn.head.1", r"block 0 .*; head sites are in layers 1$"),
    ],
)
def test_a_site_the_block_lacks_is_a_one_line_error(lfm2, site, message):
    sm = SiteMap(lfm2)
    for call in (
        lambda: sm.check(site),
        lambda: sm.locate(site),
        lambda: run_with_cache(lfm2, CLEAN, [site]),
    ):
        with pytest.raises(InputError, match=message) as err:
            call()
        assert "\n" not in str(err.value)


def test_interventions_on_a_site_the_block_lacks_are_refused_and_leave_the_model_as_it_was(lfm2):
    ids = torch.tensor([CLEAN])
    before = lfm2(input_ids=ids, use_cache=False).logits.detach()
    _, cache = run_with_cache(lfm2, CLEAN, ["layer.1.attn"])
    with pytest.raises(InputError, match="does not exist: block 0"):
        with intervene(lfm2, replace("layer.0.attn", {"layer.0.attn": cache["layer.1.attn"]})):
            pass
    with pytest.raises(InputError, match=r"attention edge layer 0 has no attention .*; attention layers: 1$"):
        with intervene(lfm2, cut_edges([0], queries=[-1], keys=[0], renormalize=False)):
            pass
    assert torch.equal(lfm2(input_ids=ids, use_cache=False).logits.detach(), before)


def test_unknown_block_type_and_wrong_layer_count_are_refused():
    parts = by_layer_type({"mamba": ("mixer",), "attention": ("attention",)})
    assert parts(SimpleNamespace(layer_types=["mamba", "attention"])) == [{"mixer"}, {"attention"}]
    with pytest.raises(UnsupportedModelError, match=r"blocks of type 'moe' have no patching sites here"):
        parts(SimpleNamespace(layer_types=["mamba", "moe"]))
    with pytest.raises(UnsupportedModelError, match="lists no layer types"):
        parts(SimpleNamespace())
    blocks = BlockPaths(layers="layers", attention="a", mixer="m", layer_parts=parts)
    with pytest.raises(UnsupportedModelError, match="lists 1 layer types for 2 blocks"):
        blocks.parts_per_layer(SimpleNamespace(layer_types=["mamba"]), 2)
    # a part the family does not name is no site, whatever the config says
    assert BlockPaths(layers="layers", mixer="m", layer_parts=parts).parts_per_layer(
        SimpleNamespace(layer_types=["attention"]), 1
    ) == [frozenset()]


@pytest.mark.parametrize("fixture", ["lfm2", "nemotron"])
def test_sweep_engines_agree_with_naive_and_leave_absent_rows_nan(fixture, request):
    model = request.getfixturevalue(fixture)
    sm = SiteMap(model)
    kinds = ("resid", "attn", "mlp", "mixer", "head")
    kw = dict(kinds=kinds, positions=[2, 6], head_positions=[5, 6])
    naive = sweep(model, CLEAN, CORRUPTED, 5, 6, engine="naive", **kw)
    batched = sweep(model, CLEAN, CORRUPTED, 5, 6, engine="batched", **kw)
    auto = sweep(model, CLEAN, CORRUPTED, 5, 6, engine="auto", **kw)
    assert auto.engine == "batched"  # their blocks keep a recurrent state (mixers): no stepper
    with pytest.raises(StepperUnsupported, match="steps_from_keys_values"):
        sweep(model, CLEAN, CORRUPTED, 5, 6, engine="stepper", **kw)
    for key, want in naive.values.items():
        kind = key[0]
        present = [sm.has(i, kind) for i in range(sm.n_layers)]
        assert [bool(np.isfinite(want[i]).all()) for i in range(sm.n_layers)] == present, key
        assert all(np.isnan(want[i]).all() for i in range(sm.n_layers) if not present[i]), key
        np.testing.assert_allclose(batched.values[key], want, atol=1e-9, rtol=0, err_msg=str(key))
        np.testing.assert_allclose(auto.values[key], want, atol=1e-9, rtol=0, err_msg=str(key))
    # patching a block's output at the last position gives the source run's logit difference there
    last = naive.values[("resid", "logit_diff")][-1, -1]
    assert last == pytest.approx(naive.reference.clean_logit_diff, abs=1e-9)


def test_attn_brings_the_mixers_of_a_hybrid_along(lfm2, nemotron):
    assert sweep_kinds(SiteMap(lfm2), ["resid", "attn", "mlp"]) == ["resid", "attn", "mixer", "mlp"]
    assert sweep_kinds(SiteMap(nemotron), ["attn"]) == ["attn", "mixer"]
    assert sweep_kinds(SiteMap(lfm2), ["mixer", "attn"]) == ["mixer", "attn"]


@pytest.mark.parametrize("fixture", ["lfm2", "nemotron"])
def test_relp_fills_exactly_the_rows_with_sites(fixture, request):
    model = request.getfixturevalue(fixture)
    sm = SiteMap(model)
    est = attribution_patching(
        model, CLEAN, CORRUPTED, 5, 6, method="relp", kinds=("resid", "attn", "mlp", "mixer", "head")
    )
    for (kind, _), v in est.values.items():
        assert [bool(np.isfinite(v[i]).all()) for i in range(sm.n_layers)] == [
            sm.has(i, kind) for i in range(sm.n_layers)
        ], kind
        assert all(np.isnan(v[i]).all() for i in range(sm.n_layers) if not sm.has(i, kind)), kind
    # the estimate moved away from the unpatched run somewhere in every kind
    for kind in ("resid", "attn", "mlp", "mixer", "head"):
        moved = np.abs(est.values[(kind, "logit_diff")] - est.reference.corrupted_logit_diff)
        assert np.nanmax(moved) > 1e-4, kind


def test_result_json_and_html_say_which_layers_have_no_site(lfm2):
    from lrp_llm.export.report import patching_report
    from patching.experiment import run_patching
    from patching.result import PatchingResult

    result = run_patching(lfm2, _Tokenizer(), CLEAN, CORRUPTED, 5, 6, method="both", metrics=("logit_diff",))
    assert result.meta["sites"] == ["resid", "attn", "mixer", "mlp"]
    assert result.meta["absent"] == {"attn": [0], "mixer": [1]}
    data = json.loads(result.to_json())
    attn = next(g for g in data["grids"] if g["kind"] == "attn" and g["method"] == "sweep")
    assert attn["rows"] == ["layer.0.attn", "layer.1.attn"] and all(v is None for v in attn["values"][0])
    assert all(v is not None for v in attn["values"][1])
    back = PatchingResult.from_json(result.to_json())
    assert np.isnan(back.grid("attn", metric="logit_diff").values[0]).all()
    html = patching_report(result)
    assert "grey rows (layers 0): their blocks have no attn site" in html
    assert "grey rows (layers 1): their blocks have no mixer site" in html
    assert (
        "layer.0.attn: this layer&#x27;s block has no attn site" in html or "layer.0.attn: this layer's block" in html
    )
    # the estimates correlate with the sweep over the cells both have
    assert {c["kind"] for c in result.correlations} == {"resid", "attn", "mixer", "mlp"}


class _Tokenizer:
    """Just enough of a tokenizer for run_patching with token ids: each id decodes to ``<id>``."""

    def decode(self, ids, **_):
        return "".join(f"<{int(i)}>" for i in ids)


# ------------------------------------------------------------------ Llama-4 and the layer stepper
def test_llama4_stepper_runs_and_agrees_with_naive_past_a_chunk_and_with_position_dependent_queries():
    torch.manual_seed(0)
    model, _ = tiny_for("llama4_text", dtype=torch.float64)
    config = model.config
    assert config.attn_temperature_tuning and 0 in config.no_rope_layers and config.attention_chunk_size < 12
    for layer in model.model.layers:  # make the NoPE layers' query scale move within a few positions
        layer.self_attn.floor_scale, layer.self_attn.attn_scale = 2, 0.5
    clean = random_ids(12, seed=5)
    corrupted = [*clean[:3], 9, *clean[4:]]
    kw = dict(kinds=("resid", "attn", "head"), positions=[3, 9, 11], head_positions=[10, 11])
    naive = sweep(model, clean, corrupted, 5, 6, engine="naive", **kw)
    stepper = sweep(model, clean, corrupted, 5, 6, engine="stepper", **kw)
    assert stepper.engine == "stepper"
    for key, want in naive.values.items():
        np.testing.assert_allclose(stepper.values[key], want, atol=1e-9, rtol=0, err_msg=str(key))
