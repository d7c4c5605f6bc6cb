"""Hybrid attention / state-space decoders: Jamba, Bamba, Nemotron-H, Granite-4 hybrid, Zamba2, Falcon-H1.

Their blocks are either Mamba-2 mixers or attention blocks (Zamba2: one shared attention
block reused at several depths, with LoRA adapters per depth), with gated or plain MLPs
and RMSNorms. The rules are composed from the two existing sets, nothing new:

=====================  =========================================================
part                   rule
=====================  =========================================================
attention, MLPs,       the shared installers (:mod:`lrp_llm.archs.blocks`) under the
RMSNorms               rule set asked for: AttnLRP (Q, K x 1/4, V x 1/2, gate half
                       rule) or CP-LRP (attention probabilities and gate detached);
                       Q, K, V are ruled where they enter the attention function, so
                       Zamba2's adapters on Q, K, V are covered
Mamba-1/2 mixers       MambaLRP under both rule sets (:func:`lrp_llm.archs.mamba.install_mixers`):
                       dt, B, C, the decays detached, SiLU identity rule, output
                       gate half rule, gated norm with 1/rms detached
Zamba2 MLP adapters    the up half of each adapter's output gets the same x 1/2 as the
                       up half of ``gate_up_proj`` (up = the sum of both)
=====================  =========================================================

CP-LRP here is CP-LRP on the attention blocks plus MambaLRP on the mixers: both make the
explained function linear in the propagated path, so on a bias-free model the relevance
sums to the logit exactly. Patching sites follow each block's parts (``BlockPaths.layer_parts``
from the config's layer types): a "mixer" site and its channels (at ``out_proj``'s input; Mamba-2: also
SSM heads in component relevance) where a block has a Mamba mixer, "attn" and heads where it has
attention, "mlp" and neurons where it has an MLP, each at its block's own path (Zamba2: the mixer only,
see its entry), and the routed experts (and a shared expert) where a block has them. Mixture-of-experts layers (Jamba, Nemotron-H ``moe``, Granite-4 hybrid with
experts) get the MoE rules (:mod:`lrp_llm.archs.experts`: router scores x expert outputs under
the uniform rule for AttnLRP, the scores held constant under CP-LRP, so CP-LRP + MambaLRP still
conserve exactly).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from torch import nn

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.blocks import GATE_RULE, install_transformer_rules, scale_second_half
from lrp_llm.archs.description import (
    AttentionFunctionParts,
    BlockPaths,
    FusedGatedMLPParts,
    GatedMLPParts,
    MLPParts,
    MoEParts,
    NormParts,
    TransformerParts,
    by_layer_type,
)
from lrp_llm.archs.mamba import install_mixers, is_mixer
from lrp_llm.errors import UnsupportedModelError
from lrp_llm.mechanism.patch import ModelPatch

ATTENTION = ("full_attention", "attention", "hybrid")
MAMBA = ("linear_attention", "mamba")


def _kinds(config: Any) -> list[str]:
    kinds = getattr(config, "layers_block_type", None) or getattr(config, "layer_types", None)
    return list(kinds or [])


def hybrid_mixers(model: nn.Module, expected: int) -> list[nn.Module]:
    """The Mamba mixers of ``model`` (module order), or a one-line error when there are not ``expected`` of them."""
    found = [m for m in model.modules() if is_mixer(m)]
    if len(found) != expected:
        raise UnsupportedModelError(
            f"{type(model).__name__}: expected {expected} Mamba mixers, found {len(found)}; "
            "this checkpoint's layout is not supported"
        )
    return found


def _zamba2_adapters(patch: ModelPatch, model: nn.Module, rules: str) -> None:
    # Zamba2MLP: up = gate_up_proj(x)[up half] + adapter(x)[up half]; the shared installer scales the
    # first term's gradient, the adapters' outputs (used at this block's depths) get the same factor.
    if GATE_RULE[rules] != "uniform":
        return
    for module in model.modules():
        for adapter in getattr(module, "gate_up_proj_adapter_list", ()):
            if isinstance(adapter, nn.Sequential):  # nn.Identity entries belong to other blocks' depths
                patch.hook_output(adapter, scale_second_half(0.5))


def _installer(
    parts: TransformerParts,
    n_mixers: Callable[[Any], int],
    *,
    extra: Callable[[ModelPatch, nn.Module, str], None] | None = None,
):
    def install(patch: ModelPatch, model: nn.Module, rules: str) -> None:
        found = hybrid_mixers(model, n_mixers(model.config))
        install_transformer_rules(patch, model, parts, rules)
        if extra is not None:
            extra(patch, model, rules)
        install_mixers(patch, found, rules=True)

    return install


def _plain(n_mixers: Callable[[Any], int]):
    def plain(patch: ModelPatch, model: nn.Module) -> None:
        install_mixers(patch, hybrid_mixers(model, n_mixers(model.config)), rules=False)

    return plain


def _count(kinds: tuple[str, ...]) -> Callable[[Any], int]:
    return lambda config: sum(k in kinds for k in _kinds(config))


def _counts(attention: Callable[[Any], int], mlp: Callable[[Any], int], norms: Callable[[Any], int]):
    def expected(config: Any) -> dict[str, int]:
        return {"attention": attention(config), "mlp": mlp(config), "norm": norms(config)}

    return expected


def _layers(config: Any) -> int:
    return len(_kinds(config)) or config.num_hidden_layers


# Bamba, Granite-4 hybrid: a block mixes tokens by a Mamba-2 mixer or by attention, then runs its MLP
# Where Bamba, Falcon-H1 and Jamba keep their parts (a block's mixer is ``mamba``, its MLP ``feed_forward``;
# the mixer's channels at the input of its bias-free ``out_proj``, as Nemotron-H's)
_MAMBA_ATTENTION_MLP = BlockPaths(
    layers="layers",
    attention="self_attn",
    heads="self_attn.o_proj",
    mlp="feed_forward",
    neurons="feed_forward.down_proj",
    mixer="mamba",
    channels="mamba.out_proj",
    final_norm="final_layernorm",
)
_mixer_or_attention_then_mlp = by_layer_type(
    {
        **{t: ("mixer", "channels", "mlp", "neurons") for t in MAMBA},
        **{t: ("attention", "heads", "mlp", "neurons") for t in ATTENTION},
    }
)


def _granite_parts(config: Any) -> list[frozenset[str]]:
    # with experts the block adds the routed experts' output and ``shared_mlp``'s: no one module's output is their
    # sum, so there is no "mlp" site; the routed experts and the shared MLP (its shared expert) are expert sites
    parts = _mixer_or_attention_then_mlp(config)
    if getattr(config, "num_local_experts", 0):
        parts = [p - {"mlp", "neurons"} for p in parts]
    return parts


RMS = NormParts(kind="rms", class_suffix="RMSNorm")  # the gated norms (``...RMSNormGated``) are the mixers'
ATTENTION_FUNCTION = AttentionFunctionParts(projection="q_proj")
_SPEC = dict(kind="causal-lm", rules=("attnlrp", "cp-lrp"))


def _register(
    family: str, model_types: tuple[str, ...], parts: TransformerParts, n_mixers, blocks, *, relp: bool = False, **kw
) -> ArchSpec:
    return register(
        ArchSpec(
            family=family,
            model_types=model_types,
            parts=parts,
            install=_installer(parts, n_mixers, **kw),
            plain=_plain(n_mixers),
            blocks=blocks,
            patching_rules=("relp",) if relp else (),
            **_SPEC,
        )
    )


# Bamba: every block a Mamba-2 mixer or attention, then a gated MLP; two norms per block
BAMBA_FAMILY = _register(
    "bamba",
    ("bamba",),
    TransformerParts(
        attention=ATTENTION_FUNCTION,
        mlps=(GatedMLPParts(gate="gate_proj", up="up_proj", down="down_proj", act="act_fn"),),
        norm=RMS,
        expected=_counts(_count(ATTENTION), _layers, lambda c: 2 * _layers(c) + 1),
    ),
    _count(MAMBA),
    replace(_MAMBA_ATTENTION_MLP, layer_parts=_mixer_or_attention_then_mlp),
    relp=True,
)

# Nemotron-H: every block one mixer (Mamba-2, attention or a squared-ReLU MLP) and one norm
NEMOTRON_H_FAMILY = _register(
    "nemotron_h",
    ("nemotron_h",),
    TransformerParts(
        attention=ATTENTION_FUNCTION,
        mlps=(MLPParts(up="up_proj", act="act_fn", down="down_proj"),),
        norm=RMS,
        # a ``moe`` block's shared expert is a squared-ReLU MLP like an ``mlp`` block
        expected=_counts(_count(ATTENTION), _count(("mlp", "moe")), lambda c: _layers(c) + 1),
        moe=MoEParts(),
    ),
    _count(MAMBA),
    # the one module of each block is ``mixer``, whatever its kind; an MoE block's output is an "mlp" site
    BlockPaths(
        layers="layers",
        attention="mixer",
        heads="mixer.o_proj",
        mlp="mixer",
        neurons="mixer.down_proj",
        mixer="mixer",
        channels="mixer.out_proj",
        experts="mixer.experts",
        shared_expert="mixer.shared_experts",
        final_norm="norm_f",
        layer_parts=by_layer_type(
            {
                **{t: ("mixer", "channels") for t in MAMBA},
                **{t: ("attention", "heads") for t in ATTENTION},
                "mlp": ("mlp", "neurons"),
                "moe": ("mlp",),
            }
        ),
    ),
    relp=True,
)

# Granite-4 hybrid (granite-4.0-h-micro: no experts; -h-tiny/-h-small: routed experts beside it): a Mamba-2
# mixer or attention, then the fused gated ``shared_mlp``; the embedding, residual, attention and logit multipliers are constants
GRANITE_HYBRID_FAMILY = _register(
    "granitemoehybrid",
    ("granitemoehybrid",),
    TransformerParts(
        attention=ATTENTION_FUNCTION,
        mlps=(FusedGatedMLPParts(gate_up="input_linear", down="output_linear", act="activation"),),
        norm=RMS,
        expected=_counts(_count(ATTENTION), _layers, lambda c: 2 * _layers(c) + 1),
        moe=MoEParts(),
    ),
    _count(MAMBA),
    BlockPaths(
        layers="layers",
        attention="self_attn",
        heads="self_attn.o_proj",
        mlp="shared_mlp",
        neurons="shared_mlp.output_linear",
        mixer="mamba",
        channels="mamba.out_proj",
        # with experts (num_local_experts > 0): the routed experts and the shared MLP, always run on the same
        # normed input and added to their output, which is what a shared expert is (absent in dense checkpoints)
        experts="block_sparse_moe.experts",
        shared_expert="shared_mlp",
        final_norm="norm",
        layer_parts=_granite_parts,
    ),
    relp=True,
)


# Jamba: a Mamba-1 mixer (with RMS norms on dt, B, C: on the detached path under the rules) or attention
# in each block, then a gated MLP or, every ``expert_layer_period`` layers, routed experts
def _jamba_counts(config: Any) -> dict[str, int]:
    mixers = sum(k == "mamba" for k in config.layers_block_type)
    return {
        "attention": config.num_hidden_layers - mixers,
        "mlp": sum(n == 1 for n in config.layers_num_experts),
        # two per block, the final one, and the dt/B/C norms of each mixer
        "norm": 2 * config.num_hidden_layers + 1 + 3 * mixers,
    }


JAMBA_FAMILY = _register(
    "jamba",
    ("jamba",),
    TransformerParts(
        attention=ATTENTION_FUNCTION,
        mlps=(GatedMLPParts(gate="gate_proj", up="up_proj", down="down_proj", act="act_fn"),),
        norm=RMS,
        expected=_jamba_counts,
        moe=MoEParts(),
    ),
    lambda config: sum(k == "mamba" for k in config.layers_block_type),
    # a Mamba-1 mixer (channels: d_inner, no SSM heads) or attention, then a gated MLP or, every
    # ``expert_layer_period``-th block, routed experts (an "mlp" site whose experts are sites; no neuron sites)
    replace(
        _MAMBA_ATTENTION_MLP,
        neurons=None,
        experts="feed_forward.experts",
        layer_parts=by_layer_type(
            {"linear_attention": ("mixer", "channels", "mlp"), "full_attention": ("attention", "heads", "mlp")}
        ),
    ),
    relp=True,
)

# Zamba2: every block has a Mamba-2 mixer; "hybrid" blocks first run a shared attention block
# (input: the hidden state next to the embeddings) through a per-depth linear map. The shared
# blocks are counted by the installer's one-per-module search, not per depth.
ZAMBA2_FAMILY = _register(
    "zamba2",
    ("zamba2",),
    TransformerParts(
        attention=ATTENTION_FUNCTION,
        mlps=(FusedGatedMLPParts(gate_up="gate_up_proj", down="down_proj", act="act_fn"),),
        norm=RMS,
        expected=None,
    ),
    _layers,
    # patching sites: the mixer of every block, at ``mamba`` in Mamba blocks and ``mamba_decoder.mamba`` in
    # hybrid ones. None on the shared attention block: it is one module called at several depths (a site on it
    # would patch every depth at once), and what each depth adds (``linear``'s output) is the whole shared
    # block (attention and MLP) entering the mixer's input, neither an attention nor an MLP output.
    BlockPaths(
        layers="layers",
        mixer="mamba",
        channels="mamba.out_proj",
        final_norm="final_layernorm",
        # its config calls a Mamba block "linear_attention" (older configs: "mamba")
        layer_parts=by_layer_type(
            {
                **{t: ("mixer", "channels") for t in MAMBA},
                "hybrid": {"mixer": "mamba_decoder.mamba", "channels": "mamba_decoder.mamba.out_proj"},
            }
        ),
    ),
    extra=_zamba2_adapters,
    relp=True,
)

# Falcon-H1: every block runs a Mamba-2 mixer and attention side by side on the same normed input and
# adds them, then a gated MLP. The muP multipliers (embedding, attention in/out, key, SSM in/out and
# per-channel on the mixer's in_proj, MLP gate/down, LM head) are constants: linear, no rule. The
# mixer's optional gated norm (``mamba_rms_norm``) normalises before the gate (``mamba_norm_before_gate``)
# or after it; 1/rms is detached either way. Its blocks are all alike, so patching has sites (the
# attention, the mixer, the MLP); RelP holds the attention pattern constant, MambaLRP in the mixer.
FALCON_H1_FAMILY = _register(
    "falcon_h1",
    ("falcon_h1",),
    TransformerParts(
        attention=ATTENTION_FUNCTION,
        mlps=(GatedMLPParts(gate="gate_proj", up="up_proj", down="down_proj", act="act_fn"),),
        norm=RMS,
        expected=_counts(_layers, _layers, lambda c: 2 * _layers(c) + 1),
    ),
    _layers,
    _MAMBA_ATTENTION_MLP,
    relp=True,
)
