"""Make the README's SVG screenshots of every view on the bundled models (headless).

    .venv/bin/python docs/screenshots.py        # writes docs/tui-*.svg

SmolLM2-135M-Instruct answers the `make demo` question (Ask & explain, Long range,
Compare, History, Components, Patching); all-MiniLM-L6-v2 compares two sentences (Similarity); the synthetic ViT
explains a drawn red square (Image); the synthetic T5 reverses letters (Source & answer).
A few minutes on a laptop CPU (the patching sweep runs one forward pass per layer and position).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONTEXT = (
    "The Normans (Norman: Nourmands; French: Normands; Latin: Normanni) were the people who in the 10th "
    "and 11th centuries gave their name to Normandy, a region in France."
)
QUESTION = "In what country is Normandy located? Answer briefly."
SENTENCES = ("A man is playing a guitar on stage.", "Someone performs music with an instrument.")
PATCHING = ("The capital of France is", "The capital of Italy is", " Paris", " Rome")
SIZE = (110, 32)


async def wait(app, pilot) -> None:
    await pilot.pause()
    await app.workers.wait_for_complete()
    await pilot.pause()
    if app.status[1] == "error":
        raise SystemExit(app.status[0])


async def shoot(out: Path) -> None:
    from tui.app import XaiApp
    from tui.backend import ModelBackend

    app = XaiApp(ModelBackend(), question=QUESTION, context=CONTEXT)
    async with app.run_test(size=SIZE) as pilot:
        while app.attribution is None:
            await pilot.pause(0.5)
            if app.status[1] == "error":
                raise SystemExit(app.status[0])
        await wait(app, pilot)
        answer = app.attribution.tokens[app.attribution.prompt_length :]
        pick = next((i for i, t in enumerate(answer) if "France" in t), 0)
        app.target = pick
        await pilot.pause()
        app.save_screenshot(str(out / "tui-ask.svg"))
        await pilot.press("ctrl+g")
        await pilot.pause()
        app.save_screenshot(str(out / "tui-ask-words.svg"))
        await pilot.press("ctrl+g", "f3", "j")
        await pilot.pause()
        app.save_screenshot(str(out / "tui-longrange.svg"))
        await pilot.press("f6")  # Compare: AttnLRP, CP-LRP, integrated gradients on the same answer
        while app.screen.missing():
            await pilot.pause(0.5)
            if app.status[1] == "error":
                raise SystemExit(app.status[0])
        await wait(app, pilot)
        await pilot.press("f")  # faithfulness of this one explanation per method
        await wait(app, pilot)
        app.save_screenshot(str(out / "tui-compare.svg"))
        await pilot.press("f7")
        await pilot.pause()
        app.save_screenshot(str(out / "tui-history.svg"))
        await pilot.press("f8")  # Components: the trace grid, the top heads and neurons of the same token
        while app.screen.explained is None:
            await pilot.pause(0.5)
            if app.status[1] == "error":
                raise SystemExit(app.status[0])
        await wait(app, pilot)
        app.screen.query_one("#cpt-list").focus()
        await pilot.press("enter")  # the top component's conditional heatmap
        await wait(app, pilot)
        await pilot.press("a")  # and the effect of zeroing it
        await wait(app, pilot)
        app.save_screenshot(str(out / "tui-components.svg"))
        await pilot.press("f1")
        await pilot.pause()
        app.save_screenshot(str(out / "tui-help.svg"))
        await pilot.press("escape", "f4")
        screen = app.screen
        screen.query_one("#sim-a").insert_text_at_cursor(SENTENCES[0])
        screen.query_one("#sim-b").focus()
        screen.query_one("#sim-b").insert_text_at_cursor(SENTENCES[1])
        await pilot.press("enter")
        await wait(app, pilot)
        app.save_screenshot(str(out / "tui-similarity.svg"))
        await pilot.press("f5")
        screen = app.screen
        for name, text in zip(("clean", "corrupted", "answer", "wrong"), PATCHING):
            screen.query_one(f"#patch-{name}").insert_text_at_cursor(text)
        screen.query_one("#patch-wrong").focus()
        await pilot.press("enter")
        await wait(app, pilot)
        app.save_screenshot(str(out / "tui-patching.svg"))


async def shoot_image(out: Path) -> None:
    """The image view on models/synthetic/vit-coloured-object: a red square on grey, drawn here."""
    import tempfile

    import numpy as np
    from PIL import Image

    from tui.app import XaiApp
    from tui.backend import ImageBackend, LoadOptions

    picture = np.full((64, 64, 3), 190, dtype=np.uint8)
    picture[16:40, 24:48] = (215, 35, 35)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "red-square.png"
        Image.fromarray(picture).save(path)
        backend = ImageBackend(LoadOptions(path=str(ROOT / "models" / "synthetic" / "vit-coloured-object")))
        app = XaiApp(backend, kind="image-classification", image=str(path))
        async with app.run_test(size=SIZE) as pilot:
            while app.image is None:
                await pilot.pause(0.2)
                if app.status[1] == "error":
                    raise SystemExit(app.status[0])
            await wait(app, pilot)
            app.screen.query_one("#img-path").value = "red-square.png"  # not the temporary folder
            await pilot.pause()
            app.save_screenshot(str(out / "tui-image.svg"))


async def shoot_seq2seq(out: Path) -> None:
    """Source & answer on the bundled T5 copy/reverse model (seconds)."""
    from tui.app import XaiApp
    from tui.backend import LoadOptions, ModelBackend

    backend = ModelBackend(LoadOptions(path=str(ROOT / "models/synthetic/t5-copy-reverse")), name="t5-copy-reverse")
    app = XaiApp(backend, question="reverse k e y s", chat=False, kind="seq2seq")
    async with app.run_test(size=SIZE) as pilot:
        while app.attribution is None or app.progress is not None:
            await pilot.pause(0.2)
            if app.status[1] == "error":
                raise SystemExit(app.status[0])
        await wait(app, pilot)
        await pilot.press("right")
        app.refresh_bindings()  # the footer's Esc went with the finished job
        await pilot.pause()
        app.save_screenshot(str(out / "tui-seq2seq.svg"))


if __name__ == "__main__":
    asyncio.run(shoot_image(ROOT / "docs"))
    asyncio.run(shoot_seq2seq(ROOT / "docs"))
    asyncio.run(shoot(ROOT / "docs"))
    print("wrote", *sorted(p.name for p in (ROOT / "docs").glob("tui-*.svg")))
