"""The method table: names per kind, parsing, what each family offers, and the checks that read it."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from lrp_llm.archs import CAUSAL_LM_PREFERENCE, family_methods
from lrp_llm.archs.attention_variants import VARIANTS
from lrp_llm.errors import InputError
from lrp_llm.methods import METHOD_TABLE, get_method, label, method_names, methods_for, parse_method
from tests.support.encoders import tiny_encoder
from tests.support.models import tiny_causal_lm, tiny_tokenizer
from tests.support.tiny_mamba import tiny_mamba
from tests.support.tiny_t5_vit import tiny_t5, tiny_vit

PLAIN = ("grad-x-input", "saliency", "integrated-gradients", "random")


def test_names_per_kind_in_table_order():
    assert method_names("causal-lm") == (
        "attnlrp", "cp-lrp", "mambalrp", "grad-x-input", "saliency", "integrated-gradients", "hidden-attention", "random",
        *VARIANTS,
    )  # fmt: skip
    assert method_names("seq2seq") == method_names("image-classification") == ("attnlrp", "cp-lrp", *PLAIN)
    assert method_names("encoder") == ("bilrp", "grad-x-input-products", "embedding-dot")
    assert len({m.name for m in METHOD_TABLE}) == len(METHOD_TABLE)


def test_lookup_labels_and_one_line_errors():
    assert get_method("cp-lrp").rules == "cp-lrp" and get_method("saliency").rules is None
    assert label("grad-x-input") == "Gradient × input" and label("bilrp") == "BiLRP" and label("other") == "other"
    with pytest.raises(InputError, match=r"^unknown method 'lime'; choose one of: attnlrp, cp-lrp, mambalrp"):
        get_method("lime")
    with pytest.raises(InputError, match=r"unknown method 'mambalrp'; choose one of: attnlrp, cp-lrp, grad-x-input"):
        get_method("mambalrp", "seq2seq")
    with pytest.raises(InputError):
        get_method("gxi")  # aliases are a spelling of parse_method only


def test_parse_method_steps_and_aliases():
    assert parse_method("integrated-gradients:16") == ("integrated-gradients", 16)
    assert parse_method(" ig:4 ") == ("integrated-gradients", 4)
    assert parse_method("gxi") == ("grad-x-input", None)
    for bad, message in [
        ("attnlrp:4", "only integrated-gradients takes a step count"),
        ("ig:0", "positive integer"),
        ("ig:x", "positive integer"),
        ("bilrp", "unknown method 'bilrp'"),
    ]:
        with pytest.raises(InputError, match=message):
            parse_method(bad)


def test_what_each_family_offers():
    llama = methods_for(tiny_causal_lm("llama"))
    # the default (chosen by measurement, docs/faithful-default.md) first, then the others in the table's order
    assert llama[0] == CAUSAL_LM_PREFERENCE[0]
    assert llama[1:] == tuple(m for m in ("attnlrp", "cp-lrp", *PLAIN, *VARIANTS) if m != llama[0])
    assert methods_for(tiny_mamba("mamba")) == (
        "mambalrp", "grad-x-input", "saliency", "integrated-gradients", "hidden-attention", "random"
    )  # fmt: skip
    assert methods_for(tiny_t5()) == ("attnlrp", "cp-lrp", *PLAIN)
    assert methods_for(tiny_vit()) == ("attnlrp", "cp-lrp", *PLAIN)
    assert methods_for(tiny_encoder()) == ("bilrp", "grad-x-input-products", "embedding-dot")
    assert methods_for(torch.nn.Linear(2, 2)) == PLAIN  # unregistered: the plain-gradient ones


def test_the_preference_is_the_ranking_the_measurement_wrote():
    """CAUSAL_LM_PREFERENCE is the ranking ``python -m benchmarks.choose_default`` wrote from the measured per-item
    scores (benchmarks/results/default_choice.md): a new measurement that ranks otherwise fails here until the
    preference (and the README) follow it."""
    import re
    from pathlib import Path

    text = (Path(__file__).parents[2] / "benchmarks" / "results" / "default_choice.md").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("- Ranking by the same rule"))
    ranking = tuple(re.findall(r"`([a-z0-9-]+)`(?= >|\.$)", line))
    assert ranking == CAUSAL_LM_PREFERENCE


def test_causal_lm_defaults_follow_the_measured_preference():
    """Every causal-LM family without a default of its own takes the first rule set of the measured preference
    it offers; the default is always one the family offers."""
    from lrp_llm.archs import ArchSpec, arch_for_model_type, supported_model_types

    for model_type in supported_model_types():
        spec = arch_for_model_type(model_type)
        assert spec.default_method in spec.rules + spec.rule_variants + spec.extra_methods, model_type
        if spec.kind == "causal-lm" and spec.default_method not in ("mambalrp",):
            offered = [m for m in CAUSAL_LM_PREFERENCE if m in spec.rules + spec.rule_variants]
            assert spec.default_method == offered[0], model_type
    only_attnlrp = ArchSpec("x", ("x",), "causal-lm", rules=("attnlrp",), install=lambda *a: None)
    assert only_attnlrp.default_method == "attnlrp"
    assert ArchSpec("y", ("y",), "seq2seq", install=lambda *a: None).default_method == "attnlrp"
    assert ArchSpec("z", ("z",), "causal-lm", default_method="mambalrp", install=lambda *a: None).default_method == (
        "mambalrp"
    )


def test_family_only_methods_are_the_registry_extras():
    assert {m.name for m in METHOD_TABLE if m.family_only} == set(family_methods())


def test_evaluate_check_agrees_with_methods_for():
    """hidden-attention on a Llama used to pass the check and fail on the first item."""
    from lrp_llm.analyses.evaluate import check_methods

    for model in (tiny_causal_lm("llama"), tiny_mamba("mamba")):
        offered = methods_for(model)
        for name in method_names("causal-lm"):
            if name in offered:
                assert check_methods(model, [name]) == [(name, name, None)]
            else:
                with pytest.raises(InputError, match=f"method '{name}' is not available"):
                    check_methods(model, [name])


def test_t5_refuses_chat_and_honours_checkpoint():
    from lrp_llm.engines.explain import explain

    model, tok = tiny_t5(vocab=61), tiny_tokenizer()
    for kwargs in ({"chat": True}, {"system": "be brief"}):
        with pytest.raises(InputError, match="do not apply to encoder-decoder"):
            explain(model, tok, "one two", target="three", **kwargs)
    plain = explain(model, tok, "one two", target="three four", chat=False)
    checkpointed = explain(model, tok, "one two", target="three four", checkpoint=True)
    for a, b in zip(plain.targets, checkpointed.targets):
        torch.testing.assert_close(torch.from_numpy(a.source_relevance), torch.from_numpy(b.source_relevance))
        torch.testing.assert_close(torch.from_numpy(a.relevance), torch.from_numpy(b.relevance))


def test_the_table_is_torch_free():
    code = "import sys, lrp_llm.methods; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"


def test_what_the_engine_computes_for_each_method():
    batchable = {m.name for m in METHOD_TABLE if m.batchable}
    assert batchable == {"attnlrp", "cp-lrp", "mambalrp", "grad-x-input", "saliency", *VARIANTS}
    # every LRP rule set is gradient x input under its rules
    assert all(m.computation == "gradient-x-input" for m in METHOD_TABLE if m.rules is not None)
    assert {m.name for m in METHOD_TABLE if m.computation == "own"} == {
        "hidden-attention",
        "bilrp",
        "grad-x-input-products",
        "embedding-dot",
    }
    assert get_method("integrated-gradients").steps_or_none(16) == 16
    assert get_method("attnlrp").steps_or_none(16) is None
