"""Shared test helpers: tiny models, tokenizers, a headless browser, app helpers."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The repository's root folder."""
