"""The conformance suite, second half (the first is test_arch_descriptions.py): for every registered
causal-LM type, the patching sweep engines it claims agree with the naive engine, RelP runs, and the
supported-types table in the README and docs/supported.md is the one these checks prove."""

from __future__ import annotations

import pytest

from tests.support.conformance import (
    ROOT,
    causal_types,
    claimed_row,
    claimed_table,
    offers_relp,
    patchable,
    relp_runs,
    replace_between_markers,
    row,
    sweep_engines,
)


@pytest.mark.parametrize("model_type", causal_types())
def test_sweep_engines_agree_with_the_naive_one_and_relp_runs(model_type):
    if not patchable(model_type):
        pytest.skip(f"{model_type} offers no patching sites")
    engines = sweep_engines(model_type)
    relp = relp_runs(model_type) if offers_relp(model_type) else False
    assert row(model_type, engines, relp) == claimed_row(model_type)


@pytest.mark.parametrize("name", ["README.md", "docs/supported.md"])
def test_the_supported_types_table_is_current(name):
    text = (ROOT / name).read_text()
    assert replace_between_markers(text, claimed_table()) == text, (
        f"{name}: the supported-types table is out of date; run `python -m tests.support.conformance`"
    )
