"""Pure-PyTorch reference for prefix attention (Aaren; Feng et al. 2024, "Attention as an RNN", arXiv 2405.13956).

One learned query q per head attends, at every time t, over the keys of the prefix 1..t:

    s_i = q . k_i * scale,        o_t = sum_{i<=t} softmax_i(s_1..s_t) v_i.

Following the paper, a prefix is summarised by (m, u, w): running max of the
scores, normaliser u = sum_i exp(s_i - m) and weighted sum w = sum_i exp(s_i - m) v_i,
and two summaries merge with the associative

    combine((m_a, u_a, w_a), (m_b, u_b, w_b))
        = (m, u_a e^{m_a - m} + u_b e^{m_b - m}, w_a e^{m_a - m} + w_b e^{m_b - m}),  m = max(m_a, m_b).

`prefix_scan` evaluates the inclusive scan of that operator blockwise (exact
masked softmax inside a block, recursion over block totals): every exponent is
<= 0, so scores of any magnitude are safe, and memory is linear in L. It is the
CPU path of `tsuite.kernels.prefix_attention` and the reference its Triton
kernels are tested against; `prefix_attention_loop` (one token at a time, float64)
and `masked_softmax_attention` (an explicit L x L masked softmax) check it in turn.
`prefix_attention_step` is the recurrent form (one `combine` per new token, O(1)
memory) used for generation; it is exported by `tsuite.kernels`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

Summary = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def scores(q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    """s_i = q . k_i * scale for q (B, H, d) or (H, d) and k (B, H, L, d): returns (B, H, L)."""
    return torch.einsum("...hd,...hld->...hl", q, k) * scale


def combine(a: Summary, b: Summary) -> Summary:
    """Merge two (m, u, w) prefix summaries, ``a`` before ``b``; m, u (...), w (..., d).

    The shared shift m = max(m_a, m_b) is detached: m cancels from every ratio
    w / u, so gradients through it are exactly zero and the result stays exact.
    """
    m_a, u_a, w_a = a
    m_b, u_b, w_b = b
    m = torch.maximum(m_a, m_b).detach()
    e_a, e_b = torch.exp(m_a - m), torch.exp(m_b - m)
    return m, u_a * e_a + u_b * e_b, w_a * e_a[..., None] + w_b * e_b[..., None]


def _block_scan(m: torch.Tensor, u: torch.Tensor, w: torch.Tensor) -> Summary:
    """Inclusive scan inside one block of n elements: exact masked softmax weights.

    m, u (..., n), w (..., n, d). Row t weighs element i <= t by exp(m_i - M_t)
    with M_t = max_{i<=t} m_i, so no weight exceeds 1.
    """
    n = m.shape[-1]
    M = torch.cummax(m, dim=-1).values.detach()  # (... n)
    causal = torch.ones(n, n, dtype=torch.bool, device=m.device).tril()  # (t i)
    expo = (m[..., None, :] - M[..., :, None]).masked_fill(~causal, float("-inf"))  # (... t i)
    P = torch.exp(expo)  # (... t i), 0 above the diagonal
    U = (P @ u[..., :, None])[..., 0]  # (... n)
    W = P @ w  # (... n d)
    return M, U, W


def prefix_scan(m: torch.Tensor, u: torch.Tensor, w: torch.Tensor, block: int = 64) -> Summary:
    """Inclusive scan of (m, u, w) under `combine` along the time axis.

    m, u: (..., L); w: (..., L, d); all finite. Returns (M, U, W) of the same
    shapes, where (M_t, U_t, W_t) summarises elements 1..t. Work O(L * block),
    memory O(L * (block + d)), recursion depth log_block(L).
    """
    L = m.shape[-1]
    if L <= block:
        return _block_scan(m, u, w)
    n_blocks = -(-L // block)
    pad = n_blocks * block - L
    if pad:
        # Padding sits after every real element, so it never reaches a real output;
        # a finite m (the last real one) keeps every exponent finite.
        m = torch.cat([m, m[..., -1:].expand(*m.shape[:-1], pad)], dim=-1)
        u = torch.nn.functional.pad(u, (0, pad))
        w = torch.nn.functional.pad(w, (0, 0, 0, pad))
    lead = m.shape[:-1]
    d = w.shape[-1]
    Mi, Ui, Wi = _block_scan(
        m.reshape(*lead, n_blocks, block), u.reshape(*lead, n_blocks, block), w.reshape(*lead, n_blocks, block, d)
    )  # (... nb blk), (... nb blk), (... nb blk d)
    Mt, Ut, Wt = prefix_scan(Mi[..., -1], Ui[..., -1], Wi[..., -1, :], block)  # block totals, scanned: (... nb)
    # Block j > 0 starts from the inclusive total of blocks 0..j-1.
    carry = (Mt[..., :-1, None], Ut[..., :-1, None], Wt[..., :-1, None, :])
    Mc, Uc, Wc = combine(carry, (Mi[..., 1:, :], Ui[..., 1:, :], Wi[..., 1:, :, :]))
    M = torch.cat([Mi[..., :1, :], Mc], dim=-2).reshape(*lead, -1)[..., :L]
    U = torch.cat([Ui[..., :1, :], Uc], dim=-2).reshape(*lead, -1)[..., :L]
    W = torch.cat([Wi[..., :1, :, :], Wc], dim=-3).reshape(*lead, -1, d)[..., :L, :]
    return M, U, W


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def prefix_attention_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Reference prefix attention: o_t = sum_{i<=t} softmax_i(s_1..s_t) v_i.

    q: (H, d) or (B, H, d), one query per head shared over time; k, v: (B, H, L, d).
    Computes in float32 (float64 for float64 inputs), differentiable in q, k and v,
    returns (B, H, L, d) in v's dtype.
    """
    ct = _compute_dtype(v)
    d = k.shape[-1]
    scale = d**-0.5 if scale is None else scale
    if k.shape[-2] == 0:
        return v.clone()
    s = scores(q.to(ct), k.to(ct), scale)  # (B H L)
    _, U, W = prefix_scan(s, torch.ones_like(s), v.to(ct))
    return (W / U[..., None]).to(v.dtype)


def prefix_attention_loop(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """The recurrence one token at a time in float64 (for tests): returns o (B, H, L, d) in float64."""
    d = k.shape[-1]
    scale = d**-0.5 if scale is None else scale
    s = scores(q.double(), k.double(), scale)  # (B H L)
    v = v.double()
    state = (s[..., 0], torch.ones_like(s[..., 0]), v[..., 0, :])
    outs = [state[2] / state[1][..., None]]
    for t in range(1, k.shape[-2]):
        state = combine(state, (s[..., t], torch.ones_like(s[..., t]), v[..., t, :]))
        outs.append(state[2] / state[1][..., None])
    return torch.stack(outs, dim=-2)


def masked_softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """o_t as plain attention of one query over keys 1..t, through an explicit L x L masked softmax, in float64."""
    d = k.shape[-1]
    L = k.shape[-2]
    scale = d**-0.5 if scale is None else scale
    s = scores(q.double(), k.double(), scale)  # (B H L)
    causal = torch.ones(L, L, dtype=torch.bool, device=k.device).tril()  # (t i)
    logits = s[..., None, :].expand(*s.shape[:-1], L, L).masked_fill(~causal, float("-inf"))  # (B H t i)
    return torch.softmax(logits, dim=-1) @ v.double()  # (B H L d)


class PrefixAttentionState(NamedTuple):
    """Summary of a prefix, all float32: m (B, H) running max of the scores, u (B, H) = sum_i exp(s_i - m),
    w (B, H, d) = sum_i exp(s_i - m) v_i. The output so far is w / u."""

    m: torch.Tensor
    u: torch.Tensor
    w: torch.Tensor


def prefix_attention_step(
    state: PrefixAttentionState | None,
    q: torch.Tensor,
    k_t: torch.Tensor,
    v_t: torch.Tensor,
    *,
    scale: float | None = None,
) -> tuple[torch.Tensor, PrefixAttentionState]:
    """One recurrent step of prefix attention, O(1) memory in the sequence length.

    Args:
        state: the summary of steps 1..t-1, or None before the first step.
        q: (H, d) or (B, H, d), the same query as in `prefix_attention`.
        k_t, v_t: (B, H, d), the new key and value.
        scale: score scale, default 1 / sqrt(d).

    Returns:
        (o_t, state): o_t (B, H, d) in v_t's dtype, equal to step t of
        `prefix_attention(q, k, v)`; the new float32 (float64 for float64 inputs) state.
        Differentiable; pure PyTorch on any device.
    """
    if k_t.dim() != 3 or v_t.shape != k_t.shape:
        raise ValueError(f"k_t and v_t must both have shape (B, H, d); got {tuple(k_t.shape)} and {tuple(v_t.shape)}")
    B, H, D = k_t.shape
    if q.shape not in ((H, D), (B, H, D), (1, H, D)):
        raise ValueError(f"q must have shape (H, d) = {(H, D)} or (B, H, d) = {(B, H, D)}; got {tuple(q.shape)}")
    ct = torch.float64 if v_t.dtype == torch.float64 else torch.float32
    scale = D**-0.5 if scale is None else scale
    s = (q.to(ct) * k_t.to(ct)).sum(-1) * scale  # (B H)
    new = (s, torch.ones_like(s), v_t.to(ct))
    if state is not None:
        new = combine(tuple(state), new)
    m, u, w = new
    return (w / u[..., None]).to(v_t.dtype), PrefixAttentionState(m, u, w)
