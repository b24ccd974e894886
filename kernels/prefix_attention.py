"""Prefix attention for Aaren (Feng et al. 2024, "Attention as an RNN", arXiv 2405.13956): Triton kernels.

One learned query per head attends at every step t over the keys 1..t:

    s_i = q . k_i / sqrt(d),    o_t = sum_{i<=t} exp(s_i) v_i / sum_{i<=t} exp(s_i).

Since q does not depend on t, the scores are computed once and o_t is a
max-shifted cumulative sum: the parallel prefix scan over the paper's
(running max m, normaliser u, weighted sum w). Time is cut into blocks of a
few chunks of C steps, and each direction runs in three fully parallel phases
(no program ever waits on another):

1. summaries: one program per block stores the block's (m, u, w) (and, in the
   forward, the scores s_i, so later phases never read k again);
2. scan: per (batch, head), an exclusive scan over the block summaries
   (tl.associative_scan of the associative merge, a few hundred rows a step)
   gives every block the summary of everything before it;
3. outputs: one program per block merges its carried-in summary into every
   row. Inside a chunk, row t weighs step i <= t by exp(s_i - M_t), M_t the
   running max (a C x C masked matrix, so one tensor-core dot gives every
   numerator), and the carry enters with weight exp(m - M_t) <= 1 (a rank-1
   update); the chunk's last row is the carry into the block's next chunk.

The forward saves lse_t = log Z_t; the backward is the mirror image, a reverse
scan whose carries use the smallest later lse as their shift, so again every
exponent is <= 0:

    dv_i = sum_{t>=i} p_ti dO_t,    p_ti = exp(s_i - lse_t),
    ds_i = v_i . dv_i - sum_{t>=i} p_ti (dO_t . o_t),
    dk_i = ds_i q / sqrt(d),        dq = sum_i ds_i k_i / sqrt(d).

Exponentials are taken base 2 with log2(e) folded into the query. The
pure-PyTorch reference is `prefix_attention_ref.py`; `prefix_attention_step`
is the O(1)-memory recurrent form for generation.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from ._dispatch import Backend, interpreting, use_triton  # importing _dispatch also fixes the interpreter
from .prefix_attention_ref import PrefixAttentionState, prefix_attention_ref, prefix_attention_step

LOG2E = 1.4426950408889634
_TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)




# --------------------------------------------------------------------------- kernels

# Sizes that vary between calls are not specialised on (no recompilation per
# length); strides still are, so unit and 16-aligned strides vectorise. The head
# dim D is a compile-time constant: a run-time bound on the head-dim mask would
# stop the compiler from vectorising loads along d. Programs are numbered
# bh * N_BLK + block (one flat grid axis, so any length fits the grid).
_RUNTIME_SIZES = ["H", "L", "SEG", "N_BLK"]


@triton.jit
def _dot_weights(p, x, PREC: tl.constexpr):
    """p @ x for float32 softmax weights p (entries in [0, 1]) and a tile x in its stored dtype.

    "split": x is 16-bit (exact in its own dtype), p enters as hi + lo in that dtype, two
    16-bit tensor-core products with float32 accumulation (p to ~16 bits, better than tf32);
    otherwise x is float32 and PREC is the dot's input precision ("tf32x3": float32 accuracy).
    """
    if PREC == "split":
        p_hi = p.to(x.dtype)
        p_lo = (p - p_hi.to(tl.float32)).to(x.dtype)
        return tl.dot(p_hi, x, tl.dot(p_lo, x))
    else:
        return tl.dot(p, x.to(tl.float32), input_precision=PREC)


@triton.jit
def _merge(m1, u1, w1, m2, u2, w2):
    """The associative, commutative merge of two (m, u, w) summaries (log2 units); m = -inf is the empty summary."""
    m = tl.maximum(m1, m2)
    shift = tl.where(m == float("-inf"), 0.0, m)  # two empty summaries: weights 0, never -inf - -inf
    a1 = tl.exp2(m1 - shift)  # <= 1
    a2 = tl.exp2(m2 - shift)
    return m, u1 * a1 + u2 * a2, w1 * a1 + w2 * a2


@triton.jit(do_not_specialize=["N"])
def _scan_kernel(
    SM, SU, SW, PM, PU, PW, N,
    BD: tl.constexpr, NB: tl.constexpr, DB: tl.constexpr, REVERSE: tl.constexpr,
):
    """Exclusive scan of N block summaries (m, u, w) of one (batch, head), over DB of the BD columns of w.

    Forward: P_j = merge of summaries 0..j-1; REVERSE: of j+1..N-1. NB rows per
    step: row j of a step's tile holds summary j -+ 1 (an inclusive scan of the
    shifted rows is the exclusive scan), merged with the carry of earlier steps.
    """
    bh = tl.program_id(0)
    cb = tl.program_id(1)
    rows = tl.arange(0, NB)
    cols = cb * DB + tl.arange(0, DB)
    base = bh.to(tl.int64) * N
    cm = tl.full([DB], float("-inf"), tl.float32)
    cu = tl.zeros([DB], dtype=tl.float32)
    cw = tl.zeros([DB], dtype=tl.float32)
    for step in range(0, tl.cdiv(N, NB)):
        if REVERSE:
            j = N - (step + 1) * NB + rows
            src = j + 1
            edge = 0  # the row that summarises the whole step
        else:
            j = step * NB + rows
            src = j - 1
            edge = NB - 1
        ok = (src >= 0) & (src < N)
        m = tl.load(SM + base + src, mask=ok, other=float("-inf"))  # (NB)
        u = tl.load(SU + base + src, mask=ok, other=0.0)
        w = tl.load(SW + (base + src)[:, None] * BD + cols[None, :], mask=ok[:, None], other=0.0)  # (NB DB)
        zero = tl.zeros([NB, DB], dtype=tl.float32)
        mm, uu, w = tl.associative_scan((m[:, None] + zero, u[:, None] + zero, w), 0, _merge, reverse=REVERSE)
        mm, uu, w = _merge(cm[None, :], cu[None, :], cw[None, :], mm, uu, w)
        out = (j >= 0) & (j < N)
        tl.store(PW + (base + j)[:, None] * BD + cols[None, :], w, mask=out[:, None])
        tl.store(PM + base + j, tl.max(mm, axis=1), mask=out & (cb == 0))  # equal over columns
        tl.store(PU + base + j, tl.max(uu, axis=1), mask=out & (cb == 0))
        sel = (rows == edge)[:, None]
        cm = tl.max(tl.where(sel, mm, float("-inf")), axis=0)
        cu = tl.sum(tl.where(sel, uu, 0.0), axis=0)
        cw = tl.sum(tl.where(sel, w, 0.0), axis=0)


@triton.jit(do_not_specialize=_RUNTIME_SIZES)
def _fwd_summary_kernel(
    Q, K, V, S, SM, SU, SW,
    H, L, SEG, N_BLK,
    sqb, sqh, sqd, skb, skh, skl, skd, svb, svh, svl, svd,
    scale_log2,
    D: tl.constexpr, C: tl.constexpr, BD: tl.constexpr,
):
    """Scores s_t (log2 units) of one block, and its (m, u, w): m = max s, u = sum 2^(s-m), w = sum 2^(s-m) v."""
    pid = tl.program_id(0)
    bh = pid // N_BLK
    blk = pid % N_BLK
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    offs_d = tl.arange(0, BD)
    dmask = offs_d < D
    q = tl.load(Q + b * sqb + h * sqh + offs_d * sqd, mask=dmask, other=0.0).to(tl.float32) * scale_log2
    k_base = K + b * skb + h * skh
    v_base = V + b * svb + h * svh
    s_base = S + bh.to(tl.int64) * L
    m = tl.zeros([], dtype=tl.float32) - float("inf")
    u = tl.zeros([], dtype=tl.float32)
    w = tl.zeros([BD], dtype=tl.float32)
    start = blk * SEG
    end = tl.minimum(start + SEG, L)
    for c0 in range(start, end, C):
        t = c0 + tl.arange(0, C)
        tmask = t < end
        rt, tile_mask = t[:, None].to(tl.int64), tmask[:, None] & dmask[None, :]  # (C 1) rows, (C BD) mask
        k = tl.load(k_base + rt * skl + offs_d[None, :] * skd, mask=tile_mask, other=0.0).to(tl.float32)  # (C BD)
        v = tl.load(v_base + rt * svl + offs_d[None, :] * svd, mask=tile_mask, other=0.0).to(tl.float32)  # (C BD)
        s = tl.where(tmask, tl.sum(k * q[None, :], axis=1), float("-inf"))  # (C)
        tl.store(s_base + t, s, mask=tmask)
        m_new = tl.maximum(m, tl.max(s, axis=0))
        alpha = tl.exp2(m - m_new)
        p = tl.exp2(s - m_new)  # (C)
        u = u * alpha + tl.sum(p, axis=0)
        w = w * alpha + tl.sum(p[:, None] * v, axis=0)
        m = m_new
    i = bh.to(tl.int64) * N_BLK + blk
    tl.store(SM + i, m)
    tl.store(SU + i, u)
    tl.store(SW + i * BD + offs_d, w)


@triton.jit(do_not_specialize=_RUNTIME_SIZES)
def _fwd_kernel(
    V, S, O, LSE, PM, PU, PW,
    H, L, SEG, N_BLK,
    svb, svh, svl, svd, sob, soh, sol, sod,
    D: tl.constexpr, C: tl.constexpr, BD: tl.constexpr, PREC: tl.constexpr,
):
    """Outputs o_t and lse_t (log2 units) of one block, from the scores and the summary of the blocks before it."""
    # Blocks in the reverse of the summary kernel's order: the first to run find their v still in L2.
    pid = tl.num_programs(0) - 1 - tl.program_id(0)
    bh = pid // N_BLK
    blk = pid % N_BLK
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    offs_d = tl.arange(0, BD)
    dmask = offs_d < D
    v_base = V + b * svb + h * svh
    o_base = O + b * sob + h * soh
    s_base = S + bh.to(tl.int64) * L
    lse_base = LSE + bh.to(tl.int64) * L
    i = bh.to(tl.int64) * N_BLK + blk
    m = tl.load(PM + i)  # carry in: blocks 0..blk-1 (m = -inf, u = w = 0 for the first)
    u = tl.load(PU + i)
    w = tl.load(PW + i * BD + offs_d)  # (BD)

    rows = tl.arange(0, C)
    causal = rows[:, None] >= rows[None, :]  # (t i)
    last = rows == C - 1
    start = blk * SEG
    end = tl.minimum(start + SEG, L)
    for c0 in range(start, end, C):
        t = c0 + rows
        tmask = t < end
        rt, tile_mask = t[:, None].to(tl.int64), tmask[:, None] & dmask[None, :]  # (C 1) rows, (C BD) mask
        s = tl.load(s_base + t, mask=tmask, other=float("-inf"))  # (C)
        v = tl.load(v_base + rt * svl + offs_d[None, :] * svd, mask=tile_mask, other=0.0)  # (C BD), stored dtype
        M = tl.max(tl.where(causal, s[None, :], float("-inf")), axis=1)  # running max, (C)
        M = tl.maximum(M, m)  # finite: every chunk starts with a real step
        p = tl.exp2(tl.where(causal, s[None, :] - M[:, None], float("-inf")))  # (t i), <= 1
        alpha = tl.exp2(m - M)  # weight of the carry per row, <= 1
        num = _dot_weights(p, v, PREC) + alpha[:, None] * w[None, :]  # (C BD)
        den = tl.sum(p, axis=1) + alpha * u  # (C), >= 1
        o = num / den[:, None]
        tl.store(o_base + rt * sol + offs_d[None, :] * sod, o.to(O.dtype.element_ty), mask=tile_mask)
        tl.store(lse_base + t, M + tl.log2(den), mask=tmask)
        # Carry out (to the block's next chunk): the last row already merges the carry with the
        # whole chunk (padded rows repeat it), so (M, den, num) there are the new (m, u, w).
        m = tl.max(M, axis=0)
        u = tl.sum(tl.where(last, den, 0.0), axis=0)
        w = tl.sum(tl.where(last[:, None], num, 0.0), axis=0)


@triton.jit(do_not_specialize=_RUNTIME_SIZES)
def _bwd_summary_kernel(
    DO, O, LSE, DELTA, SR, SG, SH,
    H, L, SEG, N_BLK,
    sdb, sdh, sdl, sdd, sob, soh, sol, sod,
    D: tl.constexpr, C: tl.constexpr, BD: tl.constexpr,
):
    """delta_t = dO_t . o_t, and one block's reverse summary: r = min lse, g = sum 2^(r-lse) dO, h = sum 2^(r-lse) delta.

    Stored as (-r, h, g), so that the forward's max-merge scan serves the backward too.
    """
    pid = tl.program_id(0)
    bh = pid // N_BLK
    blk = pid % N_BLK
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    offs_d = tl.arange(0, BD)
    dmask = offs_d < D
    do_base = DO + b * sdb + h * sdh
    o_base = O + b * sob + h * soh
    lse_base = LSE + bh.to(tl.int64) * L
    delta_base = DELTA + bh.to(tl.int64) * L
    r = tl.zeros([], dtype=tl.float32) + float("inf")
    g = tl.zeros([BD], dtype=tl.float32)
    hs = tl.zeros([], dtype=tl.float32)
    start = blk * SEG
    end = tl.minimum(start + SEG, L)
    for c0 in range(start, end, C):
        t = c0 + tl.arange(0, C)
        tmask = t < end
        rt, tile_mask = t[:, None].to(tl.int64), tmask[:, None] & dmask[None, :]  # (C 1) rows, (C BD) mask
        do = tl.load(do_base + rt * sdl + offs_d[None, :] * sdd, mask=tile_mask, other=0.0).to(tl.float32)  # (C BD)
        o = tl.load(o_base + rt * sol + offs_d[None, :] * sod, mask=tile_mask, other=0.0).to(tl.float32)  # (C BD)
        lse = tl.load(lse_base + t, mask=tmask, other=float("inf"))  # (C)
        delta = tl.sum(do * o, axis=1)  # (C)
        tl.store(delta_base + t, delta, mask=tmask)
        r_new = tl.minimum(r, tl.min(lse, axis=0))
        alpha = tl.exp2(r_new - r)
        e = tl.exp2(r_new - lse)  # (C), <= 1
        g = g * alpha + tl.sum(e[:, None] * do, axis=0)
        hs = hs * alpha + tl.sum(e * delta, axis=0)
        r = r_new
    i = bh.to(tl.int64) * N_BLK + blk
    tl.store(SR + i, -r)
    tl.store(SH + i, hs)
    tl.store(SG + i * BD + offs_d, g)


@triton.jit(do_not_specialize=_RUNTIME_SIZES)
def _bwd_kernel(
    Q, K, V, DO, LSE, DELTA, PR, PG, PH, DK, DV, DQ,
    H, L, SEG, N_BLK,
    sqb, sqh, sqd, skb, skh, skl, skd, svb, svh, svl, svd, sdb, sdh, sdl, sdd,
    sdkb, sdkh, sdkl, sdkd, sdvb, sdvh, sdvl, sdvd,
    scale, scale_log2,
    D: tl.constexpr, C: tl.constexpr, BD: tl.constexpr, PREC: tl.constexpr,
):
    """dk, dv of one block (chunks in reverse), from the reverse summary of the blocks after it; the block's dq part."""
    pid = tl.num_programs(0) - 1 - tl.program_id(0)  # reverse order: the first find their dO still in L2
    bh = pid // N_BLK
    blk = pid % N_BLK
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    offs_d = tl.arange(0, BD)
    dmask = offs_d < D
    q = tl.load(Q + b * sqb + h * sqh + offs_d * sqd, mask=dmask, other=0.0).to(tl.float32)
    q_log2 = q * scale_log2
    k_base = K + b * skb + h * skh
    v_base = V + b * svb + h * svh
    do_base = DO + b * sdb + h * sdh
    dk_base = DK + b * sdkb + h * sdkh
    dv_base = DV + b * sdvb + h * sdvh
    lse_base = LSE + bh.to(tl.int64) * L
    delta_base = DELTA + bh.to(tl.int64) * L
    i = bh.to(tl.int64) * N_BLK + blk
    # Carry in: blocks blk+1..N_BLK-1, shifted by their smallest lse (r = inf, g = h = 0 for the last block).
    r = -tl.load(PR + i)
    g = tl.load(PG + i * BD + offs_d)  # (BD)
    hs = tl.load(PH + i)

    rows = tl.arange(0, C)
    causal = rows[:, None] >= rows[None, :]  # (t i)
    start = blk * SEG
    end = tl.minimum(start + SEG, L)
    n_chunks = tl.cdiv(end - start, C)
    dq = tl.zeros([BD], dtype=tl.float32)
    for idx in range(0, n_chunks):
        c0 = start + (n_chunks - 1 - idx) * C
        t = c0 + rows
        tmask = t < end
        rt, tile_mask = t[:, None].to(tl.int64), tmask[:, None] & dmask[None, :]  # (C 1) rows, (C BD) mask
        k = tl.load(k_base + rt * skl + offs_d[None, :] * skd, mask=tile_mask, other=0.0).to(tl.float32)  # (C BD)
        v = tl.load(v_base + rt * svl + offs_d[None, :] * svd, mask=tile_mask, other=0.0).to(tl.float32)  # (C BD)
        do_raw = tl.load(do_base + rt * sdl + offs_d[None, :] * sdd, mask=tile_mask, other=0.0)  # (C BD), stored dtype
        do = do_raw.to(tl.float32)
        lse = tl.load(lse_base + t, mask=tmask, other=float("inf"))  # (C)
        delta = tl.load(delta_base + t, mask=tmask, other=0.0)  # (C)
        s = tl.where(tmask, tl.sum(k * q_log2[None, :], axis=1), float("-inf"))  # (C)
        p = tl.exp2(tl.where(causal, s[None, :] - lse[:, None], float("-inf")))  # p_ti, (t i)
        beta = tl.exp2(s - r)  # weight of the later-chunk carry per key, <= 1
        dv = _dot_weights(tl.trans(p), do_raw, PREC) + beta[:, None] * g[None, :]  # (C BD)
        pdelta = tl.sum(p * delta[:, None], axis=0) + beta * hs  # (C)
        ds = tl.sum(v * dv, axis=1) - pdelta  # dL/ds_i (natural log units), (C)
        dk = ds[:, None] * (q * scale)[None, :]
        tl.store(dk_base + rt * sdkl + offs_d[None, :] * sdkd, dk.to(DK.dtype.element_ty), mask=tile_mask)
        tl.store(dv_base + rt * sdvl + offs_d[None, :] * sdvd, dv.to(DV.dtype.element_ty), mask=tile_mask)
        dq += tl.sum(ds[:, None] * k, axis=0)
        # Carry out: fold this chunk's rows into (r, g, h).
        r_new = tl.minimum(r, tl.min(lse, axis=0))
        alpha = tl.exp2(r_new - r)
        e = tl.exp2(r_new - lse)  # (C)
        g = g * alpha + tl.sum(e[:, None] * do, axis=0)
        hs = hs * alpha + tl.sum(e * delta, axis=0)
        r = r_new
    tl.store(DQ + i * BD + offs_d, dq * scale)


# --------------------------------------------------------------------------- launch


class _Config(NamedTuple):
    chunk: int  # C, time steps per chunk (the C x C masked block of the output kernels)
    segment: int  # time steps per block (one program of each per-block kernel), a multiple of C
    n_blk: int
    block_d: int
    num_warps: int  # of the per-block kernels
    num_stages: int  # software pipelining of the per-block kernels' chunk loops (1: none)
    scan_rows: int  # block summaries per step of the scan (a power of two)


# Launch defaults for Hopper, per direction: (chunk C, chunks per block, warps at d <= 64
# (larger tiles take at least `_default_warps`), pipeline stages). Chosen with `python -m
# benchmarks.kernels_prefix_attention --sweep` (bf16, B=4 H=8 L=16384 d=64) on an H200,
# 2026-11-25: forward 0.135 ms, backward 0.471 ms; every sweep setting passes tests/gpu.
DEFAULT_FWD = (16, 4, 2, 2)
DEFAULT_BWD = (16, 2, 4, 1)
SCAN_ROWS_MAX = 256  # a (256, 16) step of the scan fits 8 warps without spills
SCAN_COLS = 16  # columns of w per scan program


def _default_warps(chunk: int, block_d: int) -> int:
    # 8 warps once a (C, d) tile reaches 4096 elements: 4 would spill in the backward at d = 128 or C = 64.
    return 8 if chunk * max(chunk, block_d) >= 4096 else 4


def _config(
    k: torch.Tensor,
    chunk: int | None = None,
    segment: int | None = None,
    num_warps: int | None = None,
    scan_rows: int | None = None,
    num_stages: int | None = None,
    backward: bool = False,
) -> _Config:
    L, D = k.shape[2], k.shape[3]
    block_d = max(16, triton.next_power_of_2(D))
    default_chunk, default_per_block, default_warps, default_stages = DEFAULT_BWD if backward else DEFAULT_FWD
    if chunk is None and (block_d > 64 or k.dtype == torch.float32):
        default_chunk = min(default_chunk, 32)  # C = 64 spills at d = 128 and in float32 (tf32x3)
    C = chunk or default_chunk
    if C < 16 or C & (C - 1):
        raise ValueError(f"chunk={C} must be a power of two >= 16 (the tensor-core tile)")
    if segment is None:
        segment = default_per_block * C
    elif segment <= 0 or segment % C:
        raise ValueError(f"segment={segment} must be a positive multiple of chunk={C}")
    n_blk = triton.cdiv(L, segment)
    if scan_rows is None:
        scan_rows = min(SCAN_ROWS_MAX, max(2, triton.next_power_of_2(n_blk)))
    elif scan_rows < 2 or scan_rows & (scan_rows - 1):
        raise ValueError(f"scan_rows={scan_rows} must be a power of two >= 2")
    warps = _default_warps(C, block_d)
    if chunk is None:
        warps = max(warps, default_warps)
    return _Config(C, segment, n_blk, block_d, num_warps or warps, num_stages or default_stages, scan_rows)


def _dot_precision(dtype: torch.dtype) -> str:
    # fp32 inputs keep fp32 accuracy (3 tf32 passes); 16-bit values are exact in their own
    # dtype, so only the softmax weights are split (hi + lo, ~16 bits) for 16-bit tensor cores.
    return "tf32x3" if dtype == torch.float32 else "split"


def _workspace(device: torch.device, *sizes: int) -> list[torch.Tensor]:
    """Float32 scratch tensors of the given numbers of elements, carved from one allocation (16-byte aligned)."""
    padded = [triton.cdiv(n, 32) * 32 for n in sizes]
    buf = torch.empty(sum(padded), dtype=torch.float32, device=device)
    out, at = [], 0
    for n, p in zip(sizes, padded):
        out.append(buf[at : at + n])
        at += p
    return out


def _scan(summaries, prefixes, n_bh: int, cfg: _Config, reverse: bool) -> None:
    """Exclusive scan (forward, or reverse) of the per-block summaries (m, u, w) into `prefixes`."""
    BD, NB = cfg.block_d, cfg.scan_rows
    DB = min(BD, SCAN_COLS)
    warps = max(1, min(8, NB * DB // 32))  # one (NB, DB) step spread over the threads, none idle
    _scan_kernel[(n_bh, BD // DB)](
        *summaries, *prefixes, cfg.n_blk, BD=BD, NB=NB, DB=DB, REVERSE=reverse, num_warps=warps,
    )


def _forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, cfg: _Config):
    B, H, L, D = k.shape
    n_bh, n, BD = B * H, cfg.n_blk, cfg.block_d
    o = torch.empty((B, H, L, D), dtype=v.dtype, device=v.device)
    lse = torch.empty((n_bh, L), dtype=torch.float32, device=v.device)  # log2 units
    nb = n_bh * n
    s, sm, su, sw, pm, pu, pw = _workspace(v.device, n_bh * L, nb, nb, nb * BD, nb, nb, nb * BD)
    grid = (nb,)
    sizes = (H, L, cfg.segment, n)
    _fwd_summary_kernel[grid](
        q, k, v, s, sm, su, sw, *sizes, *q.stride(), *k.stride(), *v.stride(), scale * LOG2E,
        D=D, C=cfg.chunk, BD=BD, num_warps=cfg.num_warps, num_stages=1,  # no dot: nothing to pipeline
    )
    _scan((sm, su, sw), (pm, pu, pw), n_bh, cfg, reverse=False)
    _fwd_kernel[grid](
        v, s, o, lse, pm, pu, pw, *sizes, *v.stride(), *o.stride(),
        D=D, C=cfg.chunk, BD=BD, PREC=_dot_precision(v.dtype), num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return o, lse


def _backward(q, k, v, o, lse, do, scale: float, cfg: _Config):
    B, H, L, D = k.shape
    n_bh, n, BD = B * H, cfg.n_blk, cfg.block_d
    dev = k.device
    nb = n_bh * n
    delta, sr, sh, sg, pr, ph, pg, dq = _workspace(dev, n_bh * L, nb, nb, nb * BD, nb, nb, nb * BD, nb * BD)
    dk = torch.empty((B, H, L, D), dtype=k.dtype, device=dev)
    dv = torch.empty((B, H, L, D), dtype=v.dtype, device=dev)
    grid = (nb,)
    sizes = (H, L, cfg.segment, n)
    _bwd_summary_kernel[grid](
        do, o, lse, delta, sr, sg, sh, *sizes, *do.stride(), *o.stride(),
        D=D, C=cfg.chunk, BD=BD, num_warps=cfg.num_warps, num_stages=1,  # no dot: nothing to pipeline
    )
    _scan((sr, sh, sg), (pr, ph, pg), n_bh, cfg, reverse=True)
    _bwd_kernel[grid](
        q, k, v, do, lse, delta, pr, pg, ph, dk, dv, dq, *sizes,
        *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dk.stride(), *dv.stride(),
        scale, scale * LOG2E,
        D=D, C=cfg.chunk, BD=BD, PREC=_dot_precision(v.dtype), num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    dq = dq.view(n_bh, n, BD).sum(dim=1)[:, :D].reshape(B, H, D)
    return dq, dk, dv


class _PrefixAttentionFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, scale, cfg, cfg_bwd):
        with _on_device(k):
            o, lse = _forward(q, k, v, scale, cfg)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.scale, ctx.cfg = scale, cfg_bwd
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        with _on_device(k):
            dq, dk, dv = _backward(q, k, v, o, lse, do, ctx.scale, ctx.cfg)
        return dq.to(q.dtype), dk, dv, None, None, None


def _on_device(x: torch.Tensor):
    import contextlib

    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


# --------------------------------------------------------------------------- public API


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Validate shapes; return q as a (B, H, d) view."""
    if k.dim() != 4 or v.shape != k.shape:
        raise ValueError(
            f"k and v must both have shape (B, H, L, d); got k {tuple(k.shape)} and v {tuple(v.shape)}"
        )
    B, H, L, D = k.shape
    if q.dim() == 2 and q.shape == (H, D):
        q = q.unsqueeze(0)
    if q.dim() != 3 or q.shape[1:] != (H, D) or q.shape[0] not in (1, B):
        raise ValueError(
            f"q must have shape (H, d) = {(H, D)} or (B, H, d) = {(B, H, D)} (one query per head, "
            f"shared over time); got {tuple(q.shape)}"
        )
    if k.dtype != v.dtype:
        raise ValueError(f"k and v must share a dtype; got {k.dtype} and {v.dtype}")
    if not (q.dtype.is_floating_point and k.dtype.is_floating_point):
        raise ValueError(f"q, k and v must be floating point; got {q.dtype}, {k.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k and v must be on one device; got {q.device}, {k.device}, {v.device}")
    return q.expand(B, H, D)


def _prefix_attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    chunk: int | None = None,
    segment: int | None = None,
    num_warps: int | None = None,
    scan_rows: int | None = None,
    num_stages: int | None = None,
) -> torch.Tensor:
    """The Triton path with its launch choices exposed (tests and tuning); arguments as `prefix_attention`.

    chunk: steps per C x C tile (a power of two >= 16); segment: steps per block, one program
    each (a multiple of chunk); num_warps: of the per-block kernels; scan_rows: block summaries
    per step of the scan (a power of two); num_stages: software pipelining of the chunk loops
    (1: none). Given values apply to forward and backward; None takes each direction's default.
    """
    q = _check(q, k, v)
    if k.dtype not in _TRITON_DTYPES:
        raise ValueError(f"the Triton path takes float32, bfloat16 or float16 k and v, got {k.dtype}; use backend='torch'")
    if not (k.is_cuda or interpreting()):
        raise ValueError("the Triton path needs CUDA tensors (or TRITON_INTERPRET=1); use backend='torch' on the CPU")
    scale = k.shape[-1] ** -0.5 if scale is None else float(scale)
    if k.shape[2] == 0:
        return v.clone()
    launch = (k, chunk, segment, num_warps, scan_rows, num_stages)
    return _PrefixAttentionFn.apply(q, k, v, scale, _config(*launch), _config(*launch, backward=True))


def prefix_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    backend: Backend = "auto",
    *,
    scale: float | None = None,
) -> torch.Tensor:
    """Aaren prefix attention: every step's softmax attention of one query over the prefix.

    o[b, h, t] = sum_{i<=t} softmax_i(s[b, h, 1..t]) v[b, h, i],  s[b, h, i] = q[b, h] . k[b, h, i] * scale.

    Args:
        q: (H, d) one query per head shared over batch and time (Aaren's learned
            token), or (B, H, d) one per sequence and head, still shared over time.
        k, v: (B, H, L, d), any strides, float32 / bfloat16 / float16 (one dtype).
        backend: "auto" (Triton on CUDA tensors, the PyTorch reference elsewhere),
            "triton" or "torch".
        scale: score scale, default 1 / sqrt(d).

    Returns:
        o: (B, H, L, d) in the dtype of v. Accumulation is in float32 (float64
        inputs run on the reference); stable for any score magnitude and any L
        (a running-max shifted scan, all exponents <= 0). Differentiable in q, k
        and v; memory O(B H L) beyond the inputs and outputs.
    """
    _check(q, k, v)
    if not use_triton(backend, q, k, v) or (backend == "auto" and k.dtype not in _TRITON_DTYPES):
        return prefix_attention_ref(q, k, v, scale=scale)
    return _prefix_attention_triton(q, k, v, scale=scale)


__all__ = ["PrefixAttentionState", "prefix_attention", "prefix_attention_step"]
