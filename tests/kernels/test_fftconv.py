"""FFT long convolution (S4 convolution mode): Triton + torch.fft vs the direct float64 convolution.

Runs on the CPU under TRITON_INTERPRET=1 (tiny float32 shapes); on a CUDA
machine without the interpreter the Triton checks run on the GPU. The full
matrix (bf16, long sequences) is tests/gpu/test_fftconv.py. Errors are
relative, ||a - b|| / max(||b||, sqrt(numel)).
"""

from __future__ import annotations

import pytest
import torch

from tsuite.kernels import fftconv
from tsuite.kernels._dispatch import interpreting
from tsuite.kernels.fftconv import fft_size
from tsuite.kernels.fftconv_ref import causal_conv_direct, fftconv_ref

if interpreting():
    DEVICE = "cpu"
elif torch.cuda.is_available():
    DEVICE = "cuda"
else:
    DEVICE = None
needs_triton = pytest.mark.skipif(DEVICE is None, reason="needs TRITON_INTERPRET=1 or a CUDA device")

# float32 FFTs of length n ~ 2L: rounding ~1e-7 log2(n); far under this.
TOL_FP32 = 1e-5
TOL_FP64 = 1e-12


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    return ((a - b).norm() / max(b.norm().item(), b.numel() ** 0.5)).item()


def make_inputs(B=2, H=3, L=37, Lk=None, with_D=True, time_major=False, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    Lk = L if Lk is None else Lk
    u = torch.randn(B, L, H, generator=g).transpose(1, 2) if time_major else torch.randn(B, H, L, generator=g)
    k = torch.randn(H, Lk, generator=g) * torch.exp(-torch.arange(Lk) / 8.0)  # a decaying S4-like kernel
    D = torch.randn(H, generator=g) if with_D else None
    gy = torch.randn(B, H, L, generator=g)
    return [None if t is None else t.to(device) for t in (u, k, D, gy)]


def grads_of(fn, u, k, D, gy):
    """Output and the gradients of (u, k[, D]) for upstream gradient gy (u's strides kept)."""
    leaves = [t.detach().requires_grad_() for t in (u, k, D) if t is not None]
    y = fn(*leaves) if D is not None else fn(*leaves, None)
    return (y, *torch.autograd.grad(y, leaves, gy))


def direct64(u, k, D, gy):
    return grads_of(causal_conv_direct, u.double(), k.double(), None if D is None else D.double(), gy.double())


def assert_close_all(got, want, tol, what=""):
    for name, a, b in zip(("y", "grad_u", "grad_k", "grad_D"), got, want):
        assert a.shape == b.shape, f"{what} {name}: shape {tuple(a.shape)} != {tuple(b.shape)}"
        assert torch.isfinite(a).all(), f"{what} {name} has non-finite entries"
        err = rel_err(a, b)
        assert err < tol, f"{what} {name}: relative error {err:.2e} >= {tol:.0e}"


# --------------------------------------------------------------------------- Triton vs direct convolution


@needs_triton
@pytest.mark.parametrize("L", [1, 2, 7, 37, 100, 129])
def test_triton_matches_direct_convolution_at_odd_and_even_lengths(L):
    u, k, D, gy = make_inputs(L=L, seed=L, device=DEVICE)
    got = grads_of(lambda *a: fftconv(*a, backend="triton"), u, k, D, gy)
    assert got[0].dtype == u.dtype
    assert_close_all(got, direct64(u, k, D, gy), TOL_FP32, f"L={L}")


@needs_triton
@pytest.mark.parametrize("Lk", [1, 5, 20])
def test_triton_zero_pads_a_shorter_kernel(Lk):
    u, k, D, gy = make_inputs(L=45, Lk=Lk, device=DEVICE)
    got = grads_of(lambda *a: fftconv(*a, backend="triton"), u, k, D, gy)
    assert got[2].shape == (3, Lk)
    assert_close_all(got, direct64(u, k, D, gy), TOL_FP32, f"Lk={Lk}")


@needs_triton
def test_triton_ignores_taps_past_the_sequence_length():
    u, k, D, gy = make_inputs(L=20, Lk=33, device=DEVICE)
    y, gu, gk, gD = grads_of(lambda *a: fftconv(*a, backend="triton"), u, k, D, gy)
    want = direct64(u, k[:, :20], D, gy)
    assert_close_all((y, gu, gk[:, :20], gD), want, TOL_FP32)
    assert torch.equal(gk[:, 20:], torch.zeros_like(gk[:, 20:]))


@needs_triton
def test_triton_without_skip_term():
    u, k, _, gy = make_inputs(L=50, with_D=False, device=DEVICE)
    got = grads_of(lambda *a: fftconv(*a, backend="triton"), u, k, None, gy)
    assert_close_all(got, direct64(u, k, None, gy), TOL_FP32)


@needs_triton
def test_triton_reads_time_major_views_in_place():
    u, k, D, gy = make_inputs(L=40, time_major=True, device=DEVICE)
    assert not u.is_contiguous()
    gy = gy.transpose(1, 2).contiguous().transpose(1, 2)  # a non-contiguous upstream gradient too
    got = grads_of(lambda *a: fftconv(*a, backend="triton"), u, k, D, gy)
    assert_close_all(got, direct64(u, k, D, gy), TOL_FP32)


@needs_triton
def test_kernel_and_skip_gradients_are_deterministic():
    u, k, D, gy = make_inputs(B=4, L=60, device=DEVICE)
    _, _, gk1, gD1 = grads_of(lambda *a: fftconv(*a, backend="triton"), u, k, D, gy)
    _, _, gk2, gD2 = grads_of(lambda *a: fftconv(*a, backend="triton"), u, k, D, gy)
    assert torch.equal(gk1, gk2) and torch.equal(gD1, gD2)


@needs_triton
def test_only_the_requested_gradients_are_computed():
    u, k, D, gy = make_inputs(L=30, device=DEVICE)
    kl = k.detach().requires_grad_()
    y = fftconv(u, kl, D, backend="triton")
    (gk,) = torch.autograd.grad(y, (kl,), gy)
    assert rel_err(gk, direct64(u, k, D, gy)[2]) < TOL_FP32
    ul = u.detach().requires_grad_()
    (gu,) = torch.autograd.grad(fftconv(ul, k, D, backend="triton"), (ul,), gy)
    assert rel_err(gu, direct64(u, k, D, gy)[1]) < TOL_FP32


@needs_triton
def test_triton_rejects_float64_and_auto_falls_back():
    u, k, D, _ = make_inputs(L=5, device=DEVICE)
    with pytest.raises(ValueError, match="float32, bfloat16 or float16"):
        fftconv(u.double(), k.double(), D.double(), backend="triton")
    assert fftconv(u.double(), k.double(), D.double(), backend="auto").dtype == torch.float64


# --------------------------------------------------------------------------- reference and sizes


@pytest.mark.parametrize("L", [1, 7, 64, 101])
def test_plain_fft_reference_matches_direct_convolution(L):
    u, k, D, gy = make_inputs(L=L, Lk=max(1, L // 2), seed=2)
    got = grads_of(fftconv_ref, u.double(), k.double(), D.double(), gy.double())
    assert_close_all(got, direct64(u, k, D, gy), TOL_FP64)


def test_direct_convolution_is_the_defining_sum():
    u, k, D, _ = make_inputs(B=1, H=2, L=9, Lk=4, seed=3)
    y = causal_conv_direct(u, k, D)
    for h in range(2):
        for t in range(9):
            want = sum(k[h, s].item() * u[0, h, t - s].item() for s in range(min(4, t + 1)))
            want += D[h].item() * u[0, h, t].item()
            assert abs(y[0, h, t].item() - want) < 1e-12


@pytest.mark.parametrize("L", [1, 2, 3, 100, 1000, 1025, 4096, 16384, 100003])
def test_fft_size_is_even_fast_and_long_enough(L):
    n = fft_size(L)
    assert n >= 2 * L - 1 and n % 2 == 0
    m = n
    for p in (2, 3, 5, 7):
        while m % p == 0:
            m //= p
    assert m == 1
    assert n <= 1 << max(1, (2 * L - 2).bit_length())  # never above the power-of-two size


def test_rejects_wrong_shapes_with_a_message():
    u, k, D, _ = make_inputs(L=8)
    with pytest.raises(ValueError, match=r"k must have shape \(H, Lk\)"):
        fftconv(u, k[:2], D, backend="torch")
    with pytest.raises(ValueError, match=r"u must have shape \(B, H, L\)"):
        fftconv(u[0], k, D, backend="torch")
    with pytest.raises(ValueError, match=r"D must have shape \(H,\)"):
        fftconv(u, k, D[:2], backend="torch")
