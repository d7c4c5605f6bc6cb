"""`xai-tui components`: the printed trace and components, --select, --json / --html, one-line errors."""

import json

import numpy as np
import pytest

from tui.cli import main

ARGS = ["--prompt", "the capital of", "--target", "paris", "--method", "cp-lrp", "--quiet"]


@pytest.fixture(scope="module")
def reference(tiny_dir):
    from lrp_llm.checkpoints.loading import load_model
    from lrp_llm.engines.explain import explain

    model, tok = load_model(str(tiny_dir))
    a = explain(model, tok, "the capital of", target="paris", method="cp-lrp", components=True)
    return model, a


def test_prints_and_writes_the_libraries_numbers(tiny_dir, tmp_path, capsys, reference):
    from lrp_llm.analyses.components import conditional_relevance

    model, a = reference
    out, page = tmp_path / "c.json", tmp_path / "c.html"
    site = "layer.1.attn.head.2"
    code = main(
        ["components", "--model", str(tiny_dir), *ARGS, "--select", site, "--json", str(out), "--html", str(page)]
    )
    assert code == 0
    printed = capsys.readouterr().out
    c = a.targets[0].components
    for name, total in zip(("embedding", "layer 0", "layer 1"), c.layer_totals):
        assert any(line.split("│")[0].strip() == name and f"{total:+.4f}" in line for line in printed.splitlines())
    for s, v in c.top_components("head", 5) + c.top_components("neuron", 5):
        assert f"{s} {v:+.4f}" in printed
    assert f"conditional heatmap of {site}" in printed
    d = json.loads(out.read_text())
    assert d["kind"] == "components" and d["target"] == 0 and d["selected"] == site
    t = a.targets[0]
    want = conditional_relevance(model, a.input_ids[: t.position + 1], t.position, [site], method="cp-lrp")
    np.testing.assert_allclose(d["conditional"], want.heatmaps[0].relevance, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d["attribution"]["targets"][0]["components"]["trace"], c.trace, rtol=1e-5, atol=1e-6)
    html = page.read_text()
    assert "id='components'" in html and f"Conditional heatmap of {site}" in html and "<svg" in html


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--token", "3"], "--token 3 is past the answer"),
        (["--select", "layer.9.mlp"], "layer"),
        (["--method", "saliency"], "gradient x input method"),
    ],
)
def test_mistakes_are_one_line(tiny_dir, capsys, extra, words):
    args = ["components", "--model", str(tiny_dir), *ARGS, *extra]
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code != 0 and words in err and len(err.splitlines()) == 1, err


def test_hostile_tokens_are_data_in_the_html_and_the_terminal(reference):
    import dataclasses
    import io

    from rich.console import Console

    from lrp_llm.export.components_section import ComponentsView
    from lrp_llm.export.report import components_report
    from tui.render_components import render_component_view

    _, a = reference
    hostile = ["<script>alert(1)</script>", "[/b][@click=app.quit]x", "\x1b[31mred\x07", "paris"]
    a = dataclasses.replace(a, tokens=hostile[: len(a.tokens) - 1] + [a.tokens[-1]])
    t = a.targets[0].position
    view = ComponentsView(a, 0, "layer.0.mlp", np.linspace(-1.0, 1.0, t))
    page = components_report(view)
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "\x1b" not in page and "\x07" not in page
    out = io.StringIO()
    render_component_view(Console(file=out, width=200, color_system=None), view)
    text = out.getvalue()
    assert "\x1b" not in text and "\x07" not in text
    assert "[/b][@click=app.quit]x" in text  # shown literally, never parsed as markup
