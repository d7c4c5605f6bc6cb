"""LFM2's short gated convolution and its inline gated MLP: the rules against hand formulas (float64).

The conformance suite covers the whole model (forward unchanged under every rule set, restored,
CP-LRP conservation on a bias-free copy); here each part's gradient under each rule set is
compared with the one written out by hand.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lrp_llm.mechanism.context import lrp_rules
from tests.support.tiny_any import tiny_model


def _model():
    torch.manual_seed(0)
    model = tiny_model("lfm2", dtype=torch.float64)
    assert [
        type(layer.conv if hasattr(layer, "conv") else layer.self_attn).__name__ for layer in model.model.layers
    ] == [
        "Lfm2ShortConv",
        "Lfm2Attention",
    ]
    return model


def _conv_by_hand(mixer, h: torch.Tensor, c: torch.Tensor, factors) -> torch.Tensor:
    """The relevance at the mixer's input ``h`` (batch, T, d) for the output cotangent ``c``:
    ``h * W_in^T g`` with ``g`` the thirds' gradients, each the plain one times its factor
    (None: the gate held constant, no gradient)."""
    W_in, W_out, conv = mixer.in_proj.weight, mixer.out_proj.weight, mixer.conv
    T = h.shape[1]
    B, C, x = (h @ W_in.T).chunk(3, dim=-1)
    cz = c @ W_out  # the cotangent at C * conv(B * x)

    def causal_conv(u):  # (batch, T, d): depthwise, kernel K, left-padded
        return F.conv1d(u.transpose(1, 2), conv.weight, None, padding=conv.kernel_size[0] - 1, groups=u.shape[-1])[
            ..., :T
        ].transpose(1, 2)

    s = causal_conv(B * x)
    u = (B * x).detach().requires_grad_(True)
    (g_bx,) = torch.autograd.grad(causal_conv(u), u, C * cz)  # the convolution's adjoint applied to C * cz
    plain = (x * g_bx, s * cz, B * g_bx)  # d/dB, d/dC, d/dx of sum(cz * C * conv(B * x))
    g = torch.cat([torch.zeros_like(p) if f is None else f * p for p, f in zip(plain, factors, strict=True)], dim=-1)
    return h * (g @ W_in)


@pytest.mark.parametrize(("rules", "factors"), [("attnlrp", (0.25, 0.5, 0.25)), ("cp-lrp", (None, None, 1.0))])
def test_gated_convolution_rule_against_hand_formula(rules, factors):
    model = _model()
    mixer = model.model.layers[0].conv
    torch.manual_seed(1)
    h = torch.randn(1, 7, 32, dtype=torch.float64, requires_grad=True)
    c = torch.randn(1, 7, 32, dtype=torch.float64)
    with lrp_rules(model, rules):
        y = mixer(h)
        (grad,) = torch.autograd.grad(y, h, c)
    with torch.no_grad():
        torch.testing.assert_close(y, mixer(h))
    want = _conv_by_hand(mixer, h.detach(), c, factors)
    torch.testing.assert_close(h.detach() * grad, want, atol=1e-12, rtol=1e-10)
    # the relevance of the output (bias-free projections) reaches the input whole
    torch.testing.assert_close((h.detach() * grad).sum(), (y.detach() * c).sum(), atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("rules", ["attnlrp", "cp-lrp", "relp"])
def test_inline_gated_mlp_rule_against_hand_formula(rules):
    model = _model()
    mlp = model.model.layers[1].feed_forward
    torch.manual_seed(2)
    x = torch.randn(1, 5, 32, dtype=torch.float64, requires_grad=True)
    c = torch.randn(1, 5, 32, dtype=torch.float64)
    with lrp_rules(model, rules):
        y = mlp(x)
        (grad,) = torch.autograd.grad(y, x, c)
    assert "forward" not in mlp.__dict__  # restored
    with torch.no_grad():
        torch.testing.assert_close(y, mlp(x))
        g, u = x @ mlp.w1.weight.T, x @ mlp.w3.weight.T
        cz = c @ mlp.w2.weight
        if rules == "cp-lrp":  # the gate silu(g) held constant
            want = (cz * F.silu(g)) @ mlp.w3.weight
        else:  # uniform rule: half through the up projection, half through silu by the identity rule (silu(g)/g)
            want = 0.5 * (cz * F.silu(g)) @ mlp.w3.weight + 0.5 * (cz * u * torch.sigmoid(g)) @ mlp.w1.weight
    torch.testing.assert_close(grad, want, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close((x.detach() * grad).sum(), (y.detach() * c).sum(), atol=1e-10, rtol=1e-10)


def test_layout_mismatch_is_refused_with_a_one_line_error():
    from lrp_llm.errors import UnsupportedModelError

    model = _model()
    del model.model.layers[0].conv.in_proj  # a conv block without the input projection the rules need
    with pytest.raises(UnsupportedModelError, match=r"expected .*1 mixer modules.*found .*0"):
        with lrp_rules(model, "cp-lrp"):
            pass
