"""No silent wrong results from a checkpoint: missing, unexpected and mismatched tensors are
named (or allowed with a warning), absurd configs are refused before allocating, and
non-finite relevance gets advice that fits the model's precision."""

from __future__ import annotations

import json
import shutil
import time
import warnings

import pytest
import torch

from lrp_llm.checkpoints.loading import load_model
from lrp_llm.checkpoints.weight_check import model_bytes, weight_problems
from lrp_llm.errors import CheckpointError, CheckpointWarning, NonFiniteError, XaiError
from tests.support.models import save_tiny_checkpoint, tiny_causal_lm

pytestmark = pytest.mark.usefixtures("one_thread")


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _rewrite_weights(folder, change) -> None:
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    state = change(dict(load_file(str(path))))
    save_file(state, str(path), metadata={"format": "pt"})


def _edit_config(folder, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.fixture
def missing_layer(tiny_dir, tmp_path):
    """The tiny checkpoint with layer 1's tensors deleted from the safetensors."""
    folder = _copy(tiny_dir, tmp_path / "missing")
    _rewrite_weights(folder, lambda s: {k: v for k, v in s.items() if ".layers.1." not in k})
    return folder


def test_missing_tensors_are_an_error_naming_them(missing_layer):
    # before: loaded with randomly initialised layer-1 weights, a different answer on every load
    with pytest.raises(CheckpointError) as info:
        load_model(missing_layer)
    text = str(info.value)
    assert "missing model.layers.1." in text and "(9 in all)" in text and "--allow-missing-weights" in text
    assert "\n" not in text


def test_allow_missing_loads_with_a_visible_warning(missing_layer):
    with pytest.warns(CheckpointWarning, match="missing model.layers.1.*randomly initialised"):
        model, _ = load_model(missing_layer, allow_missing=True)
    assert model.config.num_hidden_layers == 2


def test_unexpected_tensors_are_named(tiny_dir, tmp_path):
    folder = _copy(tiny_dir, tmp_path / "extra")
    _rewrite_weights(folder, lambda s: {**s, "model.extra_adapter.weight": torch.zeros(3, 3)})
    with pytest.raises(CheckpointError, match=r"unexpected model\.extra_adapter\.weight"):
        load_model(folder)


def test_mismatched_shapes_are_named_without_pointing_to_a_report(tiny_dir, tmp_path):
    folder = _copy(tiny_dir, tmp_path / "mismatch")
    _edit_config(folder, intermediate_size=64)
    with pytest.raises(CheckpointError) as info:
        load_model(folder)
    text = str(info.value)
    assert "wrong shape model.layers.0.mlp.down_proj.weight (checkpoint 32x48, config 32x64)" in text
    assert "(6 in all)" in text and "above" not in text


def test_tied_embeddings_are_not_missing(tmp_path):
    folder = save_tiny_checkpoint(tmp_path / "tied", tie_word_embeddings=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointWarning)
        model, _ = load_model(folder)
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


def test_a_complete_checkpoint_loads_the_same_weights_every_time(tiny_dir):
    a, _ = load_model(tiny_dir)
    b, _ = load_model(tiny_dir)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name


def test_an_absurd_config_is_refused_at_once_with_its_size(tiny_dir, tmp_path):
    folder = _copy(tiny_dir, tmp_path / "absurd")
    _edit_config(folder, hidden_size=10**9)
    start = time.perf_counter()
    with pytest.raises(CheckpointError) as info:
        load_model(folder)
    text = str(info.value)
    assert "billion parameters" in text and "of memory is free" in text and "above" not in text
    assert time.perf_counter() - start < 5.0  # measured on the meta device; nothing is allocated


def test_model_bytes_counts_what_loading_allocates():
    model = tiny_causal_lm("llama")
    expected = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    count, size = model_bytes(lambda: tiny_causal_lm("llama"), torch.bfloat16)
    float_buffers = sum(b.numel() for b in model.buffers() if b.is_floating_point())
    assert count == expected and size == 2 * (expected - float_buffers) + 2 * float_buffers


def test_weight_problems_lists_a_few_names_and_counts():
    text = weight_problems(missing=[f"w{i}" for i in range(5)], unexpected=["x"])
    assert text == "missing w0, w1, w2, ... (5 in all); unexpected x"
    assert weight_problems() == ""


# ---------------------------------------------------------------------- non-finite relevance
def _nan_weight(model):
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight[0, 0] = float("nan")
    return model


def test_nan_weights_in_float32_name_the_tensor_and_do_not_advise_float32():
    from lrp_llm.engines.explain import explain
    from tests.support.models import tiny_tokenizer

    model = _nan_weight(tiny_causal_lm("llama", vocab=len(tiny_tokenizer())))
    with pytest.raises(NonFiniteError) as info:
        explain(model, tiny_tokenizer(), "the capital of france", target=" paris", chat=False)
    text = str(info.value)
    # before: "relevance is not finite; run the model in float32" although it already was
    assert "model.layers.0.mlp.up_proj.weight" in text and "--dtype float32" not in text
    assert isinstance(info.value, XaiError) and isinstance(info.value, FloatingPointError)


@pytest.mark.parametrize(
    ("dtype", "nan", "expected", "absent"),
    [
        (torch.float32, False, "although the model runs in float32", "--dtype float32"),
        (torch.float64, True, "non-finite weights (first: model.layers.0.mlp.up_proj.weight)", "--dtype float32"),
        (torch.bfloat16, False, "run the model in float32 (--dtype float32)", "non-finite weights"),
        (torch.bfloat16, True, "non-finite weights", "--dtype float32"),
    ],
)
def test_non_finite_advice_depends_on_the_dtype(dtype, nan, expected, absent):
    from lrp_llm.engines.finite import non_finite_error

    model = tiny_causal_lm("llama")
    model = (_nan_weight(model) if nan else model).to(dtype)
    text = str(non_finite_error(model))
    assert expected in text and absent not in text


def test_check_finite_accepts_finite_tensors_and_arrays():
    import numpy as np

    from lrp_llm.engines.finite import check_finite

    model = tiny_causal_lm("llama")
    check_finite(model, torch.ones(3), np.ones(2))
    with pytest.raises(NonFiniteError):
        check_finite(model, torch.ones(3), np.array([1.0, np.inf]))
