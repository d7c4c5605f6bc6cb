"""Checkpoints: formats, safety defaults and one-line errors."""

import json

import pytest
import torch

from lrp_llm.checkpoints.loading import inspect_checkpoint, load_model
from lrp_llm.errors import CheckpointError, UnsupportedModelError
from tests.support.models import tiny_causal_lm


def test_hf_folder_loads_with_the_same_logits(tiny_dir):
    model, tok = load_model(tiny_dir)
    ref = tiny_causal_lm("llama", vocab=len(tok))
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, ref(ids).logits)


def _pickle_only(src, dst):
    dst.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (dst / name).write_bytes((src / name).read_bytes())
    from safetensors.torch import load_file

    torch.save(load_file(str(src / "model.safetensors")), dst / "pytorch_model.bin")
    return dst


def test_pickled_weights_are_refused_without_the_flag(tiny_dir, tmp_path):
    folder = _pickle_only(tiny_dir, tmp_path / "pickled")
    with pytest.raises(CheckpointError, match="pickled weights .* --allow-pickle"):
        load_model(folder)
    model, _ = load_model(folder, allow_pickle=True)  # loaded with weights_only=True by transformers
    reference, _ = load_model(tiny_dir)
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reference(ids).logits)


def test_remote_code_is_never_run_by_default(tiny_dir, tmp_path):
    folder = tmp_path / "remote"
    folder.mkdir()
    for f in tiny_dir.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    marker = tmp_path / "ran"
    (folder / "evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('x')\n"
        "from transformers import LlamaConfig, LlamaForCausalLM\n"
        "class EvilConfig(LlamaConfig):\n    model_type = 'llama'\n"
        "class EvilModel(LlamaForCausalLM):\n    config_class = EvilConfig\n"
    )
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    try:
        load_model(folder)
    except CheckpointError:
        pass  # refusing is fine too; running the code is not
    assert not marker.exists()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing", "no such file or folder"),
        (lambda p: p, "has no config.json"),
        (lambda p: (p / "notes.txt").write_text("hi") and p / "notes.txt", "is not a model"),
        (lambda p: (p / "bad.gguf").write_bytes(b"GGUF\x03\x00garbage" * 3) and p / "bad.gguf", "not a readable GGUF"),
        (lambda p: (p / "config.json").write_text("{oops") and p, "is not valid JSON"),
        (lambda p: (p / "config.json").write_text('{"model_type": "llama"}') and p, "no weights"),
    ],
)
def test_bad_paths_give_one_line_errors(tmp_path, make, message):
    with pytest.raises(CheckpointError, match=message) as info:
        inspect_checkpoint(make(tmp_path))
    assert "\n" not in str(info.value)


def test_corrupt_safetensors_give_a_checkpoint_error(tiny_dir, tmp_path):
    folder = tmp_path / "corrupt"
    folder.mkdir()
    for f in tiny_dir.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="could not load"):
        load_model(folder)


def test_unsupported_architecture_is_refused_before_loading(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "xlnet"}')
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(UnsupportedModelError, match="unsupported architecture 'xlnet'.*supported: .*llama"):
        load_model(tmp_path)


# ------------------------------------------------------ --device-map offload folders
def _offload_folders(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("xai-tui-offload-"))


def test_device_map_leaves_no_offload_folder(tiny_dir, tmp_path, monkeypatch):
    """The temporary offload folder made for --device-map is removed after loading (nothing
    was offloaded to it) and after a failed load."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    for device_map in ("auto", '{"model": "cpu", "lm_head": "disk"}'):
        model, _ = load_model(tiny_dir, device_map=device_map, dtype="float32")
        assert model is not None and _offload_folders(tmp_path) == [], device_map
    with pytest.raises(CheckpointError):
        load_model(tiny_dir, device_map='{"": "nowhere"}', dtype="float32")
    assert _offload_folders(tmp_path) == []


def test_an_offload_folder_with_weights_lives_as_long_as_the_model(tmp_path):
    import gc

    from lrp_llm.checkpoints.loading import _release_offload_folder

    class Model:
        pass

    folder = tmp_path / "xai-tui-offload-x"
    folder.mkdir()
    (folder / "w.dat").write_bytes(b"0")
    model = Model()
    _release_offload_folder(model, str(folder))
    assert folder.is_dir()  # the model reads its offloaded weights from there
    del model
    gc.collect()
    assert not folder.exists()


def test_a_mixture_of_experts_checkpoint_runs_in_float64(tmp_path):
    """transformers' default grouped experts kernel has no float64 path: the loader runs the experts as a loop."""
    from lrp_llm.engines.causal_lm import relevance
    from tests.support.models import random_ids, tiny_tokenizer
    from tests.support.tiny_any import tiny_model

    model = tiny_model("mixtral")
    model.save_pretrained(str(tmp_path))
    tiny_tokenizer().save_pretrained(str(tmp_path))
    loaded, _ = load_model(str(tmp_path), dtype="float64")
    ids = torch.tensor([random_ids(6)])
    with torch.no_grad():
        # against the float32 model (its own kernel): agreement to float32 rounding
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits.double(), atol=1e-4, rtol=1e-4)
    out = relevance(loaded, random_ids(6), [5], method="grad-x-input")  # the plain forward, no rules
    assert torch.isfinite(torch.as_tensor(out["relevance"][0])).all()
