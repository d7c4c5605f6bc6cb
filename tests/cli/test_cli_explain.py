"""`xai-tui explain`: the JSON contract, the HTML file and one-line errors."""

import json
import subprocess
import sys

import pytest

from tui.cli import main


def test_explain_writes_the_json_contract_and_html(tiny_dir, tmp_path, capsys):
    out, html = tmp_path / "a.json", tmp_path / "a.html"
    code = main(
        [
            "explain",
            "--model",
            str(tiny_dir),
            "--prompt",
            "what country",
            "--context",
            "paris is in france",
            "--generate",
            "3",
            "--json",
            str(out),
            "--html",
            str(html),
            "--quiet",
        ]
    )
    assert code == 0
    d = json.loads(out.read_text())
    assert d["method"] == "attnlrp-qk-late" and d["model"] == str(tiny_dir)  # the Llama family's default
    assert len(d["tokens"]) == len(d["input_ids"]) > d["prompt_length"]
    assert d["tokens"][0] == "<|user|>"
    assert isinstance(d["seconds"], float)
    for t in d["targets"]:
        assert d["tokens"][t["position"]] == t["token"]
        assert d["input_ids"][t["position"]] == t["id"]
        assert len(t["relevance"]) == t["position"]
        assert t["relevance_sum"] == pytest.approx(sum(t["relevance"]), rel=1e-4, abs=1e-6)
        assert isinstance(t["logit"], float)
    text = html.read_text()
    assert text.startswith("<!DOCTYPE html>") and "http" not in text.split("<body>")[1]
    assert "answer" in capsys.readouterr().out


def test_forced_target_and_methods(tiny_dir, tmp_path):
    for method in ("cp-lrp", "grad-x-input", "saliency", "integrated-gradients", "random"):
        out = tmp_path / f"{method}.json"
        assert (
            main(
                [
                    "explain",
                    "--model",
                    str(tiny_dir),
                    "--prompt",
                    "the old",
                    "--target",
                    "city of paris",
                    "--method",
                    method,
                    "--steps",
                    "4",
                    "--json",
                    str(out),
                    "--quiet",
                    "--heatmap",
                    "none",
                ]
            )
            == 0
        )
        d = json.loads(out.read_text())
        assert d["method"] == method and [t["token"] for t in d["targets"]] == ["city", "of", "paris"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "{tmp}/nope", "--prompt", "x"], "no such file or folder"),
        (["--model", "{tmp}", "--prompt", "x"], "has no config.json"),
        (["--model", "{tiny}", "--prompt", "   "], "prompt is empty"),
        (["--model", "{tiny}", "--prompt", "the " * 300, "--target", "old"], "context is 256"),
        (["--model", "{tiny}", "--prompt", "the", "--generate", "0"], "--generate must be at least 1"),
        (["--model", "{tiny}", "--prompt", "the", "--json", "{tmp}/no/such/dir/a.json"], "does not exist"),
        (["--model", "{tiny}", "--prompt", "the", "--target", "old", "--heatmap", "7"], "out of range"),
    ],
)
def test_user_errors_are_one_line_with_no_output_file(tiny_dir, tmp_path, capsys, args, message):
    out = tmp_path / "out.json"
    args = [a.format(tmp=tmp_path, tiny=tiny_dir) for a in args]
    if "--json" not in args:
        args += ["--json", str(out)]
    code = main(["explain", *args, "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err and "\n" not in err and "Traceback" not in err
    assert not out.exists()
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_the_installed_command_reports_errors_without_traceback(tmp_path):
    bad = tmp_path / "weights.gguf"
    bad.write_bytes(b"not a gguf at all")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tui",
            "explain",
            "--model",
            str(bad),
            "--prompt",
            "hi",
            "--json",
            str(tmp_path / "o.json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o.json").exists()


def test_an_embedding_model_is_pointed_to_the_similarity_command(tmp_path, capsys):
    from lrp_llm.checkpoints.loading import demo_embedding_path

    code = main(
        ["explain", "--model", str(demo_embedding_path()), "--prompt", "hi", "--json", str(tmp_path / "o.json")]
    )
    err = capsys.readouterr().err
    assert code == 2 and "xai-tui similarity" in err and not (tmp_path / "o.json").exists()


def test_template_tokens_are_listed_apart_and_left_out_of_the_scale(tiny_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # the table and the legend on one line each
    out = tmp_path / "a.json"
    args = ["explain", "--model", str(tiny_dir), "--prompt", "what country", "--context", "paris is in france"]
    assert main([*args, "--target", "france", "--json", str(out), "--quiet"]) == 0
    shown = capsys.readouterr().out
    template = json.loads(out.read_text())["meta"]["template_positions"]
    assert 0 in template  # the chat template's user header
    assert "template tokens" in shown and "without special / template tokens" in shown
    assert main([*args, "--target", "france", "--quiet", "--scale-all"]) == 0
    assert "without special / template tokens" not in capsys.readouterr().out
