"""Exporters: self-contained HTML and JSON."""
