"""Special and chat-template tokens: found from the template's own text, kept out of the colour scale."""

from __future__ import annotations

import pytest

from lrp_llm.engines.explain import explain
from lrp_llm.engines.generation import build_prompt, template_positions, token_strings
from lrp_llm.export.levels import display_scale
from tests.support.models import tiny_causal_lm, tiny_tokenizer
from tests.support.tui_support import tui_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("make", [tiny_tokenizer, tui_tokenizer])
def test_the_template_is_what_the_user_did_not_write(make):
    tok = make()
    context, question = "paris is in france", "what country"
    ids, template = build_prompt(tok, question, context, chat=True)
    tokens = token_strings(tok, ids)
    written = "".join(t for k, t in enumerate(tokens) if k not in template)

    def squeeze(text: str) -> str:  # token strings of word-level and byte-level tokenizers differ in spacing
        return "".join(text.replace("↵", "").split())

    assert squeeze(written) == squeeze(context + question)
    assert 0 in template and len(ids) - 1 in template  # the user header, the assistant header
    assert template == sorted(template)


def test_a_plain_prompt_marks_only_special_tokens():
    tok = tiny_tokenizer()
    ids, template = build_prompt(tok, "paris is in", chat=False)
    special = {tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}
    assert template == [k for k, i in enumerate(ids) if i in special]


def test_without_a_match_only_special_tokens_are_marked():
    tok = tiny_tokenizer()
    ids, _ = build_prompt(tok, "what country", "paris is in france", chat=True)
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": "paris is in france\nwhat country"}], add_generation_prompt=True, tokenize=False
    )
    special = {i for i in tok.all_special_ids}
    # a user text the rendered template does not hold: no text-based marking
    assert template_positions(tok, ids, rendered, ["not in it"]) == [k for k, i in enumerate(ids) if i in special]
    # ids the rendered text does not tokenise to: the same
    assert template_positions(tok, ids[1:], rendered, ["what"]) == [k for k, i in enumerate(ids[1:]) if i in special]


def test_display_scale_leaves_the_apart_values_out():
    values = [-9.0, 0.5, -2.0, 1.0, float("nan")]
    assert display_scale(values) == 9.0
    assert display_scale(values, {0}) == 2.0
    assert display_scale(values, {0, 1, 2, 3}) == 9.0  # all apart: the scale of all
    assert display_scale([]) == 0.0


def test_explain_records_the_template_and_reexplaining_keeps_it():
    tok = tiny_tokenizer()
    model = tiny_causal_lm(vocab=len(tok))
    a = explain(model, tok, "what country", context="paris is in france", target="paris france </s>")
    _, template = build_prompt(tok, "what country", "paris is in france", chat=True)
    eos = a.prompt_length + a.input_ids[a.prompt_length :].index(tok.eos_token_id)
    assert a.meta["template_positions"] == [*template, eos]
    n = a.prompt_length
    again = explain(
        model,
        tok,
        prompt_ids=a.input_ids[:n],
        answer_ids=a.input_ids[n:],
        method="cp-lrp",
        template_positions=a.meta["template_positions"],
    )
    assert again.meta["template_positions"] == a.meta["template_positions"]
    from lrp_llm.results.attribution import Attribution

    assert Attribution.from_dict(a.to_dict()).meta["template_positions"] == a.meta["template_positions"]
