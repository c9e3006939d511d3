"""FLatten focused linear attention: focusing function, reduction to ReLU attention, DWC, cost."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vitspeed.attention import build_core, get_attention, validate_options
from vitspeed.attention.focused import FocusedLinearAttention, focus
from vitspeed.flops import count_flops
from vitspeed.formulas import core_formula


def qkv(B=2, h=3, N=36, d=8, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, h, N, d, generator=g, dtype=dtype) for _ in range(3)]


def core(dtype=torch.float64, **options) -> FocusedLinearAttention:
    c = build_core("focused", 8, 3, **options).to(dtype)
    with torch.no_grad():  # a non-neutral scale so that the tests see it
        c.scale.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    return c


def test_registered_as_linear_with_options():
    spec = get_attention("focused")
    assert spec.family == "linear" and not spec.supports_bias
    assert spec.options == {"p": 3.0, "kernel_size": 5}
    assert validate_options(spec, {"p": "2", "kernel_size": "3"}) == {"p": 2.0, "kernel_size": 3}


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0, 8.0, 32.0])
def test_focusing_keeps_the_norm_and_sharpens_the_direction(p):
    x = torch.rand(4, 3, 10, 8, dtype=torch.float64) + 1e-3
    for dim in (-1, (1, 3)):
        y = focus(x, p, dim=dim)
        norm = torch.linalg.vector_norm
        torch.testing.assert_close(norm(y, dim=dim), norm(x, dim=dim))
        share_x = x.amax(dim=dim) / norm(x, dim=dim)
        share_y = y.amax(dim=dim) / norm(y, dim=dim)
        if p == 1:
            torch.testing.assert_close(y, x)
        else:
            assert (share_y > share_x).all()


def test_focus_is_finite_for_a_token_at_the_relu_floor():
    x = torch.full((1, 3, 2, 8), 1e-6)  # every channel was non-positive before ReLU + 1e-6
    for p in (3.0, 5.0, 8.0):
        assert torch.isfinite(focus(x, p, dim=(1, 3))).all()


def test_power_below_one_or_not_finite_and_even_kernel_are_refused():
    for p in (0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"p(=\S+ of attention .focused.)? must be a finite number"):
            build_core("focused", 8, 3, p=p)
    with pytest.raises(ValueError, match="kernel_size"):
        build_core("focused", 8, 3, kernel_size=4)


def test_p1_without_dwc_at_neutral_scale_is_relu_linear_attention():
    q, k, v = qkv()
    focused = build_core("focused", 8, 3, p=1.0, kernel_size=0).double()  # scale at its zero init
    relu = build_core("linear_relu", 8, 3)
    # equal up to the reference's 1e-6 added after the ReLU and in the normaliser
    torch.testing.assert_close(focused(q, k, v), relu(q, k, v), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("options", [{}, {"p": 2.0, "kernel_size": 3}, {"p": 8.0, "kernel_size": 0}])
@pytest.mark.parametrize("N,grid", [(36, None), (37, (6, 6)), (50, (7, 7))])
def test_linear_form_equals_explicit_form(options, N, grid):
    q, k, v = qkv(N=N)
    c = core(**options)
    torch.testing.assert_close(c(q, k, v, grid=grid), c.explicit(q, k, v, grid=grid), rtol=1e-9, atol=1e-9)


def test_weights_are_the_focused_feature_products():
    q, k, v = qkv()
    c = core(kernel_size=0)
    scale = F.softplus(c.scale)

    def phi(x):
        x = (x.relu() + 1e-6) / scale  # (B, h, N, d); the reference's norms run over all heads' channels
        flat = x.transpose(1, 2).reshape(2, 36, 24)
        y = flat.norm(dim=-1, keepdim=True) / (flat ** 3).norm(dim=-1, keepdim=True) * flat ** 3
        return y.reshape(2, 36, 3, 8).transpose(1, 2)

    w = phi(q) @ phi(k).transpose(-1, -2)
    expected = (w / (w.sum(-1, keepdim=True) + 36e-6)) @ v  # normaliser mean(phi(K)) + 1e-6
    torch.testing.assert_close(c(q, k, v), expected)


def test_dwc_is_one_depthwise_conv_shared_by_heads_and_skips_prefix_tokens():
    q, k, v = qkv(N=37)
    with_dwc, without = core(), core(kernel_size=0)
    without.scale = with_dwc.scale
    diff = with_dwc(q, k, v, grid=(6, 6)) - without(q, k, v, grid=(6, 6))
    assert diff[:, :, :1].abs().max() == 0  # the class token gets no DWC term
    fmap = v[:, :, 1:].reshape(6, 6, 6, 8).permute(0, 3, 1, 2)  # (B*h, d, H, W)
    conv = F.conv2d(fmap, with_dwc.dwc.weight, with_dwc.dwc.bias, padding=2, groups=8)
    torch.testing.assert_close(diff[:, :, 1:], conv.permute(0, 2, 3, 1).reshape(2, 3, 36, 8))
    assert with_dwc.dwc.weight.shape == (8, 1, 5, 5)


def test_grid_is_required_when_tokens_are_not_a_square():
    q, k, v = qkv(N=37)
    with pytest.raises(ValueError, match="grid"):
        core()(q, k, v)
    core(kernel_size=0)(q, k, v)  # without the DWC no grid is needed


def test_a_score_bias_is_refused():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="bias"):
        core()(q, k, v, bias=torch.zeros(1, 3, 36, 36, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_outputs_are_finite_shaped_and_keep_dtype(dtype):
    q, k, v = qkv(N=50, dtype=dtype)
    out = core(dtype=dtype)(q, k, v, grid=(7, 7))
    assert out.shape == q.shape and out.dtype == dtype
    assert torch.isfinite(out).all()


class _WithGrid(nn.Module):
    def __init__(self, c, grid):
        super().__init__()
        self.core, self.grid = c, grid

    def forward(self, q, k, v):
        return self.core(q, k, v, grid=self.grid)


@pytest.mark.parametrize("options", [{}, {"p": 8.0, "kernel_size": 3}, {"kernel_size": 0}])
@pytest.mark.parametrize("N,d,h,prefix", [(16, 8, 2, 0), (50, 32, 3, 1), (64, 16, 4, 0)])
def test_counted_cost_equals_the_closed_form(options, N, d, h, prefix):
    side = int((N - prefix) ** 0.5)
    q, k, v = (t.float() for t in qkv(B=2, h=h, N=N, d=d))
    module = _WithGrid(build_core("focused", d, h, **options), (side, side))
    fc = count_flops(module, (q, k, v))
    expected = core_formula("focused", 2, N, d, h, prefix=prefix, **options)
    assert fc.unhandled == {}
    assert fc.macs == int(expected["macs"])
    assert fc.elementwise == int(expected["elementwise"])


def test_l2_norm_is_the_euclidean_norm_and_avoids_the_strided_vector_norm_on_the_cpu():
    from vitspeed.attention.focused import l2_norm
    from vitspeed.traffic import aten_kernels

    x = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    torch.testing.assert_close(l2_norm(x, (1, 3)), torch.linalg.vector_norm(x, dim=(1, 3), keepdim=True))
    torch.testing.assert_close(l2_norm(x, -1), x.norm(dim=-1, keepdim=True))
    assert "aten::linalg_vector_norm" not in aten_kernels(lambda: l2_norm(x, (1, 3)))
    # other devices (meta stands in for CUDA): one vector_norm kernel
    assert "aten::linalg_vector_norm" in aten_kernels(lambda: l2_norm(torch.empty(2, 3, 5, 4, device="meta"), (1, 3)))

