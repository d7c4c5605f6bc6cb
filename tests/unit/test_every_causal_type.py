"""Every causal-LM model type of the installed transformers is either supported (and then under the
conformance suite) or refused with a one-line error that names the part without a rule."""

from __future__ import annotations

import pytest

from lrp_llm import archs


def _causal_types() -> list[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def test_every_causal_type_is_supported_or_refused_with_its_reason():
    supported = set(archs.supported_model_types())
    silent = [t for t in _causal_types() if t not in supported and not archs.refusal(t)]
    assert not silent, f"unsupported without a reason naming the missing part: {silent}"


@pytest.mark.parametrize("model_type", [t for t in _causal_types() if t not in archs.supported_model_types()])
def test_a_refusal_is_one_line_and_names_what_is_missing(model_type):
    reason = archs.refusal(model_type)
    assert reason.startswith(" (") and reason.endswith(")") and "\n" not in reason
    assert len(reason) > 20  # a reason, not a bare word
