"""The Components view (F8) on a tiny Mamba-2, a tiny mixture-of-experts model (Mixtral) and a tiny hybrid
(Nemotron-H: Mamba-2, attention, MLP and MoE blocks), and its corpus snippets pane with a tiny index built
here: what it shows equals the library's numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lrp_llm.analyses.components import conditional_relevance
from lrp_llm.engines.explain import explain
from tests.support.tui_support import CONTEXT, QUESTION, explained, settle, tui_tokenizer, wait_for
from tui.app import XaiApp
from tui.widgets.heatgrid import HeatGrid
from tui.widgets.tokenflow import TokenFlow

SIZE = (100, 30)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def anyio_backend():
    return "asyncio"


def _backend(model_type: str):
    from tests.support.tiny_any import tiny_model
    from tests.support.tiny_mamba import tiny_mamba
    from tui.backend import ModelBackend

    tok = tui_tokenizer()
    if model_type == "mamba2":
        model = tiny_mamba("mamba2", vocab=len(tok))
    else:
        model = tiny_model(model_type, vocab_size=len(tok))
    return ModelBackend.from_model(model, tok, f"tiny-{model_type}")


def _reference(backend):
    method = backend.component_method(backend.methods()[0])
    a = explain(
        backend.model, backend.tokenizer, QUESTION, context=CONTEXT, generate=20, method=method, components=True
    )
    return a


@pytest.fixture(scope="module")
def mamba2():
    b = _backend("mamba2")
    return b, _reference(b)


@pytest.fixture(scope="module")
def mixtral():
    b = _backend("mixtral")
    return b, _reference(b)


@pytest.fixture(scope="module")
def hybrid():
    b = _backend("nemotron_h")
    return b, _reference(b)


async def ask_and_open(app: XaiApp, pilot) -> None:
    app.screen.query_one("#context").insert_text_at_cursor(CONTEXT)
    app.screen.query_one("#question").insert_text_at_cursor(QUESTION)
    await pilot.click("#question")
    await pilot.press("enter")
    await explained(app, pilot)
    await pilot.press("f8")
    try:
        await wait_for(
            pilot, lambda: app.current_mode == "components" and app.screen.explained is not None, what="components"
        )
    except TimeoutError as e:
        raise AssertionError(f"{e}; status: {app.status}") from None
    await settle(app, pilot)


async def choose(app, pilot, site: str) -> None:
    """Highlight ``site`` in the list and press Enter: its conditional heatmap."""
    screen = app.screen
    listed = screen.query_one("#cpt-list")
    listed.focus()
    listed.highlighted = [s for s, _ in screen.ranked].index(site)
    await pilot.press("enter")
    await settle(app, pilot)
    assert screen.selected == site and app.status[1] == "info", app.status


def by_hand_ablation(backend, reference, edit_hook, module) -> tuple[float, float]:
    """The first answer token's logit before and after ``edit_hook`` (a forward pre-hook on ``module``)."""
    t = reference.targets[0]
    x = torch.tensor([reference.input_ids[: t.position]])
    token = reference.input_ids[t.position]
    with torch.no_grad():
        before = backend.model(x).logits[0, -1].double()
        handle = module.register_forward_pre_hook(edit_hook)
        try:
            after = backend.model(x).logits[0, -1].double()
        finally:
            handle.remove()
    return float(before[token]), float(after[token])


@pytest.mark.anyio
async def test_mamba2_lists_channels_and_ssm_heads_whose_heatmap_and_ablation_are_their_channels(mamba2):
    backend, reference = mamba2
    app = XaiApp(backend, method=reference.method)  # a preloaded model: the family's method
    async with app.run_test(size=SIZE) as pilot:
        await ask_and_open(app, pilot)
        screen = app.screen
        c = reference.targets[0].components
        grid = screen.query_one("#cpt-trace", HeatGrid)
        np.testing.assert_allclose(grid.values, c.trace, rtol=1e-5, atol=1e-6)
        assert grid.row_labels == ["emb", "L0", "L1"]  # every block alike: a mixer
        want = c.top_components("channel", 8) + c.top_components("ssm-head", 8)
        assert [s for s, _ in screen.ranked] == [s for s, _ in want]
        assert len(c.top_components("ssm-head", 99)) == 2 * 4  # 4 SSM heads per block
        assert not any(".attn." in s or ".neuron." in s for s, _ in screen.ranked)
        site = c.top_components("ssm-head", 1)[0].site
        layer, head = int(site.split(".")[1]), int(site.split(".")[-1])
        channels = [f"layer.{layer}.mixer.channel.{k}" for k in range(8 * head, 8 * head + 8)]  # heads of 8
        await choose(app, pilot, site)
        t = reference.targets[0]
        ids = reference.input_ids[: t.position + 1]
        heat = conditional_relevance(backend.model, ids, t.position, [channels], method=reference.method)
        prompt = screen.query_one("#cpt-prompt", TokenFlow)
        np.testing.assert_allclose(prompt.values, heat.heatmaps[0].relevance, rtol=1e-5, atol=1e-6)
        # its relevance at the mixer is the sum of its channels' (summed over positions)
        assert heat.heatmaps[0].selected == pytest.approx(float(c.ssm_heads[layer, head]), rel=1e-4, abs=1e-5)
        await pilot.press("a")
        await settle(app, pilot)

        def zero_head(module, args):
            x = args[0].clone()
            x[..., 8 * head : 8 * head + 8] = 0
            return (x, *args[1:])

        mixer = backend.model.backbone.layers[layer].mixer
        before, after = by_hand_ablation(backend, reference, zero_head, mixer.out_proj)
        text = str(screen.query_one("#cpt-effect").render())
        assert f"logit {before:+.2f} → {after:+.2f}" in text, text
        assert screen.view().ablation["new_logit"] == pytest.approx(after, rel=1e-5, abs=1e-5)


@pytest.mark.anyio
async def test_moe_lists_experts_with_heatmap_and_zero_ablation_and_refuses_mean_in_one_line(mixtral):
    from patching.ablation import ablate_components

    backend, reference = mixtral
    app = XaiApp(backend, method=reference.method)  # a preloaded model: the family's method
    async with app.run_test(size=SIZE) as pilot:
        await ask_and_open(app, pilot)
        screen = app.screen
        c = reference.targets[0].components
        want = c.top_components("head", 8) + c.top_components("expert", 8)
        assert [s for s, _ in screen.ranked] == [s for s, _ in want]
        np.testing.assert_allclose([v for _, v in screen.ranked], [v for _, v in want], rtol=1e-5, atol=1e-6)
        assert sum(".mlp.expert." in s for s, _ in screen.ranked) == 8  # 2 layers x 4 experts
        site = c.top_components("expert", 1)[0].site
        await choose(app, pilot, site)
        t = reference.targets[0]
        ids = reference.input_ids[: t.position + 1]
        heat = conditional_relevance(backend.model, ids, t.position, [site], method=reference.method)
        np.testing.assert_allclose(
            screen.query_one("#cpt-prompt", TokenFlow).values, heat.heatmaps[0].relevance, rtol=1e-5, atol=1e-6
        )
        await pilot.press("a")
        await settle(app, pilot)
        token = reference.input_ids[t.position]
        lib = ablate_components(backend.model, reference.input_ids[: t.position], site, answer=token, new_tokens=1)
        assert lib.logit_after != pytest.approx(lib.logit_before, abs=1e-3)  # the expert does carry the token
        text = str(screen.query_one("#cpt-effect").render())
        assert f"logit {lib.logit_before:+.2f} → {lib.logit_after:+.2f}" in text, text
        assert f"p {lib.probability_before:.3f} → {lib.probability_after:.3f}" in text
        await pilot.press("m")  # a routed expert's contribution can only be zeroed or scaled
        await settle(app, pilot)
        assert app.status[1] == "error" and "can only be zeroed" in app.status[0] and "\n" not in app.status[0]
        assert [op for (_, s, op) in screen._ablations if s == site] == ["zero"]


@pytest.mark.anyio
async def test_hybrid_trace_names_each_blocks_parts(hybrid):
    backend, reference = hybrid
    app = XaiApp(backend, method=reference.method)  # a preloaded model: the family's method
    async with app.run_test(size=SIZE) as pilot:
        await ask_and_open(app, pilot)
        screen = app.screen
        c = reference.targets[0].components
        # Nemotron-H's pattern: mamba, attention, mlp, moe (its MoE output is an "mlp" part)
        assert [x is not None for x in c.mixer] == [True, False, False, False]
        assert [x is not None for x in c.attn] == [False, True, False, False]
        assert [x is not None for x in c.mlp] == [False, False, True, True]
        grid = screen.query_one("#cpt-trace", HeatGrid)
        assert grid.row_labels == ["emb", "L0 mix", "L1 attn", "L2 mlp", "L3 moe"]
        np.testing.assert_allclose(grid.values, c.trace, rtol=1e-5, atol=1e-6)
        kinds = ("head", "neuron", "channel", "ssm-head", "expert")
        want = [x for kind in kinds for x in c.top_components(kind, 8)]
        assert [s for s, _ in screen.ranked] == [s for s, _ in want]
        # each kind listed from the blocks that have it
        for part, layer in ((".attn.head.", "1"), (".neuron.", "2"), (".channel.", "0"), (".ssm_head.", "0")):
            assert {s.split(".")[1] for s, _ in screen.ranked if part in s} == {layer}, part
        assert {s.split(".")[1] for s, _ in screen.ranked if ".expert" in s} == {"3"}
        grid.focus()
        assert grid.cursor == (4, 0)  # the last block's row
        await pilot.press("up", "up", "up")  # to the mixer block's row
        await wait_for(
            pilot,
            lambda: "layer 0 (mixer " in str(grid.border_subtitle),
            10,
            f"the row's parts ({grid.border_subtitle})",
        )
        assert str(grid.border_subtitle).startswith(f"layer 0 (mixer {c.mixer[0]:+.3f}) · ")
        await pilot.press("down", "down")  # the MLP block
        await wait_for(pilot, lambda: "layer 2 (mlp " in str(grid.border_subtitle), 10, "the MLP block's parts")
        assert str(grid.border_subtitle).startswith(f"layer 2 (mlp {c.mlp[2]:+.3f}) · ")
        await pilot.press("down")  # the MoE block: its output is the experts'
        await wait_for(pilot, lambda: "layer 3 (experts " in str(grid.border_subtitle), 10, "the MoE block's parts")
        assert str(grid.border_subtitle).startswith(f"layer 3 (experts {c.mlp[3]:+.3f}) · ")
        # the MoE block's top expert: its heatmap and its zero ablation are the library's
        from patching.ablation import ablate_components

        site = c.top_components("expert", 1)[0].site
        await choose(app, pilot, site)
        t = reference.targets[0]
        heat = conditional_relevance(
            backend.model, reference.input_ids[: t.position + 1], t.position, [site], method=reference.method
        )
        np.testing.assert_allclose(
            screen.query_one("#cpt-prompt", TokenFlow).values, heat.heatmaps[0].relevance, rtol=1e-5, atol=1e-6
        )
        await pilot.press("a")
        await settle(app, pilot)
        token = reference.input_ids[t.position]
        lib = ablate_components(backend.model, reference.input_ids[: t.position], site, answer=token, new_tokens=1)
        text = str(screen.query_one("#cpt-effect").render())
        assert f"logit {lib.logit_before:+.2f} → {lib.logit_after:+.2f}" in text, text


@pytest.mark.anyio
async def test_snippets_pane_lists_the_chosen_heads_corpus_contexts_from_the_models_index(tmp_path, monkeypatch):
    from lrp_llm.analyses import corpus_index as ci
    from lrp_llm.text import visible
    from tests.support.tui_support import tui_backend

    backend = tui_backend()
    # a tiny index of layer 0's heads in the cache the app looks in (the default store path of this model)
    monkeypatch.setenv("XAI_TUI_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(
        "Normandy is a region in France.\n\nThe river flows [bold]north[/bold] through the old city.\n\n"
        "Paris is the capital of France.\tRome is the capital of Italy.\n",
        encoding="utf-8",
    )
    built = ci.build(backend.model, backend.tokenizer, [corpus], 0, "head", top_n=3, window=12)
    app = XaiApp(backend)
    async with app.run_test(size=SIZE) as pilot:
        await ask_and_open(app, pilot)
        screen = app.screen
        pane = screen.query_one("#cpt-snippets")
        assert "choose a head, neuron or channel" in str(pane.render())  # an index exists: a hint to choose
        heads = [s for s, _ in screen.ranked if ".attn.head." in s]
        indexed = next(s for s in heads if s.startswith("layer.0."))
        await choose(app, pilot, indexed)
        want = ci.top_contexts(built.db, indexed, "relevance", 5)
        assert want, "the index has contexts for the head"
        shown = str(pane.render())
        for line, snip in zip(shown.splitlines(), want, strict=True):
            # the value, then the context as data: markup-like text literal, the tab visible
            assert line == f"{snip.value:+.3f} " + visible("".join(snip.before) + snip.token + "".join(snip.after))
        assert "by relevance" in str(pane.border_title)
        # s: the same head's contexts where it is most active, then back
        await pilot.press("s")
        await wait_for(pilot, lambda: "by activation" in str(pane.border_title), what="snippets by activation")
        by_activation = ci.top_contexts(built.db, indexed, "activation", 5)
        shown = str(pane.render()).splitlines()
        assert shown == [
            f"{snip.value:+.3f} " + visible("".join(snip.before) + snip.token + "".join(snip.after))
            for snip in by_activation
        ]
        await pilot.press("s")
        await wait_for(pilot, lambda: "by relevance" in str(pane.border_title), what="snippets by relevance again")
        assert str(pane.render()).splitlines()[0].startswith(f"{want[0].value:+.3f} ")
        other = next(s for s in heads if s.startswith("layer.1."))
        await choose(app, pilot, other)
        assert f"{other} is not in the model's corpus index" in str(pane.render())


@pytest.mark.anyio
async def test_the_synthetic_recall_mamba_checkpoint_lists_its_channels():
    """Loaded as a user loads it (the family's method, MambaLRP, chosen once loaded): channels only."""
    from pathlib import Path

    from tui.backend import LoadOptions, ModelBackend

    path = Path(__file__).parents[2] / "models" / "synthetic" / "recall-mamba"
    app = XaiApp(ModelBackend(LoadOptions(path=str(path))), chat=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.model_state == "ready", what="the checkpoint loaded")
        app.screen.query_one("#question").insert_text_at_cursor("k1 v2 k3 v4 k1")
        await pilot.click("#question")
        await pilot.press("enter")
        await explained(app, pilot)
        assert app.method == "mambalrp" and app.status[1] == "info", app.status
        await pilot.press("f8")
        await wait_for(pilot, lambda: app.screen.explained is not None, what="components")
        await settle(app, pilot)
        screen = app.screen
        a = screen.explained
        c = a.targets[0].components
        lib = (
            explain(
                app.backend.model,
                app.backend.tokenizer,
                prompt_ids=a.input_ids[: a.prompt_length],
                answer_ids=a.input_ids[a.prompt_length :],
                method="mambalrp",
                components=True,
            )
            .targets[0]
            .components
        )
        np.testing.assert_allclose(c.trace, lib.trace, rtol=1e-5, atol=1e-6)
        assert [s for s, _ in screen.ranked] == [s for s, _ in lib.top_components("channel", 8)]
        assert screen.query_one("#cpt-trace", HeatGrid).row_labels == ["emb", "L0", "L1"]
