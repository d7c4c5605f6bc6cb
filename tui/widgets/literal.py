"""Text from data in the app's widgets: shown literally, never parsed as markup.

A widget given a ``str`` parses it as Textual markup: a token ``[/b]`` would raise, and
``[@click=app.quit]`` would become a live action. So data reaches a widget only as
:class:`~textual.content.Content` built here, with control characters made visible
(:func:`lrp_llm.text.visible`); our own styling goes into the template of :func:`styled`,
data only into its ``$variables``, which Textual inserts as plain text.
"""

from __future__ import annotations

from textual.content import Content

from lrp_llm.text import visible


def literal(text: str) -> Content:
    """``text`` as it is (no markup), controls visible."""
    return Content(visible(text))


def styled(template: str, **data: object) -> Content:
    """``template``: our markup with ``$name`` placeholders; ``data``: the values, inserted as
    plain text with controls visible (``styled("[b]$token[/]", token=t)``)."""
    return Content.from_markup(template, **{k: visible(str(v)) for k, v in data.items()})
