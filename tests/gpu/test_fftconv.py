"""FFT long convolution on the GPU: lengths up to the benchmark shapes, float32 and bfloat16, every gradient.

The reference is the plain FFT formulation in float64 (itself checked against
the direct sum in tests/kernels/test_fftconv.py), run on the same (rounded)
inputs, compared by ||a - b|| / max(||b||, sqrt(numel)). float32 must land
under 1e-5; bfloat16 u (computed in float32, rounded once to bf16) within a
small multiple of the error of rounding the float64 result to bf16.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

from tsuite.kernels import fftconv  # noqa: E402
from tsuite.kernels.fftconv_ref import causal_conv_direct, fftconv_ref  # noqa: E402

TOL_FP32 = 1e-5
ROUNDING_FACTOR = 5.0


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / max(b.norm().item(), b.numel() ** 0.5)).item()


def poison_allocator(n_bytes: int = 1 << 30) -> None:
    torch.empty(n_bytes // 4, dtype=torch.float32, device="cuda").fill_(float("nan"))


def run_case(B, H, L, dtype, Lk=None, with_D=True, time_major=False, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    Lk = L if Lk is None else Lk
    u = torch.randn((B, L, H) if time_major else (B, H, L), device="cuda", generator=g).to(dtype)
    if time_major:
        u = u.transpose(1, 2)
    decay = torch.exp(-torch.arange(Lk, device="cuda") / (0.1 * Lk + 1))
    k = (torch.randn(H, Lk, device="cuda", generator=g) * decay).to(dtype)  # an S4-like decaying kernel
    D = torch.randn(H, device="cuda", generator=g) if with_D else None
    gy = torch.randn(B, H, L, device="cuda", generator=g).to(dtype)

    poison_allocator()
    leaves = [t.detach().requires_grad_() for t in (u, k, D) if t is not None]
    y = fftconv(*leaves, backend="triton") if with_D else fftconv(*leaves, None, backend="triton")
    got = (y, *torch.autograd.grad(y, leaves, gy))

    leaves64 = [t.detach().double().requires_grad_() for t in (u, k, D) if t is not None]
    ref = causal_conv_direct if L <= 1024 else fftconv_ref
    y64 = ref(*leaves64) if with_D else ref(*leaves64, None)
    want = (y64, *torch.autograd.grad(y64, leaves64, gy.double()))
    return got, want


def check(got, want, what: str) -> str:
    report = []
    for name, a, b in zip(("y", "grad_u", "grad_k", "grad_D"), got, want):
        assert a.shape == b.shape, f"{what} {name}: shape"
        assert torch.isfinite(a).all(), f"{what} {name}: non-finite entries (unwritten or overflow)"
        err = rel_err(a, b)
        tol = TOL_FP32 if a.dtype == torch.float32 else ROUNDING_FACTOR * rel_err(b.to(a.dtype), b) + 1e-4
        report.append(f"{name} {err:.1e} (tol {tol:.0e})")
        assert err < tol, f"{what}: " + ", ".join(report)
    return f"{what}: " + ", ".join(report)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("L", [1, 7, 1000, 1025, 4096, 4099, 16384, 100003])
def test_matches_float64_reference(L, dtype):
    got, want = run_case(2, 8, L, dtype, seed=L)
    print(check(got, want, f"L={L} {dtype}"))


@pytest.mark.parametrize("Lk", [1, 64, 3000])
def test_shorter_kernels(Lk):
    got, want = run_case(3, 16, 4096, torch.float32, Lk=Lk)
    print(check(got, want, f"Lk={Lk}"))


def test_time_major_view_without_skip():
    got, want = run_case(2, 32, 2047, torch.float32, with_D=False, time_major=True)
    print(check(got, want, "time-major, no D"))


@pytest.mark.parametrize("B,H,L", [(16, 256, 4096), (4, 256, 16384)])
def test_benchmark_shapes(B, H, L):
    got, want = run_case(B, H, L, torch.float32)
    print(check(got, want, f"B={B} H={H} L={L}"))


def test_kernel_gradient_is_bitwise_deterministic():
    g = torch.Generator(device="cuda").manual_seed(2)
    u = torch.randn(16, 64, 4096, device="cuda", generator=g).requires_grad_()
    k = torch.randn(64, 4096, device="cuda", generator=g).requires_grad_()
    D = torch.randn(64, device="cuda", generator=g).requires_grad_()
    gy = torch.randn(16, 64, 4096, device="cuda", generator=g)
    runs = [torch.autograd.grad(fftconv(u, k, D), (k, D), gy) for _ in range(3)]
    for gk, gD in runs[1:]:
        assert torch.equal(gk, runs[0][0]) and torch.equal(gD, runs[0][1])
