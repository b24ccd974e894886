"""Linear scan h_t = a_t * h_{t-1} + b_t along the last axis, in Triton (forward and backward).

The recurrence behind diagonal state-space models and linear RNNs. Each
program owns a tile of rows and walks the time axis in chunks: a
``tl.associative_scan`` of (gate, input) pairs inside the chunk, then the state
carried from the previous chunk is applied, so any length runs with one launch.
The backward pass is the same scan run the other way over dL/dh with the gates
shifted by one step. The pure-PyTorch reference is ``linear_scan_ref.py``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ._dispatch import Backend, interpreting, use_triton
from .linear_scan_ref import _check, linear_scan_ref

_TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.complex64)


@dataclass(frozen=True)
class ScanConfig:
    """Tile of one program (rows x time steps), warps, load pipelining, and how backward-in-time scans run.

    ``num_stages`` > 1 prefetches the next chunks' loads (through shared memory).
    ``flip`` walks backward-in-time chunks with reversed indices and a forward
    ``tl.associative_scan``; otherwise the scan itself runs with ``reverse=True``.
    """

    block_r: int
    block_t: int
    num_warps: int
    flip: bool = False
    num_stages: int = 1


# ----------------------------------------------------------------------------- Triton


@triton.jit
def _combine(a_l, b_l, a_r, b_r):
    # apply (a_l, b_l) then (a_r, b_r): h -> a_r * (a_l * h + b_l) + b_r
    return a_l * a_r, a_r * b_l + b_r


@triton.jit
def _combine_complex(ar_l, ai_l, br_l, bi_l, ar_r, ai_r, br_r, bi_r):
    ar = ar_l * ar_r - ai_l * ai_r
    ai = ar_l * ai_r + ai_l * ar_r
    br = ar_r * br_l - ai_r * bi_l + br_r
    bi = ar_r * bi_l + ai_r * br_l + bi_r
    return ar, ai, br, bi


@triton.jit
def _rows(R, R1, BLOCK_R: tl.constexpr):
    """Flat row indices of this program, their mask, and the two row coordinates."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    return rows, rows < R, (rows // R1).to(tl.int64), (rows % R1).to(tl.int64)


@triton.jit
def _chunk_times(c, n_chunks, BACKWARD: tl.constexpr, FLIP: tl.constexpr, BLOCK_T: tl.constexpr, WIDE: tl.constexpr):
    """Time index of each tile position of the c-th chunk, in the order the scan visits chunks."""
    j = tl.arange(0, BLOCK_T)
    if BACKWARD:
        start = (n_chunks - 1 - c) * BLOCK_T
        if FLIP:
            t = start + (BLOCK_T - 1 - j)  # tile position 0 is the latest time step
        else:
            t = start + j
    else:
        t = c * BLOCK_T + j
    if WIDE:
        t = t.to(tl.int64)
    return t[None, :]


@triton.jit
def _last(x, NATIVE_REV: tl.constexpr, BLOCK_T: tl.constexpr):
    """Value at the tile position the scan visits last (the state handed to the next chunk)."""
    j = tl.arange(0, BLOCK_T)[None, :]
    if NATIVE_REV:
        return tl.sum(tl.where(j == 0, x, 0.0), axis=1)
    return tl.sum(tl.where(j == BLOCK_T - 1, x, 0.0), axis=1)


@triton.jit
def _load2(ptr, offs, mask):
    """Load complex numbers (offsets in complex units) stored as (re, im) float32 pairs: two tiles."""
    k = tl.arange(0, 2)[None, None, :]
    x = tl.load(ptr + 2 * offs[:, :, None] + k, mask=mask[:, :, None], other=0.0)
    return tl.split(x.to(tl.float32))


@triton.jit
def _store2(ptr, offs, mask, re, im):
    k = tl.arange(0, 2)[None, None, :]
    tl.store(ptr + 2 * offs[:, :, None] + k, tl.join(re, im).to(ptr.dtype.element_ty), mask=mask[:, :, None])


# Each kernel walks the chunks of its rows with a `for` loop; under the CPU
# interpreter with numpy >= 2.4 a loop bounded by a tensor fails
# (triton-lang/triton#9171), so LOOP_WHILE switches to an equivalent `while`.


@triton.jit
def _fwd_step(
    c, n_chunks, carry, a_ptr, b_ptr, h_ptr, a_row, b_row, h_row, sat, sbt, sht, a_fixed, rmask, L,
    A_FULL: tl.constexpr, REVERSE: tl.constexpr, FLIP: tl.constexpr, NATIVE_REV: tl.constexpr,
    WIDE: tl.constexpr, BLOCK_T: tl.constexpr,
):
    t = _chunk_times(c, n_chunks, REVERSE, FLIP, BLOCK_T, WIDE)
    m = rmask[:, None] & (t < L)
    b = tl.load(b_ptr + b_row + t * sbt, mask=m, other=0.0).to(tl.float32)
    if A_FULL:
        a = tl.load(a_ptr + a_row + t * sat, mask=m, other=1.0).to(tl.float32)
    else:
        a = tl.where(m, a_fixed, 1.0)
    A, B = tl.associative_scan((a, b), axis=1, combine_fn=_combine, reverse=NATIVE_REV)
    h = A * carry[:, None] + B
    tl.store(h_ptr + h_row + t * sht, h.to(h_ptr.dtype.element_ty), mask=m)
    return _last(h, NATIVE_REV, BLOCK_T)


@triton.jit
def _fwd_kernel(
    a_ptr, b_ptr, z_ptr, h_ptr, R, R1, L,
    sa0, sa1, sat, sb0, sb1, sbt, sz0, sz1, szt, sh0, sh1, sht,
    A_FULL: tl.constexpr, HAS_H0: tl.constexpr, REVERSE: tl.constexpr, FLIP: tl.constexpr,
    NATIVE_REV: tl.constexpr, WIDE: tl.constexpr, LOOP_WHILE: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_T: tl.constexpr, NUM_STAGES: tl.constexpr,
):
    rows, rmask, r0, r1 = _rows(R, R1, BLOCK_R)
    a_row = (r0 * sa0 + r1 * sa1)[:, None]
    b_row = (r0 * sb0 + r1 * sb1)[:, None]
    h_row = (r0 * sh0 + r1 * sh1)[:, None]
    carry = tl.zeros([BLOCK_R], dtype=tl.float32)
    if HAS_H0:
        carry = tl.load(z_ptr + r0 * sz0 + r1 * sz1, mask=rmask, other=0.0).to(tl.float32)
    a_fixed = tl.load(a_ptr + a_row, mask=rmask[:, None] & (not A_FULL), other=1.0).to(tl.float32)
    n_chunks = tl.cdiv(L, BLOCK_T)
    args = (a_ptr, b_ptr, h_ptr, a_row, b_row, h_row, sat, sbt, sht, a_fixed, rmask, L)
    if LOOP_WHILE:
        c = 0
        while c < n_chunks:
            carry = _fwd_step(c, n_chunks, carry, *args, A_FULL, REVERSE, FLIP, NATIVE_REV, WIDE, BLOCK_T)
            c += 1
    else:
        for c in tl.range(0, n_chunks, num_stages=NUM_STAGES):
            carry = _fwd_step(c, n_chunks, carry, *args, A_FULL, REVERSE, FLIP, NATIVE_REV, WIDE, BLOCK_T)


@triton.jit
def _bwd_step(
    c, n_chunks, carry, acc, a_ptr, h_ptr, dh_ptr, db_ptr, da_ptr, a_row, h_row, g_row, db_row, da_row,
    sat, sht, sgt, sdbt, sdat, a_fixed, z, rmask, L,
    A_FULL: tl.constexpr, HAS_H0: tl.constexpr, REVERSE: tl.constexpr, FLIP: tl.constexpr,
    NATIVE_REV: tl.constexpr, WIDE: tl.constexpr, BLOCK_T: tl.constexpr,
):
    t = _chunk_times(c, n_chunks, not REVERSE, FLIP, BLOCK_T, WIDE)
    nxt = t + 1  # the step after t in the forward recurrence, and the one before
    prv = t - 1
    if REVERSE:
        nxt = t - 1
        prv = t + 1
    m = rmask[:, None] & (t < L)
    dy = tl.load(dh_ptr + g_row + t * sgt, mask=m, other=0.0).to(tl.float32)
    if A_FULL:
        gate = tl.load(a_ptr + a_row + nxt * sat, mask=m & (nxt >= 0) & (nxt < L), other=1.0).to(tl.float32)
    else:
        gate = tl.where(m, a_fixed, 1.0)
    GA, GB = tl.associative_scan((gate, dy), axis=1, combine_fn=_combine, reverse=NATIVE_REV)
    g = GA * carry[:, None] + GB
    tl.store(db_ptr + db_row + t * sdbt, g.to(db_ptr.dtype.element_ty), mask=m)
    outside = (prv < 0) | (prv >= L)
    hp = tl.load(h_ptr + h_row + prv * sht, mask=m & ~outside, other=0.0).to(tl.float32)
    if HAS_H0:
        hp = tl.where(outside, z, hp)
    da = g * hp
    if A_FULL:
        tl.store(da_ptr + da_row + t * sdat, da.to(da_ptr.dtype.element_ty), mask=m)
    else:
        acc += tl.where(m, da, 0.0)
    return _last(g, NATIVE_REV, BLOCK_T), acc


@triton.jit
def _bwd_kernel(
    a_ptr, h_ptr, z_ptr, dh_ptr, db_ptr, da_ptr, da_rows_ptr, dz_rows_ptr, R, R1, L,
    sa0, sa1, sat, sh0, sh1, sht, sz0, sz1, szt, sg0, sg1, sgt, sdb0, sdb1, sdbt, sda0, sda1, sdat,
    A_FULL: tl.constexpr, HAS_H0: tl.constexpr, REVERSE: tl.constexpr, FLIP: tl.constexpr,
    NATIVE_REV: tl.constexpr, WIDE: tl.constexpr, LOOP_WHILE: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_T: tl.constexpr, NUM_STAGES: tl.constexpr,
):
    # g_t = dL/dh_t + a_{t+1} g_{t+1} (a_{t-1} g_{t-1} if REVERSE); db = g; da_t = g_t h_{t-1}; dh0 = a_first g_first
    rows, rmask, r0, r1 = _rows(R, R1, BLOCK_R)
    a_row = (r0 * sa0 + r1 * sa1)[:, None]
    h_row = (r0 * sh0 + r1 * sh1)[:, None]
    g_row = (r0 * sg0 + r1 * sg1)[:, None]
    db_row = (r0 * sdb0 + r1 * sdb1)[:, None]
    da_row = (r0 * sda0 + r1 * sda1)[:, None]
    z = tl.load(z_ptr + (r0 * sz0 + r1 * sz1)[:, None], mask=rmask[:, None] & HAS_H0, other=0.0).to(tl.float32)
    first = 0  # time step whose gate multiplies h0
    if REVERSE:
        if A_FULL:
            first = tl.cast(L - 1, tl.int64) * sat
    a_fixed = tl.load(a_ptr + a_row + first, mask=rmask[:, None], other=1.0).to(tl.float32)
    acc = tl.zeros([1, 1], dtype=tl.float32)
    if not A_FULL:
        acc = tl.zeros([BLOCK_R, BLOCK_T], dtype=tl.float32)
    carry = tl.zeros([BLOCK_R], dtype=tl.float32)
    n_chunks = tl.cdiv(L, BLOCK_T)
    args = (a_ptr, h_ptr, dh_ptr, db_ptr, da_ptr, a_row, h_row, g_row, db_row, da_row,
            sat, sht, sgt, sdbt, sdat, a_fixed, z, rmask, L)
    if LOOP_WHILE:
        c = 0
        while c < n_chunks:
            carry, acc = _bwd_step(c, n_chunks, carry, acc, *args, A_FULL, HAS_H0, REVERSE, FLIP, NATIVE_REV, WIDE, BLOCK_T)
            c += 1
    else:
        for c in tl.range(0, n_chunks, num_stages=NUM_STAGES):
            carry, acc = _bwd_step(c, n_chunks, carry, acc, *args, A_FULL, HAS_H0, REVERSE, FLIP, NATIVE_REV, WIDE, BLOCK_T)
    if not A_FULL:
        tl.store(da_rows_ptr + rows, tl.sum(acc, axis=1), mask=rmask)
    if HAS_H0:
        tl.store(dz_rows_ptr + rows, tl.sum(a_fixed, axis=1) * carry, mask=rmask)


@triton.jit
def _fwd_step_complex(
    c, n_chunks, cr, ci, a_ptr, b_ptr, h_ptr, a_row, b_row, h_row, sat, sbt, sht, fr, fi, rmask, L,
    A_FULL: tl.constexpr, REVERSE: tl.constexpr, FLIP: tl.constexpr, NATIVE_REV: tl.constexpr,
    WIDE: tl.constexpr, BLOCK_T: tl.constexpr,
):
    t = _chunk_times(c, n_chunks, REVERSE, FLIP, BLOCK_T, WIDE)
    m = rmask[:, None] & (t < L)
    br, bi = _load2(b_ptr, b_row + t * sbt, m)
    if A_FULL:
        ar, ai = _load2(a_ptr, a_row + t * sat, m)
        ar = tl.where(m, ar, 1.0)
    else:
        ar = tl.where(m, fr, 1.0)
        ai = tl.where(m, fi, 0.0)
    Ar, Ai, Br, Bi = tl.associative_scan((ar, ai, br, bi), axis=1, combine_fn=_combine_complex, reverse=NATIVE_REV)
    hr = Ar * cr[:, None] - Ai * ci[:, None] + Br
    hi = Ar * ci[:, None] + Ai * cr[:, None] + Bi
    _store2(h_ptr, h_row + t * sht, m, hr, hi)
    return _last(hr, NATIVE_REV, BLOCK_T), _last(hi, NATIVE_REV, BLOCK_T)


@triton.jit
def _fwd_kernel_complex(
    a_ptr, b_ptr, z_ptr, h_ptr, R, R1, L,
    sa0, sa1, sat, sb0, sb1, sbt, sz0, sz1, szt, sh0, sh1, sht,
    A_FULL: tl.constexpr, HAS_H0: tl.constexpr, REVERSE: tl.constexpr, FLIP: tl.constexpr,
    NATIVE_REV: tl.constexpr, WIDE: tl.constexpr, LOOP_WHILE: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_T: tl.constexpr, NUM_STAGES: tl.constexpr,
):
    # _fwd_kernel on (re, im) pairs of float32; strides count complex numbers.
    rows, rmask, r0, r1 = _rows(R, R1, BLOCK_R)
    a_row = (r0 * sa0 + r1 * sa1)[:, None]
    b_row = (r0 * sb0 + r1 * sb1)[:, None]
    h_row = (r0 * sh0 + r1 * sh1)[:, None]
    cr, ci = _load2(z_ptr, (r0 * sz0 + r1 * sz1)[:, None], rmask[:, None] & HAS_H0)
    cr = tl.sum(cr, axis=1)
    ci = tl.sum(ci, axis=1)
    fr, fi = _load2(a_ptr, a_row, rmask[:, None] & (not A_FULL))
    n_chunks = tl.cdiv(L, BLOCK_T)
    args = (a_ptr, b_ptr, h_ptr, a_row, b_row, h_row, sat, sbt, sht, fr, fi, rmask, L)
    if LOOP_WHILE:
        c = 0
        while c < n_chunks:
            cr, ci = _fwd_step_complex(c, n_chunks, cr, ci, *args, A_FULL, REVERSE, FLIP, NATIVE_REV, WIDE, BLOCK_T)
            c += 1
    else:
        for c in tl.range(0, n_chunks, num_stages=NUM_STAGES):
            cr, ci = _fwd_step_complex(c, n_chunks, cr, ci, *args, A_FULL, REVERSE, FLIP, NATIVE_REV, WIDE, BLOCK_T)


@triton.jit
def _bwd_step_complex(
    c, n_chunks, cr, ci, acc_r, acc_i, a_ptr, h_ptr, dh_ptr, db_ptr, da_ptr, a_row, h_row, g_row, db_row, da_row,
    sat, sht, sgt, sdbt, sdat, fr, fi, zr, zi, rmask, L,
    A_FULL: tl.constexpr, HAS_H0: tl.constexpr, REVERSE: tl.constexpr, FLIP: tl.constexpr,
    NATIVE_REV: tl.constexpr, WIDE: tl.constexpr, BLOCK_T: tl.constexpr,
):
    # _bwd_step with conjugates: g_t = dL/dh_t + conj(a_{t+1}) g_{t+1}, da_t = g_t conj(h_{t-1}).
    t = _chunk_times(c, n_chunks, not REVERSE, FLIP, BLOCK_T, WIDE)
    nxt = t + 1
    prv = t - 1
    if REVERSE:
        nxt = t - 1
        prv = t + 1
    m = rmask[:, None] & (t < L)
    yr, yi = _load2(dh_ptr, g_row + t * sgt, m)
    if A_FULL:
        inside = m & (nxt >= 0) & (nxt < L)
        ar, ai = _load2(a_ptr, a_row + nxt * sat, inside)
        ar = tl.where(inside, ar, 1.0)
    else:
        ar = tl.where(m, fr, 1.0)
        ai = tl.where(m, fi, 0.0)
    GAr, GAi, GBr, GBi = tl.associative_scan((ar, -ai, yr, yi), axis=1, combine_fn=_combine_complex, reverse=NATIVE_REV)
    gr = GAr * cr[:, None] - GAi * ci[:, None] + GBr
    gi = GAr * ci[:, None] + GAi * cr[:, None] + GBi
    _store2(db_ptr, db_row + t * sdbt, m, gr, gi)
    outside = (prv < 0) | (prv >= L)
    hr, hi = _load2(h_ptr, h_row + prv * sht, m & ~outside)
    if HAS_H0:
        hr = tl.where(outside, zr, hr)
        hi = tl.where(outside, zi, hi)
    dar = gr * hr + gi * hi
    dai = gi * hr - gr * hi
    if A_FULL:
        _store2(da_ptr, da_row + t * sdat, m, dar, dai)
    else:
        acc_r += tl.where(m, dar, 0.0)
        acc_i += tl.where(m, dai, 0.0)
    return _last(gr, NATIVE_REV, BLOCK_T), _last(gi, NATIVE_REV, BLOCK_T), acc_r, acc_i


@triton.jit
def _bwd_kernel_complex(
    a_ptr, h_ptr, z_ptr, dh_ptr, db_ptr, da_ptr, da_rows_ptr, dz_rows_ptr, R, R1, L,
    sa0, sa1, sat, sh0, sh1, sht, sz0, sz1, szt, sg0, sg1, sgt, sdb0, sdb1, sdbt, sda0, sda1, sdat,
    A_FULL: tl.constexpr, HAS_H0: tl.constexpr, REVERSE: tl.constexpr, FLIP: tl.constexpr,
    NATIVE_REV: tl.constexpr, WIDE: tl.constexpr, LOOP_WHILE: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_T: tl.constexpr, NUM_STAGES: tl.constexpr,
):
    rows, rmask, r0, r1 = _rows(R, R1, BLOCK_R)
    a_row = (r0 * sa0 + r1 * sa1)[:, None]
    h_row = (r0 * sh0 + r1 * sh1)[:, None]
    g_row = (r0 * sg0 + r1 * sg1)[:, None]
    db_row = (r0 * sdb0 + r1 * sdb1)[:, None]
    da_row = (r0 * sda0 + r1 * sda1)[:, None]
    zr, zi = _load2(z_ptr, (r0 * sz0 + r1 * sz1)[:, None], rmask[:, None] & HAS_H0)
    first = 0
    if REVERSE:
        if A_FULL:
            first = tl.cast(L - 1, tl.int64) * sat
    fr, fi = _load2(a_ptr, a_row + first, rmask[:, None])
    acc_r = tl.zeros([1, 1], dtype=tl.float32)
    acc_i = tl.zeros([1, 1], dtype=tl.float32)
    if not A_FULL:
        acc_r = tl.zeros([BLOCK_R, BLOCK_T], dtype=tl.float32)
        acc_i = tl.zeros([BLOCK_R, BLOCK_T], dtype=tl.float32)
    cr = tl.zeros([BLOCK_R], dtype=tl.float32)
    ci = tl.zeros([BLOCK_R], dtype=tl.float32)
    n_chunks = tl.cdiv(L, BLOCK_T)
    args = (a_ptr, h_ptr, dh_ptr, db_ptr, da_ptr, a_row, h_row, g_row, db_row, da_row,
            sat, sht, sgt, sdbt, sdat, fr, fi, zr, zi, rmask, L)
    if LOOP_WHILE:
        c = 0
        while c < n_chunks:
            cr, ci, acc_r, acc_i = _bwd_step_complex(
                c, n_chunks, cr, ci, acc_r, acc_i, *args, A_FULL, HAS_H0, REVERSE, FLIP, NATIVE_REV, WIDE, BLOCK_T)
            c += 1
    else:
        for c in tl.range(0, n_chunks, num_stages=NUM_STAGES):
            cr, ci, acc_r, acc_i = _bwd_step_complex(
                c, n_chunks, cr, ci, acc_r, acc_i, *args, A_FULL, HAS_H0, REVERSE, FLIP, NATIVE_REV, WIDE, BLOCK_T)
    if not A_FULL:
        tl.store(da_rows_ptr + 2 * rows, tl.sum(acc_r, axis=1), mask=rmask)
        tl.store(da_rows_ptr + 2 * rows + 1, tl.sum(acc_i, axis=1), mask=rmask)
    if HAS_H0:
        fr = tl.sum(fr, axis=1)
        fi = tl.sum(fi, axis=1)
        tl.store(dz_rows_ptr + 2 * rows, fr * cr + fi * ci, mask=rmask)
        tl.store(dz_rows_ptr + 2 * rows + 1, fr * ci - fi * cr, mask=rmask)


# ----------------------------------------------------------------------------- host side


def _pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def default_config(
    rows: int, L: int, row_stride: int, time_stride: int, itemsize: int, backward: bool = False
) -> ScanConfig:
    """Tile for ``rows`` sequences of length ``L`` with the given inner row / time strides and element
    size (itemsize 8 means complex64), for the forward or the ``backward`` kernel."""
    # Timed on an H100 at 8x1536x4096 and 1x512x131072: 2048 steps x 4 warps for float32, and for the
    # half-precision backward; the half-precision forward is faster with 4096-step tiles whose loads
    # are prefetched 3 chunks ahead; complex64 holds two floats per step, so half the steps.
    tile, stages = (1024 if itemsize == 8 else 2048), 1
    if interpreting():  # small tiles: fast on the CPU, and tests cross many chunk boundaries
        tile = 64
    if time_stride != 1 and row_stride == 1:  # channels-last: neighbouring rows are contiguous
        block_r = min(32, _pow2(rows))
        block_t = min(max(tile // block_r, 16), _pow2(L))
    else:  # time-last (or any other layout): one row per program unless rows are short
        if itemsize == 2 and not backward and L >= 4096 and not interpreting():
            tile, stages = 4096, 3
        block_t = min(tile, _pow2(L))
        block_r = min(max(tile // block_t, 1), _pow2(rows))
    size = block_r * block_t
    warps = 8 if size >= 4096 else 4 if size >= 1024 else 2 if size >= 256 else 1
    return ScanConfig(block_r, block_t, warps, num_stages=stages)


def _merge_rows(shape: tuple[int, ...], strides: list[tuple[int, ...]]) -> list[tuple[int, list[int]]]:
    """Collapse the leading (row) dims of several same-shaped views into as few (size, strides) as possible."""
    merged: list[tuple[int, list[int]]] = []
    for i, n in enumerate(shape):
        if n == 1:
            continue
        ss = [s[i] for s in strides]
        if merged and all(p == s * n for p, s in zip(merged[-1][1], ss)):
            merged[-1] = (merged[-1][0] * n, ss)
        else:
            merged.append((n, ss))
    while len(merged) < 2:
        merged.insert(0, (1, [0] * len(strides)))
    return merged


def _launch(kernel, shape, L, views, row_bufs, flags, backward_in_time: bool, cfg: ScanConfig | None):
    """Run ``kernel`` over the rows of full-shape views (*shape, n); None views are absent inputs.

    Rows are flattened without a copy: leading dims merge where strides allow and
    the kernel takes two row coordinates; any further dims loop here.
    """
    present = [v for v in views if v is not None]
    is_complex = present[0].is_complex()
    unit = 2 if is_complex else 1  # complex numbers are (re, im) pairs of float32 in the kernel
    dummy = present[0]
    views = [dummy if v is None else v for v in views]
    merged = _merge_rows(tuple(shape), [v.stride()[:-1] for v in views])
    (R0, s0), (R1, s1) = merged[-2], merged[-1]
    R = R0 * R1
    if R == 0 or L == 0:
        return
    if cfg is None:  # the layout of the second view (b forward, h backward) picks the tile
        backward = kernel in (_bwd_kernel, _bwd_kernel_complex)
        cfg = default_config(R, L, s1[1], views[1].stride(-1), views[1].element_size(), backward)
    wide = any(v.stride(-1) * L * unit >= 2**31 for v in views)
    bases = [torch.view_as_real(v) if is_complex else v for v in views]
    outer = merged[:-2]
    for index in itertools.product(*(range(n) for n, _ in outer)):
        flat = 0
        for (n, _), i in zip(outer, index):
            flat = flat * n + i
        ptrs = []
        for k, base in enumerate(bases):
            off = sum(i * ss[k] for (_, ss), i in zip(outer, index)) * unit
            ptrs.append(base.as_strided((1,), (1,), base.storage_offset() + off) if off else base)
        bufs = [buf.view(-1)[flat * R * unit:] if buf is not None else bases[0] for buf in row_bufs]
        strides = []  # in elements of the input dtype (complex numbers for complex inputs)
        for k, v in enumerate(views):
            strides += [s0[k], s1[k], v.stride(-1)]
        kernel[(triton.cdiv(R, cfg.block_r),)](
            *ptrs, *bufs, R, R1, L, *strides, **flags,
            FLIP=cfg.flip, NATIVE_REV=backward_in_time and not cfg.flip, WIDE=wide, LOOP_WHILE=interpreting(),
            BLOCK_R=cfg.block_r, BLOCK_T=cfg.block_t, NUM_STAGES=cfg.num_stages, num_warps=cfg.num_warps,
        )


def _grad_buffer(x: torch.Tensor, full: tuple[int, ...]) -> torch.Tensor:
    """Gradient storage for input x seen at shape ``full``: x's own layout, or float32 to be summed if x broadcasts."""
    if tuple(x.shape) == full:
        return torch.empty_like(x)
    return torch.empty(full, dtype=torch.complex64 if x.is_complex() else torch.float32, device=x.device)


def _reduce_to(g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if tuple(g.shape) != tuple(x.shape):
        g = g.sum_to_size(x.shape)
    return g.to(x.dtype)


def _forward(a, b, h0, reverse: bool, cfg: ScanConfig | None = None) -> torch.Tensor:
    shape = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1], () if h0 is None else h0.shape)
    L = b.shape[-1]
    if tuple(b.shape[:-1]) == tuple(shape):
        h = torch.empty_like(b)  # keeps b's layout (time-last or channels-last)
    else:
        h = torch.empty(*shape, L, dtype=b.dtype, device=b.device)
    a_full = a.shape[-1] == L and L > 1
    views = [a.expand(*shape, a.shape[-1]), b.expand(*shape, L), None if h0 is None else h0.expand(shape).unsqueeze(-1), h]
    kernel = _fwd_kernel_complex if b.is_complex() else _fwd_kernel
    flags = dict(A_FULL=a_full, HAS_H0=h0 is not None, REVERSE=reverse)
    _launch(kernel, shape, L, views, [], flags, reverse, cfg)
    return h


def _backward(a, h, h0, dh, reverse: bool, cfg: ScanConfig | None = None):
    shape, L = tuple(h.shape[:-1]), h.shape[-1]
    a_full = a.shape[-1] == L and L > 1
    unit = 2 if h.is_complex() else 1
    db = torch.empty_like(h)
    da = _grad_buffer(a, (*shape, L)) if a_full else None
    da_rows = None if a_full else torch.empty(*shape, unit, dtype=torch.float32, device=h.device)
    dz_rows = None if h0 is None else torch.empty(*shape, unit, dtype=torch.float32, device=h.device)
    views = [a.expand(*shape, a.shape[-1]), h, None if h0 is None else h0.expand(shape).unsqueeze(-1), dh, db, da]
    kernel = _bwd_kernel_complex if h.is_complex() else _bwd_kernel
    flags = dict(A_FULL=a_full, HAS_H0=h0 is not None, REVERSE=reverse)
    _launch(kernel, shape, L, views, [da_rows, dz_rows], flags, not reverse, cfg)
    if not a_full:
        da = torch.view_as_complex(da_rows) if unit == 2 else da_rows[..., 0]
        da = da.unsqueeze(-1)
    dh0 = None
    if h0 is not None:
        dh0 = torch.view_as_complex(dz_rows) if unit == 2 else dz_rows[..., 0]
        dh0 = _reduce_to(dh0, h0)
    return _reduce_to(da, a), db, dh0


class _LinearScanFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, h0, reverse, cfg=None):
        h = _forward(a, b, h0, reverse, cfg)
        ctx.save_for_backward(a, h, h0)
        ctx.reverse, ctx.cfg, ctx.b_shape = reverse, cfg, b.shape
        return h

    @staticmethod
    def backward(ctx, dh):
        a, h, h0 = ctx.saved_tensors
        da, db, dh0 = _backward(a, h, h0, dh.resolve_conj(), ctx.reverse, ctx.cfg)
        if tuple(db.shape) != tuple(ctx.b_shape):
            db = db.sum_to_size(ctx.b_shape)
        return da, db, dh0, None, None


def linear_scan(
    a: torch.Tensor,
    b: torch.Tensor,
    h0: torch.Tensor | None = None,
    reverse: bool = False,
    return_final_state: bool = False,
    backend: Backend = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """First-order linear recurrence along the last axis: h_t = a_t * h_{t-1} + b_t.

    Args:
        a: gates, shape (..., L), or (..., 1) for a time-invariant system (then no
            gate is read per step). Leading dims broadcast against b's.
        b: inputs, shape (..., L), any strides (time-last and channels-last views
            run without a copy). L may be anything from 1 to millions.
        h0: initial state h_{-1}, shape broadcastable to the leading shape; zero if None.
        reverse: run the recurrence from the end, h_t = a_t * h_{t+1} + b_t
            (h0 then enters at t = L - 1).
        return_final_state: also return the state after the last step
            (h[..., -1], or h[..., 0] when reverse).
        backend: "auto" (Triton on CUDA tensors, the PyTorch reference
            elsewhere), "triton" or "torch".

    Dtypes: float32, bfloat16, float16 (accumulated in float32) and complex64 on
    the Triton path; float64/complex128 run on the reference. a, b and h0 share
    one dtype; the output has it too. Gradients flow to a, b and h0 (computed by
    a reverse scan in Triton; conjugate gradients for complex, as in PyTorch).

    Returns:
        h of shape (*leading, L), or (h, h_final) with h_final of shape leading.
    """
    _check(a, b, h0)
    if not use_triton(backend, a, b, h0) or b.dtype not in _TRITON_DTYPES:
        if backend == "triton":
            raise TypeError(f"linear_scan: the Triton path takes {_TRITON_DTYPES}, got {b.dtype}; use backend='torch'")
        return linear_scan_ref(a, b, h0, reverse, return_final_state)
    if not b.is_cuda and not interpreting():
        raise ValueError("linear_scan: backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1 to run on the CPU)")
    if a.is_conj() or b.is_conj() or (h0 is not None and h0.is_conj()):
        a, b = a.resolve_conj(), b.resolve_conj()
        h0 = None if h0 is None else h0.resolve_conj()
    h = _LinearScanFunction.apply(a, b, h0, reverse)
    if return_final_state:
        return h, h[..., 0 if reverse else -1].clone()
    return h
