"""`xai-tui explain` on T5 (source + decoder relevance) and ViT (`--image`): files and one-line errors."""

import json

import numpy as np
import pytest

from synthetic_tasks import copy_reverse
from tests.support.tiny_t5_vit import tiny_t5, tiny_vit
from tui.cli import main


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "t5"
    tok = copy_reverse.make_tokenizer()
    tiny_t5("v1.1", vocab=len(tok)).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "vit"
    tiny_vit().save_pretrained(str(path))  # no preprocessor_config.json: the standard ViT one is used
    return path


@pytest.fixture(scope="module")
def png(tmp_path_factory):
    from PIL import Image

    path = tmp_path_factory.mktemp("img") / "x.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, size=(24, 20, 3), dtype=np.uint8)).save(path)  # resized to 16 x 16
    return path


def test_t5_json_keeps_source_and_decoder_apart(t5_dir, tmp_path, capsys):
    out, html = tmp_path / "t.json", tmp_path / "t.html"
    code = main(["explain", "--model", str(t5_dir), "--prompt", "reverse a b c", "--target", "c b a",
                 "--method", "cp-lrp", "--json", str(out), "--html", str(html), "--quiet"])  # fmt: skip
    assert code == 0
    d = json.loads(out.read_text())
    assert d["source_tokens"] == ["reverse", "a", "b", "c", "</s>"]
    assert d["tokens"] == ["<pad>", "c", "b", "a"] and d["prompt_length"] == 1
    for t in d["targets"]:
        assert len(t["source_relevance"]) == len(d["source_tokens"]) and len(t["relevance"]) == t["position"]
        both = sum(t["source_relevance"]) + sum(t["relevance"])
        assert t["relevance_sum"] == pytest.approx(both, rel=1e-4, abs=1e-6)
        assert t["conservation"] == pytest.approx(1.0, abs=1e-3)
    text = html.read_text()
    assert text.startswith("<!DOCTYPE html>") and "<i>source</i>" in text and "http" not in text.split("<body>")[1]
    shown = capsys.readouterr().out
    assert "source" in shown and "decoder" in shown


def test_t5_generate(t5_dir, tmp_path):
    out = tmp_path / "g.json"
    assert main(["explain", "--model", str(t5_dir), "--prompt", "copy d e", "--generate", "3",
                 "--json", str(out), "--quiet", "--heatmap", "none"]) == 0  # fmt: skip
    d = json.loads(out.read_text())
    assert 1 <= len(d["targets"]) <= 3 and d["method"] == "attnlrp"


def test_vit_image_json_and_html(vit_dir, png, tmp_path, capsys):
    out, html = tmp_path / "i.json", tmp_path / "i.html"
    code = main(["explain", "--model", str(vit_dir), "--image", str(png), "--json", str(out), "--html", str(html)])
    assert code == 0
    d = json.loads(out.read_text())
    assert np.asarray(d["pixel_relevance"]).shape == (16, 16) and np.asarray(d["patch_relevance"]).shape == (4, 4)
    assert d["source"] == str(png) and d["label"] == d["top_labels"][0][0]
    assert sum(map(sum, d["patch_relevance"])) == pytest.approx(sum(map(sum, d["pixel_relevance"])), rel=1e-4)
    text = html.read_text()
    body = text.split("<body>")[1]
    assert text.startswith("<!DOCTYPE html>") and body.count("data:image/png;base64,") == 3 and "http" not in body
    assert "relevance per patch" in capsys.readouterr().out


def test_vit_target_by_index_and_method(vit_dir, png, tmp_path):
    out = tmp_path / "j.json"
    assert main(["explain", "--model", str(vit_dir), "--image", str(png), "--target", "1",
                 "--method", "attnlrp", "--json", str(out)]) == 0  # fmt: skip
    d = json.loads(out.read_text())
    assert d["label_id"] == 1 and d["method"] == "attnlrp"


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_bytes(b"this is not a picture"), "not an image file"),
        (lambda p: p.write_bytes(_png_bytes()[:120]), "truncated or corrupt"),
        (lambda p: None, "no such image"),
        (lambda p: p.mkdir(), "is a folder"),
    ],
)
def test_bad_images_give_one_line_errors_and_no_output(vit_dir, tmp_path, capsys, make, message):
    image = tmp_path / "bad.png"
    make(image)
    out = tmp_path / "o.json"
    code = main(["explain", "--model", str(vit_dir), "--image", str(image), "--json", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "{t5}", "--image", "{png}"], "needs an image classifier"),
        (["--model", "{vit}", "--prompt", "hello"], "pass one with --image"),
        (["--model", "{vit}", "--image", "{png}", "--generate", "3"], "--generate is for text models"),
        (["--model", "{vit}", "--image", "{png}", "--target", "zebra"], "unknown label"),
    ],
)
def test_mismatched_model_and_input_give_one_line_errors(t5_dir, vit_dir, png, tmp_path, capsys, args, message):
    out = tmp_path / "o.json"
    args = [a.format(t5=t5_dir, vit=vit_dir, png=png) for a in args]
    code = main(["explain", *args, "--json", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def _png_bytes() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()
