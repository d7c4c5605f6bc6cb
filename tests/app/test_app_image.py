"""The image view (image classifiers) on a tiny random ViT: what it shows equals the library's
``explain_image``; the half-block cells carry the image's pixels; snapshots; the real command in tmux."""

from __future__ import annotations

import os
import re
import sys

import numpy as np
import pytest

from tests.support import REPO_ROOT
from tests.support.tiny_t5_vit import tiny_vit
from tests.support.tmux import tmux_pane
from tests.support.tui_support import settle, wait_for
from tui.app import XaiApp
from tui.backend import ImageBackend

SIZE = (100, 30)
KIND = "image-classification"
pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def model():
    return tiny_vit()


@pytest.fixture
def backend(model):
    return ImageBackend.from_model(model, None, "tiny-vit")


def known_image(seed: int = 0) -> np.ndarray:
    """A 16 x 16 RGB image (the tiny ViT's input size, so the model sees exactly these pixels)."""
    return np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)


@pytest.fixture
def image_file(tmp_path):
    from PIL import Image

    path = tmp_path / "known.png"
    Image.fromarray(known_image()).save(path)
    return str(path)


def cells(view) -> list[list[tuple[tuple[int, int, int], tuple[int, int, int] | None]]]:
    """The half-block cells the view draws: per line, (foreground, background) RGB of each "▀"."""
    lines = []
    for y in range(view.size.height):
        row = [
            (tuple(s.style.color.triplet), tuple(s.style.bgcolor.triplet) if s.style.bgcolor else None)
            for s in view.render_line(y)
            if s.text == "▀"
        ]
        if row:
            lines.append(row)
    return lines


def shown_patches(screen) -> list[tuple[float, int, int, str]]:
    """(value, row, column, share text) of each patch in the ranked list, as drawn."""
    from tui.widgets.sources import SourcesList

    out = []
    for option in screen.query_one("#img-patches", SourcesList).options:
        m = re.match(r"\s*([+-]\d+\.\d+) .*row (\d+), col (\d+)\s*(-?\d+%)?", str(option.prompt))
        assert m, option.prompt
        out.append((float(m[1]), int(m[2]), int(m[3]), m[4] or ""))
    return out


async def test_image_view_shows_the_library_relevance_and_recomputes_another_class(model, backend, image_file):
    from lrp_llm.engines.vision import explain_image
    from tui.widgets.imageview import ImageView

    reference = explain_image(model, None, image_file, model_name="tiny-vit")
    app = XaiApp(backend, kind=KIND, image=image_file)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.image is not None or app.status[1] == "error", what="the explanation")
        await settle(app, pilot)
        assert app.current_mode == "image" and app.status[1] == "info", app.status
        a = app.image
        np.testing.assert_allclose(a.patch_relevance, reference.patch_relevance, rtol=1e-5, atol=1e-7)
        assert a.label == reference.label and a.top_labels == pytest.approx(reference.top_labels)
        screen = app.screen
        view = screen.query_one(ImageView)
        np.testing.assert_allclose(view.patch_relevance, reference.patch_relevance, rtol=1e-5, atol=1e-7)

        # the ranked patches: the library's order and values, shares of the supporting relevance
        patches = shown_patches(screen)
        positives = [p for p in patches if p[0] > 0]
        rel = reference.patch_relevance.astype(np.float64)
        assert [r * rel.shape[1] + c for _, r, c, _ in positives] == reference.top_patches(len(positives))
        for value, r, c, share in patches:
            assert value == pytest.approx(rel[r, c], abs=6e-4)
            if share:
                assert share == f"{100 * rel[r, c] / rel[rel > 0].sum():.0f}%"
        assert any(v < 0 for v, *_ in patches) == bool((rel < 0).any())

        # the classes: the library's top labels and probabilities; the explained one marked
        classes = screen.query_one("#img-classes")
        shown = [str(o.prompt) for o in classes.options]
        assert [s.split()[-1] for s in shown] == [name for name, _ in reference.top_labels]
        assert shown[0].startswith("●") and f"{reference.top_labels[0][1]:.3f}" in shown[0]

        # choosing another class explains it: the library's numbers for that class
        other = reference.top_labels[1][0]
        classes.focus()
        classes.highlighted = 1
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.image is not a, what="the second explanation")
        await settle(app, pilot)
        again = explain_image(model, None, image_file, target=other, model_name="tiny-vit")
        assert app.image.label == other != reference.label
        np.testing.assert_allclose(app.image.patch_relevance, again.patch_relevance, rtol=1e-5, atol=1e-7)
        assert not np.allclose(again.patch_relevance, reference.patch_relevance)
        assert str(classes.options[1].prompt).startswith("●")
        assert shown_patches(screen)[0][0] == pytest.approx(float(again.patch_relevance.max()), abs=6e-4)


async def test_half_block_cells_are_the_pixels_and_the_overlay_follows_the_relevance(backend, image_file):
    from tui.widgets.imageview import ImageView
    from tui.widgets.tokenflow import POSITIVE

    pixels = known_image()
    app = XaiApp(backend, kind=KIND, image=image_file)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.image is not None or app.status[1] == "error", what="the explanation")
        await settle(app, pilot)
        view = app.screen.query_one(ImageView)
        assert view.overlay == "blend"
        await pilot.press("v")  # blend -> image: the pixels alone
        assert view.overlay == "image" and "image" in str(view.border_title)
        drawn = cells(view)
        # the 16 x 16 image fits a whole number of times: every pixel a k x k block of half-cells
        k = min(2 * view.size.height // 16, view.size.width // 16)
        assert k >= 1 and len(drawn) == 16 * k // 2 and all(len(row) == 16 * k for row in drawn)
        for y, row in enumerate(drawn):
            for x, (top, bottom) in enumerate(row):
                assert top == tuple(pixels[(2 * y) // k, x // k])
                assert bottom == tuple(pixels[(2 * y + 1) // k, x // k])

        await pilot.press("v")  # the relevance heatmap: red where a patch supports, blue against
        assert view.overlay == "relevance"
        rel = app.image.patch_relevance
        ph, pw = app.image.patch_size
        heat = cells(view)
        best = np.unravel_index(np.argmax(rel), rel.shape)
        worst = np.unravel_index(np.argmin(rel), rel.shape)
        pr, pc = (best[0] * ph * k) // 2, best[1] * pw * k
        nr, nc = (worst[0] * ph * k) // 2, worst[1] * pw * k
        assert heat[pr][pc][0] == POSITIVE.rgb  # the largest patch is drawn at full strength
        if rel[worst] < 0:
            assert heat[nr][nc][0][2] > heat[nr][nc][0][0]  # blue over red
        await pilot.press("v")
        assert view.overlay == "blend"


async def test_a_large_image_is_averaged_down_to_fit():
    from textual.app import App

    from tui.widgets.imageview import ImageView

    image = np.random.default_rng(3).integers(0, 256, (32, 48, 3), dtype=np.uint8)

    class One(App[None]):
        CSS = "ImageView { width: 12; height: 4; }"

        def compose(self):
            yield ImageView()

    app = One()
    async with app.run_test(size=(20, 6)) as pilot:
        view = app.query_one(ImageView)
        view.overlay = "image"
        view.show(image, None, (8, 8))
        await pilot.pause()
        drawn = cells(view)
        # 32 x 48 into 8 x 12 pixels: each drawn pixel is the mean of a 4 x 4 box
        boxes = np.round(image.astype(np.float64).reshape(8, 4, 12, 4, 3).mean(axis=(1, 3))).astype(np.uint8)
        assert len(drawn) == 4 and all(len(row) == 12 for row in drawn)
        for y, row in enumerate(drawn):
            for x, (top, bottom) in enumerate(row):
                assert top == tuple(boxes[2 * y, x]) and bottom == tuple(boxes[2 * y + 1, x])


async def test_another_image_file_and_a_bad_one(backend, image_file, tmp_path):
    from PIL import Image

    other = tmp_path / "other.png"
    Image.fromarray(known_image(seed=5)).save(other)
    app = XaiApp(backend, kind=KIND)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.model_state == "ready", what="the model")
        assert app.image is None
        field = app.screen.query_one("#img-path")
        field.focus()
        field.value = str(tmp_path / "missing.png")
        await pilot.press("enter")
        await settle(app, pilot)
        assert app.status[1] == "error" and "no such image" in app.status[0] and "\n" not in app.status[0]
        assert app.image is None
        field.value = str(other)
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.image is not None, what="the explanation")
        assert app.image.source == str(other)
        assert (app.image.image == known_image(seed=5)).all()


async def test_ctrl_t_explains_the_same_class_with_the_next_method(model, backend, image_file):
    from lrp_llm.engines.vision import explain_image

    app = XaiApp(backend, kind=KIND, image=image_file)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.image is not None, what="the explanation")
        await settle(app, pilot)
        first = app.image
        assert first.method == "attnlrp"
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: app.image is not first, what="the second method")
        await settle(app, pilot)
        reference = explain_image(model, None, image_file, target=first.label, method="cp-lrp")
        assert app.image.method == app.method == "cp-lrp" and app.image.label == first.label
        np.testing.assert_allclose(app.image.patch_relevance, reference.patch_relevance, rtol=1e-5, atol=1e-7)
        assert shown_patches(app.screen)[0][0] == pytest.approx(float(reference.patch_relevance.max()), abs=6e-4)


async def test_progress_and_esc_cancel_and_f2_comes_back(backend, image_file):
    app = XaiApp(backend, kind=KIND)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.model_state == "ready", what="the model")
        with backend.lock:  # the worker waits for the model: the job is still running when Esc comes
            app.screen.query_one("#img-path").value = image_file
            app.screen.query_one("#img-explain").press()
            await wait_for(pilot, lambda: app.progress is not None, what="the progress bar")
            assert app.progress[0] == "explaining the image" and "Esc cancels" in app.status[0]
            await pilot.press("escape")
            assert app.progress is None and app.status == ("cancelled", "info")
        await settle(app, pilot)
        assert app.image is None and app.status == ("cancelled", "info")  # the late result is dropped
        await pilot.press("f1")  # the help speaks of images here, not of questions
        intro = str(app.screen.query_one("#help-intro").render())
        assert "image file" in intro and "question" not in intro
        await pilot.press("escape", "f4")
        assert app.current_mode == "similarity"
        await pilot.press("f2")  # F2 is the image view for an image classifier (the Ask view for text)
        assert app.current_mode == "image"


@pytest.mark.parametrize("fmt", ["html", "json"])
async def test_export_writes_the_image_report_and_json(backend, image_file, tmp_path, fmt):
    from lrp_llm.results.image import ImageAttribution

    app = XaiApp(backend, kind=KIND, image=image_file)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.image is not None, what="the explanation")
        await settle(app, pilot)
        await pilot.press("ctrl+s")
        app.screen.query_one("#dialog-path").value = str(tmp_path / f"out.{fmt}")
        await pilot.press("enter")
        await settle(app, pilot)
        out = tmp_path / f"out.{fmt}"
        assert out.is_file(), app.status
        if fmt == "json":
            saved = ImageAttribution.load(out)
            np.testing.assert_allclose(saved.patch_relevance, app.image.patch_relevance)
            assert saved.label == app.image.label and (saved.image == known_image()).all()
        else:
            text = out.read_text()
            assert text.startswith("<!DOCTYPE html>") and "data:image/png;base64," in text


async def test_a_saved_image_result_reopens_in_the_image_view(backend, image_file, tmp_path):
    from lrp_llm.engines.vision import explain_image
    from tests.support.tui_support import tui_backend

    saved = explain_image(backend.model, None, image_file, model_name="tiny-vit")
    path = tmp_path / "image.json"
    saved.save(path)
    app = XaiApp(None, result_path=str(path), kind=KIND)  # what `xai-tui open image.json` runs
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.image is not None or app.status[1] == "error", what="the result")
        assert app.current_mode == "image" and str(path) in app.sub_title
        patches = shown_patches(app.screen)
        rel = saved.patch_relevance
        assert [(r, c) for v, r, c, _ in patches if v > 0][:3] == [divmod(i, 4) for i in saved.top_patches(3)]
        assert patches[0][0] == pytest.approx(float(rel.max()), abs=6e-4)
        app.screen.query_one("#img-classes").focus()
        await pilot.press("down", "enter")  # another class needs the model: one line, no crash
        assert app.status[1] == "error" and "no model is loaded" in app.status[0]
    text_app = XaiApp(tui_backend())  # a language model's app: the image result is not shown there
    async with text_app.run_test(size=SIZE) as pilot:
        text_app.open_result(str(path))
        await settle(text_app, pilot)
        assert text_app.status[1] == "error" and "is an image explanation" in text_app.status[0]
        assert text_app.image is None


def test_image_flag_bad_path_and_wrong_kind_are_one_line(tmp_path, capsys):
    from tui.cli import main

    vit = str(REPO_ROOT / "models" / "synthetic" / "vit-coloured-object")
    assert main([vit, "--image", str(tmp_path / "missing.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no such image") and err.count("\n") == 1
    (tmp_path / "not.png").write_text("not an image")
    assert main([vit, "--image", str(tmp_path / "not.png")]) == 2
    assert "is not an image file" in capsys.readouterr().err
    t5 = str(REPO_ROOT / "models" / "synthetic" / "t5-copy-reverse")
    assert main([t5, "--image", str(tmp_path / "not.png")]) == 2
    assert "--image is for image classifiers" in capsys.readouterr().err


def _snapshot_app(model, path):
    return XaiApp(ImageBackend.from_model(model, None, "tiny-vit"), kind=KIND, image=path)


async def _explained(pilot) -> None:
    await wait_for(pilot, lambda: pilot.app.image is not None, what="the explanation")
    await settle(pilot.app, pilot)


@pytest.mark.parametrize("size", [SIZE, (80, 24)], ids=["100x30", "80x24"])
def test_snapshot(snap_compare, model, image_file, monkeypatch, size):
    monkeypatch.chdir(os.path.dirname(image_file))  # the path shown in the field is the same every run
    app = _snapshot_app(model, os.path.basename(image_file))
    assert snap_compare(app, terminal_size=size, run_before=_explained)


def test_real_command_in_tmux(tmp_path):
    """`xai-tui models/synthetic/vit-coloured-object --image FILE` in a real terminal."""
    from PIL import Image

    picture = np.full((64, 64, 3), 200, dtype=np.uint8)
    picture[16:40, 24:48] = (220, 30, 30)  # a red object on grey
    path = tmp_path / "red.png"
    Image.fromarray(picture).save(path)
    vit = REPO_ROOT / "models" / "synthetic" / "vit-coloured-object"
    # without COLUMNS / LINES (set by the in-process app tests before): the app takes the pane's size
    command = f"env -u COLUMNS -u LINES {sys.executable} -m tui {vit} --image {path}"
    with tmux_pane(command, REPO_ROOT, "image") as pane:
        pane.wait_until("Most relevant patches", 60)
        shown = pane.wait_until("class red", 180)
        assert "▀" * 32 in shown  # the 32 x 32 image, one column per pixel
        # the ranked patches may be drawn a frame after the class: wait for them instead of reading one frame
        shown = pane.wait_until("row 1, col 2", 30)
        assert "row 1, col 2" in shown and "● " in shown and "Image F2" in shown
        pane.keys("v")
        pane.wait_until("Image · image", 10)
