"""Widgets of the app (Textual only; the numbers they show come from ``lrp_llm``)."""
