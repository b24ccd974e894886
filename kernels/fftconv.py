"""Long causal convolution through the FFT (S4's convolution mode), with fused Triton spectrum kernels.

    y[b, h, t] = sum_{s<=t} k[h, s] u[b, h, t - s] + D[h] u[b, h, t]

The transforms are cuFFT's (torch.fft); what is ours is everything between
them, so that each tensor crosses device memory as few times as possible:

- n is the smallest even size >= 2L - 1 whose odd part has only factors 3, 5,
  7 (cuFFT's fast radices): circular convolution of length n has no wrap-around
  for t < L. D is folded into the spectrum: Y = U (K + D), since D u is the
  convolution with D at lag 0.
- forward: one Triton pass zero-pads (and casts) u into an (B H, n) float32
  buffer, cuFFT's rfft gives U (B H, n/2 + 1); one Triton pass multiplies by
  K + D *and* packs the product for a half-length complex inverse: with
  N = n/2 and Y the Hermitian half-spectrum of the real output y,

      Z[k] = (Y[k] + conj(Y[N-k]) + i (Y[k] - conj(Y[N-k])) e^{2 pi i k / n}) / n,

  the unnormalised length-N inverse FFT of Z is z[m] = y[2m] + i y[2m+1], so
  y is the first L floats of z. (A c2r inverse would first copy its input,
  which cuFFT overwrites, then scale by 1/n in another pass; the c2c inverse
  does neither.)
- backward: grad_u = corr(grad_y, k) + D grad_y and grad_k = sum_b corr(grad_y, u)
  are again products of spectra: G = rfft(grad_y padded); one Triton pass per
  (channel, frequency block) walks the batch, writes the packed spectrum of
  G conj(K + D) for grad_u (same inverse as the forward) and sums
  S = sum_b conj(U) G in a fixed order (deterministic); grad_k and grad_D are
  the first Lk samples and the lag-0 sample of irfft(S) (H rows: cheap). U is
  the forward's, saved; no transform of u or k is redone.

The plain formulation (pad to 2L, rfft, multiply, irfft, slice, add D u, and
autograd through all of it) is `fftconv_ref.py`, the CPU path.
"""

from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

from ._dispatch import Backend, interpreting, use_triton
from .fftconv_ref import check_args, fftconv_ref


__all__ = ["fftconv"]

_TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@functools.lru_cache(maxsize=256)
def fft_size(L: int) -> int:
    """Smallest even n >= 2L - 1 of the form 2^a 3^b 5^c 7^d, a >= 1."""
    target = max(2, 2 * L - 1)
    best = None
    p7 = 1
    while p7 < 2 * target:
        p5 = p7
        while p5 < 2 * target:
            p3 = p5
            while p3 < 2 * target:
                n = 2 * p3
                while n < target:
                    n *= 2
                best = n if best is None else min(best, n)
                p3 *= 3
            p5 *= 5
        p7 *= 7
    return best


# --------------------------------------------------------------------------- Triton


@triton.jit
def _pad_kernel(U, OUT, H, L, NF, sub, suh, sul, BLOCK: tl.constexpr):
    """OUT[row, t] = u[b, h, t] for t < L, 0 for L <= t < NF (float32, rows contiguous)."""
    row = tl.program_id(0)
    t = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    b = (row // H).to(tl.int64)
    h = (row % H).to(tl.int64)
    x = tl.load(U + b * sub + h * suh + t.to(tl.int64) * sul, mask=t < L, other=0.0).to(tl.float32)
    tl.store(OUT + row.to(tl.int64) * NF + t, x, mask=t < NF)


@triton.jit
def _load_c(ptr, idx, mask):
    """Complex numbers ptr[idx] stored as (re, im) float32 pairs: two tensors."""
    two = tl.arange(0, 2)[None, :]
    v = tl.load(ptr + 2 * idx.to(tl.int64)[:, None] + two, mask=mask[:, None], other=0.0)
    return tl.split(v)


@triton.jit
def _store_c(ptr, idx, mask, re, im):
    two = tl.arange(0, 2)[None, :]
    tl.store(ptr + 2 * idx.to(tl.int64)[:, None] + two, tl.join(re, im), mask=mask[:, None])


@triton.jit
def _pack(ar, ai, br, bi, c, s, scale):
    """(A + conj(B) + i (A - conj(B)) e^{i theta}) * scale, with e^{i theta} = c + i s."""
    pr = ar + br
    pi = ai - bi
    qr = ar - br
    qi = ai + bi
    return (pr - (qr * s + qi * c)) * scale, (pi + (qr * c - qi * s)) * scale


@triton.jit
def _spectrum_pair(
    Z, row_z, k, k2, lo, hi, ykr, yki, yk2r, yk2i, c, s, scale,
):
    """Write the packed inverse spectrum Z[k] (where lo) and Z[N-k] (where hi) from Y[k] and Y[N-k]."""
    zr, zi = _pack(ykr, yki, yk2r, yk2i, c, s, scale)
    _store_c(Z + row_z, k, lo, zr, zi)
    # e^{i 2 pi (N-k) / n} = -cos + i sin
    zr2, zi2 = _pack(yk2r, yk2i, ykr, yki, -c, s, scale)
    _store_c(Z + row_z, k2, hi, zr2, zi2)


@triton.jit
def _fwd_spectrum_kernel(UF, KF, D, TW, Z, H, N, HAS_D: tl.constexpr, BLOCK: tl.constexpr):
    """Z = pack(U (K + D)) for one (row, block of frequency pairs k, N - k), k <= N/2."""
    row = tl.program_id(0)
    h = row % H
    k = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    lo = k <= N // 2
    hi = lo & (k >= 1) & (N - k > k)
    k2 = N - k
    uf = UF + row.to(tl.int64) * (2 * (N + 1))
    kf = KF + h.to(tl.int64) * (2 * (N + 1))
    d = 0.0
    if HAS_D:
        d = tl.load(D + h).to(tl.float32)
    ur, ui = _load_c(uf, k, lo)
    u2r, u2i = _load_c(uf, k2, lo)
    kr, ki = _load_c(kf, k, lo)
    k2r, k2i = _load_c(kf, k2, lo)
    c, s = _load_c(TW, k, lo)
    kr += d
    k2r += d
    ykr = ur * kr - ui * ki
    yki = ur * ki + ui * kr
    yk2r = u2r * k2r - u2i * k2i
    yk2i = u2r * k2i + u2i * k2r
    _spectrum_pair(Z, row.to(tl.int64) * (2 * N), k, k2, lo, hi, ykr, yki, yk2r, yk2i, c, s, 1.0 / (2 * N))


@triton.jit
def _bwd_spectrum_kernel(
    GF, UF, KF, D, TW, ZU, S, B, H, N,
    HAS_D: tl.constexpr, NEED_U: tl.constexpr, NEED_S: tl.constexpr, BLOCK: tl.constexpr,
):
    """For one (channel, block of frequency pairs): ZU[b] = pack(G[b] conj(K + D)) for every b, and
    S = sum_b conj(U[b]) G[b] summed over b in order."""
    h = tl.program_id(0)
    k = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    lo = k <= N // 2
    k2 = N - k
    hi_s = lo & (k2 > k)  # S has N + 1 bins: k2 = N (k = 0) is the Nyquist bin
    hi = hi_s & (k >= 1)  # Z has N bins
    kf = KF + h.to(tl.int64) * (2 * (N + 1))
    d = 0.0
    if HAS_D:
        d = tl.load(D + h).to(tl.float32)
    kr, ki = _load_c(kf, k, lo)
    k2r, k2i = _load_c(kf, k2, lo)
    kr += d
    k2r += d
    c, s = _load_c(TW, k, lo)
    sr = tl.zeros([BLOCK], dtype=tl.float32)
    si = tl.zeros([BLOCK], dtype=tl.float32)
    s2r = tl.zeros([BLOCK], dtype=tl.float32)
    s2i = tl.zeros([BLOCK], dtype=tl.float32)
    for b in range(0, B):
        row = (b * H + h).to(tl.int64)
        gf = GF + row * (2 * (N + 1))
        gr, gi = _load_c(gf, k, lo)
        g2r, g2i = _load_c(gf, k2, lo)
        if NEED_U:  # G conj(K + D)
            ykr = gr * kr + gi * ki
            yki = gi * kr - gr * ki
            yk2r = g2r * k2r + g2i * k2i
            yk2i = g2i * k2r - g2r * k2i
            _spectrum_pair(ZU, row * (2 * N), k, k2, lo, hi, ykr, yki, yk2r, yk2i, c, s, 1.0 / (2 * N))
        if NEED_S:  # conj(U) G
            uf = UF + row * (2 * (N + 1))
            ur, ui = _load_c(uf, k, lo)
            u2r, u2i = _load_c(uf, k2, lo)
            sr += ur * gr + ui * gi
            si += ur * gi - ui * gr
            s2r += u2r * g2r + u2i * g2i
            s2i += u2r * g2i - u2i * g2r
    if NEED_S:
        srow = S + h.to(tl.int64) * (2 * (N + 1))
        _store_c(srow, k, lo, sr, si)
        _store_c(srow, k2, hi_s, s2r, s2i)


# --------------------------------------------------------------------------- launch

_PAD_BLOCK = 1024
_SPEC_BLOCK = 256


@functools.lru_cache(maxsize=32)
def _twiddles(n: int, device: torch.device) -> torch.Tensor:
    """(n/4 + 1, 2) float32 table of (cos, sin)(2 pi k / n), k = 0 .. N/2, computed in float64."""
    k = torch.arange(n // 4 + 1, dtype=torch.float64)
    theta = 2 * math.pi * k / n
    return torch.stack([torch.cos(theta), torch.sin(theta)], dim=-1).to(torch.float32).to(device)


def _padded(u: torch.Tensor, n: int) -> torch.Tensor:
    """u (B, H, L), any strides and float dtype, as a zero-padded (B H, n) float32 buffer."""
    B, H, L = u.shape
    out = torch.empty((B * H, n), dtype=torch.float32, device=u.device)
    block = 64 if interpreting() else _PAD_BLOCK
    _pad_kernel[(B * H, triton.cdiv(n, block))](u, out, H, L, n, *u.stride(), BLOCK=block)
    return out


def _first_samples(z: torch.Tensor, B: int, H: int, L: int, dtype: torch.dtype) -> torch.Tensor:
    """The real samples y[0:L] packed in z (B H, N) complex (z[m] = y[2m] + i y[2m+1]), as (B, H, L) dtype."""
    y = torch.view_as_real(z).reshape(B, H, -1)[..., :L]
    out = torch.empty((B, H, L), dtype=dtype, device=z.device)
    out.copy_(y)
    return out


def _spec_block() -> int:
    return 16 if interpreting() else _SPEC_BLOCK


class _FFTConvFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, k, D):
        B, H, L = u.shape
        n = fft_size(L)
        N = n // 2
        dev = u.device
        tw = _twiddles(n, dev)
        uf = torch.fft.rfft(_padded(u, n))  # (B H, N+1) complex64
        kf = torch.fft.rfft(k.to(torch.float32), n=n)  # (H, N+1)
        z = torch.empty((B * H, N, 2), dtype=torch.float32, device=dev)
        blk = _spec_block()
        d_arg = D if D is not None else tw
        _fwd_spectrum_kernel[(B * H, triton.cdiv(N // 2 + 1, blk))](
            torch.view_as_real(uf), torch.view_as_real(kf), d_arg, tw, z, H, N, HAS_D=D is not None, BLOCK=blk,
        )
        y = _first_samples(torch.fft.ifft(torch.view_as_complex(z), norm="forward"), B, H, L, u.dtype)
        ctx.save_for_backward(uf, kf, D)
        ctx.shape, ctx.n, ctx.dtypes = (B, H, L, k.shape[1]), n, (u.dtype, k.dtype)
        return y

    @staticmethod
    def backward(ctx, gy):
        uf, kf, D = ctx.saved_tensors
        B, H, L, Lk = ctx.shape
        n = ctx.n
        N = n // 2
        need_u = ctx.needs_input_grad[0]
        need_s = ctx.needs_input_grad[1] or (D is not None and ctx.needs_input_grad[2])
        dev = gy.device
        tw = _twiddles(n, dev)
        gf = torch.fft.rfft(_padded(gy, n))  # (B H, N+1)
        zu = torch.empty((B * H, N, 2), dtype=torch.float32, device=dev) if need_u else tw
        s = torch.empty((H, N + 1, 2), dtype=torch.float32, device=dev) if need_s else tw
        blk = _spec_block()
        _bwd_spectrum_kernel[(H, triton.cdiv(N // 2 + 1, blk))](
            torch.view_as_real(gf), torch.view_as_real(uf), torch.view_as_real(kf), D if D is not None else tw,
            tw, zu, s, B, H, N, HAS_D=D is not None, NEED_U=need_u, NEED_S=need_s, BLOCK=blk,
        )
        gu = gk = gD = None
        if need_u:
            gu = _first_samples(torch.fft.ifft(torch.view_as_complex(zu), norm="forward"), B, H, L, ctx.dtypes[0])
        if need_s:
            corr = torch.fft.irfft(torch.view_as_complex(s), n=n)  # (H, n): sum_b corr(grad_y, u) at lags 0..n-1
            if ctx.needs_input_grad[1]:
                gk = corr[:, :Lk].to(ctx.dtypes[1])
            if D is not None and ctx.needs_input_grad[2]:
                gD = corr[:, 0].to(D.dtype)
        return gu, gk, gD


# --------------------------------------------------------------------------- public API


def fftconv(u: torch.Tensor, k: torch.Tensor, D: torch.Tensor | None = None, backend: Backend = "auto") -> torch.Tensor:
    """Causal convolution of each channel with its own long kernel, plus a skip: S4's convolution mode.

    y[b, h, t] = sum_{s=0}^{t} k[h, s] * u[b, h, t - s] + D[h] * u[b, h, t]

    Args:
        u: (B, H, L), any strides, float32 (bfloat16 / float16 accepted: computed in float32).
        k: (H, Lk), one kernel per channel; Lk < L is zero-padded, taps past L are unused.
        D: (H,) skip weights, or None.
        backend: "auto" (Triton + cuFFT on CUDA tensors, the PyTorch reference elsewhere), "triton" or "torch".

    Returns:
        y: (B, H, L) in u's dtype. Differentiable in u, k and D; the gradients of k and D (sums over the
        batch) are deterministic. Any L >= 1; the transforms have length n ~ 2L (see `fft_size`).
    """
    check_args(u, k, D)
    if not use_triton(backend, u, k, D) or (backend == "auto" and u.dtype not in _TRITON_DTYPES):
        return fftconv_ref(u, k, D)
    if u.dtype not in _TRITON_DTYPES:
        raise ValueError(f"the Triton path takes float32, bfloat16 or float16 u, got {u.dtype}; use backend='torch'")
    if not (u.is_cuda or interpreting()):
        raise ValueError("the Triton path needs CUDA tensors (or TRITON_INTERPRET=1); use backend='torch' on the CPU")
    L = u.shape[-1]
    if k.shape[1] > L:
        k = k[:, :L]  # taps past L never reach an output
    if u.numel() == 0:
        return fftconv_ref(u, k, D)
    if D is not None:
        D = D.contiguous()  # (H,): the kernels index it densely
    with _on_device(u):
        return _FFTConvFn.apply(u, k, D)


def _on_device(x: torch.Tensor):
    import contextlib

    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()
