"""The pieces every subcommand shares: the output files, the model options, the terminal rows."""

from __future__ import annotations

import argparse
import json

import pytest
from rich.console import Console

from lrp_llm.errors import InputError
from tui.backend import BUNDLED_ENCODER_NAME, BUNDLED_MODEL_NAME, EncoderBackend, LoadOptions, ModelBackend
from tui.commands.common import OutputFiles, add_model_args, add_output_args
from tui.render import heatmap, relevance_rgb


class SavedResult:
    """A stand-in result: ``save`` writes its own marker, so the test sees which writer ran."""

    def save(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write('{"saved": true}')


def test_output_files_are_checked_first_and_written_last(tmp_path):
    args = argparse.Namespace(json=str(tmp_path / "r.json"), html=str(tmp_path / "r.html"))
    outputs = OutputFiles.from_args(args)
    outputs.write(SavedResult(), lambda result: f"<p>{type(result).__name__}</p>")
    assert json.loads((tmp_path / "r.json").read_text()) == {"saved": True}
    assert (tmp_path / "r.html").read_text() == "<p>SavedResult</p>"
    # json_text replaces save; no report builder: no page
    OutputFiles(json=str(tmp_path / "t.json"), html=str(tmp_path / "t.html")).write(None, json_text="[1]")
    assert (tmp_path / "t.json").read_text() == "[1]" and not (tmp_path / "t.html").exists()
    # a command without --html (longrange) writes only --json
    OutputFiles.from_args(argparse.Namespace(json=None)).write(SavedResult())
    with pytest.raises(InputError, match="does not exist"):
        OutputFiles.from_args(argparse.Namespace(json=str(tmp_path / "missing" / "r.json"), html=None))
    with pytest.raises(InputError, match="is a folder"):
        OutputFiles.from_args(argparse.Namespace(json=None, html=str(tmp_path)))


def test_output_group_with_and_without_html():
    p = argparse.ArgumentParser()
    add_output_args(p)
    assert vars(p.parse_args(["--json", "a", "--html", "b"])) == {"json": "a", "html": "b", "quiet": False}
    q = argparse.ArgumentParser()
    add_output_args(q, html=False).add_argument("--far", type=int, default=100)
    assert vars(q.parse_args(["--quiet"])) == {"json": None, "quiet": True, "far": 100}
    with pytest.raises(SystemExit):
        q.parse_args(["--html", "b"])


def test_load_options_from_the_command_line():
    p = argparse.ArgumentParser()
    add_model_args(p)
    args = p.parse_args(["--model", "m.gguf", "--dtype", "float32", "--allow-pickle"])
    assert LoadOptions.from_args(args) == LoadOptions(path="m.gguf", dtype="float32", allow_pickle=True)
    assert LoadOptions.from_args(args, path="other").path == "other"
    assert LoadOptions.from_args(p.parse_args([])) == LoadOptions()


def test_backend_names():
    assert ModelBackend().name == BUNDLED_MODEL_NAME and EncoderBackend().name == BUNDLED_ENCODER_NAME
    assert ModelBackend(LoadOptions(path="/ckpt/SmolLM2/")).name == "SmolLM2"
    assert EncoderBackend(LoadOptions(path="/ckpt/minilm")).name == "minilm"
    assert ModelBackend.from_model(object(), object()).name == "model"
    encoder = EncoderBackend.from_model(object(), object())
    assert encoder.name == "encoder" and encoder.loaded and isinstance(encoder, EncoderBackend)


def _spans(text) -> list[tuple[str, str]]:
    return [(text.plain[s.start : s.end], str(s.style)) for s in text.spans]


def test_heatmap_scale_and_separator():
    red = "black on rgb({},{},{})".format(*relevance_rgb(1.0, 1.0))
    # default scale: the largest |value|; the token after the values is marked, later ones dim
    t = heatmap(["a", "b", "c", "d"], [2.0, -1.0], mark=2)
    assert t.plain == "abcd"
    assert _spans(t) == [
        ("a", red),
        ("b", "black on rgb({},{},{})".format(*relevance_rgb(-1.0, 2.0))),
        ("c", "bold underline"),
        ("d", "dim"),
    ]
    # a given scale and a separator after each coloured token
    t = heatmap(["x", "y", "z"], [0.5, 4.0], mark=2, scale=4.0, sep=" ")
    assert t.plain == "x y z"
    assert _spans(t)[0] == ("x", "black on rgb({},{},{})".format(*relevance_rgb(0.5, 4.0)))
    assert _spans(t)[1] == ("y", red)
    console = Console(width=40, color_system=None)
    with console.capture() as cap:
        console.print(t)
    assert cap.get() == "x y z\n"
