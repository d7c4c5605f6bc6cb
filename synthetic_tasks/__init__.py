"""Synthetic tasks whose right answer depends on known input positions (ground truth for explanations)."""
