"""Fixtures shared by every tier of the tests (unit, cli, app, ground_truth, integration)."""

from __future__ import annotations

import pytest

from tests.support.encoders import torch_threads


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A tiny random Llama checkpoint folder (config, safetensors, tokenizer), one per test module."""
    from tests.support.models import save_tiny_checkpoint

    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny")


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for the module: tiny models gain nothing from a second thread, and
    on a busy machine OpenMP threads spinning against other jobs make them 10-20x slower.
    Use it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    with torch_threads(1):
        yield
