"""Checkpoints named ``org/name`` resolve through the local Hugging Face cache only.

The cache is laid out by the test as the hub tools lay it out: ``models--org--name/`` with
``blobs/`` (the files, named by hash), ``snapshots/<commit>/`` (links to the blobs) and
``refs/<branch>`` (the commit of a branch).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import pytest

from lrp_llm.checkpoints.hub import is_repo_name, resolve_checkpoint
from lrp_llm.errors import CheckpointError
from tui.cli import main

MAIN = "a" * 40
DEV = "b" * 40


def _snapshot(repo: os.PathLike, commit: str, source) -> None:
    """``source``'s files as the snapshot ``commit`` of ``repo``: blobs by hash, links to them."""
    blobs, snapshot = repo / "blobs", repo / "snapshots" / commit
    blobs.mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True)
    for f in sorted(source.iterdir()):
        blob = blobs / hashlib.sha256(f.read_bytes()).hexdigest()
        if not blob.exists():
            shutil.copyfile(f, blob)
        (snapshot / f.name).symlink_to(os.path.relpath(blob, snapshot))


@pytest.fixture(scope="module")
def hub(tiny_dir, tmp_path_factory):
    """A cache holding ``org/tiny`` at ``main`` (commit MAIN) and branch ``dev`` (commit DEV)."""
    cache = tmp_path_factory.mktemp("hf") / "hub"
    repo = cache / "models--org--tiny"
    _snapshot(repo, MAIN, tiny_dir)
    _snapshot(repo, DEV, tiny_dir)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(MAIN)
    (repo / "refs" / "dev").write_text(DEV)
    return cache


@pytest.fixture
def in_cache(hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    return hub


def _explain(tmp_path, *extra):
    out = tmp_path / "r.json"
    args = ["explain", "--prompt", "the old", "--target", " man", "--no-chat", "--json", str(out), "--quiet", *extra]
    return main(args), out


def test_a_name_in_the_cache_explains(in_cache, tmp_path):
    code, out = _explain(tmp_path, "--model", "org/tiny")
    assert code == 0
    result = json.loads(out.read_text())
    assert result["model"] == "org/tiny"
    assert len(result["targets"]) >= 1


@pytest.mark.parametrize("revision, commit", [("dev", DEV), (DEV, DEV), (None, MAIN), ("main", MAIN)])
def test_revision_picks_the_snapshot(in_cache, revision, commit):
    folder = resolve_checkpoint("org/tiny", revision=revision)
    assert folder == in_cache / "models--org--tiny" / "snapshots" / commit


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "org/missing"], "org/missing is not in the local Hugging Face cache"),
        (["--model", "org/tiny", "--revision", "nope"], "org/tiny at revision nope is not in the local"),
    ],
)
def test_a_name_not_in_the_cache_is_one_line_and_no_file(in_cache, tmp_path, capsys, args, message):
    code, out = _explain(tmp_path, *args)
    err = capsys.readouterr().err.strip()
    assert code == 2 and not out.exists()
    assert err.startswith("error: ") and message in err and "\n" not in err and "Traceback" not in err
    assert "hf download" in err and "--allow-download" in err


def test_a_local_path_wins_over_a_name(in_cache, tiny_dir, tmp_path, monkeypatch):
    (tmp_path / "org").mkdir()
    shutil.copytree(tiny_dir, tmp_path / "org" / "local")
    monkeypatch.chdir(tmp_path)
    assert resolve_checkpoint("org/local").resolve() == (tmp_path / "org" / "local").resolve()
    assert resolve_checkpoint("org/tiny") == in_cache / "models--org--tiny" / "snapshots" / MAIN
    with pytest.raises(CheckpointError, match="--revision applies to a model name"):
        resolve_checkpoint("org/local", revision="dev")


def test_no_download_unless_allowed(in_cache, monkeypatch):
    import huggingface_hub

    calls = []

    def snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        if kwargs.get("local_files_only"):
            from huggingface_hub.errors import LocalEntryNotFoundError

            raise LocalEntryNotFoundError("not cached")
        return str(in_cache / "models--org--tiny" / "snapshots" / MAIN)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    with pytest.raises(CheckpointError, match="not in the local Hugging Face cache"):
        resolve_checkpoint("org/new")
    assert calls[-1][1]["local_files_only"] is True
    resolve_checkpoint("org/new", revision="v1", allow_download=True)
    repo_id, kwargs = calls[-1]
    assert repo_id == "org/new" and kwargs["revision"] == "v1" and not kwargs.get("local_files_only")
    assert "*.safetensors" in kwargs["allow_patterns"] and "*.bin" not in kwargs["allow_patterns"]
    resolve_checkpoint("org/new", allow_download=True, allow_pickle=True)
    assert "*.bin" in calls[-1][1]["allow_patterns"]


def test_the_app_refuses_a_missing_name_before_the_screen(in_cache, capsys):
    assert main(["org/missing"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: org/missing is not in the local Hugging Face cache") and "\n" not in err


@pytest.mark.parametrize(
    "name, expected",
    [("org/name", True), ("Org-1/na_me.v2", True), ("name", False), ("./org/name", False), ("a/b/c", False)]
    + [("/abs/path", False), ("org/..", False), ("~/model", False)],
)
def test_repo_names(name, expected):
    assert is_repo_name(name) is expected
