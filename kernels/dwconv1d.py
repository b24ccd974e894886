"""Depthwise dilated 1-D convolution (TCN, FSMN) in Triton, forward and backward.

    y[b, c, t] = bias[c] + sum_{j<K} w[c, j] x[b, c, t + j d - P],   P = (K-1) d (causal) or ((K-1) d) // 2 (centred)

(semantics and the reference in `dwconv1d_ref.py`). Memory-bound: every path
reads x once from device memory and writes y once, accumulating in float32.
Two paths:

- direct: a program owns a (channels x time) tile and loops over the K taps
  (K and d compile-time constants; unrolled up to 16 taps), each tap a shifted load of the
  tile that hits the L1 cache, times the tap's weights held in registers. Tiles
  whose halo lies inside 0..L-1 take an unmasked branch. Any strides; the path
  for small K, large dilations and channels-last inputs.
- dense (Toeplitz): for many taps close together (FSMN: K = 39, d = 1 or 2) the
  per-tap loads would bound the direct path by L1 bandwidth. A program owns one
  (batch, channel, time chunk) and cuts time into rows of V outputs; row r
  needs the inputs x[rV - P' + m], m < M, with P' = P rounded up to 16 bytes
  (aligned rows: 16-byte asynchronous copies) and M = V + (K-1) d + P' - P
  rounded up to a power of two, so the outputs of R rows are one tensor-core product

      Y (R x V) = X (R x M) @ T (M x V),    T[m, v] = w[j] where m - v - (P' - P) = j d,

  with T built once per program from the channel's weights. bf16/fp16 products
  are exact in the float32 accumulator (a float32 weight is split into a high
  and a low half, two products); float32 runs as tf32x3 (three tf32 products,
  error ~1e-6 relative). Each input is loaded M / V times (from L2/L1) and
  costs M products per output: the row width V is chosen per dtype.

The backward reuses both: grad_x is the same convolution of grad_y with the
taps flipped and the padding mirrored ((K-1) d - P on the left); grad_w[c, j] =
sum_{b,t} grad_y[b,c,t] x[b,c,t + j d - P] is summed per program (direct: per
tap; dense: Z = X^T @ G on the tensor cores, then the sums along Z's diagonals), the
per-program partial sums written to a (programs, C, K) float32 buffer and
added in a fixed order: deterministic, no atomics. Channels-last inputs (stride 1
along channels) take a tap-outer weight-gradient kernel instead: one sweep of the
time chunk per tap with an element-wise accumulator, no per-tile reduction.
`dwconv1d_step` (streaming) is pure PyTorch, in `dwconv1d_ref.py`.

Under torch.compile, `dwconv1d` is the custom operator `tsuite::dwconv1d` (with
`tsuite::dwconv1d_backward`), so a compiled model keeps it inside one graph.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ._dispatch import Backend, interpreting, use_triton
from .dwconv1d_ref import check_args, dwconv1d_ref, dwconv1d_step, left_padding


__all__ = ["dwconv1d", "dwconv1d_step"]

_TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
MAX_DENSE_M = 256  # widest Toeplitz reduction the dense path builds
MAX_UNROLL = 16  # the direct kernels unroll their tap loop up to this many taps


# --------------------------------------------------------------------------- direct path


@triton.jit
def _channel_mask(c, C, EVEN_C: tl.constexpr, BLOCK_C: tl.constexpr):
    """c < C; a constant-true mask when C is a multiple of BLOCK_C (keeps loads along channels vectorised)."""
    if EVEN_C:
        return tl.full([BLOCK_C], 1, tl.int1)
    return c < C


@triton.jit
def _direct_tap(
    j, x_ptrs, W, c, cmask, t, L, swc, swk, sxl, acc,
    K: tl.constexpr, DIL: tl.constexpr, PAD: tl.constexpr, FLIP: tl.constexpr, MASK_T: tl.constexpr,
):
    """acc += w[c, j] x[t + j DIL - PAD] (w[c, K-1-j] when FLIP); x_ptrs point at x[t - PAD]."""
    if FLIP:
        wj = tl.load(W + c * swc + (K - 1 - j) * swk, mask=cmask, other=0.0).to(tl.float32)
    else:
        wj = tl.load(W + c * swc + j * swk, mask=cmask, other=0.0).to(tl.float32)
    if MASK_T:
        ts = t + (j * DIL - PAD)
        xj = tl.load(x_ptrs + (j * DIL) * sxl, mask=cmask[:, None] & ((ts >= 0) & (ts < L))[None, :], other=0.0)
    else:
        xj = tl.load(x_ptrs + (j * DIL) * sxl, mask=cmask[:, None], other=0.0)
    return acc + wj[:, None] * xj.to(tl.float32)


@triton.jit
def _direct_taps(
    x_ptrs, W, c, cmask, t, L, swc, swk, sxl, acc,
    K: tl.constexpr, DIL: tl.constexpr, PAD: tl.constexpr, FLIP: tl.constexpr, MASK_T: tl.constexpr,
    UNROLL: tl.constexpr,
):
    """acc += sum_j w[c, j] x[t + j DIL - PAD]. UNROLL: the taps unrolled (few taps); else a loop, which keeps
    the compiler from holding every tap's load in registers at once."""
    if UNROLL:
        for j in tl.static_range(K):
            acc = _direct_tap(j, x_ptrs, W, c, cmask, t, L, swc, swk, sxl, acc, K, DIL, PAD, FLIP, MASK_T)
    else:
        for j in range(K):
            acc = _direct_tap(j, x_ptrs, W, c, cmask, t, L, swc, swk, sxl, acc, K, DIL, PAD, FLIP, MASK_T)
    return acc


@triton.jit
def _direct_kernel(
    X, W, BIAS, Y, C, L,
    sxb, sxc, sxl, swc, swk, syb, syc, syl,
    K: tl.constexpr, DIL: tl.constexpr, PAD: tl.constexpr, FLIP: tl.constexpr, HAS_BIAS: tl.constexpr,
    EVEN_C: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_T: tl.constexpr, UNROLL: tl.constexpr,
):
    """One (channels x time) tile of y = conv(x, w) (FLIP: the taps reversed, for grad_x)."""
    t0 = tl.program_id(0) * BLOCK_T
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    b = tl.program_id(2).to(tl.int64)
    t = t0 + tl.arange(0, BLOCK_T)
    cmask = _channel_mask(c, C, EVEN_C, BLOCK_C)
    x_ptrs = X + b * sxb + c.to(tl.int64)[:, None] * sxc + (t - PAD).to(tl.int64)[None, :] * sxl
    acc = tl.zeros([BLOCK_C, BLOCK_T], dtype=tl.float32)
    if (t0 >= PAD) & (t0 + BLOCK_T + (K - 1) * DIL - PAD <= L):  # the tile and its halo lie inside 0..L-1
        acc = _direct_taps(x_ptrs, W, c, cmask, t, L, swc, swk, sxl, acc, K, DIL, PAD, FLIP, False, UNROLL)
    else:
        acc = _direct_taps(x_ptrs, W, c, cmask, t, L, swc, swk, sxl, acc, K, DIL, PAD, FLIP, True, UNROLL)
    if HAS_BIAS:
        acc += tl.load(BIAS + c, mask=cmask, other=0.0).to(tl.float32)[:, None]
    y_ptrs = Y + b * syb + c.to(tl.int64)[:, None] * syc + t.to(tl.int64)[None, :] * syl
    tl.store(y_ptrs, acc.to(Y.dtype.element_ty), mask=cmask[:, None] & (t < L)[None, :])


@triton.jit
def _direct_wgrad_tap(
    j, x_ptrs, g, cmask, tmask, t, L, sxl, acc, kk, DIL: tl.constexpr, PAD: tl.constexpr, MASK_T: tl.constexpr,
):
    """acc[:, j] += sum_t g[:, t] x[:, t + j DIL - PAD]; x_ptrs point at x[t - PAD]."""
    if MASK_T:
        ts = t + (j * DIL - PAD)
        m = cmask[:, None] & (tmask & (ts >= 0) & (ts < L))[None, :]
        xj = tl.load(x_ptrs + (j * DIL) * sxl, mask=m, other=0.0)
    else:
        xj = tl.load(x_ptrs + (j * DIL) * sxl, mask=cmask[:, None], other=0.0)
    s = tl.sum(g * xj.to(tl.float32), axis=1)  # (BLOCK_C)
    return tl.where(kk[None, :] == j, acc + s[:, None], acc)


@triton.jit
def _direct_wgrad_taps(
    x_ptrs, g, cmask, tmask, t, L, sxl, acc, kk,
    K: tl.constexpr, DIL: tl.constexpr, PAD: tl.constexpr, MASK_T: tl.constexpr, UNROLL: tl.constexpr,
):
    """acc[:, j] += sum_t g[:, t] x[:, t + j DIL - PAD] for every tap j (UNROLL as in _direct_taps)."""
    if UNROLL:
        for j in tl.static_range(K):
            acc = _direct_wgrad_tap(j, x_ptrs, g, cmask, tmask, t, L, sxl, acc, kk, DIL, PAD, MASK_T)
    else:
        for j in range(K):
            acc = _direct_wgrad_tap(j, x_ptrs, g, cmask, tmask, t, L, sxl, acc, kk, DIL, PAD, MASK_T)
    return acc


@triton.jit(do_not_specialize=["N_CHUNKS"])
def _direct_wgrad_kernel(
    X, G, PW, PB, C, L, CHUNK, N_CHUNKS,
    sxb, sxc, sxl, sgb, sgc, sgl,
    K: tl.constexpr, KP: tl.constexpr, DIL: tl.constexpr, PAD: tl.constexpr,
    EVEN_C: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_T: tl.constexpr, UNROLL: tl.constexpr,
):
    """Partial sums of grad_w and grad_bias over one (time chunk, channel block, batch): PW[p, c, j], PB[p, c]."""
    chunk = tl.program_id(0)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    b = tl.program_id(2)
    cmask = _channel_mask(c, C, EVEN_C, BLOCK_C)
    kk = tl.arange(0, KP)
    x_row = X + b.to(tl.int64) * sxb + c.to(tl.int64)[:, None] * sxc
    g_row = G + b.to(tl.int64) * sgb + c.to(tl.int64)[:, None] * sgc
    acc = tl.zeros([BLOCK_C, KP], dtype=tl.float32)
    accb = tl.zeros([BLOCK_C, BLOCK_T], dtype=tl.float32)
    start = chunk * CHUNK
    end = tl.minimum(start + CHUNK, L)
    for t0 in range(start, end, BLOCK_T):
        t = t0 + tl.arange(0, BLOCK_T)
        tmask = t < end
        g_ptrs = g_row + t.to(tl.int64)[None, :] * sgl
        x_ptrs = x_row + (t - PAD).to(tl.int64)[None, :] * sxl
        if (t0 >= PAD) & (t0 + BLOCK_T <= end) & (t0 + BLOCK_T + (K - 1) * DIL - PAD <= L):
            g = tl.load(g_ptrs, mask=cmask[:, None], other=0.0).to(tl.float32)
            acc = _direct_wgrad_taps(x_ptrs, g, cmask, tmask, t, L, sxl, acc, kk, K, DIL, PAD, False, UNROLL)
        else:
            g = tl.load(g_ptrs, mask=cmask[:, None] & tmask[None, :], other=0.0).to(tl.float32)
            acc = _direct_wgrad_taps(x_ptrs, g, cmask, tmask, t, L, sxl, acc, kk, K, DIL, PAD, True, UNROLL)
        accb += g
    p = (b * N_CHUNKS + chunk).to(tl.int64)
    tl.store(PW + (p * C + c)[:, None] * K + kk[None, :], acc, mask=cmask[:, None] & (kk < K)[None, :])
    tl.store(PB + p * C + c, tl.sum(accb, axis=1), mask=cmask)


@triton.jit(do_not_specialize=["N_CHUNKS"])
def _tapwise_wgrad_kernel(
    X, G, PW, PB, C, L, CHUNK, N_CHUNKS,
    sxb, sxc, sxl, sgb, sgc, sgl,
    K: tl.constexpr, KP: tl.constexpr, DIL: tl.constexpr, PAD: tl.constexpr, NEED_BIAS: tl.constexpr,
    EVEN_C: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_T: tl.constexpr,
):
    """The same partial sums as _direct_wgrad_kernel with the loops swapped: taps outside, time inside.

    Each tap j sweeps the program's time chunk with an element-wise (channels x time) accumulator of
    grad_y * x shifted by j d - P, summed over time once at the end of the sweep; the chunk's grad_y
    is re-read per tap from the cache. No per-tile reduction or one-hot update of the (channels x taps)
    result, which bound the other kernel by arithmetic on wide kernels (K = 17, 39).
    """
    chunk = tl.program_id(0)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    b = tl.program_id(2)
    cmask = _channel_mask(c, C, EVEN_C, BLOCK_C)
    kk = tl.arange(0, KP)
    x_row = X + b.to(tl.int64) * sxb + c.to(tl.int64)[:, None] * sxc
    g_row = G + b.to(tl.int64) * sgb + c.to(tl.int64)[:, None] * sgc
    acc = tl.zeros([BLOCK_C, KP], dtype=tl.float32)
    start = chunk * CHUNK
    end = tl.minimum(start + CHUNK, L)
    for j in range(K):
        s = tl.zeros([BLOCK_C, BLOCK_T], dtype=tl.float32)
        for t0 in range(start, end, BLOCK_T):
            t = t0 + tl.arange(0, BLOCK_T)
            ts = t + (j * DIL - PAD)
            g = tl.load(g_row + t.to(tl.int64)[None, :] * sgl, mask=cmask[:, None] & (t < end)[None, :], other=0.0)
            xj = tl.load(x_row + ts.to(tl.int64)[None, :] * sxl,
                         mask=cmask[:, None] & ((t < end) & (ts >= 0) & (ts < L))[None, :], other=0.0)
            s += g.to(tl.float32) * xj.to(tl.float32)
        acc = tl.where(kk[None, :] == j, acc + tl.sum(s, axis=1)[:, None], acc)
    p = (b * N_CHUNKS + chunk).to(tl.int64)
    tl.store(PW + (p * C + c)[:, None] * K + kk[None, :], acc, mask=cmask[:, None] & (kk < K)[None, :])
    if NEED_BIAS:
        sb = tl.zeros([BLOCK_C, BLOCK_T], dtype=tl.float32)
        for t0 in range(start, end, BLOCK_T):
            t = t0 + tl.arange(0, BLOCK_T)
            sb += tl.load(g_row + t.to(tl.int64)[None, :] * sgl, mask=cmask[:, None] & (t < end)[None, :],
                          other=0.0).to(tl.float32)
        tl.store(PB + p * C + c, tl.sum(sb, axis=1), mask=cmask)


# --------------------------------------------------------------------------- dense (Toeplitz) path


@triton.jit
def _toeplitz_taps(M: tl.constexpr, V: tl.constexpr, K: tl.constexpr, DIL: tl.constexpr, SHIFT: tl.constexpr):
    """Tap index j of T[m, v] (m - v - SHIFT = j DIL), and where that is a tap (0 <= j < K)."""
    diff = tl.arange(0, M)[:, None] - tl.arange(0, V)[None, :] - SHIFT
    j = diff // DIL
    return j, (diff >= 0) & (diff % DIL == 0) & (j < K)


@triton.jit
def _rows_tile(x_row, t0, r, m, L, sxl, PADA: tl.constexpr, V: tl.constexpr, M_USED: tl.constexpr):
    """X[r, m] = x[t0 + r V - PADA + m] (zero outside 0..L-1 and past the used width), in x's dtype.

    PADA is a multiple of 16 bytes, so each row starts aligned and the loads are 16-byte copies."""
    xi = (t0 + r * V - PADA)[:, None] + m[None, :]
    M_LOAD: tl.constexpr = (M_USED + 15) // 16 * 16  # whole 16-element groups keep the mask vector-wide
    mask = (xi >= 0) & (xi < L) & (m < M_LOAD)[None, :]
    return tl.load(x_row + xi.to(tl.int64) * sxl, mask=mask, other=0.0)


@triton.jit(do_not_specialize=["N_CHUNKS"])
def _dense_kernel(
    X, W, BIAS, Y, L, CHUNK, N_CHUNKS,
    sxb, sxc, sxl, swc, swk, syb, syc, syl,
    K: tl.constexpr, DIL: tl.constexpr, PAD: tl.constexpr, ALIGN: tl.constexpr, FLIP: tl.constexpr,
    HAS_BIAS: tl.constexpr, R: tl.constexpr, V: tl.constexpr, M: tl.constexpr,
    SPLIT_W: tl.constexpr, IS_FP32: tl.constexpr,
):
    """y over one (batch, channel, time chunk) as Toeplitz products Y (R x V) = X (R x M) @ T (M x V)."""
    PADA: tl.constexpr = (PAD + ALIGN - 1) // ALIGN * ALIGN
    pid = tl.program_id(0)
    c = pid // N_CHUNKS
    chunk = pid % N_CHUNKS
    b = tl.program_id(1).to(tl.int64)
    r = tl.arange(0, R)
    m = tl.arange(0, M)
    v = tl.arange(0, V)
    jt, valid = _toeplitz_taps(M, V, K, DIL, PADA - PAD)
    if FLIP:
        jt = K - 1 - jt
    T = tl.load(W + c * swc + jt * swk, mask=valid, other=0.0).to(tl.float32)  # (M V)
    T_hi = T.to(X.dtype.element_ty)
    T_lo = (T - T_hi.to(tl.float32)).to(X.dtype.element_ty)
    bias = 0.0
    if HAS_BIAS:
        bias = tl.load(BIAS + c).to(tl.float32)
    x_row = X + b * sxb + c.to(tl.int64) * sxc
    y_row = Y + b * syb + c.to(tl.int64) * syc
    start = chunk * CHUNK
    end = tl.minimum(start + CHUNK, L)
    for t0 in range(start, end, R * V):
        xt = _rows_tile(x_row, t0, r, m, L, sxl, PADA, V, V + (K - 1) * DIL + PADA - PAD)  # (R M)
        acc = tl.zeros([R, V], dtype=tl.float32)
        if IS_FP32:
            acc = tl.dot(xt, T, acc, input_precision="tf32x3")
        else:
            acc = tl.dot(xt, T_hi, acc)
            if SPLIT_W:
                acc = tl.dot(xt, T_lo, acc)
        acc += bias
        ty = t0 + r[:, None] * V + v[None, :]
        tl.store(y_row + ty.to(tl.int64) * syl, acc.to(Y.dtype.element_ty), mask=ty < end)


@triton.jit(do_not_specialize=["N_CHUNKS"])
def _dense_wgrad_kernel(
    X, G, PW, PB, C, L, CHUNK, N_CHUNKS,
    sxb, sxc, sxl, sgb, sgc, sgl,
    K: tl.constexpr, DIL: tl.constexpr, PAD: tl.constexpr, ALIGN: tl.constexpr,
    R: tl.constexpr, V: tl.constexpr, M: tl.constexpr, IS_FP32: tl.constexpr,
):
    """Partial grad_w, grad_bias of one (batch, channel, time chunk): Z = X^T @ G, then Z's diagonals (tap j)."""
    PADA: tl.constexpr = (PAD + ALIGN - 1) // ALIGN * ALIGN
    pid = tl.program_id(0)
    c = pid // N_CHUNKS
    chunk = pid % N_CHUNKS
    b = tl.program_id(1)
    r = tl.arange(0, R)
    m = tl.arange(0, M)
    v = tl.arange(0, V)
    x_row = X + b.to(tl.int64) * sxb + c.to(tl.int64) * sxc
    g_row = G + b.to(tl.int64) * sgb + c.to(tl.int64) * sgc
    z = tl.zeros([M, V], dtype=tl.float32)
    # sum of G for the bias: float32 adds elementwise; 16-bit as a ones-row product (row 0 used), exact in float32
    gsum32 = tl.zeros([R, V], dtype=tl.float32)
    gsum16 = tl.zeros([16, V], dtype=tl.float32)
    ones = tl.full([16, R], 1.0, X.dtype.element_ty)
    start = chunk * CHUNK
    end = tl.minimum(start + CHUNK, L)
    for t0 in range(start, end, R * V):
        xt = _rows_tile(x_row, t0, r, m, L, sxl, PADA, V, V + (K - 1) * DIL + PADA - PAD)  # (R M)
        ty = t0 + r[:, None] * V + v[None, :]
        g = tl.load(g_row + ty.to(tl.int64) * sgl, mask=ty < end, other=0.0)  # (R V)
        g = g.to(X.dtype.element_ty)
        if IS_FP32:
            z = tl.dot(tl.trans(xt), g, z, input_precision="tf32x3")
            gsum32 += g
        else:
            z = tl.dot(tl.trans(xt), g, z)
            gsum16 = tl.dot(ones, g, gsum16)
    # Tap j is the sum of z along its diagonal m = v + SHIFT + j DIL: shear the columns (zs[i, v] = z[i + v, v]),
    # sum over v, and read row i = SHIFT + j DIL.
    i = tl.arange(0, M)
    rows = tl.minimum(i[:, None] + v[None, :], M - 1)  # rows past M - 1 are never read back
    diag = tl.sum(tl.gather(z, rows, axis=0), axis=1)  # (M)
    j = (i - (PADA - PAD)) // DIL
    is_tap = (i >= PADA - PAD) & ((i - (PADA - PAD)) % DIL == 0) & (j < K)
    p = (b * N_CHUNKS + chunk).to(tl.int64)
    tl.store(PW + (p * C + c) * K + j, diag, mask=is_tap)
    if IS_FP32:
        gb = tl.sum(tl.sum(gsum32, axis=1), axis=0)
    else:
        gb = tl.sum(tl.sum(tl.where(tl.arange(0, 16)[:, None] == 0, gsum16, 0.0), axis=1), axis=0)
    tl.store(PB + p * C + c, gb)


# --------------------------------------------------------------------------- launch


@dataclass(frozen=True)
class ConvConfig:
    """Launch choices of one kernel call.

    path: "direct" (tiles of block_c channels x block_t steps) or "dense" (rows of v outputs, r rows per
    Toeplitz product of width m). chunk: time steps per program of the dense kernels and of the
    weight-gradient kernels (0: chosen from the problem size).
    """

    path: str
    block_c: int = 4
    block_t: int = 512
    r: int = 64
    v: int = 16
    m: int = 64
    chunk: int = 0
    unroll: int = MAX_UNROLL  # the direct kernels unroll their tap loop when K <= unroll
    wgrad: str = "tile"  # direct path's weight gradient: "tile" (_direct_wgrad_kernel) or "tap" (_tapwise_...)
    num_warps: int = 4
    num_stages: int = 2


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _align(itemsize: int) -> int:
    """Elements per 16 bytes: the dense path starts its rows on this boundary (vectorised, pipelined copies)."""
    return max(1, 16 // itemsize)


def dense_width(v: int, K: int, dilation: int, pad: int, align: int) -> int:
    """M, the Toeplitz width for rows of v outputs: v + (K-1) d inputs plus the alignment shift, rounded up to a
    power of two >= 16."""
    shift = -pad % align
    return max(16, _next_pow2(v + (K - 1) * dilation + shift))


def dense_shape(K: int, dilation: int, pad: int, itemsize: int) -> tuple[int, int]:
    """(V, M) of the dense path. Each input is loaded M / V times and every output costs M products.
    16-bit inputs: the fewest loads per output with M <= 128 (products are cheap); float32, whose
    tf32x3 products also split every loaded element in three: the narrowest M, ties to longer rows."""
    align = _align(itemsize)
    shapes = [(v, dense_width(v, K, dilation, pad, align)) for v in (16, 32, 64)]
    if itemsize <= 2:
        fits = [s for s in shapes if s[1] <= 128]
        if fits:
            return min(fits, key=lambda s: (s[1] / s[0], s[1]))
    return min(shapes, key=lambda s: (s[1], -s[0]))


def choose_path(K: int, dilation: int, pad: int, stride_l: int, itemsize: int) -> str:
    """Dense (tensor-core Toeplitz) for many taps close together on time-contiguous rows, direct otherwise."""
    if stride_l != 1 or K < 8:
        return "direct"
    _, m = dense_shape(K, dilation, pad, itemsize)
    widest = MAX_DENSE_M if itemsize <= 2 else 128  # float32 holds its X tile three times: registers
    return "dense" if m <= min(widest, max(64, 4 * K)) else "direct"


def make_config(
    strides: tuple[int, int, int], C: int, K: int, dilation: int, pad: int, itemsize: int,
    path: str | None = None, **overrides,
) -> ConvConfig:
    """Launch configuration for an input of these strides and left padding; `overrides` (any ConvConfig field)
    for tests and tuning."""
    _, sc, sl = strides
    path = path or choose_path(K, dilation, pad, sl, itemsize)
    if path == "dense":
        v, m = dense_shape(K, dilation, pad, itemsize)
        if "v" in overrides:
            v = overrides["v"]
            m = dense_width(v, K, dilation, pad, _align(itemsize))
        r = 16 if interpreting() else 64
        # registers: the float32 X tile is held three times (tf32x3 split)
        cfg = dict(path="dense", r=r, v=v, m=m, num_warps=4 if r * m <= (4096 if itemsize == 4 else 8192) else 8)
    else:
        n = 2048 if K <= 4 else 1024  # elements per program: every unrolled tap's load is in flight at once
        if sc == 1 and sl != 1:  # channels-last: lanes along channels; tiles from the H100 sweep at MossFormer2's
            # shapes (benchmarks/kernels_conv.py --sweep-channels-last): up to 32 taps unrolled over 128 x 32
            # tiles, wider kernels looped over 64 x 64; the tap-outer weight gradient
            if K <= 32:
                cfg = dict(path="direct", block_c=min(128, _next_pow2(C)), block_t=32, unroll=32, wgrad="tap")
            else:
                cfg = dict(path="direct", block_c=min(64, _next_pow2(C)), block_t=64, wgrad="tap")
        else:
            bc = min(4, _next_pow2(C))
            cfg = dict(path="direct", block_c=bc, block_t=n // bc)
    if interpreting():  # small tiles: quick on the CPU, and tests cross many tile boundaries
        cfg.update(block_c=min(cfg.get("block_c", 4), 4), block_t=32)
    cfg.update(overrides)
    return ConvConfig(**cfg)


def _chunking(L: int, tile: int, programs_per_chunk: int, device: torch.device, chunk: int,
              max_tiles: int = 8) -> tuple[int, int]:
    """(chunk, n_chunks): time steps per program, a multiple of `tile`, aiming at >= 4 programs per multiprocessor
    while each program still covers up to `max_tiles` tiles (fewer partial sums, the Toeplitz matrix built fewer
    times)."""
    n_tiles = triton.cdiv(max(L, 1), tile)
    if chunk <= 0:
        if device.type != "cuda":
            per = 2
        else:
            want = 4 * _sm_count(device.index if device.index is not None else torch.cuda.current_device())
            per = max(1, min(max_tiles, (n_tiles * programs_per_chunk) // want))
        chunk = per * tile
    chunk = max(tile, (chunk // tile) * tile)
    return chunk, triton.cdiv(max(L, 1), chunk)


def _conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dilation: int, pad: int, flip: bool,
          cfg: ConvConfig, out: torch.Tensor) -> torch.Tensor:
    """out = depthwise convolution of x with left padding `pad` (taps reversed when flip), float32 accumulation."""
    B, C, L = x.shape
    K = weight.shape[1]
    has_bias = bias is not None
    bias_arg = bias if has_bias else weight
    if cfg.path == "dense":
        chunk, n_chunks = _chunking(L, cfg.r * cfg.v, C * B, x.device, cfg.chunk)
        _dense_kernel[(C * n_chunks, B)](
            x, weight, bias_arg, out, L, chunk, n_chunks, *x.stride(), *weight.stride(), *out.stride(),
            K=K, DIL=dilation, PAD=pad, ALIGN=_align(x.element_size()), FLIP=flip, HAS_BIAS=has_bias,
            R=cfg.r, V=cfg.v, M=cfg.m, SPLIT_W=weight.dtype != x.dtype, IS_FP32=x.dtype == torch.float32,
            num_warps=cfg.num_warps, num_stages=cfg.num_stages,
        )
    else:
        grid = (triton.cdiv(L, cfg.block_t), triton.cdiv(C, cfg.block_c), B)
        _direct_kernel[grid](
            x, weight, bias_arg, out, C, L, *x.stride(), *weight.stride(), *out.stride(),
            K=K, DIL=dilation, PAD=pad, FLIP=flip, HAS_BIAS=has_bias, EVEN_C=C % cfg.block_c == 0,
            BLOCK_C=cfg.block_c, BLOCK_T=cfg.block_t, UNROLL=K <= cfg.unroll, num_warps=cfg.num_warps,
        )
    return out


def _weight_grad(x: torch.Tensor, gy: torch.Tensor, K: int, dilation: int, pad: int, cfg: ConvConfig,
                 need_bias: bool = True):
    """(grad_w (C, K), grad_bias (C,) or None) in float32: per-program partial sums, added in a fixed order."""
    B, C, L = x.shape
    if cfg.path == "dense":
        chunk, n_chunks = _chunking(L, cfg.r * cfg.v, C * B, x.device, cfg.chunk)
    else:  # the tap-outer kernel re-reads its chunk of grad_y once per tap: 4 tiles keep it in the L1 cache
        chunk, n_chunks = _chunking(L, cfg.block_t, triton.cdiv(C, cfg.block_c) * B, x.device, cfg.chunk,
                                    max_tiles=4 if cfg.wgrad == "tap" else 8)
    pw = torch.empty((B * n_chunks, C, K), dtype=torch.float32, device=x.device)
    pb = torch.empty((B * n_chunks, C), dtype=torch.float32, device=x.device)
    if cfg.path == "dense":
        _dense_wgrad_kernel[(C * n_chunks, B)](
            x, gy, pw, pb, C, L, chunk, n_chunks, *x.stride(), *gy.stride(),
            K=K, DIL=dilation, PAD=pad, ALIGN=_align(x.element_size()), R=cfg.r, V=cfg.v, M=cfg.m,
            IS_FP32=x.dtype == torch.float32,
            num_warps=cfg.num_warps, num_stages=cfg.num_stages,
        )
    elif cfg.wgrad == "tap":
        _tapwise_wgrad_kernel[(n_chunks, triton.cdiv(C, cfg.block_c), B)](
            x, gy, pw, pb, C, L, chunk, n_chunks, *x.stride(), *gy.stride(),
            K=K, KP=_next_pow2(K), DIL=dilation, PAD=pad, NEED_BIAS=need_bias, EVEN_C=C % cfg.block_c == 0,
            BLOCK_C=cfg.block_c, BLOCK_T=cfg.block_t, num_warps=cfg.num_warps,
        )
    else:
        grid = (n_chunks, triton.cdiv(C, cfg.block_c), B)
        _direct_wgrad_kernel[grid](
            x, gy, pw, pb, C, L, chunk, n_chunks, *x.stride(), *gy.stride(),
            K=K, KP=_next_pow2(K), DIL=dilation, PAD=pad, EVEN_C=C % cfg.block_c == 0,
            BLOCK_C=cfg.block_c, BLOCK_T=cfg.block_t, UNROLL=K <= cfg.unroll, num_warps=cfg.num_warps,
        )
    return pw.sum(0), (pb.sum(0) if need_bias else None)


def _on_device(x: torch.Tensor):
    import contextlib

    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def _forward(x, weight, bias, dilation: int, causal: bool, path: str | None, overrides: dict) -> torch.Tensor:
    C, K = weight.shape
    pad = left_padding(K, dilation, causal)
    cfg = make_config(x.stride(), C, K, dilation, pad, x.element_size(), path, **overrides)
    with _on_device(x):
        return _conv(x, weight, bias, dilation, pad, False, cfg, torch.empty_like(x))


def _backward(gy, x, weight, bias_dtype, dilation: int, causal: bool, needs: tuple[bool, bool, bool],
              path: str | None, overrides: dict):
    """(grad_x, grad_w, grad_bias), each None where `needs` says it is not wanted."""
    C, K = weight.shape
    d = dilation
    pad = left_padding(K, d, causal)
    gx = gw = gb = None
    with _on_device(x):
        if needs[0]:
            # grad_x = the same convolution of grad_y with the taps flipped and the padding mirrored
            pad_t = (K - 1) * d - pad
            cfg = make_config(gy.stride(), C, K, d, pad_t, gy.element_size(), path, **overrides)
            gx = _conv(gy, weight, None, d, pad_t, True, cfg, torch.empty_like(x))
        if needs[1] or needs[2]:
            # the dense path reads x and grad_y along time: both must be time-contiguous
            sl = x.stride(2) if gy.stride(2) == 1 else 0
            cfg = make_config((0, x.stride(1), sl), C, K, d, pad, x.element_size(), path, **overrides)
            gw32, gb32 = _weight_grad(x, gy, K, d, pad, cfg, need_bias=needs[2])
            gw = gw32.to(weight.dtype) if needs[1] else None
            gb = gb32.to(bias_dtype) if needs[2] else None
    return gx, gw, gb


class _DwConv1dFn(torch.autograd.Function):
    """Autograd of the Triton path with explicit launch choices (eager; tests and tuning)."""

    @staticmethod
    def forward(ctx, x, weight, bias, dilation, causal, path, overrides):
        ctx.save_for_backward(x, weight)
        ctx.bias_dtype = None if bias is None else bias.dtype
        ctx.dilation, ctx.causal, ctx.path, ctx.overrides = dilation, causal, path, overrides
        return _forward(x, weight, bias, dilation, causal, path, overrides)

    @staticmethod
    def backward(ctx, gy):
        x, weight = ctx.saved_tensors
        needs = tuple(ctx.needs_input_grad[:3])
        gx, gw, gb = _backward(gy, x, weight, ctx.bias_dtype, ctx.dilation, ctx.causal, needs, ctx.path,
                               ctx.overrides)
        return gx, gw, gb, None, None, None, None


# The same computation as a torch.library custom operator, so that torch.compile keeps a model that calls
# dwconv1d in one graph (the Triton launches are an opaque node, with fake-tensor shapes and a registered
# backward) instead of breaking the graph at every convolution. dwconv1d takes this route while compiling.


@torch.library.custom_op("tsuite::dwconv1d", mutates_args=())
def _dwconv1d_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dilation: int,
                 causal: bool) -> torch.Tensor:
    return _forward(x, weight, bias, dilation, causal, None, {})


@_dwconv1d_op.register_fake
def _dwconv1d_op_fake(x, weight, bias, dilation, causal):
    return torch.empty_like(x)


@torch.library.custom_op("tsuite::dwconv1d_backward", mutates_args=())
def _dwconv1d_backward_op(gy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                          dilation: int, causal: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad_x, grad_w, grad_bias); grad_bias is an empty tensor when there is no bias."""
    has_bias = bias is not None
    gx, gw, gb = _backward(gy, x, weight, bias.dtype if has_bias else None, dilation, causal,
                           (True, True, has_bias), None, {})
    return gx, gw, gb if has_bias else x.new_empty(0)


@_dwconv1d_backward_op.register_fake
def _dwconv1d_backward_op_fake(gy, x, weight, bias, dilation, causal):
    gb = torch.empty_like(bias) if bias is not None else x.new_empty(0)
    return torch.empty_like(x), torch.empty_like(weight, memory_format=torch.contiguous_format), gb


def _op_setup_context(ctx, inputs, output):
    x, weight, bias, dilation, causal = inputs
    ctx.save_for_backward(x, weight, bias)
    ctx.dilation, ctx.causal = dilation, causal


def _op_backward(ctx, gy):
    x, weight, bias = ctx.saved_tensors
    gx, gw, gb = _dwconv1d_backward_op(gy, x, weight, bias, ctx.dilation, ctx.causal)
    return gx, gw, (gb if bias is not None else None), None, None


_dwconv1d_op.register_autograd(_op_backward, setup_context=_op_setup_context)


# --------------------------------------------------------------------------- public API


def _dwconv1d_triton(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    dilation: int = 1,
    causal: bool = True,
    path: str | None = None,
    **overrides,
) -> torch.Tensor:
    """The Triton path with its launch choices exposed (tests, tuning): path "direct" / "dense", ConvConfig fields."""
    weight = check_args(x, weight, bias, dilation)
    if x.dtype not in _TRITON_DTYPES:
        raise ValueError(f"the Triton path takes float32, bfloat16 or float16 x, got {x.dtype}; use backend='torch'")
    if not (x.is_cuda or interpreting()):
        raise ValueError("the Triton path needs CUDA tensors (or TRITON_INTERPRET=1); use backend='torch' on the CPU")
    if path not in (None, "direct", "dense"):
        raise ValueError(f"path must be None, 'direct' or 'dense'; got {path!r}")
    if x.numel() == 0:
        return dwconv1d_ref(x, weight, bias, dilation, causal)
    if path is None and not overrides and torch.compiler.is_compiling():
        return _dwconv1d_op(x, weight, bias, int(dilation), bool(causal))
    return _DwConv1dFn.apply(x, weight, bias, int(dilation), bool(causal), path, overrides)


def dwconv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    dilation: int = 1,
    causal: bool = True,
    backend: Backend = "auto",
) -> torch.Tensor:
    """Depthwise dilated 1-D convolution, causal or centred ("same" length).

    y[b, c, t] = bias[c] + sum_{j<K} weight[c, j] * x[b, c, t + j*dilation - P], x = 0 outside 0..L-1, with
    P = (K-1)*dilation when causal (y[t] sees x[t - (K-1) d] .. x[t]) and P = ((K-1)*dilation) // 2 when centred;
    for an odd (K-1)*dilation the centred form has its extra tap on the right (the future), as
    F.conv1d(padding="same").

    Args:
        x: (B, C, L), any strides (a channels-last view x_blc.transpose(1, 2) is read in place),
            float32 / bfloat16 / float16.
        weight: (C, K), K >= 1 taps per channel (an nn.Conv1d depthwise weight (C, 1, K) is accepted).
        bias: (C,) or None.
        dilation: spacing d >= 1 between taps.
        causal: True for the causal convolution, False for the centred one.
        backend: "auto" (Triton on CUDA tensors, the PyTorch reference elsewhere), "triton" or "torch".

    Returns:
        y: (B, C, L) in x's dtype (x's memory layout when x is dense), accumulated in float32.
        Differentiable in x, weight and bias; the weight and bias gradients are deterministic
        (partial sums added in a fixed order).
    """
    check_args(x, weight, bias, dilation)
    if not use_triton(backend, x, weight, bias) or (backend == "auto" and x.dtype not in _TRITON_DTYPES):
        return dwconv1d_ref(x, weight, bias, dilation, causal)
    return _dwconv1d_triton(x, weight, bias, dilation, causal)
