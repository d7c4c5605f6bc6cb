"""OLMo (the first OLMo): Llama's layout with a LayerNorm that has no weight and no bias (``OlmoLayerNorm``).

Its ``1 / sigma`` is detached like every LayerNorm's (:mod:`lrp_llm.archs.layer_norm`, eps
read as 1e-5 from its forward). ``clip_qkv`` (OLMo-7B-0424 and later) clamps Q, K and V in
place after their projections; the clamp is an element-wise activation and gets the identity
rule on the projections' outputs (:func:`install_olmo`), so relevance is not lost where a
value is clipped.
"""

from __future__ import annotations

from torch import nn

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.description import (
    DECODER_BLOCKS,
    AttentionParts,
    GatedMLPParts,
    NormParts,
    TransformerParts,
    per_block,
)
from lrp_llm.mechanism.patch import ModelPatch, output_tensor
from lrp_llm.mechanism.primitives import identity_rule

OLMO_PARTS = TransformerParts(
    attention=AttentionParts(q="q_proj", k="k_proj", v="v_proj"),
    mlps=(GatedMLPParts(gate="gate_proj", up="up_proj", down="down_proj", act="act_fn"),),
    norm=NormParts(kind="layer", class_suffix="LayerNorm"),
    expected=per_block(),
)


def clamp_identity(limit: float):
    """Forward hook on a projection: its output clamped to ``[-limit, limit]``, passed on by the identity rule.

    The model's own in-place clamp that follows is then the identity on the value (and its
    gradient, which is 1 at the bounds, passes unchanged).
    """

    def hook(_module, _args, output):
        out = output_tensor(output)
        # a clone: the rules' outputs are views made inside autograd Functions, which may not be modified in place
        return identity_rule(out, out.clamp(-limit, limit)).clone()

    return hook


def install_olmo(patch: ModelPatch, model: nn.Module, rules: str) -> None:
    """The shared installers, then (with ``clip_qkv``) the identity rule on the clamp of Q, K and V."""
    from lrp_llm.archs.blocks import find_parts, install_transformer_rules

    install_transformer_rules(patch, model, OLMO_PARTS, rules)
    limit = getattr(model.config, "clip_qkv", None)
    if limit is None:
        return
    attn = OLMO_PARTS.attention
    for module in find_parts(model, OLMO_PARTS)["attentions"]:
        for name in (attn.q, attn.k, attn.v):
            # after the attention rule's hook (hooks run in registration order): the clamp acts on Q, K, V as given
            patch.hook_output(getattr(module, name), clamp_identity(float(limit)))


OLMO_FAMILY = register(
    ArchSpec(
        family="olmo",
        model_types=("olmo",),
        kind="causal-lm",
        patching_rules=("relp",),
        parts=OLMO_PARTS,
        install=install_olmo,
        blocks=DECODER_BLOCKS,
    )
)
