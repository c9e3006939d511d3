"""Tests of vitspeed.flops: per-op conventions, unhandled ops, breakdown, published model counts."""
from __future__ import annotations

import functools
import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vitspeed.flops import FlopCount, count_flops, count_params, model_flops

B, H, N, D = 2, 3, 16, 8


# --- products ---------------------------------------------------------------------------------

class _Sdpa(nn.Module):
    def forward(self, q, k, v, mask=None):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class _Explicit(nn.Module):
    def forward(self, q, k, v):
        return (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(-1) @ v


def _qkv(dv: int = D):
    return torch.randn(B, H, N, D), torch.randn(B, H, N, D), torch.randn(B, H, N, dv)


def test_sdpa_counts_both_products_and_softmax():
    f = count_flops(_Sdpa(), _qkv())
    assert f.unhandled == {}
    assert f.macs == B * H * N * N * 2 * D
    assert f.elementwise == 3 * B * H * N * N
    assert set(f.by_operator) == {"scaled_dot_product_attention"}


def test_sdpa_macs_equal_explicit_attention():
    q, k, v = _qkv()
    fused, explicit = count_flops(_Sdpa(), (q, k, v)), count_flops(_Explicit(), (q, k, v))
    assert explicit.unhandled == {}
    assert fused.macs == explicit.macs
    assert explicit.by_operator["softmax"]["elementwise"] == fused.elementwise


def test_sdpa_value_width_and_mask():
    q, k, v = _qkv(dv=5)
    f = count_flops(_Sdpa(), (q, k, v, torch.zeros(1, H, N, N)))
    assert f.macs == B * H * N * N * (D + 5)
    assert f.elementwise == 4 * B * H * N * N  # softmax + adding the mask


def test_linear_counts_tokens_in_out_without_bias():
    f = count_flops(nn.Linear(12, 20), torch.randn(2, 7, 12))
    assert f.macs == 2 * 7 * 12 * 20
    assert f.elementwise == 0 and f.unhandled == {}


def test_depthwise_and_grouped_conv():
    conv = nn.Conv2d(8, 8, 3, padding=1, groups=8)
    f = count_flops(conv, torch.randn(1, 8, 10, 10))
    assert f.macs == 8 * 10 * 10 * 1 * 9
    grouped = count_flops(nn.Conv2d(8, 4, 1, groups=2), torch.randn(1, 8, 5, 5))
    assert grouped.macs == 4 * 5 * 5 * 4


def test_transposed_conv_counts_each_input_element_times_out_channels_per_group_and_kernel():
    # a transposed conv scatters every input element to (C_out / groups) x k x k outputs
    f = count_flops(nn.ConvTranspose2d(4, 6, 3, stride=2), torch.randn(2, 4, 5, 5))
    assert f.macs == 2 * 4 * 5 * 5 * 6 * 9 and f.unhandled == {}
    grouped = count_flops(nn.ConvTranspose2d(4, 6, 3, groups=2), torch.randn(1, 4, 5, 5))
    assert grouped.macs == 4 * 5 * 5 * 3 * 9
    # the same counts whatever the output size (stride, padding) makes it
    strided = count_flops(nn.ConvTranspose2d(4, 6, 3, stride=3, padding=1), torch.randn(2, 4, 5, 5))
    assert strided.macs == f.macs


class _MaxMin(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def forward(self, x, row):
        if self.kind == "pairwise":
            return torch.max(row, x), torch.min(x, row)  # broadcast: one op per output element
        if self.kind == "dim":
            return x.max(dim=-1).values, x.min(dim=-1).values  # reductions: one op per input element
        return x.max(), x.min()


@pytest.mark.parametrize("kind, per_op", [("pairwise", B * H * N * D), ("dim", B * H * N * D), ("all", B * H * N * D)])
def test_max_min_pairwise_per_output_reductions_per_input(kind, per_op):
    x, row = torch.randn(B, H, N, D), torch.randn(D)
    f = count_flops(_MaxMin(kind), (x, row))
    assert f.macs == 0 and f.unhandled == {}
    assert f.by_operator["max"]["elementwise"] == f.by_operator["min"]["elementwise"] == per_op
    # pairwise with the small operand first: still per output (B H N D), not per first input (D)
    assert f.elementwise == 2 * per_op


class _Einsums(nn.Module):
    def forward(self, a, b, c):
        return (torch.einsum("bhnd,bhne->bhde", a, b), torch.einsum("ij,jk,kl->il", c, c, c),
                torch.einsum("bhnd->bhd", a), torch.einsum("...nd,...ne->...de", a, b),
                torch.einsum("bhnd->bhdn", a))


def test_einsum_pairwise_reduction_and_permutation():
    a, c = torch.randn(2, 3, 4, 5), torch.randn(6, 6)
    f = count_flops(_Einsums(), (a, a, c))
    two_operand = 2 * 3 * 4 * 5 * 5
    assert f.by_operator["einsum"]["macs"] == 2 * two_operand + 2 * 6 ** 3  # chain: two 6x6x6 steps
    assert f.by_operator["einsum"]["elementwise"] == a.numel()  # the sum over n; permutation is free
    assert f.unhandled == {}


class _FusedProducts(nn.Module):
    def forward(self, a, b, c, u, w):
        return (torch.baddbmm(c, a, b), torch.addbmm(c[0], a, b), torch.outer(u, w), F.softplus(u),
                u.pow(3))


def test_fused_add_products_count_the_product_only_and_outer_one_multiply_per_output():
    a, b, c = torch.randn(2, 3, 4), torch.randn(2, 4, 5), torch.randn(2, 3, 5)
    f = count_flops(_FusedProducts(), (a, b, c, torch.randn(5), torch.randn(7)))
    assert f.unhandled == {}
    assert f.by_operator["baddbmm"]["macs"] == 2 * 3 * 5 * 4  # (2,3,5) outputs x contraction 4
    assert f.by_operator["addbmm"]["macs"] == 2 * 3 * 4 * 5  # every batch's product, summed over batch
    assert f.by_operator["outer"]["macs"] == 5 * 7
    # like fvcore's addmm, the added input (beta * c) is not counted; softplus and pow: one per output
    assert f.macs == 120 + 120 + 35 and f.elementwise == 5 + 5


# --- elementwise, reductions, data movement ----------------------------------------------------

class _Ops(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.logit = nn.Parameter(torch.zeros(H, 1, 1))

    def forward(self, x):
        if self.kind == "gelu":
            return F.gelu(x)
        if self.kind == "softmax":
            return x.softmax(-1)
        if self.kind == "sum":
            return x.sum(-1)
        if self.kind == "move":
            y = x.permute(0, 2, 1, 3).reshape(x.shape[0], -1)
            return torch.cat([y, y.flip(-1)], 0)[:, 1:].contiguous()
        if self.kind == "param":
            return self.logit.clamp(max=4.0).exp()
        raise ValueError(self.kind)


@pytest.mark.parametrize("kind, expected", [
    ("gelu", B * H * N * D), ("softmax", 3 * B * H * N * D), ("sum", B * H * N * D),
    ("move", 0), ("param", 2 * H),
])
def test_elementwise_counted_separately(kind, expected):
    f = count_flops(_Ops(kind), torch.randn(B, H, N, D))
    assert f.macs == 0
    assert f.elementwise == expected
    assert f.unhandled == {}


def test_in_place_and_pooling_ops():
    model = nn.Sequential(nn.Hardswish(inplace=True), nn.AdaptiveAvgPool2d(1), nn.ReLU(inplace=True))
    f = count_flops(model, torch.randn(1, 4, 6, 6))
    assert f.macs == 0 and f.unhandled == {}
    assert f.elementwise == 4 * 36 + 4 * 36 + 4  # hardswish, pool (per input), relu


def test_norms_go_to_macs_the_fvcore_way():
    ln = count_flops(nn.LayerNorm(8), torch.randn(2, 5, 8))
    assert ln.macs == 5 * 2 * 5 * 8 and ln.elementwise == 0
    bn = count_flops(nn.BatchNorm2d(4), torch.randn(1, 4, 3, 3))
    assert bn.macs == 2 * 4 * 9  # eval-mode batch norm with affine


# --- unhandled ops ----------------------------------------------------------------------------

class _Exotic(nn.Module):
    def forward(self, x):
        return torch.special.bessel_j0(x) + torch.erfinv(x)


def test_unknown_op_is_reported_not_zero(caplog):
    x = torch.rand(2, 3) * 0.5
    with caplog.at_level(logging.WARNING):
        f = count_flops(_Exotic(), x)
    assert f.unhandled == {"aten::special_bessel_j0": 1, "aten::erfinv": 1}
    assert f.elementwise == 6  # the add is still counted
    assert not [r for r in caplog.records if r.name.startswith("fvcore")]
    with pytest.raises(ValueError, match="erfinv"):
        count_flops(_Exotic(), x, strict=True)


# --- modules, breakdown, params ---------------------------------------------------------------

class InnerAttention(nn.Module):
    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v)


class _Attn(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.qkv, self.core, self.proj = nn.Linear(dim, 3 * dim), InnerAttention(), nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, 2, c // 2).permute(2, 0, 3, 1, 4).unbind(0)
        return self.proj(self.core(q, k, v).transpose(1, 2).reshape(b, n, c))


class _Block(nn.Module):
    def __init__(self, dim=8):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = _Attn(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        x = x + self.attn(self.norm(x))
        x = x + self.mlp(x)
        return self.head(x.mean(1))


def test_by_module_and_breakdown():
    model = _Block().train()
    f = count_flops(model, torch.randn(2, 5, 8))
    assert model.training  # mode restored after the eval-mode trace
    assert f.by_module[""] == {"macs": f.macs, "elementwise": f.elementwise}
    assert f.by_module["attn.qkv"]["macs"] == 2 * 5 * 8 * 24
    parts = f.breakdown()
    assert set(parts) == {"attention", "ffn", "rest"}
    assert parts["attention"] == f.by_module["attn"]  # not attn + attn.core (top-most only)
    assert parts["ffn"] == f.by_module["mlp"]
    for key in ("macs", "elementwise"):
        assert sum(p[key] for p in parts.values()) == getattr(f, key)
    assert parts["rest"]["macs"] == f.by_module["norm"]["macs"] + f.by_module["head"]["macs"]
    # rest elementwise: two residual adds and the mean over tokens
    assert parts["rest"]["elementwise"] == 2 * 2 * 5 * 8 + 2 * 5 * 8
    assert isinstance(f, FlopCount) and f.gmacs == f.macs / 1e9


def test_count_params_counts_shared_once():
    lin = nn.Linear(4, 3)
    assert count_params(lin) == 15
    assert count_params(nn.Sequential(lin, lin)) == 15


def test_quadratic_cores_match_their_formulas():
    from vitspeed.attention import build_core, get_attention

    q, k, v = (torch.randn(2, 3, 16, 8) for _ in range(3))
    for name in ("softmax", "softmax_explicit", "cosine", "euclidean", "jaccard"):
        spec = get_attention(name)
        f = count_flops(build_core(name, head_dim=8, num_heads=3), (q, k, v), strict=True)
        assert {"macs": f.macs, "elementwise": f.elementwise} == spec.formula(2, 16, 8, 3, **spec.options), name


# --- whole models vs published numbers --------------------------------------------------------

# published MACs ("FLOPs"), printed precision in G, params in M (reference/papers.md section 1)
PUBLISHED = {
    "deit_tiny_patch16_224": (1.3e9, 0.1e9, 5.7),
    "deit_small_patch16_224": (4.6e9, 0.1e9, 22.1),
    "swin_tiny_patch4_window7_224": (4.5e9, 0.1e9, 28.3),
    "levit_128s": (305e6, 1e6, 7.8),
    "efficientvit_b1": (0.52e9, 0.01e9, 9.1),
}


@functools.lru_cache(maxsize=None)
def _stock(name: str) -> tuple[FlopCount, int]:
    import timm

    model = timm.create_model(name, pretrained=False).eval()  # stock timm: LeViT BN not folded
    return count_flops(model, torch.zeros(1, 3, 224, 224)), count_params(model)


def _deit_macs(img: int, dim: int, heads: int, depth: int = 12, patch: int = 16, classes: int = 1000) -> int:
    """Closed form of a timm DeiT/ViT (class token, SDPA, fvcore LayerNorm = 5 per element)."""
    n = (img // patch) ** 2 + 1
    block = n * dim * (3 * dim + dim + 8 * dim) + heads * n * n * 2 * (dim // heads) + 2 * 5 * n * dim
    return (n - 1) * dim * 3 * patch * patch + depth * block + 5 * n * dim + dim * classes


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_macs(name):
    published, printed_unit, params_m = PUBLISHED[name]
    f, params = _stock(name)
    assert f.unhandled == {}
    # within 3%, or equal once rounded to the printed precision (DeiT-T: 1.258G is printed 1.3G)
    assert abs(f.macs - published) <= max(0.03 * published, printed_unit / 2), f.macs
    assert abs(params / 1e6 - params_m) <= 0.02 * params_m
    parts = f.breakdown()
    assert parts["attention"]["macs"] > 0 and parts["ffn"]["macs"] > 0 and parts["rest"]["macs"] >= 0
    assert sum(p["macs"] for p in parts.values()) == f.macs


@pytest.mark.slow
def test_deit_counts_are_exact():
    assert _stock("deit_tiny_patch16_224")[0].macs == _deit_macs(224, 192, 3)
    assert _stock("deit_small_patch16_224")[0].macs == _deit_macs(224, 384, 6)
    f = model_flops("deit_tiny_patch16_224", img_size=112, batch_size=2)
    assert f.unhandled == {}
    assert f.macs == 2 * _deit_macs(112, 192, 3)
