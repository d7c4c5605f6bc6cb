"""Image: which patches of an image made an image classifier (ViT) give a class.

An image file in; out come the image drawn with half-block cells (the relevance per
patch overlaid: pixels, heatmap or a blend, ``v`` toggles), the top classes with their
probability (choosing one explains that class) and the most relevant patches ranked
with their share of the supporting (positive) relevance. The numbers are those of
:func:`lrp_llm.engines.vision.explain_image` (``ImageAttribution.patch_relevance``).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, OptionList, Static
from textual.widgets.option_list import Option

from lrp_llm.methods import label
from lrp_llm.text import visible

from ..backend import ImageRequest
from ..exporting import Export, image_export
from ..widgets.imageview import OVERLAYS, ImageView
from ..widgets.legend import Legend
from ..widgets.literal import literal, styled
from ..widgets.sources import Source, SourcesList
from ..widgets.text_input import TextInput
from .base import Command, ViewScreen

IMAGE_HELP_INTRO = (
    "Type the path of an image file and press Enter (or start with `xai-tui CHECKPOINT --image FILE`): the "
    "predicted class is explained. The image is drawn with half-block cells; v switches between the image, the "
    "relevance per patch (red supports the class, blue speaks against it) and a blend. Enter on another class "
    "explains that one; the most relevant patches are ranked on the right."
)
TOP_PATCHES = 10
AGAINST_PATCHES = 3


def ranked_patches(patch_relevance: np.ndarray) -> tuple[list[Source], list[Source]]:
    """The most relevant patches (positive, largest first) and the most negative ones, as sources
    whose ``index`` is the row-major patch index and whose text names the patch's row and column."""
    rel = np.asarray(patch_relevance, dtype=np.float64)
    columns = rel.shape[1]
    flat = rel.ravel()
    order = np.argsort(-flat, kind="stable")  # the order of ImageAttribution.top_patches

    def source(i: int) -> Source:
        return Source(int(i), f"row {i // columns}, col {i % columns}", float(flat[i]))

    top = [source(i) for i in order[:TOP_PATCHES] if flat[i] > 0]
    against = [source(i) for i in order[::-1][:AGAINST_PATCHES] if flat[i] < 0]
    return top, against


class ImageScreen(ViewScreen):
    VIEW_ID = "image"

    BINDINGS = [
        Binding("v", "next_overlay", "Overlay", id="image.overlay"),
        Binding("ctrl+t", "next_method", "Method", id="image.method"),
    ]

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="img-box"):
            yield TextInput(placeholder="Image file (PNG, JPEG); Enter explains", id="img-path", compact=True)
            yield Button("Explain", id="img-explain", variant="primary", compact=True)
        yield Static("", id="img-summary")
        with Horizontal(id="img-body"):
            yield ImageView(id="img-view")
            with Vertical(id="img-side"):
                yield OptionList(id="img-classes")
                yield SourcesList(id="img-patches")
        yield Legend(id="img-legend")

    def on_mount(self) -> None:
        self.query_one("#img-box").border_title = "Explain an image"
        self.query_one("#img-classes").border_title = "Classes (Enter explains)"
        self.query_one("#img-patches").border_title = "Most relevant patches"
        self.query_one(Legend).unit = "max |patch relevance|"
        view = self.query_one(ImageView)
        view.can_focus = True
        self._title_view()
        if self.xai.initial_image:
            self.query_one("#img-path", Input).value = self.xai.initial_image
        self.watch(self.xai, "image", self._show_result)

    def _title_view(self) -> None:
        view = self.query_one(ImageView)
        view.border_title = f"Image · {view.overlay}"

    @on(Input.Submitted, "#img-path")
    @on(Button.Pressed, "#img-explain")
    def _explain_file(self) -> None:
        path = self.query_one("#img-path", Input).value.strip()
        self.xai.explain_image(ImageRequest(path, None, self.xai.method))

    def _explain(self, target: int | str | None, method: str | None = None) -> None:
        """Explain class ``target`` of the image on screen (with ``method``, default the app's)."""
        a = self.xai.image
        if a is None or not a.source:
            self._explain_file()
            return
        self.xai.explain_image(ImageRequest(a.source, target, method or self.xai.method))

    def _show_result(self, a) -> None:
        if a is None:
            return
        view = self.query_one(ImageView)
        view.show(a.image, a.patch_relevance, a.patch_size)
        self.query_one(Legend).scale = view.scale
        self.query_one("#img-summary", Static).update(
            styled(
                " class [b]$label[/]   logit $logit   p $p   Σ relevance / logit $cons   [dim]$method · $model[/]",
                label=a.label,
                logit=f"{a.logit:.3f}",
                p=f"{a.probability:.3f}",
                cons=f"{a.conservation:.2f}",
                method=label(a.method),
                model=a.model,
            )
        )
        classes = self.query_one("#img-classes", OptionList)
        classes.clear_options()
        for name, p in a.top_labels:
            text = Text("● " if name == a.label else "  ", style="bold")
            text.append(f"{p:6.3f}  ", style="dim")
            text.append(visible(name))
            classes.add_option(Option(text, id=f"class-{len(classes.options)}"))
        self._class_names = [name for name, _ in a.top_labels]
        top, against = ranked_patches(a.patch_relevance)
        rel = np.asarray(a.patch_relevance, dtype=np.float64)
        total = float(rel[rel > 0].sum())  # shares of the supporting relevance (the sum of all may be ~0)
        self.query_one("#img-patches", SourcesList).show(top, against, total=total)
        self.query_one("#img-patches").border_subtitle = literal(
            f"{a.patch_relevance.shape[0]}x{a.patch_relevance.shape[1]} patches of {a.patch_size[0]}x{a.patch_size[1]} px"
        )
        if self.app.focused is None or isinstance(self.app.focused, Input):
            view.focus()

    @on(OptionList.OptionSelected, "#img-classes")
    def _class_chosen(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self._explain(self._class_names[event.option_index])

    def action_next_overlay(self) -> None:
        view = self.query_one(ImageView)
        view.overlay = OVERLAYS[(OVERLAYS.index(view.overlay) + 1) % len(OVERLAYS)]
        self._title_view()

    def action_next_method(self) -> None:
        methods = list(self.xai.available_methods)
        current = self.xai.method if self.xai.method in methods else methods[0]
        self._use_method(methods[(methods.index(current) + 1) % len(methods)])

    def _use_method(self, method: str) -> None:
        self.xai.method = method
        a = self.xai.image
        if a is not None:
            self._explain(a.label, method)

    def commands(self) -> Iterable[Command]:
        yield ("Explain image file", "Explain the predicted class of the image file typed above", self._explain_file)
        for overlay in OVERLAYS:
            yield (f"Overlay: {overlay}", f"Draw the image as {overlay}", lambda o=overlay: self._set_overlay(o))
        for m in self.xai.available_methods:
            yield (
                f"Image method: {label(m)}",
                f"Explain with {label(m)} (recomputes)",
                lambda m=m: self._use_method(m),
            )

    def _set_overlay(self, overlay: str) -> None:
        self.query_one(ImageView).overlay = overlay  # type: ignore[assignment]
        self._title_view()

    def export_target(self) -> Export | None:
        a = self.xai.image
        return image_export(a) if a is not None else None
