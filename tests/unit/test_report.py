"""HTML reports (lrp_llm.export): escaping, well-formedness, colour levels, the compact
encoding, large inputs, the sections, atomic writing, the CLI's --html."""

from __future__ import annotations

import base64
import json
import math
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lrp_llm.analyses.words import aggregate, word_spans
from lrp_llm.export import longrange_section, token_section
from lrp_llm.export.common import clean_text, esc, level_class
from lrp_llm.export.levels import colour_level
from lrp_llm.export.report import explanation_report, patching_report, similarity_report, write_report
from tests.support.reports import NASTY, make_attribution

# Elements and attributes a report may contain; anything else came from the input.
TAGS = {
    "html", "head", "meta", "title", "style", "body", "script", "h1", "h2", "h3", "table", "tr", "th", "td",
    "section", "p", "nav", "a", "div", "input", "label", "span", "noscript", "details", "summary", "svg",
    "line", "text", "g", "rect", "path", "i", "b", "ul", "li", "br", "figure", "img", "figcaption",
}  # fmt: skip
ATTRS = {
    "lang", "charset", "http-equiv", "content", "name", "id", "class", "title", "href", "data-t", "type",
    "for", "width", "height", "viewbox", "role", "aria-label", "aria-hidden", "x", "y", "x1", "y1", "x2", "y2",
    "text-anchor", "transform", "fill", "stroke-width", "d", "font-weight", "alt", "src", "hidden",
}  # fmt: skip
VOID = {"meta", "input", "br", "img"}
SVG_SELF_CLOSING = {"line", "rect", "path"}


class StrictTree(HTMLParser):
    """Parses a report and fails on anything not well formed: unknown elements or
    attributes, end tags that do not match, elements left open, comments.

    ``elements[i]`` is (tag, attributes) of the i-th start tag, ``parents[i]`` the index of
    the element it sits in, :meth:`text_of` the text directly inside an element.
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.open_idx: list[int] = []
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.parents: list[int | None] = []
        self.texts: dict[int, list[str]] = {}
        self.errors: list[str] = []
        self.decl: list[str] = []

    def handle_decl(self, decl: str) -> None:
        self.decl.append(decl)

    def handle_starttag(self, tag, attrs):
        self._start(tag, attrs, closed=False)

    def handle_startendtag(self, tag, attrs):
        self._start(tag, attrs, closed=True)

    def _start(self, tag, attrs, closed):
        if tag not in TAGS:
            self.errors.append(f"unexpected element <{tag}>")
        for k, _ in attrs:
            if k not in ATTRS:
                self.errors.append(f"unexpected attribute {k} on <{tag}>")
        self.parents.append(self.open_idx[-1] if self.open_idx else None)
        self.elements.append((tag, dict(attrs)))
        if closed and tag not in SVG_SELF_CLOSING:
            self.errors.append(f"<{tag}/> is not an element that may close itself")
        if tag not in VOID and not closed:
            self.stack.append(tag)
            self.open_idx.append(len(self.elements) - 1)

    def handle_endtag(self, tag):
        if tag in VOID:
            self.errors.append(f"end tag of void element </{tag}>")
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> does not close {self.stack[-1:] or 'anything'}")
            return
        self.stack.pop()
        self.open_idx.pop()

    def handle_data(self, data):
        if self.open_idx:
            self.texts.setdefault(self.open_idx[-1], []).append(data)

    def handle_comment(self, data):
        self.errors.append("comment in the output")

    def text_of(self, index: int) -> str:
        return "".join(self.texts.get(index, []))


def parse_tree(doc: str) -> StrictTree:
    tree = StrictTree()
    tree.feed(doc)
    tree.close()
    assert not tree.errors, tree.errors[:5]
    assert not tree.stack, f"left open: {tree.stack}"
    assert tree.decl == ["DOCTYPE html"]
    return tree


def data_of(doc: str) -> dict:
    m = re.search(r"<script type='application/json' id='xai-data'>(.*?)</script>", doc, re.S)
    assert m
    return json.loads(m.group(1))


def floats(b64: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(b64), dtype="<f4")


def token_spans(tree: StrictTree, ident: str) -> list[int]:
    start = next(i for i, (_, a) in enumerate(tree.elements) if a.get("id") == ident)
    return [i for i in range(start + 1, len(tree.elements)) if tree.parents[i] == start]


# ------------------------------------------------------------------- escaping
def check_report(tokens: list[str], prompt_length: int, model: str) -> None:
    a = make_attribution(tokens, prompt_length, model=model)
    doc = explanation_report(a)
    tree = parse_tree(doc)
    tags = [t for t, _ in tree.elements]
    assert tags.count("script") == 2  # the data and the page's own script, nothing from the input
    # each token is exactly one span whose whole text is the token (so nothing in it became markup)
    spans = token_spans(tree, "tv0")
    assert len(spans) == len(tokens)
    for i, tok in zip(spans, tokens):
        assert tree.text_of(i) == clean_text(token_section.shown(tok))
        assert tree.elements[i][0] == "span" and not any(tree.parents[j] == i for j in range(len(tree.elements)))
    # answer links carry the token in their text and title, unbroken
    links = [i for i, (t, at) in enumerate(tree.elements) if t == "a" and at.get("data-t", "-1") != "-1"]
    assert len(links) == len(a.targets)
    for i, k in zip(links, range(len(a.targets))):
        assert tree.text_of(i) == clean_text(token_section.shown(a.targets[k].token))
        assert tree.elements[i][1]["title"] == clean_text(token_section.target_title(a, k))
    title = next(i for i, (t, _) in enumerate(tree.elements) if t == "title")
    assert clean_text(model) in tree.text_of(title)
    # no network: no address anywhere outside the page itself
    for _, attrs in tree.elements:
        assert (attrs.get("href") or "#").startswith("#")
        assert attrs.get("src") is None or attrs["src"].startswith("data:")
    assert "url(" not in doc and "@import" not in doc
    doc.encode("utf-8")  # writable


@pytest.mark.parametrize("nasty", NASTY)
def test_html_special_sequences_render_as_text(nasty):
    tokens = ["<s>", nasty, " The", nasty, " Paris", nasty]
    check_report(tokens, 3, model=nasty or "m")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tokens=st.lists(
        st.one_of(st.sampled_from(NASTY), st.text(alphabet=st.characters(codec=None), max_size=6)),
        min_size=2,
        max_size=12,
    ),
    cut=st.integers(min_value=1, max_value=11),
    model=st.text(max_size=20),
)
def test_random_unicode_gives_well_formed_html_with_no_element_from_the_input(tokens, cut, model):
    check_report(tokens, min(cut, len(tokens) - 1), model)


@settings(max_examples=25, deadline=None)
@given(text=st.lists(st.one_of(st.sampled_from(NASTY), st.text(max_size=5)), min_size=2, max_size=6))
def test_similarity_and_patching_reports_escape_everything(text):
    from lrp_llm.results.similarity import SimilarityExplanation
    from patching.result import Grid, PatchingResult

    rng = np.random.default_rng(1)
    n = len(text)
    e = SimilarityExplanation(
        model=text[0], method="bilrp", rules="cp-lrp", pooling="mean", mode="cosine", text_a="".join(text),
        text_b=text[-1], tokens_a=text, tokens_b=text[::-1], interactions=rng.normal(size=(n, n)),
        similarity=0.5, dot=2.0, interaction_sum=0.49, seconds=0.1,
    )  # fmt: skip
    tree = parse_tree(similarity_report([e, e]))
    assert [t for t, _ in tree.elements].count("script") == 0
    assert sum(1 for t, a in tree.elements if t == "rect" and "class" in a and a["class"] != "nan") >= 2 * n * n
    g = Grid(
        "resid", "sweep", "denoise", "recovery", [f"layer.{i}.resid" for i in range(2)], text, rng.normal(size=(2, n))
    )
    r = PatchingResult(
        model=text[0], clean_tokens=text, corrupted_tokens=text[::-1], clean_ids=list(range(n)),
        corrupted_ids=list(range(n)), answer=text[0], wrong=text[-1], answer_id=1, wrong_id=2,
        baseline={"clean": {"logit_diff": 1.0, "p_answer": 0.5, "p_wrong": 0.1},
                  "corrupted": {"logit_diff": -1.0, "p_answer": 0.1, "p_wrong": 0.5}},
        grids=[g],
    )  # fmt: skip
    tree = parse_tree(patching_report(r))
    assert [t for t, _ in tree.elements].count("script") == 0


# -------------------------------------------------------------- colours and data
def test_level_classes():
    assert level_class(3) == "p3" and level_class(-4) == "n4" and level_class(0) == "p0"


def test_static_view_and_encoded_data_match_hand_computation():
    tokens = ["<s>", "The", " Norm", "ans", " lived", " in", " France", ".", " Paris", " is"]
    a = make_attribution(tokens, 8)
    doc = explanation_report(a)
    tree = parse_tree(doc)
    data = data_of(doc)
    assert data["pl"] == 8 and data["def"] == -1 and len(data["sel"]) == 2
    for k, t in enumerate(a.targets):
        assert np.array_equal(floats(data["sel"][k]["v"][0]), t.relevance) and data["sel"][k]["m"] == [t.position]
    total = a.targets[0].relevance.astype(np.float64).copy()
    total = np.pad(total, (0, 1)) + a.targets[1].relevance
    assert np.allclose(floats(data["sum"]["v"][0]), total, atol=1e-6)
    # the static markup shows the summed view, coloured by hand: 10 v / max |v| rounded, half-steps away from 0
    s = floats(data["sum"]["v"][0]).astype(np.float64)
    scale = np.abs(s).max()
    spans = token_spans(tree, "tv0")
    classes = [tree.elements[i][1]["class"] for i in spans]
    for j, c in enumerate(classes):
        if j < len(s):
            k = int(math.copysign(math.floor(abs(s[j] / scale * 10) + 0.5), s[j]))
            assert c.split()[0] == (f"p{k}" if k >= 0 else f"n{-k}")
        else:
            assert c.split()[0] == "x"
    assert "tg" in classes[8] and "tg" in classes[9] and "a" in classes[8].split() and "a" not in classes[7].split()
    # the word view sums sub-word tokens (words.aggregate) and its spans follow words.word_spans
    spans_w = word_spans(tokens, [8])
    assert data["w"][0] == [s0 for s0, _ in spans_w] + [len(tokens)]
    words = aggregate(np.pad(s, (0, len(tokens) - len(s))), spans_w)
    wscale = np.abs(words[: len(spans_w) - 1]).max()
    wclasses = [tree.elements[i][1]["class"].split()[0] for i in token_spans(tree, "wv0")]
    assert len(wclasses) == len(spans_w)
    assert wclasses[2] == level_class(colour_level(words[2], wscale))  # " Normans": two tokens summed
    assert tree.text_of(token_spans(tree, "wv0")[2]) == " Normans"


def test_one_target_is_shown_directly_and_encoder_decoder_has_two_boxes():
    a = make_attribution(["<pad>", "▁Haus", "▁ist"], 1, targets=[2], source=["▁Das", "▁Haus", "</s>"])
    doc = explanation_report(a)
    tree = parse_tree(doc)
    data = data_of(doc)
    assert data["def"] == 0 and len(data["sel"][0]["v"]) == 2
    assert np.allclose(floats(data["sel"][0]["v"][0]), a.targets[0].source_relevance)
    assert "<i>source</i>" in doc and "<i>decoder</i>" in doc
    assert len(token_spans(tree, "tv0")) == 3 and len(token_spans(tree, "tv1")) == 3
    assert 'href="#sum"' not in doc  # one answer token: no summed view


def test_no_target_and_no_answer_still_render():
    a = make_attribution(["a", "b"], 2, targets=[])
    tree = parse_tree(explanation_report(a))
    assert any(t == "section" and at.get("id") == "tokens" for t, at in tree.elements)


def test_large_input_stays_compact():
    """4000 tokens x 100 answer tokens: no style per token, 4 bytes per value, bounded fallback."""
    n, t = 4000, 100
    tokens = [f" w{i % 97}" for i in range(n)]
    a = make_attribution(tokens, n - t)
    doc = explanation_report(a)
    values = sum(len(x.relevance) for x in a.targets)
    assert len(doc) < 4 * values * 4 / 3 + 2_500_000  # data + two views + the fallback
    assert "style=" not in doc.split("<body>")[1]
    spans = doc.count("<span")
    assert spans < 2 * n + token_section.NOSCRIPT_BUDGET + n + 200
    assert "more answer tokens are shown only with JavaScript" in doc
    fallback_blocks = doc.count("<div class='block'")
    assert fallback_blocks == token_section.NOSCRIPT_BUDGET // n


# ------------------------------------------------------------------ long range
def test_longrange_profile_by_hand():
    tokens = [f"t{i}" for i in range(40)]
    a = make_attribution(tokens, 38, targets=[38, 39])
    r = np.zeros(38, dtype=np.float32)
    r[0], r[5], r[30], r[37] = 2.0, -1.0, 0.5, 4.0  # distances 38, 33, 8, 1
    a.targets[0].relevance = r
    a.targets[1].relevance = np.zeros(39, dtype=np.float32)
    a.targets[1].relevance[38] = 1.0  # distance 1 for the second target
    d = longrange_section.profile(a, far=32)
    assert d["edges"] == [1, 2, 4, 8, 16, 32, 64]
    assert d["positive"] == [5.0, 0, 0, 0.5, 0, 2.0] and d["negative"] == [0, 0, 0, 0, 0, 1.0]
    assert d["far_share"] == pytest.approx(3.0 / 8.5)
    assert [(f["index"], f["distance"], f["value"]) for f in d["far_tokens"]] == [(0, 38, 2.0), (5, 33, -1.0)]
    # per answer token, through lrp_llm.analyses.longrange.summarize
    one = longrange_section.per_target(a, far=32)[0]
    assert one["far_share"] == pytest.approx(3.0 / 7.5) and one["positive"] == [4.0, 0, 0, 0.5, 0, 2.0]
    assert one["farthest"] == {"index": 0, "distance": 38, "token": "t0", "fraction": 0.1}
    assert one["share_beyond"] == {100: 0.0, 1000: 0.0}
    doc = explanation_report(a)
    tree = parse_tree(doc)
    blocks = {at["id"]: "hidden" in at for t, at in tree.elements if t == "div" and at.get("class") == "lr"}
    assert blocks == {"lr-sum": False, "lr-t0": True, "lr-t1": True}  # the script shows the selected one
    assert "35.3% of all |relevance| lies more than 32 tokens" in doc and "40.0% of all |relevance|" in doc
    svg_rects = [at for t, at in tree.elements if t == "rect" and at.get("class") in ("pos", "neg")]
    assert len(svg_rects) == 3 * 2 * 6
    # short inputs have no long-range section; a given dict (absolute/signed form) is shown as is
    assert "id='longrange'" not in explanation_report(make_attribution(tokens[:6], 4))
    given_d = {"edges": [1, 2, 4], "absolute": [1.0, 3.0], "signed": [1.0, -1.0], "far": 2, "far_share": 0.75}
    doc = explanation_report(make_attribution(tokens[:6], 4), longrange=given_d)
    assert "75.0% of all |relevance|" in doc and "No relevant token lies that far back" in doc
    parse_tree(doc)


def test_longrange_result_objects_render():
    from lrp_llm.analyses.longrange import summarize

    rng = np.random.default_rng(0)
    tokens = [f"<{i}>" for i in range(300)]
    lr = summarize(rng.normal(size=300), tokens, far_distance=100)
    doc = longrange_section.render(lr)
    assert f"{lr.share_beyond[100]:.1%} of all |relevance| lies more than 100 tokens" in doc
    assert all(f"<td class='mono'>{esc(repr(f.text))}</td>" in doc for f in lr.far_tokens)
    assert doc.count("<g><title>distance") == len(lr.bins.counts)


# ----------------------------------------------------------- image, files, CLI
def test_image_report_has_three_images_and_a_patch_grid():
    from lrp_llm.export.report import image_report
    from lrp_llm.results.image import ImageAttribution

    rng = np.random.default_rng(0)
    a = ImageAttribution(
        model="vit <tiny>", method="cp-lrp", label="</div><b>cat", label_id=1, logit=2.0, probability=0.7,
        image=rng.integers(0, 255, size=(16, 16, 3)), pixel_relevance=rng.normal(size=(16, 16)),
        patch_relevance=rng.normal(size=(4, 4)), patch_size=(4, 4), top_labels=[("</div><b>cat", 0.7), ("dog", 0.3)],
    )  # fmt: skip
    doc = image_report(a)
    tree = parse_tree(doc)
    assert doc.count("data:image/png;base64,") == 3
    titles = [tree.text_of(i) for i, (t, _) in enumerate(tree.elements) if t == "title"]
    assert f"patch (row 1, col 2): {float(a.patch_relevance[1, 2]):.4g}" in titles


def test_write_report_is_atomic(tmp_path, monkeypatch):
    import os

    path = tmp_path / "r.html"
    path.write_text("old")

    def broken(*_):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError):
        write_report(path, "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["r.html"]


def test_explain_html_writes_the_report(tiny_dir, tmp_path):
    from tui.cli import main

    out = tmp_path / "r.html"
    code = main(["explain", "--model", str(tiny_dir), "--prompt", "a b <c> d", "--generate", "3", "--html", str(out),
                 "--quiet", "--heatmap", "none"])  # fmt: skip
    assert code == 0
    doc = out.read_text(encoding="utf-8")
    tree = parse_tree(doc)
    data = data_of(doc)
    assert len(data["sel"]) == 3 and data["def"] == -1
    assert any(t == "nav" for t, _ in tree.elements) and "Σ relevance / logit" in doc
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]  # no temporary file left


def test_reports_are_written_with_the_usual_file_permissions(tmp_path):
    import os

    path = tmp_path / "r.html"
    write_report(path, "x")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_patching_grid_colours_the_change_from_the_unpatched_run():
    from lrp_llm.export.patching_section import unpatched
    from patching.result import Grid, PatchingResult

    values = np.array([[0.5, -1.0], [2.0, float("nan")]])
    grids = [
        Grid("resid", "sweep", "denoise", "logit_diff", ["layer.0.resid", "layer.1.resid"], ["a", "b"], values),
        Grid("resid", "sweep", "noise", "kl", ["layer.0.resid", "layer.1.resid"], ["a", "b"], values),
    ]
    r = PatchingResult(
        model="m", clean_tokens=["a", "b"], corrupted_tokens=["c", "b"], clean_ids=[1, 2], corrupted_ids=[3, 2],
        answer=" x", wrong=" y", answer_id=5, wrong_id=6,
        baseline={"clean": {"logit_diff": 2.0, "p_answer": 0.6, "p_wrong": 0.1, "kl": 0.0},
                  "corrupted": {"logit_diff": -1.0, "p_answer": 0.1, "p_wrong": 0.6, "kl": 1.5}},
        grids=grids,
    )  # fmt: skip
    assert unpatched(r.to_dict(), "denoise", "logit_diff") == r.unpatched(grids[0]) == -1.0
    assert unpatched(r.to_dict(), "noise", "kl") == r.unpatched(grids[1]) == 0.0
    for source in (r, r.to_dict()):
        tree = parse_tree(patching_report(source))
        cells = [at["class"] for t, at in tree.elements if t == "rect" and "class" in at]
        # logit_diff, denoise: change from -1.0 is [1.5, 0], [3, nan] -> scale 3
        assert cells[:4] == ["p5", "p0", "p10", "nan"]
        # kl, noise: change from 0, negated (a drop of KL is toward the clean run): [-0.5, 1], [-2, nan]
        assert cells[4:8] == ["n3", "p5", "n10", "nan"]  # -2.5: half-steps round away from zero, to -3
        titles = [tree.text_of(i) for i, (t, _) in enumerate(tree.elements) if t == "title"]
        assert "layer.1.resid @ position 0 'a': logit_diff = 2 (unpatched -1)" in titles


def test_patch_html_writes_the_report(tiny_dir, tmp_path):
    from tests.support.models import WORDS
    from tui.cli import main

    w = list(WORDS)
    out = tmp_path / "p.html"
    code = main(["patch", "--model", str(tiny_dir), "--clean", f"{w[0]} {w[1]} {w[2]}",
                 "--corrupted", f"{w[0]} {w[3]} {w[2]}", "--answer", w[4], "--wrong", w[5],
                 "--sites", "resid", "--metrics", "logit_diff", "--html", str(out), "--quiet"])  # fmt: skip
    assert code == 0
    tree = parse_tree(out.read_text(encoding="utf-8"))
    assert any(t == "section" and at.get("id") == "patching" for t, at in tree.elements)
    grids = [at for t, at in tree.elements if t == "svg" and at.get("class") == "grid"]
    assert len(grids) >= 2  # the sweep and the RelP estimate


def test_the_evaluation_report_has_the_same_content_security_policy_as_the_others():
    """The faithfulness page is built like every report: the one policy in its <head>, which
    forbids scripts from elsewhere and every network request."""
    from lrp_llm.analyses.evaluate import Curves, Evaluation, ItemResult
    from lrp_llm.export.common import CSP
    from lrp_llm.export.report import evaluation_report

    curves = Curves(*(np.array([0.0, 0.5, 1.0]) for _ in range(5)))
    ev = Evaluation("m", ["attnlrp"], "zero", 2, [ItemResult("<b>a</b>", "attnlrp", True, 4, 5, 0.25, curves)], 1, 1)
    pages = {
        "evaluation": evaluation_report(ev),
        "explanation": explanation_report(make_attribution(["a", "b", "c"], 2)),
    }
    policy = re.compile(r'<head>.*<meta http-equiv="Content-Security-Policy" content="([^"]*)">.*</head>', re.S)
    for name, page in pages.items():
        found = policy.search(page)
        assert found and found.group(1) == CSP, name
    assert "default-src 'none'" in CSP  # no fetch, font, frame or remote script: nothing leaves the page
    assert "<b>a</b>" not in pages["evaluation"]
