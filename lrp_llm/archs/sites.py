"""Site names that read the same across architectures, and where each one lives.

==============================  ===============================================  ====================
site                            what                                             tensor shape
==============================  ===============================================  ====================
``layer.{i}.resid``             residual stream after block ``i``                (batch, pos, d_model)
``layer.{i}.attn``              attention output (after ``o_proj``)              (batch, pos, d_model)
``layer.{i}.mlp``               MLP output (after ``down_proj``)                 (batch, pos, d_model)
``layer.{i}.mixer``             token mixer (Mamba, LFM2 conv, RG-LRU, RWKV)    (batch, pos, d_model)
``layer.{i}.attn.head.{h}``     head ``h`` at the input of ``o_proj``            (batch, pos, head_dim)
``layer.{i}.mlp.neuron.{n}``    neuron ``n`` at the input of ``down_proj``       (batch, pos)
``layer.{i}.mixer.channel.{c}`` channel ``c`` at the input of the mixer's        (batch, pos)
                                ``out_proj`` (Mamba, Mamba-2)
``layer.{i}.mlp.expert.{e}``    routed expert ``e``'s weighted contribution      (tokens routed to e,
                                ``w * E_e(x)`` (mixture-of-experts blocks;       d_model)
                                Llama-4: ``E_e(w * x)``, every token)
``layer.{i}.mlp.shared_expert`` the shared expert's output (MoE blocks with one) (tokens, d_model)
==============================  ===============================================  ====================

Heads are taken where they are still separate: the input of the output projection is
the concatenation of the heads' outputs, ``head_dim`` values each. Attention edges
(layer, head, query, key) live in :mod:`patching.edges`.

Where each site lives comes from the family's description (``ArchSpec.blocks``, a
:class:`lrp_llm.archs.description.BlockPaths`): a family offers the kinds whose parts it
names (Llama family: attention, heads, MLP, neurons; Mamba: the mixer). Where blocks differ
from layer to layer (``BlockPaths.layer_parts``), a kind's sites exist in the blocks that have it,
at the path the block keeps it at.

The experts of a MoE block (``BlockPaths.experts``) partition its output: the routed output is
the sum of the experts' weighted contributions (each over the tokens routed to it), and a
shared expert's output is added to it. They are component-relevance sites (taps and
conditional heatmaps); patching intervenes on the shared expert (a module output) and zeroes
or scales a routed expert through its routing weight (:mod:`patching.experts`): its
contribution exists only inside the experts' forward, so it has no :class:`Location`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from torch import nn

from lrp_llm.archs.description import BlockPaths, input_width, resolve
from lrp_llm.errors import InputError, UnsupportedModelError

# The kinds a layer x position sweep can patch, and the kinds with an index.
POSITION_KINDS = ("resid", "attn", "mlp", "mixer")
INDEXED_KINDS = ("head", "neuron", "channel", "expert")
# mixture-of-experts kinds (a routed expert has no Location: patching edits its routing weight, patching.experts)
EXPERT_KINDS = ("expert", "shared_expert")

_NAME = re.compile(
    r"^layer\.(\d+)\.(resid|attn|mlp|mixer)(?:\.(head|neuron|channel|expert)\.(\d+)|\.(shared_expert))?$"
)
# the part an indexed kind belongs to
_OWNER = {"head": "attn", "neuron": "mlp", "channel": "mixer", "expert": "mlp"}


@dataclass(frozen=True)
class Site:
    """One place in the model; ``index`` is the head or neuron number for those kinds."""

    layer: int
    kind: str  # resid | attn | mlp | mixer | head | neuron | channel | expert | shared_expert
    index: int | None = None

    @property
    def name(self) -> str:
        if self.kind == "head":
            return f"layer.{self.layer}.attn.head.{self.index}"
        if self.kind in _OWNER:
            return f"layer.{self.layer}.{_OWNER[self.kind]}.{self.kind}.{self.index}"
        if self.kind == "shared_expert":
            return f"layer.{self.layer}.mlp.shared_expert"
        return f"layer.{self.layer}.{self.kind}"

    def __str__(self) -> str:
        return self.name

    @classmethod
    def parse(cls, name: str | Site) -> Site:
        if isinstance(name, Site):
            return name
        m = _NAME.match(name.strip())
        if (
            m is None
            or (m.group(3) is not None and m.group(2) != _OWNER[m.group(3)])
            or (m.group(5) is not None and m.group(2) != "mlp")
        ):
            raise InputError(
                f"unknown site '{name}'; sites look like layer.3.resid, layer.3.attn, layer.3.mlp, "
                "layer.3.mixer, layer.3.attn.head.2, layer.3.mlp.neuron.17, layer.3.mixer.channel.5, "
                "layer.3.mlp.expert.4 or layer.3.mlp.shared_expert"
            )
        layer, kind = int(m.group(1)), m.group(2)
        if m.group(3):
            return cls(layer, m.group(3), int(m.group(4)))
        if m.group(5):
            return cls(layer, "shared_expert")
        return cls(layer, kind)


@dataclass(frozen=True)
class Location:
    """Where a site's tensor is: the output (or the input) of ``module``, optionally a slice
    ``[start:stop]`` of the last dimension (a head) or one column (a neuron)."""

    module: nn.Module
    where: str  # "output" | "input"
    start: int | None = None
    stop: int | None = None
    squeeze: bool = False  # neuron, channel: the site tensor is (batch, pos), one column


def _patchable(blocks: BlockPaths | None) -> bool:
    return blocks is not None and (blocks.attention is not None or blocks.mixer is not None)


def _unsupported(model: nn.Module) -> UnsupportedModelError:
    from lrp_llm.archs import arch_for_model_type, supported_model_types

    name = getattr(getattr(model, "config", None), "model_type", None) or type(model).__name__
    supported = [t for t in supported_model_types() if _patchable(arch_for_model_type(t).blocks)]
    return UnsupportedModelError(f"patching does not support '{name}'; supported: {', '.join(supported)}")


# every kind, in the order SiteMap.kinds lists them
_ORDER = ("attn", "mlp", "mixer", "head", "neuron", "channel", "expert", "shared_expert")

# site kind -> the BlockPaths part it lives in
_PART = {
    "attn": "attention",
    "mlp": "mlp",
    "mixer": "mixer",
    "head": "heads",
    "neuron": "neurons",
    "channel": "channels",
}


class SiteMap:
    """The sites of one model, read from its family's :class:`BlockPaths`.

    Where blocks differ from layer to layer (``BlockPaths.layer_parts``: hybrids, LFM2), a
    kind's sites exist only in the blocks that have its part: :meth:`has` and
    :meth:`layers_with` say where, patterns (``layer.*.attn``) expand to those layers only,
    and naming a site a block lacks is a one-line error.
    """

    def __init__(self, model: nn.Module) -> None:
        from lrp_llm.archs import find_arch

        spec = find_arch(model)
        if spec is None or not _patchable(spec.blocks):
            raise _unsupported(model)
        blocks = spec.blocks
        layers = blocks.layer_list(model)
        if layers is None or len(layers) == 0:
            raise UnsupportedModelError(
                f"{type(model).__name__}: no blocks at '{blocks.layers}'; this checkpoint's layout is not supported"
            )
        self.model = model
        self.family = spec.family
        self.blocks = blocks
        # Llama-4: the router's scores scale the experts' input (lrp_llm.archs.experts.input_scaled_experts)
        moe = getattr(spec.parts, "moe", None)
        self._input_scaled = bool(getattr(moe, "scores_scale_input", False))
        self.layers = layers
        self.n_layers = len(layers)
        cfg = model.config.get_text_config()  # the text model of a multimodal wrapper
        # per layer: part -> its path in that block (hybrids keep a part at different paths in different blocks)
        self._paths = blocks.paths_per_layer(cfg, self.n_layers)
        # per layer: the site kinds its block has, each checked to resolve there
        self._present: list[frozenset[str]] = []
        for i, (layer, paths) in enumerate(zip(layers, self._paths)):
            kinds = frozenset(k for k, part in _PART.items() if part in paths)
            missing = [paths[_PART[k]] for k in kinds if self._resolve(i, k) is None]
            if missing:
                raise UnsupportedModelError(
                    f"{type(model).__name__}: block {i} ({type(layer).__name__}) has no {', '.join(sorted(missing))}; "
                    "this checkpoint's layout is not supported for patching"
                )
            self._present.append(kinds | self._expert_kinds(i, kinds))
        self.kinds: tuple[str, ...] = (
            "resid",
            *(k for k in _ORDER if any(k in p for p in self._present)),
        )
        self.n_heads = 0
        self.head_dim = 0
        self.n_neurons = 0
        self.n_channels = 0
        self.n_experts = 0
        if "head" in self.kinds:
            attn = self.module(self.layers_with("head")[0], "attn")
            self.n_heads = int(cfg.num_attention_heads)
            # the heads side by side at the output projection's input are value heads (MLA: v_head_dim)
            width = getattr(attn, "v_head_dim", None) or getattr(attn, "head_dim", None)
            self.head_dim = int(width or cfg.hidden_size // cfg.num_attention_heads)
        if "neuron" in self.kinds:
            widths = {input_width(self.module(i, "neuron")) for i in self.layers_with("neuron")}
            if len(widths) != 1:
                raise UnsupportedModelError(
                    f"{type(model).__name__}: its MLPs have different widths ({sorted(widths)}); "
                    "neuron sites need one width"
                )
            self.n_neurons = widths.pop()
        if "channel" in self.kinds:
            widths = {input_width(self.module(i, "channel")) for i in self.layers_with("channel")}
            if len(widths) != 1:
                raise UnsupportedModelError(
                    f"{type(model).__name__}: its mixers have different widths ({sorted(widths)}); "
                    "channel sites need one width"
                )
            self.n_channels = widths.pop()
        if "expert" in self.kinds:
            counts = {int(self.module(i, "expert").down_proj.shape[0]) for i in self.layers_with("expert")}
            if len(counts) != 1:
                raise UnsupportedModelError(
                    f"{type(model).__name__}: its MoE blocks have different numbers of experts ({sorted(counts)}); "
                    "expert sites need one number"
                )
            self.n_experts = counts.pop()

    def _expert_kinds(self, i: int, kinds: frozenset[str]) -> frozenset[str]:
        """The MoE kinds block ``i`` has: where its experts path resolves to a fused experts module (dense layers
        of a MoE model have none), and its shared expert where that resolves too. The block need not have an
        "mlp" site: Granite-4 hybrid adds its experts' and its shared MLP's outputs itself (no one module's output)."""
        from lrp_llm.archs.experts import is_fused_experts, is_input_scaled_experts

        if self.blocks.experts is None:
            return frozenset()
        experts = resolve(self.layers[i], self.blocks.experts)
        if not (is_fused_experts(experts) or (self._input_scaled and is_input_scaled_experts(experts))):
            return frozenset()
        shared = self.blocks.shared_expert
        if shared is not None and isinstance(resolve(self.layers[i], shared), nn.Module):
            return frozenset(EXPERT_KINDS)
        return frozenset({"expert"})

    def _resolve(self, i: int, kind: str) -> nn.Module | None:
        paths, layer = self._paths[i], self.layers[i]
        if kind in EXPERT_KINDS:
            return resolve(layer, self.blocks.experts if kind == "expert" else self.blocks.shared_expert)
        attention = paths.get("attention")
        if kind == "head" and attention is not None and resolve(layer, attention) is None:
            return None  # heads exist where the attention does (at its output projection)
        path = paths.get(_PART[kind])
        return None if path is None else resolve(layer, path)

    def shared_gate(self, layer: int) -> nn.Module | None:
        """The projection whose sigmoid scales block ``layer``'s shared expert (Qwen2-MoE), or None."""
        if self.blocks.shared_gate is None or not self.has(layer, "shared_expert"):
            return None
        gate = resolve(self.layers[layer], self.blocks.shared_gate)
        return gate if isinstance(gate, nn.Module) else None

    def has(self, layer: int, kind: str) -> bool:
        """Whether block ``layer`` has sites of ``kind`` (every block has ``resid``)."""
        return 0 <= layer < self.n_layers and (kind == "resid" or kind in self._present[layer])

    def layers_with(self, kind: str) -> list[int]:
        """The layers whose blocks have sites of ``kind``."""
        return [i for i in range(self.n_layers) if self.has(i, kind)]

    def describe_layer(self, layer: int) -> str:
        """``"resid, mixer, mlp"``: the site kinds of block ``layer``."""
        return ", ".join(k for k in self.kinds if self.has(layer, k))

    # -- names ---------------------------------------------------------------------
    @property
    def position_kinds(self) -> tuple[str, ...]:
        """Kinds a layer x position sweep can patch for this family."""
        return tuple(k for k in POSITION_KINDS if k in self.kinds)

    def check(self, site: str | Site) -> Site:
        s = Site.parse(site)
        if s.kind not in self.kinds:
            raise InputError(
                f"site '{s.name}' does not exist in a {self.family}-family model; its kinds are {', '.join(self.kinds)}"
            )
        if not 0 <= s.layer < self.n_layers:
            raise InputError(
                f"site '{s.name}': layer {s.layer} is out of range; the model has layers 0..{self.n_layers - 1}"
            )
        if not self.has(s.layer, s.kind):
            where = ", ".join(map(str, self.layers_with(s.kind)))
            raise InputError(
                f"site '{s.name}' does not exist: block {s.layer} of this {self.family}-family model has "
                f"{self.describe_layer(s.layer)}; {s.kind} sites are in layers {where}"
            )
        if s.kind == "head" and not 0 <= int(s.index) < self.n_heads:
            raise InputError(
                f"site '{s.name}': head {s.index} is out of range; layers have heads 0..{self.n_heads - 1}"
            )
        if s.kind == "neuron" and not 0 <= int(s.index) < self.n_neurons:
            raise InputError(
                f"site '{s.name}': neuron {s.index} is out of range; MLPs have neurons 0..{self.n_neurons - 1}"
            )
        if s.kind == "channel" and not 0 <= int(s.index) < self.n_channels:
            raise InputError(
                f"site '{s.name}': channel {s.index} is out of range; mixers have channels 0..{self.n_channels - 1}"
            )
        if s.kind == "expert" and not 0 <= int(s.index) < self.n_experts:
            raise InputError(
                f"site '{s.name}': expert {s.index} is out of range; MoE blocks have experts 0..{self.n_experts - 1}"
            )
        return s

    def count(self, kind: str) -> int:
        """How many heads, neurons or channels a block has of ``kind`` (0 where the family has none)."""
        counts = {"head": self.n_heads, "neuron": self.n_neurons, "channel": self.n_channels, "expert": self.n_experts}
        return counts.get(kind, 0)

    def expand(self, patterns: str | Iterable[str | Site]) -> list[Site]:
        """Site names, with ``*`` for every layer/head (``layer.*.mlp``) or a bare kind (``resid``)."""
        if isinstance(patterns, (str, Site)):
            patterns = [patterns]
        out: list[Site] = []
        for pattern in patterns:
            if isinstance(pattern, Site):
                out.append(self.check(pattern))
                continue
            p = pattern.strip()
            if p == "shared_expert":
                p = "layer.*.mlp.shared_expert"
            elif p in self.kinds and p not in INDEXED_KINDS:
                p = f"layer.*.{p}"
            elif p in INDEXED_KINDS:
                p = f"layer.*.{_OWNER[p]}.{p}.*"
            if "*" not in p:
                out.append(self.check(p))
                continue
            # a pattern over layers covers the blocks that have the kind (hybrids: not every block)
            fields = p.split(".")
            kind = next((k for k in INDEXED_KINDS if f".{k}." in p), fields[min(2, len(fields) - 1)])
            kind = "shared_expert" if p.endswith(".shared_expert") else kind
            layers = self.layers_with(kind) if p.startswith("layer.*.") and kind in self.kinds else range(self.n_layers)
            if not p.startswith("layer.*."):  # one named layer, every index of it (layer.1.attn.head.*)
                layers = [None]
            for i in layers:
                q = p if i is None else p.replace("*", str(i), 1)
                if kind in INDEXED_KINDS and q.endswith(f"{kind}.*"):
                    names = [q.replace("*", str(h)) for h in range(self.count(kind))]
                else:
                    names = [q.replace("*", str(i))]
                out.extend(self.check(n) for n in names)
        return out

    # -- modules -------------------------------------------------------------------
    def module(self, layer: int, kind: str) -> nn.Module:
        """The module of ``kind`` (attn, mlp, mixer; head/neuron/channel: the projection they enter; expert: the
        fused experts module; shared_expert: the shared expert) in block ``layer``."""
        if not self.has(layer, kind):
            self.check(Site(layer, kind, 0 if kind in INDEXED_KINDS else None))  # raises the one-line error
        return self._resolve(layer, kind)

    def locate(self, site: str | Site) -> Location:
        s = self.check(site)
        if s.kind == "resid":
            return Location(self.layers[s.layer], "output")
        if s.kind == "expert":
            raise InputError(
                f"site '{s.name}': a routed expert's contribution exists only inside the experts' forward and has "
                "no tensor of its own; patching zeroes or scales it through its routing weight (patching.experts)"
            )
        module = self.module(s.layer, s.kind)
        if s.kind == "head":
            start = int(s.index) * self.head_dim
            return Location(module, "input", start, start + self.head_dim)
        if s.kind in ("neuron", "channel"):
            start = int(s.index)
            return Location(module, "input", start, start + 1, squeeze=True)
        return Location(module, "output")

    def site(self, layer: int, kind: str, index: int | None = None) -> Site:
        return self.check(Site(layer, kind, index))


def site_map(model: nn.Module) -> SiteMap:
    """The :class:`SiteMap` of ``model`` (cheap: walks the module tree once)."""
    return SiteMap(model)


def normalise_positions(positions: Sequence[int] | int | None, length: int, *, what: str = "position") -> list[int]:
    """Absolute positions (negative ones count from the end); an error names the valid range."""
    if positions is None:
        return list(range(length))
    if isinstance(positions, int):
        positions = [positions]
    out: list[int] = []
    for p in positions:
        q = int(p) + length if int(p) < 0 else int(p)
        if not 0 <= q < length:
            raise InputError(f"{what} {int(p)} is out of range for a sequence of {length} tokens (0..{length - 1})")
        out.append(q)
    return out
