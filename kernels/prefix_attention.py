"""Prefix attention for Aaren (Feng et al. 2024, "Attention as an RNN", arXiv 2405.13956): Triton kernels.

One learned query per head attends at every step t over the keys 1..t:

    s_i = q . k_i / sqrt(d),    o_t = sum_{i<=t} exp(s_i) v_i / sum_{i<=t} exp(s_i).

Since q does not depend on t, the scores are computed once and o_t is a
max-shifted cumulative sum: the parallel prefix scan over the paper's
(running max m, normaliser u, weighted sum w). Layout of the computation:

- time is cut into chunks of C steps; inside a chunk row t weighs step i <= t by
  exp(s_i - M_t), M_t the running max (a C x C masked matrix, so one tensor-core
  dot gives every numerator), and the (m, u, w) carried from earlier chunks is
  merged with weight exp(m - M_t) <= 1;
- when batch x heads is too small to fill the GPU, time is also cut into
  segments of whole chunks: a first kernel summarises each segment as (m, u, w),
  and each segment's program merges the summaries before it (a two-level scan);
- the forward saves lse_t = log Z_t; the backward is the mirror image, a reverse
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

import functools
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from ._dispatch import Backend, interpreting, use_triton
from .prefix_attention_ref import PrefixAttentionState, prefix_attention_ref, prefix_attention_step

LOG2E = 1.4426950408889634
_TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _backport_interpreter_index_fix() -> None:
    """Let loops with run-time bounds run under TRITON_INTERPRET=1 with numpy >= 2.4.

    triton 3.6's interpreter turns a scalar (a 1-element array) into a loop bound
    with int(array), which numpy 2.4 refuses ("only 0-dimensional arrays can be
    converted"); triton issue 9171, fixed upstream by PR 9172. This applies the
    same fix (idempotent, interpreter only; a no-op where triton changed).
    """
    from triton.runtime import interpreter

    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None or getattr(original, "index_fix", False):
        return

    def patched(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    patched.index_fix = True
    interpreter._patch_lang_tensor = patched


if interpreting():
    _backport_interpreter_index_fix()


# --------------------------------------------------------------------------- kernels

# Sizes that vary between calls are not specialised on (no recompilation per
# length); strides still are, so unit and 16-aligned strides vectorise. The head
# dim D is a compile-time constant: a run-time bound on the head-dim mask would
# stop the compiler from vectorising loads along d.
_RUNTIME_SIZES = ["H", "L", "SEG", "N_SEG"]


@triton.jit
def _tile(base, t, offs_d, stride_l, stride_d, tmask, dmask):
    """Rows t of a (L, d) slice as a float32 (C, BD) tile, zero outside the masks."""
    ptrs = base + t[:, None].to(tl.int64) * stride_l + offs_d[None, :] * stride_d
    return tl.load(ptrs, mask=tmask[:, None] & dmask[None, :], other=0.0).to(tl.float32)


@triton.jit(do_not_specialize=_RUNTIME_SIZES)
def _fwd_summary_kernel(
    Q, K, V, SM, SU, SW,
    H, L, SEG, N_SEG,
    sqb, sqh, sqd, skb, skh, skl, skd, svb, svh, svl, svd,
    scale_log2,
    D: tl.constexpr, C: tl.constexpr, BD: tl.constexpr,
):
    """(m, u, w) of one segment (log2 units): m = max s, u = sum 2^(s-m), w = sum 2^(s-m) v."""
    bh = tl.program_id(0)
    seg = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    offs_d = tl.arange(0, BD)
    dmask = offs_d < D
    q = tl.load(Q + b * sqb + h * sqh + offs_d * sqd, mask=dmask, other=0.0).to(tl.float32) * scale_log2
    k_base = K + b * skb + h * skh
    v_base = V + b * svb + h * svh
    m = tl.zeros([], dtype=tl.float32) - float("inf")
    u = tl.zeros([], dtype=tl.float32)
    w = tl.zeros([BD], dtype=tl.float32)
    start = seg * SEG
    end = tl.minimum(start + SEG, L)
    for c0 in range(start, end, C):
        t = c0 + tl.arange(0, C)
        tmask = t < end
        k = _tile(k_base, t, offs_d, skl, skd, tmask, dmask)  # (C BD)
        s = tl.where(tmask, tl.sum(k * q[None, :], axis=1), float("-inf"))  # (C)
        m_new = tl.maximum(m, tl.max(s, axis=0))
        alpha = tl.exp2(m - m_new)
        p = tl.exp2(s - m_new)  # (C)
        v = _tile(v_base, t, offs_d, svl, svd, tmask, dmask)  # (C BD)
        u = u * alpha + tl.sum(p, axis=0)
        w = w * alpha + tl.sum(p[:, None] * v, axis=0)
        m = m_new
    i = bh * N_SEG + seg
    tl.store(SM + i, m)
    tl.store(SU + i, u)
    tl.store(SW + i.to(tl.int64) * BD + offs_d, w)


@triton.jit(do_not_specialize=_RUNTIME_SIZES)
def _fwd_kernel(
    Q, K, V, O, LSE, SM, SU, SW,
    H, L, SEG, N_SEG,
    sqb, sqh, sqd, skb, skh, skl, skd, svb, svh, svl, svd, sob, soh, sol, sod,
    scale_log2,
    D: tl.constexpr, C: tl.constexpr, BD: tl.constexpr, PREC: tl.constexpr,
):
    """Outputs o_t and lse_t (log2 units) for one segment, starting from the summaries of the segments before it."""
    bh = tl.program_id(0)
    seg = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    offs_d = tl.arange(0, BD)
    dmask = offs_d < D
    q = tl.load(Q + b * sqb + h * sqh + offs_d * sqd, mask=dmask, other=0.0).to(tl.float32) * scale_log2
    k_base = K + b * skb + h * skh
    v_base = V + b * svb + h * svh
    o_base = O + b * sob + h * soh
    lse_base = LSE + bh.to(tl.int64) * L

    # Carry in: combine the summaries of segments 0..seg-1.
    m = tl.zeros([], dtype=tl.float32) - float("inf")
    u = tl.zeros([], dtype=tl.float32)
    w = tl.zeros([BD], dtype=tl.float32)
    for j in range(0, seg):
        i = bh * N_SEG + j
        m_j = tl.load(SM + i)
        m_new = tl.maximum(m, m_j)
        alpha = tl.exp2(m - m_new)
        beta = tl.exp2(m_j - m_new)
        u = u * alpha + tl.load(SU + i) * beta
        w = w * alpha + tl.load(SW + i.to(tl.int64) * BD + offs_d) * beta
        m = m_new

    rows = tl.arange(0, C)
    causal = rows[:, None] >= rows[None, :]  # (t i)
    start = seg * SEG
    end = tl.minimum(start + SEG, L)
    for c0 in range(start, end, C):
        t = c0 + rows
        tmask = t < end
        k = _tile(k_base, t, offs_d, skl, skd, tmask, dmask)  # (C BD)
        s = tl.where(tmask, tl.sum(k * q[None, :], axis=1), float("-inf"))  # (C)
        m_row = tl.max(tl.where(causal, s[None, :], float("-inf")), axis=1)  # running max, (C)
        m_row = tl.maximum(m_row, m)
        p = tl.exp2(tl.where(causal, s[None, :] - m_row[:, None], float("-inf")))  # (t i), <= 1
        alpha = tl.exp2(m - m_row)  # weight of the carry per row, <= 1
        v = _tile(v_base, t, offs_d, svl, svd, tmask, dmask)  # (C BD)
        num = tl.dot(p, v, input_precision=PREC) + alpha[:, None] * w[None, :]  # (C BD)
        den = tl.sum(p, axis=1) + alpha * u  # (C), >= 1
        o = num / den[:, None]
        o_ptrs = o_base + t[:, None].to(tl.int64) * sol + offs_d[None, :] * sod
        tl.store(o_ptrs, o.to(O.dtype.element_ty), mask=tmask[:, None] & dmask[None, :])
        tl.store(lse_base + t, m_row + tl.log2(den), mask=tmask)
        # Carry out: fold the whole chunk into (m, u, w).
        m_new = tl.maximum(m, tl.max(s, axis=0))
        alpha = tl.exp2(m - m_new)
        pc = tl.exp2(s - m_new)  # (C)
        u = u * alpha + tl.sum(pc, axis=0)
        w = w * alpha + tl.sum(pc[:, None] * v, axis=0)
        m = m_new


@triton.jit(do_not_specialize=_RUNTIME_SIZES)
def _bwd_summary_kernel(
    DO, O, LSE, DELTA, SR, SG, SH,
    H, L, SEG, N_SEG,
    sdb, sdh, sdl, sdd, sob, soh, sol, sod,
    D: tl.constexpr, C: tl.constexpr, BD: tl.constexpr,
):
    """delta_t = dO_t . o_t, and one segment's reverse summary: r = min lse, g = sum 2^(r-lse) dO, h = sum 2^(r-lse) delta."""
    bh = tl.program_id(0)
    seg = tl.program_id(1)
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
    start = seg * SEG
    end = tl.minimum(start + SEG, L)
    for c0 in range(start, end, C):
        t = c0 + tl.arange(0, C)
        tmask = t < end
        do = _tile(do_base, t, offs_d, sdl, sdd, tmask, dmask)  # (C BD)
        o = _tile(o_base, t, offs_d, sol, sod, tmask, dmask)  # (C BD)
        delta = tl.sum(do * o, axis=1)  # (C)
        tl.store(delta_base + t, delta, mask=tmask)
        lse = tl.load(lse_base + t, mask=tmask, other=float("inf"))
        r_new = tl.minimum(r, tl.min(lse, axis=0))
        alpha = tl.exp2(r_new - r)
        e = tl.exp2(r_new - lse)  # (C), <= 1
        g = g * alpha + tl.sum(e[:, None] * do, axis=0)
        hs = hs * alpha + tl.sum(e * delta, axis=0)
        r = r_new
    i = bh * N_SEG + seg
    tl.store(SR + i, r)
    tl.store(SH + i, hs)
    tl.store(SG + i.to(tl.int64) * BD + offs_d, g)


@triton.jit(do_not_specialize=_RUNTIME_SIZES)
def _bwd_kernel(
    Q, K, V, DO, LSE, DELTA, SR, SG, SH, DK, DV, DQ,
    H, L, SEG, N_SEG,
    sqb, sqh, sqd, skb, skh, skl, skd, svb, svh, svl, svd, sdb, sdh, sdl, sdd,
    sdkb, sdkh, sdkl, sdkd, sdvb, sdvh, sdvl, sdvd,
    scale, scale_log2,
    D: tl.constexpr, C: tl.constexpr, BD: tl.constexpr, PREC: tl.constexpr,
):
    """dk, dv of one segment (chunks in reverse), starting from the summaries of the segments after it; partial dq."""
    bh = tl.program_id(0)
    seg = tl.program_id(1)
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

    # Carry in: combine the reverse summaries of segments seg+1..N_SEG-1, shifted by their smallest lse.
    r = tl.zeros([], dtype=tl.float32) + float("inf")
    g = tl.zeros([BD], dtype=tl.float32)
    hs = tl.zeros([], dtype=tl.float32)
    for j in range(seg + 1, N_SEG):
        i = bh * N_SEG + j
        r_j = tl.load(SR + i)
        r_new = tl.minimum(r, r_j)
        alpha = tl.exp2(r_new - r)
        beta = tl.exp2(r_new - r_j)
        g = g * alpha + tl.load(SG + i.to(tl.int64) * BD + offs_d) * beta
        hs = hs * alpha + tl.load(SH + i) * beta
        r = r_new

    rows = tl.arange(0, C)
    causal = rows[:, None] >= rows[None, :]  # (t i)
    start = seg * SEG
    end = tl.minimum(start + SEG, L)
    n_chunks = tl.cdiv(end - start, C)
    dq = tl.zeros([BD], dtype=tl.float32)
    for idx in range(0, n_chunks):
        c0 = start + (n_chunks - 1 - idx) * C
        t = c0 + rows
        tmask = t < end
        k = _tile(k_base, t, offs_d, skl, skd, tmask, dmask)  # (C BD)
        v = _tile(v_base, t, offs_d, svl, svd, tmask, dmask)  # (C BD)
        do = _tile(do_base, t, offs_d, sdl, sdd, tmask, dmask)  # (C BD)
        lse = tl.load(lse_base + t, mask=tmask, other=float("inf"))  # (C)
        delta = tl.load(delta_base + t, mask=tmask, other=0.0)  # (C)
        s = tl.where(tmask, tl.sum(k * q_log2[None, :], axis=1), float("-inf"))  # (C)
        p = tl.exp2(tl.where(causal, s[None, :] - lse[:, None], float("-inf")))  # p_ti, (t i)
        beta = tl.exp2(s - r)  # weight of the later-chunk carry per key, <= 1
        dv = tl.dot(tl.trans(p), do, input_precision=PREC) + beta[:, None] * g[None, :]  # (C BD)
        pdelta = tl.sum(p * delta[:, None], axis=0) + beta * hs  # (C)
        ds = tl.sum(v * dv, axis=1) - pdelta  # dL/ds_i (natural log units), (C)
        dk = ds[:, None] * (q * scale)[None, :]
        wmask = tmask[:, None] & dmask[None, :]
        tl.store(dk_base + t[:, None].to(tl.int64) * sdkl + offs_d[None, :] * sdkd, dk.to(DK.dtype.element_ty), mask=wmask)
        tl.store(dv_base + t[:, None].to(tl.int64) * sdvl + offs_d[None, :] * sdvd, dv.to(DV.dtype.element_ty), mask=wmask)
        dq += tl.sum(ds[:, None] * k, axis=0)
        # Carry out: fold this chunk's rows into (r, g, h).
        r_new = tl.minimum(r, tl.min(lse, axis=0))
        alpha = tl.exp2(r_new - r)
        e = tl.exp2(r_new - lse)  # (C)
        g = g * alpha + tl.sum(e[:, None] * do, axis=0)
        hs = hs * alpha + tl.sum(e * delta, axis=0)
        r = r_new
    tl.store(DQ + (bh * N_SEG + seg).to(tl.int64) * BD + offs_d, dq * scale)


# --------------------------------------------------------------------------- launch


class _Config(NamedTuple):
    chunk: int  # C, time steps per chunk
    segment: int  # time steps per program, a multiple of C
    n_seg: int
    block_d: int
    num_warps: int


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _config(k: torch.Tensor, chunk: int | None, segment: int | None, num_warps: int | None) -> _Config:
    B, H, L, D = k.shape
    block_d = max(16, triton.next_power_of_2(D))
    # Measured on an H100 (bf16, B=4 H=8 L=16384 d=64; chunk 32/64 x 4/8 warps x
    # 0-8 programs per SM): chunks of 32 steps, 4 warps (8 at d=128, to stay
    # under 255 registers without spills) and about 8 programs per SM were fastest.
    C = chunk or 32
    n_chunks = triton.cdiv(L, C)
    if segment is None:
        # Cut time into segments until about 8 programs per SM are in flight.
        target = 8 * _sm_count(k.device.index or 0) if k.is_cuda else 4
        n_seg = min(n_chunks, max(1, triton.cdiv(target, B * H)))
        segment = triton.cdiv(n_chunks, n_seg) * C
    elif segment % C:
        raise ValueError(f"segment={segment} must be a multiple of chunk={C}")
    return _Config(C, segment, triton.cdiv(L, segment), block_d, num_warps or (8 if C * max(C, block_d) >= 4096 else 4))


def _dot_precision(dtype: torch.dtype) -> str:
    # fp32 inputs keep fp32 accuracy (3 tf32 passes); 16-bit values are exact in tf32,
    # so only the softmax weights are rounded, to 11 bits, below the output rounding.
    return "tf32x3" if dtype == torch.float32 else "tf32"


def _forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, cfg: _Config):
    B, H, L, D = k.shape
    o = torch.empty((B, H, L, D), dtype=v.dtype, device=v.device)
    lse = torch.empty((B * H, L), dtype=torch.float32, device=v.device)  # log2 units
    n_seg, BD = cfg.n_seg, cfg.block_d
    sm = torch.empty((B * H, n_seg), dtype=torch.float32, device=v.device)
    su = torch.empty_like(sm)
    sw = torch.empty((B * H, n_seg, BD), dtype=torch.float32, device=v.device)
    grid = (B * H, n_seg)
    common = (H, L, cfg.segment, n_seg)
    qs, ks, vs = q.stride(), k.stride(), v.stride()
    if n_seg > 1:
        _fwd_summary_kernel[grid](
            q, k, v, sm, su, sw, *common, *qs, *ks, *vs, scale * LOG2E,
            D=D, C=cfg.chunk, BD=BD, num_warps=cfg.num_warps,
        )
    _fwd_kernel[grid](
        q, k, v, o, lse, sm, su, sw, *common, *qs, *ks, *vs, *o.stride(), scale * LOG2E,
        D=D, C=cfg.chunk, BD=BD, PREC=_dot_precision(v.dtype), num_warps=cfg.num_warps,
    )
    return o, lse


def _backward(q, k, v, o, lse, do, scale: float, cfg: _Config):
    B, H, L, D = k.shape
    n_seg, BD = cfg.n_seg, cfg.block_d
    dev = k.device
    delta = torch.empty((B * H, L), dtype=torch.float32, device=dev)
    sr = torch.empty((B * H, n_seg), dtype=torch.float32, device=dev)
    sh = torch.empty_like(sr)
    sg = torch.empty((B * H, n_seg, BD), dtype=torch.float32, device=dev)
    dk = torch.empty((B, H, L, D), dtype=k.dtype, device=dev)
    dv = torch.empty((B, H, L, D), dtype=v.dtype, device=dev)
    dq = torch.empty((B * H, n_seg, BD), dtype=torch.float32, device=dev)
    grid = (B * H, n_seg)
    common = (H, L, cfg.segment, n_seg)
    _bwd_summary_kernel[grid](
        do, o, lse, delta, sr, sg, sh, *common, *do.stride(), *o.stride(),
        D=D, C=cfg.chunk, BD=BD, num_warps=cfg.num_warps,
    )
    _bwd_kernel[grid](
        q, k, v, do, lse, delta, sr, sg, sh, dk, dv, dq, *common,
        *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dk.stride(), *dv.stride(),
        scale, scale * LOG2E,
        D=D, C=cfg.chunk, BD=BD, PREC=_dot_precision(v.dtype), num_warps=cfg.num_warps,
    )
    dq = dq.sum(dim=1)[:, :D].reshape(B, H, D)
    return dq, dk, dv


class _PrefixAttentionFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, scale, cfg):
        with _on_device(k):
            o, lse = _forward(q, k, v, scale, cfg)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.scale, ctx.cfg = scale, cfg
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        with _on_device(k):
            dq, dk, dv = _backward(q, k, v, o, lse, do, ctx.scale, ctx.cfg)
        return dq.to(q.dtype), dk, dv, None, None


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
) -> torch.Tensor:
    """The Triton path with its launch choices exposed (tests and tuning); arguments as `prefix_attention`."""
    q = _check(q, k, v)
    if k.dtype not in _TRITON_DTYPES:
        raise ValueError(f"the Triton path takes float32, bfloat16 or float16 k and v, got {k.dtype}; use backend='torch'")
    if not (k.is_cuda or interpreting()):
        raise ValueError("the Triton path needs CUDA tensors (or TRITON_INTERPRET=1); use backend='torch' on the CPU")
    scale = k.shape[-1] ** -0.5 if scale is None else float(scale)
    if k.shape[2] == 0:
        return v.clone()
    return _PrefixAttentionFn.apply(q, k, v, scale, _config(k, chunk, segment, num_warps))


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
