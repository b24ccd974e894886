"""Pure-PyTorch reference for the first-order linear recurrence h_t = a_t * h_{t-1} + b_t.

This is the CPU path of ``tsuite.kernels.linear_scan`` and the oracle its Triton
kernels are tested against. ``linear_scan_ref`` is differentiable and fast
enough on long sequences: a chunked, log-depth formulation built from
multiplications and additions only (no cumprod/division closed form, so it
stays exact where products of gates underflow). ``linear_scan_sequential`` is
the plain float64 loop used to check the reference itself.
"""

from __future__ import annotations

import torch


def linear_scan_ref(
    a: torch.Tensor,
    b: torch.Tensor,
    h0: torch.Tensor | None = None,
    reverse: bool = False,
    return_final_state: bool = False,
    chunk: int = 64,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Reference linear scan along the last axis; same contract as ``linear_scan``.

    a: (..., L) or (..., 1) gates, b: (..., L) inputs, h0: (...) initial state
    (broadcastable). Computes in float32 for half types (float64/complex128 stay
    as they are) and returns the input dtype. ``chunk`` sets the width of the
    log-depth scans; the chunk totals are scanned recursively.
    """
    shape, dtype, compute = _check(a, b, h0)
    a = a.to(compute).expand(*shape, b.shape[-1])  # (... L)
    b = b.to(compute).expand(*shape, b.shape[-1])  # (... L)
    if reverse:
        a, b = a.flip(-1), b.flip(-1)
    if h0 is not None:  # fold the initial state into the first input
        first = b[..., :1] + a[..., :1] * h0.to(compute).expand(shape).unsqueeze(-1)
        b = torch.cat([first, b[..., 1:]], dim=-1)
    h = _chunked_scan(a, b, chunk)
    if reverse:
        h = h.flip(-1)
    h = h.to(dtype)
    if return_final_state:
        return h, h[..., 0 if reverse else -1].clone()
    return h


def linear_scan_sequential(
    a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None, reverse: bool = False
) -> torch.Tensor:
    """The recurrence as a plain loop over time in float64 (complex128): slow, obviously right."""
    wide = torch.complex128 if (a.is_complex() or b.is_complex()) else torch.float64
    shape = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1], () if h0 is None else h0.shape)
    L = b.shape[-1]
    a = a.to(wide).expand(*shape, L)
    b = b.to(wide).expand(*shape, L)
    h = torch.zeros(shape, dtype=wide, device=b.device) if h0 is None else h0.to(wide).expand(shape)
    out = torch.empty(*shape, L, dtype=wide, device=b.device)
    for t in (reversed(range(L)) if reverse else range(L)):
        h = a[..., t] * h + b[..., t]
        out[..., t] = h
    return out


def _check(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None):
    if a.dim() == 0 or b.dim() == 0:
        raise ValueError("linear_scan: a and b need a time axis (the last one); got a scalar")
    if a.shape[-1] not in (1, b.shape[-1]):
        raise ValueError(
            f"linear_scan: a has length {a.shape[-1]} along the last axis but b has {b.shape[-1]}; "
            "a must have the same length as b or length 1 (time-invariant)"
        )
    if a.dtype != b.dtype or (h0 is not None and h0.dtype != b.dtype):
        got = f"a {a.dtype}, b {b.dtype}" + ("" if h0 is None else f", h0 {h0.dtype}")
        raise TypeError(f"linear_scan: a, b and h0 must share one dtype; got {got}")
    shape = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1], () if h0 is None else h0.shape)
    if b.dtype in (torch.float16, torch.bfloat16):
        compute = torch.float32
    elif b.dtype in (torch.float32, torch.float64, torch.complex64, torch.complex128):
        compute = b.dtype
    else:
        raise TypeError(f"linear_scan: unsupported dtype {b.dtype}; use float16/bfloat16/float32/float64/complex")
    return shape, b.dtype, compute


def _chunked_scan(a: torch.Tensor, b: torch.Tensor, chunk: int) -> torch.Tensor:
    """Inclusive scan of (a, b) along the last axis with zero initial state."""
    L = b.shape[-1]
    if L <= chunk:
        return _log_depth_scan(a, b)[1]
    n = -(-L // chunk)
    pad = n * chunk - L
    if pad:  # identity elements (gate 1, input 0) at the end
        a = torch.cat([a, a.new_ones(*a.shape[:-1], pad)], dim=-1)
        b = torch.cat([b, b.new_zeros(*b.shape[:-1], pad)], dim=-1)
    A, B = _log_depth_scan(a.unflatten(-1, (n, chunk)), b.unflatten(-1, (n, chunk)))  # (... n chunk)
    ends = _chunked_scan(A[..., -1], B[..., -1], chunk)  # state at the end of each chunk (... n)
    enter = torch.cat([ends.new_zeros(*ends.shape[:-1], 1), ends[..., :-1]], dim=-1)  # (... n)
    h = A * enter.unsqueeze(-1) + B  # (... n chunk)
    return h.flatten(-2)[..., :L]


def _log_depth_scan(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hillis-Steele scan: returns (products of gates, states) over each prefix of the last axis."""
    L = b.shape[-1]
    d = 1
    while d < L:
        # combine (A, B)_{t-d} then (A, B)_t: (A_{t-d} A_t, A_t B_{t-d} + B_t)
        b = torch.cat([b[..., :d], a[..., d:] * b[..., :-d] + b[..., d:]], dim=-1)
        a = torch.cat([a[..., :d], a[..., d:] * a[..., :-d]], dim=-1)
        d *= 2
    return a, b
