"""Memory-traffic counter: views are free, every other op reads its inputs and writes its outputs."""
import torch
from torch import nn

from vitspeed.attention import build_core
from vitspeed.traffic import count_traffic, sdpa_backend, trace_traffic


class MatmulThenView(nn.Module):
    def forward(self, a, b):
        return (a @ b).view(-1)


def test_a_matmul_reads_both_operands_and_writes_its_result_views_are_free():
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    t = count_traffic(MatmulThenView(), (a, b))
    assert t.read == (8 * 16 + 16 * 4) * 4
    assert t.written == 8 * 4 * 4
    assert t.total == t.read + t.written


def test_fused_softmax_moves_only_q_k_v_and_the_output_while_explicit_moves_the_scores():
    B, h, N, d = 1, 2, 64, 16
    q, k, v = (torch.randn(B, h, N, d) for _ in range(3))
    fused = count_traffic(build_core("softmax", d, h), (q, k, v))
    explicit = count_traffic(build_core("softmax_explicit", d, h), (q, k, v))
    qkv_out = 4 * B * h * N * d * 4
    assert fused.total == qkv_out
    assert explicit.total > qkv_out + 2 * B * h * N * N * 4  # scores written and read back at least once


def test_linear_attention_traffic_grows_linearly_in_tokens():
    d, h = 16, 2
    sizes = [256, 1024]
    totals = [count_traffic(build_core("linear_relu", d, h), tuple(torch.randn(1, h, n, d) for _ in range(3))).total
              for n in sizes]
    assert 3.5 < totals[1] / totals[0] < 4.5


def test_trace_traffic_of_a_callable_equals_count_traffic_of_the_module():
    q, k, v = (torch.randn(1, 2, 32, 8) for _ in range(3))
    core = build_core("linear_relu", 8, 2)
    assert trace_traffic(lambda: core(q, k, v)).total == count_traffic(core, (q, k, v)).total > 0


def test_sdpa_backend_names_the_kernel_sdpa_chose():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v = (torch.randn(1, 2, 64, 16) for _ in range(3))
    fused = build_core("softmax", 16, 2)
    assert sdpa_backend(lambda: fused(q, k, v)) == "flash_cpu"  # PyTorch's fused CPU kernel
    with sdpa_kernel(SDPBackend.MATH):
        assert sdpa_backend(lambda: fused(q, k, v)) == "math"
    assert sdpa_backend(lambda: build_core("softmax_explicit", 16, 2)(q, k, v)) == ""
    assert sdpa_backend(lambda: build_core("linear_relu", 16, 2)(q, k, v)) == ""


def test_product_dtype_is_the_dtype_the_matrix_products_ran_in():
    q, k, v = (torch.randn(1, 2, 64, 16, dtype=torch.bfloat16) for _ in range(3))
    # fused softmax multiplies in bfloat16; the linear kernels upcast bfloat16 to float32 for their sums
    assert trace_traffic(lambda: build_core("softmax", 16, 2)(q, k, v)).product_dtype == "bfloat16"
    assert trace_traffic(lambda: build_core("softmax_explicit", 16, 2)(q, k, v)).product_dtype == "bfloat16"
    assert trace_traffic(lambda: build_core("linear_relu", 16, 2)(q, k, v)).product_dtype == "float32"
    assert trace_traffic(lambda: build_core("taylor2_compact", 16, 2)(q, k, v)).product_dtype == "float32"
    # no products at all: no compute dtype
    assert trace_traffic(lambda: torch.relu(q)).product_dtype == ""
