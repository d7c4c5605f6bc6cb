"""Checkpoints named ``org/name``: found in the local Hugging Face cache, never downloaded unasked.

People fetch models with the hub tools (``hf download org/name``) and then refer to them by
name. A name resolves to the snapshot folder of that repository in the local cache
(``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``), at
``revision`` (a branch, tag or commit; default ``main``). Only ``allow_download=True``
(the CLI's ``--allow-download``) lets the hub be contacted, and then only the files a
checkpoint needs are fetched (pickled weights only with ``allow_pickle``).

A local path always wins over a name: ``models/tiny`` that exists is that folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from lrp_llm.errors import CheckpointError

# a Hub repository id: "org/name", each part of letters, digits, "-", "_", "."
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+")
# what a checkpoint folder needs: config, weights, tokenizer / processor files
_WANTED = ["*.json", "*.safetensors", "*.gguf", "*.model", "*.txt", "*.tiktoken", "*.py"]
_PICKLES = ["*.bin", "*.pt", "*.pth"]


def hub_cache_dir() -> Path:
    """The local Hugging Face hub cache, read from the environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def is_repo_name(name: str) -> bool:
    """Whether ``name`` has the form of a Hub repository id (``org/name``)."""
    return _REPO_ID.fullmatch(name) is not None and ".." not in name


def resolve_checkpoint(
    name: str | os.PathLike[str],
    *,
    revision: str | None = None,
    allow_download: bool = False,
    allow_pickle: bool = False,
) -> Path:
    """The local folder or file of ``name``: an existing path as it is, an ``org/name`` from the
    local cache (downloaded first only when ``allow_download``). Raises a one-line
    :class:`~lrp_llm.errors.CheckpointError` when a name is not in the cache, or when
    ``revision`` is given for a local path."""
    path = Path(name).expanduser()
    text = str(name)
    if path.exists() or not is_repo_name(text):
        if revision is not None:
            raise CheckpointError(
                f"--revision applies to a model name from the Hugging Face cache, not to the path {text}"
            )
        return path
    at = f" at revision {revision}" if revision else ""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RevisionNotFoundError

    cache = hub_cache_dir()
    try:
        if allow_download:
            folder = snapshot_download(
                text,
                revision=revision,
                cache_dir=cache,
                allow_patterns=_WANTED + (_PICKLES if allow_pickle else []),
            )
        else:
            folder = snapshot_download(text, revision=revision, cache_dir=cache, local_files_only=True)
    except (LocalEntryNotFoundError, FileNotFoundError):
        if allow_download:
            raise CheckpointError(
                f"{text}{at} could not be downloaded (the Hugging Face hub is unreachable); "
                "check the connection or download it elsewhere and copy the folder"
            ) from None
        raise CheckpointError(
            f"{text}{at} is not in the local Hugging Face cache ({cache}); "
            f"fetch it with `hf download {text}`{' --revision ' + revision if revision else ''}, "
            "or pass --allow-download"
        ) from None
    except RevisionNotFoundError:
        raise CheckpointError(f"{text} has no revision {revision}; pass a branch, tag or commit it has") from None
    except HfHubHTTPError as exc:
        raise CheckpointError(
            f"{text}{at} could not be downloaded (HTTP {getattr(exc.response, 'status_code', '?')}); "
            "check the name, or log in with `hf auth login` for a gated model"
        ) from None
    return Path(folder)
