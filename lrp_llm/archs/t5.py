"""T5 encoder-decoders (T5 v1.0, T5 v1.1 / Flan-T5, mT5).

A T5 block is RMS-style LayerNorm (no mean, no bias), attention with ``q``/``k``/``v``/``o``
(self-attention in both stacks, cross-attention in the decoder, keys and values from the
encoder output) and an MLP: ``wo(relu(wi(x)))`` in v1.0, ``wo(gelu(wi_0(x)) * wi_1(x))``
in v1.1. T5 has no bias anywhere; the relative position bias is a constant added to the
attention scores, so it needs no rule of its own (under AttnLRP it is part of what the
softmax's bias term absorbs, under CP-LRP the probabilities are constants anyway).

The rules are the shared ones (:mod:`lrp_llm.archs.blocks`): the v1.0 activation gets the
identity rule (for ReLU it equals the plain gradient; installed anyway so that v1.0-style
checkpoints with other activations are covered), the v1.1 gated product the uniform
rule. Modules are found by their attributes, not class names, so mT5 (same layout,
other class names) works as well.
"""

from __future__ import annotations

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.description import AttentionParts, GatedMLPParts, MLPParts, NormParts, TransformerParts


def _expected(config) -> dict[str, int]:
    n_enc = config.num_layers
    n_dec = config.num_decoder_layers if getattr(config, "num_decoder_layers", None) is not None else n_enc
    # encoder: self-attention + MLP per block; decoder: self + cross-attention + MLP; one final norm each
    return {"attention": n_enc + 2 * n_dec, "norm": 2 * n_enc + 3 * n_dec + 2, "mlp": n_enc + n_dec}


T5_FAMILY = register(
    ArchSpec(
        family="t5",
        model_types=("t5", "mt5"),
        kind="seq2seq",
        parts=TransformerParts(
            attention=AttentionParts(q="q", k="k", v="v"),
            mlps=(
                MLPParts(up="wi", down="wo", act="act"),
                GatedMLPParts(gate="wi_0", up="wi_1", down="wo", act="act"),
            ),
            norm=NormParts(kind="rms", class_suffix="LayerNorm"),
            expected=_expected,
        ),
    )
)
