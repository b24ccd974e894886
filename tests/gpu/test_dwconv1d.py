"""Depthwise dilated convolution on the GPU: the K x dilation matrix, dtypes, layouts and the benchmark shapes.

Each case compares the Triton kernels (forward and the x, weight and bias
gradients) with the float64 reference run on the same (rounded) inputs, by
||a - b|| / max(||b||, sqrt(numel)). float32 must land under 1e-5 (the dense
path's tf32x3 products: ~1e-6). bfloat16 and float16 results are float32
accumulations rounded once to the dtype, so they must lie within a small
multiple of the error of rounding the float64 result itself to that dtype.
Free cached memory is filled with NaN first, so an unwritten output shows.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

from tsuite.kernels.dwconv1d import _dwconv1d_triton, choose_path, dwconv1d  # noqa: E402
from tsuite.kernels.dwconv1d_ref import dwconv1d_ref, left_padding  # noqa: E402

KS = [1, 2, 3, 4, 5, 17, 39, 64]
DILATIONS = [1, 2, 8, 64]
TOL_FP32 = 1e-5
ROUNDING_FACTOR = 5.0  # 16-bit outputs: error <= 5 x (error of rounding the exact result) + 1e-4
BENCH_SHAPES = [  # (B, C, L, K, d, causal): MossFormer2 FSMN and TCN layers
    (4, 512, 16000, 39, 1, False),
    (2, 1024, 8000, 39, 2, False),
    (8, 256, 32768, 3, 64, True),
    (4, 512, 16000, 3, 8, True),
]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / max(b.norm().item(), b.numel() ** 0.5)).item()


def poison_allocator(n_bytes: int = 1 << 30) -> None:
    """Fill free cached memory with NaN, so an output element the kernels never write shows up."""
    torch.empty(n_bytes // 4, dtype=torch.float32, device="cuda").fill_(float("nan"))


def run_case(B, C, L, K, d, causal, dtype, w_dtype=None, channels_last=False, path=None, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    shape = (B, L, C) if channels_last else (B, C, L)
    x = torch.randn(shape, device="cuda", generator=g).to(dtype)
    if channels_last:
        x = x.transpose(1, 2)
    w = (torch.randn(C, K, device="cuda", generator=g) / K**0.5).to(w_dtype or dtype)
    b = torch.randn(C, device="cuda", generator=g).to(w_dtype or dtype)
    gy = torch.randn(B, C, L, device="cuda", generator=g).to(dtype)

    poison_allocator()
    leaves = [t.detach().requires_grad_() for t in (x, w, b)]
    y = _dwconv1d_triton(*leaves, dilation=d, causal=causal, path=path)
    got = (y, *torch.autograd.grad(y, leaves, gy))

    leaves64 = [t.detach().double().requires_grad_() for t in (x, w, b)]
    y64 = dwconv1d_ref(*leaves64, dilation=d, causal=causal)
    want = (y64, *torch.autograd.grad(y64, leaves64, gy.double()))
    return got, want


def check(got, want, what: str) -> str:
    report = []
    for name, a, b in zip(("y", "grad_x", "grad_w", "grad_b"), got, want):
        assert a.shape == b.shape, f"{what} {name}: shape"
        assert torch.isfinite(a).all(), f"{what} {name}: non-finite entries (unwritten or overflow)"
        err = rel_err(a, b)
        tol = TOL_FP32 if a.dtype == torch.float32 else ROUNDING_FACTOR * rel_err(b.to(a.dtype), b) + 1e-4
        report.append(f"{name} {err:.1e} (tol {tol:.0e})")
        assert err < tol, f"{what}: " + ", ".join(report)
    return f"{what}: " + ", ".join(report)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "centred"])
@pytest.mark.parametrize("d", DILATIONS)
@pytest.mark.parametrize("K", KS)
def test_float32_matrix(K, d, causal):
    # C = 37 fills no channel block exactly; L = 1001 is odd and, for d = 64 and K >= 17, shorter than the halo
    got, want = run_case(2, 37, 1001, K, d, causal, torch.float32, seed=K * 100 + d)
    path = choose_path(K, d, left_padding(K, d, causal), 1, 4)
    print(check(got, want, f"K={K} d={d} causal={causal} fp32 path={path}"))


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "centred"])
@pytest.mark.parametrize("d", [1, 8])
@pytest.mark.parametrize("K", [2, 5, 39, 64])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_16bit_matrix(dtype, K, d, causal):
    got, want = run_case(2, 37, 1001, K, d, causal, dtype, seed=K + d)
    print(check(got, want, f"K={K} d={d} causal={causal} {dtype}"))


@pytest.mark.parametrize("path", ["direct", "dense"])
@pytest.mark.parametrize("K,d,causal", [(17, 2, True), (39, 1, False), (8, 1, True)])
def test_both_paths(path, K, d, causal):
    for dtype in (torch.float32, torch.bfloat16):
        got, want = run_case(3, 40, 5000, K, d, causal, dtype, path=path, seed=7)
        print(check(got, want, f"path={path} K={K} d={d} {dtype}"))


def test_bf16_input_with_float32_weight():
    # the dense path splits a float32 weight into two bf16 halves
    got, want = run_case(2, 64, 3000, 39, 1, False, torch.bfloat16, w_dtype=torch.float32)
    assert got[2].dtype == torch.float32
    print(check(got, want, "bf16 x, fp32 w"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("K,d", [(3, 8), (39, 1), (64, 64)])
def test_channels_last_views(dtype, K, d):
    got, want = run_case(2, 96, 2001, K, d, True, dtype, channels_last=True, seed=K)
    print(check(got, want, f"channels-last K={K} d={d} {dtype}"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape", BENCH_SHAPES, ids=lambda s: "B{}C{}L{}K{}d{}".format(*s[:5]))
def test_benchmark_shapes(shape, dtype):
    B, C, L, K, d, causal = shape
    got, want = run_case(B, C, L, K, d, causal, dtype)
    print(check(got, want, f"{shape} {dtype}"))


@pytest.mark.parametrize("shape", BENCH_SHAPES[:3:2], ids=["fsmn", "tcn"])
def test_weight_gradient_is_bitwise_deterministic(shape):
    B, C, L, K, d, causal = shape
    g = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn(B, C, L, device="cuda", generator=g).requires_grad_()
    w = torch.randn(C, K, device="cuda", generator=g).requires_grad_()
    b = torch.randn(C, device="cuda", generator=g).requires_grad_()
    gy = torch.randn(B, C, L, device="cuda", generator=g)
    runs = [torch.autograd.grad(dwconv1d(x, w, b, d, causal), (w, b), gy) for _ in range(3)]
    for gw, gb in runs[1:]:
        assert torch.equal(gw, runs[0][0]) and torch.equal(gb, runs[0][1])
