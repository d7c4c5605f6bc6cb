"""MambaLRP for transformers' Mamba, Mamba-2 and Falcon-Mamba (``MambaForCausalLM``, ``Mamba2ForCausalLM``, ...).

MambaLRP (Rezaei Jafari et al., NeurIPS 2024), in gradient x input form:

==========================  ==================================================
place                       rule
==========================  ==================================================
SiLU after the conv1d       identity rule (relevance passes unchanged)
dt, B, C (input-dependent)  detached: the scan is linear in its input ``u``
dt, B, C RMS norms          on the detached path (Falcon-Mamba, Jamba): constant
A, D                        parameters: constants already
y * SiLU(z) output gate     half rule: y gets x 1/2, SiLU(z) identity rule x 1/2
Mamba-2 gated RMSNorm       the same half rule, then 1/rms detached (Falcon-H1: 1/rms, then the gate)
RMSNorm (blocks, final)     1/rms detached
in_proj, conv1d, out_proj   linear: unchanged
==========================  ==================================================

The mixer's forward is replaced on the instance by :func:`mixer_forward`, which runs
the selective scan of :mod:`lrp_llm.mechanism.ssm_scan` (chunked, one autograd node per layer)
instead of transformers' step-by-step torch path. The same forward without the rules
is installed for the plain-gradient methods (``plain``), so gradient x input and
MambaLRP run on the same fast path. With a KV cache (generation) the original forward
is used. When ``mamba-ssm`` is importable and the tensors are on a GPU, its
``selective_scan_fn`` kernel computes the scan (the gate is applied outside the
kernel so that the half rule still holds).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lrp_llm.archs import ArchSpec, register
from lrp_llm.archs.blocks import install_norms
from lrp_llm.archs.description import BlockPaths, NormParts, resolve
from lrp_llm.errors import UnsupportedModelError
from lrp_llm.mechanism.patch import ModelPatch
from lrp_llm.mechanism.primitives import identity_rule, scale_grad, silu_ratio
from lrp_llm.mechanism.ssm_scan import selective_scan


def _f32(x: torch.Tensor) -> torch.Tensor:
    """At least float32 (float64 stays float64: exact conservation checks)."""
    return x if x.dtype == torch.float64 else x.float()


def _silu(x: torch.Tensor, rules: bool, factor: float = 1.0) -> torch.Tensor:
    y = F.silu(x)
    return identity_rule(x, y, factor, silu_ratio(x)) if rules else y


def _gate(y: torch.Tensor, z: torch.Tensor, rules: bool) -> torch.Tensor:
    """``y * SiLU(z)``; under the rules each factor receives half of the relevance."""
    if rules:
        return scale_grad(y, 0.5) * _silu(z, True, 0.5)
    return y * F.silu(z)


def _mask(x: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    if attention_mask is None or attention_mask.dim() != 2:
        return x
    return (x * attention_mask[:, :, None]).to(x.dtype)


def _causal_conv(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """Depthwise causal conv1d over time: x (batch, L, channels) -> (batch, L, channels).

    Called as a module (its padding is kernel - 1 on both sides; the first L outputs are
    the causal ones) so that accelerate's offload hooks see it.
    """
    L = x.shape[1]
    out = conv(x.transpose(1, 2).to(conv.weight.dtype))
    return out[:, :, :L].transpose(1, 2).to(x.dtype)


def _mamba_ssm_scan():
    """mamba-ssm's CUDA selective scan, or None when it is not installed."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:
        return None
    return selective_scan_fn


def _scan(u, dt, A, B, C, use_kernel: bool) -> torch.Tensor:
    """y (batch, L, E) without the D term; u, dt (batch, L, E); A (E, N); B, C (batch, L, G, N)."""
    if use_kernel and u.is_cuda and B.shape[2] == 1:
        kernel = _mamba_ssm_scan()
        if kernel is not None:
            y = kernel(
                u.transpose(1, 2).contiguous(),
                dt.transpose(1, 2).contiguous(),
                A.float(),
                B[:, :, 0].transpose(1, 2).contiguous(),
                C[:, :, 0].transpose(1, 2).contiguous(),
            )
            return y.transpose(1, 2).to(u.dtype)
    return selective_scan(u, dt, A, B, C)


# --------------------------------------------------------------------------- Mamba
def mamba_scan_inputs(mixer: nn.Module, hidden_states: torch.Tensor, rules: bool, attention_mask=None) -> dict:
    """The selective scan's operands of a MambaMixer: u, dt (batch, L, E), A (E, N), B, C (batch, L, 1, N), z."""
    x = _mask(hidden_states, attention_mask)
    xs, z = mixer.in_proj(x).chunk(2, dim=-1)  # (batch, L, E) each
    u = _mask(_silu(_causal_conv(xs, mixer.conv1d), rules), attention_mask)
    # dt, B and C depend on the input; MambaLRP holds them constant
    params = mixer.x_proj(u.detach() if rules else u)
    n = mixer.ssm_state_size
    dt_low, B, C = torch.split(params, [mixer.time_step_rank, n, n], dim=-1)
    if hasattr(mixer, "b_layernorm"):
        # Falcon-Mamba and Jamba: RMS norms on dt, B and C. Under the rules they lie on the detached
        # path (computed from u.detach()), so their 1/rms is a constant there as everywhere.
        dt_low, B, C = mixer.dt_layernorm(dt_low), mixer.b_layernorm(B), mixer.c_layernorm(C)
    dt = F.softplus(_f32(mixer.dt_proj(dt_low)))
    A = -torch.exp(_f32(mixer.A_log))
    if rules:
        A = A.detach()
    return {"u": u, "dt": dt, "A": A, "B": B.unsqueeze(2), "C": C.unsqueeze(2), "z": z}


def mamba_mixer_forward(mixer: nn.Module, hidden_states: torch.Tensor, rules: bool, attention_mask=None):
    """MambaMixer without a cache: hidden_states (batch, L, d_model) -> (batch, L, d_model)."""
    s = mamba_scan_inputs(mixer, hidden_states, rules, attention_mask)
    u = s["u"]
    y = _scan(u, s["dt"], s["A"], s["B"], s["C"], use_kernel=True)
    y = y + u * mixer.D.to(y.dtype)
    return mixer.out_proj(_gate(y, s["z"], rules).to(hidden_states.dtype))


# ------------------------------------------------------------------------- Mamba-2
def mamba2_scan_inputs(mixer: nn.Module, hidden_states: torch.Tensor, rules: bool, attention_mask=None) -> dict:
    """The scan's operands of a Mamba2Mixer, per channel: u, dt (batch, L, E), A (E, N), B, C (batch, L, G, N), z."""
    b, L, _ = hidden_states.shape
    E, H, P = mixer.intermediate_size, mixer.num_heads, mixer.head_dim
    G, N = mixer.n_groups, mixer.ssm_state_size
    x = _mask(hidden_states, attention_mask)
    projected = mixer.in_proj(x * getattr(mixer, "ssm_in_multiplier", 1.0))
    mup = getattr(mixer, "mup_vector", None)  # Falcon-H1's muP multipliers: constants per channel
    if mup is not None:
        projected = projected * mup.to(projected.dtype)
    gate, xbc, dt = projected.split([E, mixer.conv_dim, H], dim=-1)
    xbc = _mask(_silu(_causal_conv(xbc, mixer.conv1d), rules), attention_mask)
    u, B, C = torch.split(xbc, [E, G * N, G * N], dim=-1)
    if rules:
        B, C, dt = B.detach(), C.detach(), dt.detach()
    dt = F.softplus(_f32(dt) + _f32(mixer.dt_bias))
    lo, hi = mixer.time_step_limit
    if lo > 0.0 or hi != float("inf"):
        dt = dt.clamp(min=lo, max=hi)
    A = -torch.exp(_f32(mixer.A_log))  # (H,)
    if rules:
        A = A.detach()
    # one decay per head: expand heads to their P channels and N states
    A_full = A.repeat_interleave(P).unsqueeze(-1).expand(E, N)
    dt_full = dt.repeat_interleave(P, dim=-1)
    return {"u": u, "dt": dt_full, "A": A_full, "B": B.view(b, L, G, N), "C": C.view(b, L, G, N), "z": gate}


def mamba2_mixer_forward(mixer: nn.Module, hidden_states: torch.Tensor, rules: bool, attention_mask=None):
    """Mamba2Mixer without a cache: hidden_states (batch, L, d_model) -> (batch, L, d_model)."""
    P, G = mixer.head_dim, mixer.n_groups
    s = mamba2_scan_inputs(mixer, hidden_states, rules, attention_mask)
    u = s["u"]
    y = _scan(u, s["dt"], s["A"], s["B"], s["C"], use_kernel=False)
    y = _f32(y) + _f32(u) * _f32(mixer.D).repeat_interleave(P)
    z, norm = _f32(s["z"]), mixer.norm
    if not isinstance(getattr(norm, "weight", None), torch.Tensor):
        out = _gate(y, z, rules)  # Falcon-H1 without its gated norm (nn.Identity): y * SiLU(z)
    elif getattr(norm, "norm_before_gate", False):
        out = _gate(_group_rms(y, norm, G, rules), z, rules)  # Falcon-H1: normalise y, then the gate
    else:
        out = _group_rms(_gate(y, z, rules), norm, G, rules)  # Mamba-2: the gate, then normalise
    return mixer.out_proj(out.to(hidden_states.dtype))


def _group_rms(x: torch.Tensor, norm: nn.Module, groups: int, rules: bool) -> torch.Tensor:
    """``weight * x / rms(x)`` over ``groups`` equal groups of channels; under the rules 1/rms is detached."""
    b, L, E = x.shape
    grouped = x.view(b, L, groups, E // groups)
    inv = torch.rsqrt(grouped.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    return norm.weight * (grouped * (inv.detach() if rules else inv)).view(b, L, E)


def is_mamba2(mixer: nn.Module) -> bool:
    """Mamba-2 layout (one decay per head, ``dt_bias``, gated norm) rather than Mamba-1 (``x_proj``, ``dt_proj``)."""
    return hasattr(mixer, "dt_bias")


def is_mixer(module: nn.Module) -> bool:
    """Whether ``module`` is a Mamba-1 or Mamba-2 mixer of the layout the forwards here compute.

    By its parts, not its class name: transformers names it per model (``MambaMixer``,
    ``FalconMambaMixer``, ``BambaMixer``, ``NemotronHMamba2Mixer``, ...).
    """
    common = all(hasattr(module, a) for a in ("in_proj", "conv1d", "out_proj", "A_log", "D"))
    if not common:
        return False
    if is_mamba2(module):
        return all(hasattr(module, a) for a in ("norm", "n_groups", "head_dim", "time_step_limit"))
    return all(hasattr(module, a) for a in ("x_proj", "dt_proj", "time_step_rank"))


def scan_inputs(mixer: nn.Module, hidden_states: torch.Tensor, attention_mask=None) -> dict:
    """The scan's operands of either mixer type (without rules)."""
    if is_mamba2(mixer):
        return mamba2_scan_inputs(mixer, hidden_states, False, attention_mask)
    return mamba_scan_inputs(mixer, hidden_states, False, attention_mask)


# ------------------------------------------------------------------------ patching
def _mixer_override(mixer: nn.Module, forward, rules: bool):
    def make(original):
        def patched(hidden_states, cache_params=None, attention_mask=None, **kwargs):
            if cache_params is not None:
                return original(hidden_states, cache_params=cache_params, attention_mask=attention_mask, **kwargs)
            return forward(mixer, hidden_states, rules, attention_mask)

        return patched

    return make


MAMBA_BLOCKS = BlockPaths(layers="layers", mixer="mixer", channels="mixer.out_proj", final_norm="norm_f")
# block norms and the final norm; the Mamba-2 gated norm (MambaRMSNormGated) is part of the mixer forward
MAMBA_NORMS = NormParts(kind="rms", class_suffix="RMSNorm")


def mixers(model: nn.Module) -> list[nn.Module]:
    """The mixer of every block, in order."""
    layers = MAMBA_BLOCKS.layer_list(model)
    found = [] if layers is None else [resolve(layer, MAMBA_BLOCKS.mixer) for layer in layers]
    n_layers = model.config.num_hidden_layers
    if len(found) != n_layers or not all(isinstance(m, nn.Module) and is_mixer(m) for m in found):
        raise UnsupportedModelError(
            f"{type(model).__name__}: expected {n_layers} Mamba mixers, found {len(found)}; "
            "this checkpoint's layout is not supported"
        )
    return found


def install_mixers(patch: ModelPatch, found: list[nn.Module], rules: bool) -> None:
    """The fast scan forward on every mixer in ``found``: MambaLRP's rules (``rules=True``) or plain gradients.

    The one installer of the mixer rules, for the Mamba family and the hybrids
    (:mod:`lrp_llm.archs.hybrid`) alike.
    """
    for mixer in found:
        forward = mamba2_mixer_forward if is_mamba2(mixer) else mamba_mixer_forward
        patch.override_forward(mixer, _mixer_override(mixer, forward, rules))


def outside_mixers(modules: list[nn.Module], found: list[nn.Module]) -> list[nn.Module]:
    """``modules`` less those inside a mixer in ``found``: the mixer forwards compute their own norms
    (Falcon-Mamba's weightless dt/B/C norms even carry a dummy weight of the wrong width)."""
    inside = {id(m) for mixer in found for m in mixer.modules()}
    return [m for m in modules if id(m) not in inside]


def _install(patch: ModelPatch, model: nn.Module, rules: bool) -> None:
    found = mixers(model)
    install_mixers(patch, found, rules)
    if rules:
        norms = [m for m in model.modules() if type(m).__name__.endswith(MAMBA_NORMS.class_suffix)]
        install_norms(patch, outside_mixers(norms, found), MAMBA_NORMS)


def apply_mamba_rules(patch: ModelPatch, model: nn.Module, rules: str) -> None:
    """MambaLRP; RelP's backward pass on Mamba is MambaLRP too (no attention pattern to hold constant)."""
    _install(patch, model, rules=True)


def apply_mamba_plain(patch: ModelPatch, model: nn.Module) -> None:
    """The fast scan with unchanged gradients (for gradient x input, saliency, IG)."""
    _install(patch, model, rules=False)


MAMBA_FAMILY = register(
    ArchSpec(
        family="mamba",
        # Falcon-Mamba: the Mamba-1 mixer with RMS norms on dt, B and C (see mamba_scan_inputs)
        model_types=("mamba", "mamba2", "falcon_mamba"),
        kind="causal-lm",
        install=apply_mamba_rules,
        rules=("mambalrp",),
        patching_rules=("relp",),
        default_method="mambalrp",
        extra_methods=("hidden-attention",),
        plain=apply_mamba_plain,
        blocks=MAMBA_BLOCKS,
    )
)
