"""Pure-PyTorch references for the long causal convolution of S4's convolution mode.

    y[b, h, t] = sum_{s=0}^{t} k[h, s] u[b, h, t - s] + D[h] u[b, h, t],   t < L

for u (B, H, L) and a per-channel kernel k (H, Lk), Lk <= L (taps past Lk are
zero). `fftconv_ref` is the plain FFT formulation (zero-pad both to 2L, rfft,
multiply, irfft, keep the first L samples; exact up to rounding, as written in
the S4 code): the CPU path of `tsuite.kernels.fftconv` and the peer its
benchmark is measured against. `causal_conv_direct` evaluates the sum above
directly in float64: the ground truth of the tests.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def check_args(u: torch.Tensor, k: torch.Tensor, D: torch.Tensor | None) -> None:
    if u.dim() != 3:
        raise ValueError(f"u must have shape (B, H, L); got {tuple(u.shape)}")
    H, L = u.shape[1], u.shape[2]
    if k.dim() != 2 or k.shape[0] != H or k.shape[1] < 1:
        raise ValueError(f"k must have shape (H, Lk) = ({H}, Lk) with 1 <= Lk; got {tuple(k.shape)}")
    if D is not None and tuple(D.shape) != (H,):
        raise ValueError(f"D must have shape (H,) = ({H},); got {tuple(D.shape)}")
    if not (u.dtype.is_floating_point and k.dtype.is_floating_point):
        raise ValueError(f"u and k must be real floating point; got {u.dtype} and {k.dtype}")
    if L < 1:
        raise ValueError("u must have at least one time step")


def _compute_dtype(u: torch.Tensor) -> torch.dtype:
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def fftconv_ref(u: torch.Tensor, k: torch.Tensor, D: torch.Tensor | None = None) -> torch.Tensor:
    """y = irfft(rfft(u, 2L) * rfft(k, 2L), 2L)[..., :L] + D u, computed in float32 (float64 for float64 u).

    u (B, H, L), k (H, Lk) (only the first L taps matter), D (H,) or None. Differentiable; returns u's dtype.
    """
    check_args(u, k, D)
    L = u.shape[-1]
    ct = _compute_dtype(u)
    n = 2 * L
    k_f = torch.fft.rfft(k[:, :L].to(ct), n=n)  # (H, L+1)
    u_f = torch.fft.rfft(u.to(ct), n=n)  # (B, H, L+1)
    y = torch.fft.irfft(u_f * k_f, n=n)[..., :L]  # (B, H, L)
    if D is not None:
        y = y + u.to(ct) * D.to(ct)[:, None]
    return y.to(u.dtype)


def causal_conv_direct(u: torch.Tensor, k: torch.Tensor, D: torch.Tensor | None = None) -> torch.Tensor:
    """The defining sum in float64 (a grouped F.conv1d with the kernel reversed): returns (B, H, L) float64."""
    check_args(u, k, D)
    H, L = u.shape[1], u.shape[2]
    k = k[:, :L].double()
    Lk = k.shape[1]
    y = F.conv1d(F.pad(u.double(), (Lk - 1, 0)), k.flip(-1)[:, None, :], groups=H)  # (B H L)
    if D is not None:
        y = y + u.double() * D.double()[:, None]
    return y
