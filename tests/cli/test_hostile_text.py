"""Fuzz: hostile text in every field of the CLI never reaches the terminal raw.

Prompts, targets, contexts, model and file names, file contents and tokens carry terminal
escapes (OSC 0/8/52, CSI, C1), bidi overrides, markup-like text and surrogates. With colour
off (a pipe, NO_COLOR, TERM=dumb) any ESC or C1 in the output is a leak; with colour forced
on, the only escape sequences allowed are SGR. Every run ends with exit 0, or 2 and one
``error:`` line, never a traceback; outputs are written as strict UTF-8, so a lone surrogate
reaching an encoder would fail the test too.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from unittest import mock

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis.control import currently_in_test_context

from tests.support import REPO_ROOT
from tests.support.hostile import MARKUP, NASTY, OSC_TITLE, hostile_text, leaks
from tui.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

CORPUS = ["The capital of France is Paris. The capital of Italy is Rome. The cat sat on the mat."] * 4
COLOUR_OFF = [{"NO_COLOR": "1"}, {"TERM": "dumb"}, {}]  # captured output is a pipe in every case
COLOUR_ON = {"FORCE_COLOR": "1", "COLORTERM": "truecolor", "TERM": "xterm-256color"}
SURROGATE = re.compile("[\ud800-\udfff]")
FUZZ = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory):
    """A tiny Llama with a byte-level BPE tokenizer over all 256 bytes: any text, ESC and C1
    included, becomes tokens whose strings carry it back out."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from tests.support.models import tiny_causal_lm

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(CORPUS, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    tok.chat_template = (
        "{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] + '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
    )
    path = tmp_path_factory.mktemp("bpe") / "tiny"
    tiny_causal_lm("llama", vocab=len(tok), eos_token_id=2, bos_token_id=1).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def hostile_dir(bpe_dir, tmp_path_factory):
    """The same checkpoint in a folder whose name retitles the terminal and holds markup."""
    import shutil

    path = tmp_path_factory.mktemp("named") / f"m{OSC_TITLE}[/b]\u202e"
    shutil.copytree(bpe_dir, path)
    return path


def file_bytes(text: str) -> bytes:
    """``text`` as a file's bytes; its surrogates become bytes that are not valid UTF-8."""
    return text.encode("utf-8", "surrogatepass")


def run_cli(argv: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``main(argv)`` with stdout and stderr as strict UTF-8 pipes; (exit code, stdout, stderr)."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    clean = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR", "COLORTERM", "TERM")}
    with mock.patch.dict(os.environ, {**clean, **(env or {})}, clear=True), redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse
            code = exc.code
    texts = []
    for stream in (out, err):
        stream.flush()
        texts.append(stream.buffer.getvalue().decode("utf-8"))
    return code, texts[0], texts[1]


def check(code: int, out: str, err: str, *, colour: bool = False, ok: tuple[int, ...] = (0, 2)) -> None:
    if currently_in_test_context():
        event(f"exit {code}")  # --hypothesis-show-statistics: how many runs got through to the output
    assert code in ok, err
    assert "Traceback" not in err
    assert leaks(out) == [] and leaks(err) == []
    if not colour:
        assert "\x1b" not in out + err
    if code == 2:  # one error line, the last (argparse's usage block above it is issue 17 section 6)
        assert err.count("error:") == 1 and "error:" in err.rstrip("\n").splitlines()[-1], err


# ------------------------------------------------------------------ explain
@pytest.mark.parametrize("env", COLOUR_OFF + [COLOUR_ON], ids=["NO_COLOR", "TERM=dumb", "pipe", "FORCE_COLOR"])
def test_explain_hostile_target_and_prompt_in_every_colour_mode(bpe_dir, env):
    colour = env is COLOUR_ON
    printed = ""
    for s in NASTY:
        code, out, err = run_cli(
            ["explain", "--model", str(bpe_dir), "--prompt", f"The capital {s}", "--target", f" {s} x", "--quiet"],
            env,
        )
        # a lone surrogate cannot be tokenised: one error line (the message is made visible)
        check(code, out, err, colour=colour, ok=(2,) if SURROGATE.search(s) else (0,))
        printed += out
        if s == OSC_TITLE:
            assert "␛]0;PWNED␇" in out  # shown, visibly
        if s in MARKUP:
            assert s.split("]")[0] in out  # markup-like text printed as it is
    if colour:
        assert "\x1b[" in printed  # the check saw real colour output


@FUZZ
@given(prompt=hostile_text(), target=hostile_text(), context=hostile_text())
def test_explain_fuzz(bpe_dir, prompt, target, context):
    # --opt=VALUE: a value may start with "-", which argparse would take for an option
    for argv in (
        [f"--prompt={prompt}", f"--target={target}"],
        [f"--prompt={prompt}", f"--context={context}", f"--target={target}", f"--system={context}"],
        [f"--prompt={prompt}", "--generate", "2", f"--heatmap={target}"],
    ):
        code, out, err = run_cli(["explain", "--model", str(bpe_dir), *argv, "--quiet"])
        check(code, out, err)


def test_model_folder_name_is_shown_visibly(hostile_dir):
    code, out, err = run_cli(["explain", "--model", str(hostile_dir), "--prompt", "The cat", "--target", " sat"])
    check(code, out, err, ok=(0,))
    assert "m␛]0;PWNED␇[/b]\\u202e" in out


@pytest.mark.parametrize("s", NASTY)
def test_hostile_model_paths_in_error_lines(s, tmp_path):
    missing = f"/nonexistent/{s}"
    for argv in (
        ["explain", "--model", missing, "--prompt", "x"],
        ["app", missing],
        ["open", missing],
        ["similarity", "--model", missing, "--a", s, "--b", s],
        ["longrange", "--model", missing, "--file", missing],
        ["evaluate", "--data", missing],
        ["explain", "--prompt", "x", "--json", f"{tmp_path}/no/such/{s}.json"],
        ["explain", "--prompt", "x", f"--unknown{s}", s],  # argparse quotes what it did not recognise
    ):
        code, out, err = run_cli(argv)
        check(code, out, err, ok=(2,))
        assert out == ""


def test_the_issue_cases_in_a_real_process(bpe_dir):
    """As reported: the target sets the title with --quiet; an error line about --model sets it."""
    cases = [
        (["explain", "--model", str(bpe_dir), "--prompt", "Hello", "--target", f" {OSC_TITLE} x", "--quiet"], 0),
        (["explain", "--model", f"/nonexistent/{OSC_TITLE}", "--prompt", "Hello"], 2),
    ]
    for argv, expected in cases:
        proc = subprocess.run(
            [sys.executable, "-m", "tui.cli", *argv],
            cwd=REPO_ROOT,
            capture_output=True,
            timeout=300,
            env={**os.environ, "NO_COLOR": "1"},
        )
        assert proc.returncode == expected, proc.stderr
        for stream in (proc.stdout, proc.stderr):
            assert b"\x1b" not in stream and b"\x07" not in stream
        assert "␛]0;PWNED␇".encode() in proc.stdout + proc.stderr


# ------------------------------------------------------------ other commands
@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    from synthetic_tasks.shared_nouns import VOCAB, make_tokenizer
    from tests.support.encoders import tiny_encoder

    path = tmp_path_factory.mktemp("sim") / "tiny-bert"
    tiny_encoder(vocab=len(VOCAB)).save_pretrained(str(path))
    make_tokenizer().save_pretrained(str(path))
    return path


@FUZZ
@given(a=hostile_text(), b=hostile_text())
def test_similarity_fuzz(encoder_dir, tmp_path_factory, a, b):
    corpus = tmp_path_factory.mktemp("corpus") / "lines.txt"
    corpus.write_bytes(file_bytes(f"{b}\nthe cat\n{a}\n"))
    argv = [f"--a=the cat {a}", "--b-file", str(corpus), "--quiet", "--top", "2", "--show", "1"]
    code, out, err = run_cli(["similarity", "--model", str(encoder_dir), *argv])
    check(code, out, err)


def test_similarity_prints_texts_and_ranked_lines_visibly(encoder_dir, tmp_path):
    corpus = tmp_path / "lines.txt"
    corpus.write_text("\n".join(f"the dog {s}" for s in NASTY[:13]), encoding="utf-8")
    code, out, err = run_cli(
        ["similarity", "--model", str(encoder_dir), "--a", f"the cat {OSC_TITLE}", "--b-file", str(corpus), "--quiet"]
    )
    check(code, out, err, ok=(0,))
    assert "␛]0;PWNED␇" in out
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"the cat \xff\x1b]0;x\x07\n")
    check(*run_cli(["similarity", "--model", str(encoder_dir), "--a", "x", "--b-file", str(bad)]), ok=(2,))


@FUZZ
@given(prefix=hostile_text())
def test_patch_fuzz(bpe_dir, prefix):
    clean, corrupted = f"{prefix} The capital of France is", f"{prefix} The capital of Italy is"
    argv = ["--clean", clean, "--corrupted", corrupted, "--answer", " Paris", "--wrong", " Rome"]
    code, out, err = run_cli(["patch", "--model", str(bpe_dir), *argv, "--sites", "resid", "--quiet"])
    check(code, out, err)


def test_patch_tokens_are_shown_visibly(bpe_dir):
    argv = ["--clean", f"{OSC_TITLE} France is", "--corrupted", f"{OSC_TITLE} Italy is"]
    argv += ["--answer", " Paris", "--wrong", " Rome", "--sites", "resid", "--top", "30", "--quiet"]
    code, out, err = run_cli(["patch", "--model", str(bpe_dir), *argv])
    check(code, out, err, ok=(0,))
    assert "␛" in out


@FUZZ
@given(text=hostile_text())
def test_longrange_fuzz(bpe_dir, tmp_path_factory, text):
    doc = tmp_path_factory.mktemp("doc") / "doc.txt"
    doc.write_bytes(file_bytes(f"The cat {text} sat on the mat. {text}"))
    code, out, err = run_cli(
        ["longrange", "--model", str(bpe_dir), "--file", str(doc), "--far", "1", "--top", "40", "--quiet"]
    )
    check(code, out, err)


def test_longrange_shows_model_and_tokens_visibly(hostile_dir, tmp_path):
    doc = tmp_path / f"doc{OSC_TITLE}.txt"
    doc.write_text(f"The cat [/b] {OSC_TITLE} sat on the mat", encoding="utf-8")
    code, out, err = run_cli(["longrange", "--model", str(hostile_dir), "--file", str(doc), "--far", "1", "--quiet"])
    check(code, out, err, ok=(0,))
    assert "[/b]" in out and "␛" in out
    bad = tmp_path / f"bad{OSC_TITLE}.txt"
    bad.write_bytes(b"caf\xe9 \x9b2J")
    check(*run_cli(["longrange", "--model", str(hostile_dir), "--file", str(bad)]), ok=(2,))


def test_evaluate_data_errors_are_visible(tmp_path):
    data = tmp_path / f"d{OSC_TITLE}.jsonl"
    data.write_bytes(b'{"text": "\xff\x1b]0;x\x07"}\n')
    check(*run_cli(["evaluate", "--data", str(data)]), ok=(2,))
    data.write_text('{"question": "\\u001b]0;PWNED\\u0007", "answer": 3}\n', encoding="utf-8")
    check(*run_cli(["evaluate", "--data", str(data)]), ok=(2,))


def test_open_refuses_a_missing_file_with_a_visible_name(tmp_path):
    code, out, err = run_cli(["open", str(tmp_path / f"{OSC_TITLE}[/b].json")])
    check(code, out, err, ok=(2,))
    assert "␛]0;PWNED␇[/b]" in err
