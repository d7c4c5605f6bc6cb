"""What an architecture family looks like, as plain data that every consumer reads.

Two descriptions per family, both made of attribute names (dotted paths), never of
classes, so one entry covers every checkpoint with that layout:

- :class:`TransformerParts`: the modules the LRP rules touch, found anywhere in the
  model by the attributes they have (attention with q/k/v, MLPs with act/up/gate,
  norms by class-name suffix). :mod:`lrp_llm.archs.blocks` installs the rules on them.
- :class:`BlockPaths`: the list of blocks and where each block's parts are; patching
  (:mod:`lrp_llm.archs.sites`: patching, component relevance), the layer stepper and activation checkpointing read it.

``docs/architectures.md`` shows the Llama entry and what a new family needs.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn


@dataclass(frozen=True)
class AttentionParts:
    """Attribute names of the projections inside one attention module (Q, K, V enter the kernel)."""

    q: str
    k: str
    v: str


@dataclass(frozen=True)
class AttentionFunctionParts:
    """Attention whose Q, K, V get their rules where they enter transformers' attention function.

    For fused projections (GPT-2 ``c_attn``, GPT-NeoX ``query_key_value``), where Q, K and V
    are not the outputs of separate modules. ``projection`` is an attribute every attention
    module of the family has (its fused projection), which is how they are found; the module
    must call ``ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, ...)``
    with itself as the first argument (transformers 5 attention modules do).
    """

    projection: str


@dataclass(frozen=True)
class AttentionSplitParts:
    """Attention whose Q, K, V get their rules where a method of the module splits its fused projection's output.

    For attention modules that compute the attention themselves instead of calling
    transformers' attention function (Falcon: ``query_key_value`` split by ``_split_heads``,
    then RoPE or ALiBi and SDPA or eager arithmetic inline). ``projection`` is an attribute
    every attention module of the family has (how they are found); ``split`` is the method
    that returns ``(query, key, value)``; everything after it up to the attention kernel
    must be linear in Q and K (RoPE, reshapes) for their factors to hold there.
    """

    projection: str
    split: str


@dataclass(frozen=True)
class AttentionCallParts:
    """Attention whose Q, K, V get their rules where they enter a method of the module as its first three arguments.

    For attention modules that compute the attention themselves in a method
    ``method(query, key, value, ...)`` (CodeGen, GPT-Neo, GPT-NeoX-Japanese, OpenAI GPT:
    ``_attn``) after splitting a fused projection inline. ``projection`` is an attribute
    every attention module of the family has (how they are found). Everything between the
    projection and the method (splits, reshapes, RoPE, the cache) is linear, so the
    factors hold there, whatever the layout of the fused output.
    """

    projection: str
    method: str


@dataclass(frozen=True)
class AttentionProjectionParts:
    """Attention whose fused Q/K/V projection's output is ``[query | key | value]`` in three equal contiguous parts.

    For attention modules that split the output inline with no method to wrap (MPT:
    ``Wqkv(x).chunk(3, dim=-1)``): a hook on the projection's output gives each third its
    factor. What follows up to the attention kernel (reshapes) is linear.
    """

    projection: str


@dataclass(frozen=True)
class MLPParts:
    """A plain MLP ``down(act(up(x)))``: only the activation gets a rule (identity rule)."""

    up: str
    act: str
    down: str | None = None  # None where the down projection sits in a sibling module (BERT)


@dataclass(frozen=True)
class GatedMLPParts:
    """A gated MLP ``down(act(gate(x)) * up(x))``: the product of ``act(gate)`` and ``up`` gets the uniform rule."""

    gate: str
    up: str
    down: str
    act: str


@dataclass(frozen=True)
class FusedGatedMLPParts:
    """A gated MLP whose gate and up projections are one: ``g, u = gate_up(x).chunk(2)``, ``down(act(g) * u)``.

    The product gets the same rules as :class:`GatedMLPParts`: ``act(g)`` its rule on the
    activation module, ``u`` its factor on the second half of ``gate_up``'s output (Phi-3).
    """

    gate_up: str
    down: str
    act: str


@dataclass(frozen=True)
class InlineGatedMLPParts:
    """A gated MLP whose activation is a function call inside its forward, not a module:
    ``down(act(gate(x)) * up(x))`` with ``act`` a name in ``torch.nn.functional`` (LFM2: silu).

    The installer gives the module a forward with the same arithmetic and the gated
    product's rules (:class:`GatedMLPParts`' rules: the identity rule on ``act``, the uniform
    rule or a constant gate on the product).
    """

    gate: str
    up: str
    down: str
    act: str = "silu"


@dataclass(frozen=True)
class GatedConvParts:
    """A short gated convolution (LFM2): ``B, C, x`` are the thirds of ``in_proj(h)`` along the
    features, and the output is ``out_proj(C * conv(B * x))`` with a causal depthwise ``conv``.

    ``B`` and ``C`` are gates computed from the input. Their rules (on ``in_proj``'s output,
    where the three are still one tensor): held constant under CP-LRP (the block is then
    linear in ``x``: exact conservation); under the uniform rule each product splits its
    relevance evenly, so ``C`` gets 1/2 and ``B`` and ``x`` 1/4 each (the convolution is
    linear and passes its half on whole).
    """

    in_proj: str
    conv: str
    out_proj: str


@dataclass(frozen=True)
class MoEParts:
    """Mixture-of-experts blocks: routed experts (and optionally a shared expert with its own gate).

    The routed experts are transformers 5's fused experts modules (3-D ``gate_up_proj`` /
    ``down_proj``, ``forward(hidden_states, top_k_index, top_k_weights)``), found by their
    layout, so they need no names; :mod:`lrp_llm.archs.experts` gives them an eager forward
    with the rules. A shared expert is an ordinary MLP (list it in ``TransformerParts.mlps``);
    ``shared_gate`` and ``shared_expert`` name, inside the MoE block, the projection whose
    sigmoid scales the shared expert's output and that expert (Qwen2-MoE:
    ``"shared_expert_gate"``, ``"shared_expert"``), None where the family has no such gate.
    """

    shared_gate: str | None = None
    shared_expert: str | None = None
    # Llama-4: the router's scores scale the experts' *input* (``E(w * x)``, every expert run on
    # every token, unselected ones with w = 0), in a block with attributes ``router``,
    # ``experts`` (3-D ``gate_up_proj`` [E, H, 2I], ``down_proj`` [E, I, H]) and ``shared_expert``
    scores_scale_input: bool = False


@dataclass(frozen=True)
class AttentionOutputGateParts:
    """An output gate on attention: ``o_proj(o * act(x))`` inside each attention module, ``x`` the gate's input.

    ``o`` (batch, pos, heads * head_dim) is the attention output, ``output`` the projection it enters.
    Where ``x`` comes from (``source``):

    - "projection": the whole output of the projection ``gate`` (AFMoE, Beam, Laguna: ``gate_proj`` /
      ``g_proj``; Bailing: ``g_proj``);
    - "query_heads": the second half of each head of ``gate``'s output, which is per head
      [query | gate] (Qwen3-Next, Qwen3.5: ``gate="q_proj"``; the head width is ``attn.head_dim``).

    ``groups``: "element" (one gate per channel of ``o``), "head" (one per head, broadcast over
    head_dim: Bailing) or "width" (either, read from the checkpoint's gate width: Laguna's
    ``config.gating``). ``bias`` names a per-head parameter (heads,) added to ``x`` (Beam), None where
    there is none; ``act`` is "sigmoid" or "softplus" (Laguna). The product of two input-dependent
    factors gets the gated MLP's rules (:data:`lrp_llm.archs.blocks.GATE_RULE`): the identity rule
    x 1/2 through ``act`` and x 1/2 on ``o`` (AttnLRP, RelP), or the gate held constant (CP-LRP).
    Installed by :mod:`lrp_llm.archs.attention_gate` on ``gate``'s output and ``output``'s input.
    """

    gate: str
    output: str
    act: str
    bias: str | None = None
    source: str = "projection"
    groups: str = "element"

    def __post_init__(self) -> None:
        if self.source not in ("projection", "query_heads"):
            raise ValueError(f"AttentionOutputGateParts.source {self.source!r}: use 'projection' or 'query_heads'")
        if self.groups not in ("element", "head", "width"):
            raise ValueError(f"AttentionOutputGateParts.groups {self.groups!r}: use 'element', 'head' or 'width'")
        if self.source == "query_heads" and self.groups != "element":
            raise ValueError("AttentionOutputGateParts: a gate sliced from the query heads is one per element")


@dataclass(frozen=True)
class NormParts:
    """The norms (by class-name suffix) and their kind; the 1/sigma factor is detached under every rule set."""

    kind: str  # "rms" | "layer"
    class_suffix: str


def per_block(*, norms: int | None = 2, final_norms: int = 1) -> Callable[[Any], dict[str, int]]:
    """The usual ``TransformerParts.expected``: one attention module and one MLP per block
    (``config.num_hidden_layers`` blocks), ``norms`` norms per block plus ``final_norms``
    (``norms=None``: norms are not counted)."""

    def expected(config: Any) -> dict[str, int]:
        n = config.num_hidden_layers
        counts = {"attention": n, "mlp": n}
        if norms is not None:
            counts["norm"] = norms * n + final_norms
        return counts

    return expected


@dataclass(frozen=True)
class TransformerParts:
    """Where the rules go in an attention family.

    ``logit_softcap`` names the config attribute of a soft-cap on the final logits; the
    installers give its tanh the identity rule when a checkpoint sets it.

    ``expected(config)`` gives the number of attention modules, MLPs and norms a
    checkpoint of this layout has (keys "attention", "mlp", "norm", "mixer"; a key left out is
    not checked; ``config`` is the model's, the text model's with ``within``); a mismatch
    is refused instead of explaining half a model. None: the family's own installer checks
    the layout.

    ``within`` is the path from ``model.base_model`` to the module that holds the parts,
    where the model wraps its text model with others it does not run on text (Gemma-3's
    multimodal model: ``language_model``, beside its vision tower); None: the whole model.
    """

    attention: (
        AttentionParts | AttentionFunctionParts | AttentionSplitParts | AttentionCallParts | AttentionProjectionParts
    )
    mlps: tuple[MLPParts | GatedMLPParts | FusedGatedMLPParts | InlineGatedMLPParts, ...]
    norm: NormParts
    expected: Callable[[Any], dict[str, int]] | None = None
    # the config attribute of a final-logit soft-cap ``cap * tanh(logits / cap)`` that the
    # model's forward applies after the LM head (Gemma-2: "final_logit_softcapping"); None: no cap
    logit_softcap: str | None = None
    within: str | None = None
    # token mixers other than attention (LFM2's gated convolutions); counted under "mixer"
    mixers: tuple[GatedConvParts, ...] = ()
    # mixture-of-experts blocks (routed experts, shared-expert gates); None: the family has none
    moe: MoEParts | None = None
    # an output gate inside every attention module (``o * act(g(x))``); None: the family has none
    attention_gate: AttentionOutputGateParts | None = None


BLOCK_PARTS = ("attention", "heads", "mlp", "neurons", "mixer", "channels")


@dataclass(frozen=True)
class BlockPaths:
    """The list of blocks and the paths of their parts.

    ``layers`` and ``final_norm`` are paths from ``model.base_model``; the others are
    paths inside one block. A part left as None does not exist in the family, and the
    patching sites that need it are not offered.

    Blocks that differ from layer to layer (hybrids: a Mamba mixer here, attention there)
    set ``layer_parts``: ``layer_parts(config)[i]`` names the parts block ``i`` has (of
    :data:`BLOCK_PARTS`; ``config`` is the text model's), and the sites of a part exist
    only in the blocks that have it (:func:`by_layer_type` builds it from the config's
    per-layer types). None: every block has every part named. A block's entry is either
    the part names (each at the path named here) or a mapping part -> path, for blocks
    that keep a part at a path of their own (Zamba2's hybrid blocks: the mixer at
    ``mamba_decoder.mamba``; Kimi Linear: the linear-attention mixer at ``self_attn``, where
    the other blocks keep their attention); a mapped part need not be named here.
    """

    layers: str
    attention: str | None = None  # its output: the attention output (batch, pos, d_model)
    heads: str | None = None  # its input: the heads side by side (batch, pos, n_heads * head_dim)
    mlp: str | None = None  # its output: the MLP output
    neurons: str | None = None  # its input: the MLP neurons (batch, pos, d_mlp)
    mixer: str | None = None  # its output: the token mixer's output (Mamba, LFM2's gated convolution)
    channels: str | None = None  # its input: the mixer's channels (Mamba: out_proj's input, d_inner wide)
    # mixture-of-experts blocks: the fused experts module (transformers 5's 3-D ``down_proj`` [E, ...]) whose
    # routed output is ``sum_k w_k E_k(x)`` (lrp_llm.archs.experts.routed_forward forms it, one weighted
    # contribution per expert), and the module whose output the MoE block adds to it as the shared expert's
    # contribution (Qwen2-MoE: before its sigmoid gate, which scales it linearly). The expert sites exist in the
    # blocks where the path resolves to a fused experts module (not in dense layers).
    experts: str | None = None
    shared_expert: str | None = None
    # the projection whose sigmoid scales the shared expert's output (Qwen2-MoE): a conditional heatmap of the
    # shared expert also runs back through it (the gate's share of the product's relevance)
    shared_gate: str | None = None
    # the block changes a part's output in place after the part returns it (Falcon's parallel blocks:
    # ``mlp_output += attention_output``): component taps hand the block a copy of those outputs
    outputs_changed_in_place: bool = False
    final_norm: str | None = None
    # The blocks read earlier positions only through ``past_key_values.update`` (keys and
    # values), so the layer stepper can run blocks i..L-1 on a suffix of positions.
    # Recurrent blocks (Mamba) keep a state instead.
    steps_from_keys_values: bool = False
    layer_parts: Callable[[Any], Sequence[Collection[str] | Mapping[str, str]]] | None = None

    def layer_list(self, model: nn.Module) -> nn.ModuleList | None:
        """The blocks of ``model``, or None when the path does not resolve."""
        layers = resolve(getattr(model, "base_model", model), self.layers)
        return layers if isinstance(layers, nn.ModuleList) else None

    def parts_per_layer(self, config: Any, n_layers: int) -> list[frozenset[str]]:
        """The parts (of :data:`BLOCK_PARTS`) each of the ``n_layers`` blocks has, by ``layer_parts`` or all named."""
        return [frozenset(paths) for paths in self.paths_per_layer(config, n_layers)]

    def paths_per_layer(self, config: Any, n_layers: int) -> list[dict[str, str]]:
        """Per block of the ``n_layers``: part (of :data:`BLOCK_PARTS`) -> its path inside the block, for the parts
        the block has (``layer_parts``' own paths, else the paths named here)."""
        named = {p: getattr(self, p) for p in BLOCK_PARTS if getattr(self, p) is not None}
        if self.layer_parts is None:
            return [dict(named) for _ in range(n_layers)]
        per = []
        for parts in self.layer_parts(config):
            if isinstance(parts, Mapping):
                unknown = sorted(set(parts) - set(BLOCK_PARTS))
                if unknown:
                    raise ValueError(f"BlockPaths.layer_parts: {', '.join(unknown)} are not block parts")
                per.append(dict(parts))
            else:
                per.append({p: named[p] for p in parts if p in named})
        if len(per) != n_layers:
            from lrp_llm.errors import UnsupportedModelError

            raise UnsupportedModelError(
                f"the config lists {len(per)} layer types for {n_layers} blocks; this checkpoint's layout is not supported"
            )
        return per


def by_layer_type(
    parts: dict[str, Collection[str] | Mapping[str, str]],
) -> Callable[[Any], list[frozenset[str] | Mapping[str, str]]]:
    """A ``BlockPaths.layer_parts`` read from the config's per-layer types (``layer_types``,
    or ``layers_block_type``): ``parts[type]`` names the parts a block of that type has, or maps
    each of them to its path in such a block.

    A type not in ``parts`` is refused with a one-line error naming it.
    """

    def layer_parts(config: Any) -> list[frozenset[str] | Mapping[str, str]]:
        from lrp_llm.errors import UnsupportedModelError

        types = getattr(config, "layer_types", None) or getattr(config, "layers_block_type", None)
        if not types:
            raise UnsupportedModelError(
                f"{type(config).__name__} lists no layer types; patching cannot tell which blocks have which parts"
            )
        unknown = sorted({t for t in types if t not in parts})
        if unknown:
            raise UnsupportedModelError(
                f"blocks of type {', '.join(map(repr, unknown))} have no patching sites here; "
                f"known block types: {', '.join(parts)}"
            )
        return [parts[t] if isinstance(parts[t], Mapping) else frozenset(parts[t]) for t in types]

    return layer_parts


# The usual layout of a transformers decoder (Llama's modules, which most families reuse):
# families with it name this, or ``dataclasses.replace`` it where a path differs.
DECODER_BLOCKS = BlockPaths(
    layers="layers",
    attention="self_attn",
    heads="self_attn.o_proj",
    mlp="mlp",
    neurons="mlp.down_proj",
    final_norm="norm",
    steps_from_keys_values=True,
)


def resolve(module: nn.Module, path: str) -> Any:
    """``module.a.b`` for the path ``"a.b"``, or None where an attribute is missing."""
    for name in path.split("."):
        module = getattr(module, name, None)
        if module is None:
            return None
    return module


def input_width(projection: nn.Module) -> int:
    """The number of input features of a projection: ``nn.Linear`` (``in_features``) or GPT-2's Conv1D (``nx``)."""
    width = getattr(projection, "in_features", None)
    if width is None:
        width = getattr(projection, "nx", None)
    if width is None:
        raise TypeError(f"{type(projection).__name__} is neither a Linear nor a Conv1D projection")
    return int(width)
