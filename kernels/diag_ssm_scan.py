"""Fused diagonal state-space scan (S4D / LSSL recurrent mode) in Triton, forward and backward.

y = scan(u) for a diagonal complex SSM per channel, without writing the
(B, H, N, L) states to device memory. The sequence is cut into chunks of T
steps and the chunks of one (batch, channel) into blocks of R chunks; a program
owns one (batch, channel) and walks its blocks in order (backward: in reverse).
Per block, on the tensor cores (R x T tile U of inputs):

    S  = U @ Q          chunk-end states from the chunk's own inputs, Q[s] = Ā^{T-1-s} B̄
    Hs = scan(S)        state entering each chunk: Hs[r+1] = Ā^T Hs[r] + S[r]   (associative scan over R)
    Y  = U @ K + Hs @ P + D U     K[s, t] = 2 Re(C Ā^{t-s} B̄) (causal Toeplitz), P[t] = 2 Re(C Ā^{t+1} ·)

K, P, Q and Ā^T are built once per program from (dt A, B̄, C). The backward
is the transpose of the same linear map: the adjoint of Hs is a reverse scan
with conj(Ā^T), and the gradients of K, P, Q, Ā^T (sums over the blocks of
U^T dY, Hs^T dY, U^T Γ) are pulled back to (dt A, B̄, C) inside the kernel. The
forward keeps the state at each block start (B, H, L / (R T), N): the backward
recomputes the states inside a block from it. The zero-order hold
(A, B, dt) -> (dt A, B̄) and its gradient are plain PyTorch on (H, N) tensors.
The reference is `diag_ssm_scan_ref.py`.

Speed (H100, B4 H256 L16384 N64): the walk over blocks is one long chain of
dependent steps per program (scan, layout changes, barriers), so the kernels
are latency bound, far below memory bandwidth; see benchmarks/kernels_diag_ssm.py.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._dispatch import Backend, interpreting, use_triton
from .diag_ssm_scan_ref import diag_ssm_scan_ref, zoh

__all__ = ["diag_ssm_scan"]


# ----------------------------------------------------------------------------- Triton helpers


@triton.jit
def _cmul(ar, ai, br, bi):
    return ar * br - ai * bi, ar * bi + ai * br


@triton.jit
def _cmulc(ar, ai, br, bi):
    """a * conj(b)."""
    return ar * br + ai * bi, ai * br - ar * bi


@triton.jit
def _cpow(dr, di, k):
    """exp(k (dr + i di)) = Ā^k for dt A = dr + i di."""
    mag = tl.exp(k * dr)
    ang = k * di
    return mag * tl.cos(ang), mag * tl.sin(ang)


@triton.jit
def _affine_combine(a1r, a1i, b1r, b1i, a2r, a2i, b2r, b2i):
    """Compose x -> a1 x + b1 then x -> a2 x + b2 (complex): the first-order linear recurrence.

    Written out (no helper calls): the interpreter runs it once per element.
    """
    ar = a1r * a2r - a1i * a2i
    ai = a1r * a2i + a1i * a2r
    br = a2r * b1r - a2i * b1i + b2r
    bi = a2r * b1i + a2i * b1r + b2i
    return ar, ai, br, bi


@triton.jit
def _load_params(ssm_ptr, h, N, NP: tl.constexpr):
    """(dt A, B̄, C) of channel h as real/imaginary vectors of NP (zero-padded past N: inert states)."""
    n = tl.arange(0, NP)
    m = n < N
    base = ssm_ptr + h * N * 6 + n * 6
    dr = tl.load(base + 0, mask=m, other=0.0)
    di = tl.load(base + 1, mask=m, other=0.0)
    br = tl.load(base + 2, mask=m, other=0.0)
    bi = tl.load(base + 3, mask=m, other=0.0)
    cr = tl.load(base + 4, mask=m, other=0.0)
    ci = tl.load(base + 5, mask=m, other=0.0)
    return dr, di, br, bi, cr, ci


@triton.jit
def _tables(dr, di, br, bi, cr, ci, T: tl.constexpr):
    """Per-channel matrices of one chunk of T steps.

    K (T, T): K[s, t] = 2 Re(sum_n C B̄ Ā^{t-s}) for t >= s, so y_intra = U @ K.
    P_re, P_im (NP, T): 2 Re(C Ā^{t+1}) and -2 Im(C Ā^{t+1}), so y_state = Hs_re @ P_re + Hs_im @ P_im.
    Q_re, Q_im (T, NP): Ā^{T-1-s} B̄, so the chunk-end state is U @ Q.
    """
    s = tl.arange(0, T)
    ks = s.to(tl.float32)
    wr, wi = _cpow(dr[:, None], di[:, None], (ks + 1.0)[None, :])  # (NP T): Ā^{t+1}
    pr, pi = _cmul(cr[:, None], ci[:, None], wr, wi)
    vr, vi = _cpow(dr[None, :], di[None, :], (T - 1.0 - ks)[:, None])  # (T NP): Ā^{T-1-s}
    qr, qi = _cmul(br[None, :], bi[None, :], vr, vi)
    cbr, cbi = _cmul(cr, ci, br, bi)
    zr, zi = _cpow(dr[None, :], di[None, :], ks[:, None])  # (T NP): Ā^l
    kvec = tl.sum(2.0 * (cbr[None, :] * zr - cbi[None, :] * zi), axis=1)  # (T): 2 Re(C Ā^l B̄)
    lag = s[None, :] - s[:, None]  # (T T): t - s
    toep = tl.gather(tl.broadcast_to(kvec[None, :], (T, T)), tl.maximum(lag, 0), axis=1)
    K = tl.where(lag >= 0, toep, 0.0)
    return K, 2.0 * pr, -2.0 * pi, qr, qi


@triton.jit
def _chunk_states(U, Q_re, Q_im, aTr, aTi, carry_r, carry_i, shift_down, first, R: tl.constexpr, PREC: tl.constexpr):
    """States entering each chunk of the block (Hs) and leaving its last chunk (new carry)."""
    S_r = tl.dot(U, Q_re, input_precision=PREC)  # (R NP): chunk-end state from the chunk's inputs
    S_i = tl.dot(U, Q_im, input_precision=PREC)
    fr, fi = _cmul(aTr, aTi, carry_r, carry_i)
    S_r += tl.where(first, fr[None, :], 0.0)
    S_i += tl.where(first, fi[None, :], 0.0)
    Ar = tl.broadcast_to(aTr[None, :], S_r.shape)
    Ai = tl.broadcast_to(aTi[None, :], S_r.shape)
    _, _, E_r, E_i = tl.associative_scan((Ar, Ai, S_r, S_i), 0, _affine_combine)  # E[r]: state after chunk r
    # Hs[r] = E[r-1], Hs[0] = carry: a 0/1 matrix product on the tensor cores, 3xTF32 keeps float32 accuracy
    Hs_r = tl.dot(shift_down, E_r, input_precision="tf32x3") + tl.where(first, carry_r[None, :], 0.0)
    Hs_i = tl.dot(shift_down, E_i, input_precision="tf32x3") + tl.where(first, carry_i[None, :], 0.0)
    rows = tl.arange(0, R)[:, None]
    new_r = tl.sum(tl.where(rows == R - 1, E_r, 0.0), axis=0)
    new_i = tl.sum(tl.where(rows == R - 1, E_i, 0.0), axis=0)
    return Hs_r, Hs_i, new_r, new_i


# ----------------------------------------------------------------------------- kernels


# sizes and outer strides are not specialised (one compilation serves every length); time strides are
@triton.jit(do_not_specialize=["n_heads", "L", "N", "n_blocks", "su_b", "su_h", "sh_b", "sh_h", "sh_n"])
def _diag_ssm_fwd_kernel(
    u_ptr, y_ptr, ssm_ptr, d_ptr, h0_ptr, hmid_ptr, ckpt_ptr,
    n_heads, L, N, n_blocks,
    su_b, su_h, su_l,
    sh_b, sh_h, sh_n,
    T: tl.constexpr, R: tl.constexpr, NP: tl.constexpr,
    HAS_D: tl.constexpr, HAS_H0: tl.constexpr, WRITE_HMID: tl.constexpr, WRITE_CKPT: tl.constexpr,
    PREC: tl.constexpr, NB_STATIC: tl.constexpr,
):
    pid = tl.program_id(0)  # = b * H + h
    b = pid // n_heads
    h = pid % n_heads
    dr, di, br, bi, cr, ci = _load_params(ssm_ptr, h, N, NP)
    K, P_re, P_im, Q_re, Q_im = _tables(dr, di, br, bi, cr, ci, T)
    aTr, aTi = _cpow(dr, di, T * 1.0)
    d = 0.0
    if HAS_D:
        d = tl.load(d_ptr + h).to(tl.float32)

    rows = tl.arange(0, R)
    cols = tl.arange(0, T)
    n = tl.arange(0, NP)
    first = rows[:, None] == 0
    shift_down = (rows[:, None] == rows[None, :] + 1).to(tl.float32)  # (R R): row r picks row r-1
    if HAS_H0:
        hp = h0_ptr + b * sh_b + h * sh_h + n * sh_n
        carry_r = tl.load(hp, mask=n < N, other=0.0)
        carry_i = tl.load(hp + 1, mask=n < N, other=0.0)
    else:
        carry_r = tl.zeros((NP,), tl.float32)
        carry_i = tl.zeros((NP,), tl.float32)
    hmid_r = tl.zeros((NP,), tl.float32)
    hmid_i = tl.zeros((NP,), tl.float32)

    n_full = L // T  # h_mid is the state entering chunk n_full (after the last full chunk)
    u_base = u_ptr + b.to(tl.int64) * su_b + h.to(tl.int64) * su_h
    y_base = y_ptr + pid.to(tl.int64) * L
    # NB_STATIC: the interpreter (numpy >= 2.4) cannot loop to a run-time bound, it gets the count as a constant
    for k in range(NB_STATIC if NB_STATIC > 0 else n_blocks):
        t = k * R * T + rows[:, None] * T + cols[None, :]  # (R T)
        m = t < L
        U = tl.load(u_base + t.to(tl.int64) * su_l, mask=m, other=0.0).to(tl.float32)
        if WRITE_CKPT:
            cp = ckpt_ptr + ((pid * n_blocks + k) * NP + n) * 2
            tl.store(cp, carry_r)
            tl.store(cp + 1, carry_i)
        Hs_r, Hs_i, carry_r, carry_i = _chunk_states(U, Q_re, Q_im, aTr, aTi, carry_r, carry_i, shift_down, first, R, PREC)
        Y = tl.dot(U, K, input_precision=PREC)
        Y = tl.dot(Hs_r, P_re, Y, input_precision=PREC)
        Y = tl.dot(Hs_i, P_im, Y, input_precision=PREC)
        if HAS_D:
            Y += d * U
        tl.store(y_base + t, Y.to(y_ptr.dtype.element_ty), mask=m)
        if WRITE_HMID:
            sel = rows[:, None] == n_full - k * R
            hmid_r += tl.sum(tl.where(sel, Hs_r, 0.0), axis=0)
            hmid_i += tl.sum(tl.where(sel, Hs_i, 0.0), axis=0)
    if WRITE_HMID:
        at_end = n_full == n_blocks * R
        hmid_r = tl.where(at_end, carry_r, hmid_r)
        hmid_i = tl.where(at_end, carry_i, hmid_i)
        hp = hmid_ptr + (pid * N + n) * 2
        tl.store(hp, hmid_r, mask=n < N)
        tl.store(hp + 1, hmid_i, mask=n < N)


@triton.jit(do_not_specialize=["n_heads", "L", "N", "n_blocks", "su_b", "su_h", "sg_b", "sg_h"])
def _diag_ssm_bwd_kernel(
    u_ptr, dy_ptr, ssm_ptr, d_ptr, ckpt_ptr, dhmid_ptr,
    du_ptr, dssm_ptr, dd_ptr, dh0_ptr,
    n_heads, L, N, n_blocks,
    su_b, su_h, su_l,
    sg_b, sg_h, sg_l,
    T: tl.constexpr, R: tl.constexpr, NP: tl.constexpr,
    HAS_D: tl.constexpr, HAS_DHMID: tl.constexpr, PREC: tl.constexpr, NB_STATIC: tl.constexpr,
):
    pid = tl.program_id(0)  # = b * H + h
    b = pid // n_heads
    h = pid % n_heads
    dr, di, br, bi, cr, ci = _load_params(ssm_ptr, h, N, NP)
    K, P_re, P_im, Q_re, Q_im = _tables(dr, di, br, bi, cr, ci, T)
    aTr, aTi = _cpow(dr, di, T * 1.0)
    d = 0.0
    if HAS_D:
        d = tl.load(d_ptr + h).to(tl.float32)

    rows = tl.arange(0, R)
    cols = tl.arange(0, T)
    n = tl.arange(0, NP)
    first = rows[:, None] == 0
    shift_down = (rows[:, None] == rows[None, :] + 1).to(tl.float32)
    # the adjoint runs over the rows in reverse order (row i <-> chunk R-1-i of the block);
    # back to chunk order shifted by one: Gn[r] = Γ[r+1] = Grev[R-2-r]
    unflip_next = (rows[:, None] + rows[None, :] == R - 2).to(tl.float32)

    n_full = L // T
    if HAS_DHMID:
        hp = dhmid_ptr + (pid * N + n) * 2
        dhm_r = tl.load(hp, mask=n < N, other=0.0)
        dhm_i = tl.load(hp + 1, mask=n < N, other=0.0)
        at_end = n_full == n_blocks * R
        g_r = tl.where(at_end, dhm_r, 0.0)  # Γ entering the block from later chunks
        g_i = tl.where(at_end, dhm_i, 0.0)
    else:
        g_r = tl.zeros((NP,), tl.float32)
        g_i = tl.zeros((NP,), tl.float32)

    dK = tl.zeros((T, T), tl.float32)
    dP_re = tl.zeros((NP, T), tl.float32)
    dP_im = tl.zeros((NP, T), tl.float32)
    dQ_re = tl.zeros((T, NP), tl.float32)
    dQ_im = tl.zeros((T, NP), tl.float32)
    daT_r = tl.zeros((NP,), tl.float32)
    daT_i = tl.zeros((NP,), tl.float32)
    dd = tl.zeros((T,), tl.float32)

    u_base = u_ptr + b.to(tl.int64) * su_b + h.to(tl.int64) * su_h
    g_base = dy_ptr + b.to(tl.int64) * sg_b + h.to(tl.int64) * sg_h
    du_base = du_ptr + pid.to(tl.int64) * L
    for kk in range(NB_STATIC if NB_STATIC > 0 else n_blocks):
        k = n_blocks - 1 - kk
        t = k * R * T + rows[:, None] * T + cols[None, :]
        m = t < L
        t_rev = k * R * T + (R - 1 - rows[:, None]) * T + cols[None, :]
        m_rev = t_rev < L
        U = tl.load(u_base + t.to(tl.int64) * su_l, mask=m, other=0.0).to(tl.float32)
        G = tl.load(g_base + t.to(tl.int64) * sg_l, mask=m, other=0.0).to(tl.float32)
        G_rev = tl.load(g_base + t_rev.to(tl.int64) * sg_l, mask=m_rev, other=0.0).to(tl.float32)
        cp = ckpt_ptr + ((pid * n_blocks + k) * NP + n) * 2
        carry_r = tl.load(cp)
        carry_i = tl.load(cp + 1)
        Hs_r, Hs_i, _, _ = _chunk_states(U, Q_re, Q_im, aTr, aTi, carry_r, carry_i, shift_down, first, R, PREC)

        # adjoint of the chunk-start states, Γ[r] = dY[r] P^T + conj(Ā^T) Γ[r+1], in reversed row order
        F_r = tl.dot(G_rev, tl.trans(P_re), input_precision=PREC)
        F_i = tl.dot(G_rev, tl.trans(P_im), input_precision=PREC)
        fr, fi = _cmul(aTr, -aTi, g_r, g_i)
        F_r += tl.where(first, fr[None, :], 0.0)
        F_i += tl.where(first, fi[None, :], 0.0)
        if HAS_DHMID:
            sel = rows[:, None] == R - 1 - (n_full - k * R)
            F_r += tl.where(sel, dhm_r[None, :], 0.0)
            F_i += tl.where(sel, dhm_i[None, :], 0.0)
        Ar = tl.broadcast_to(aTr[None, :], F_r.shape)
        Ai = tl.broadcast_to(-aTi[None, :], F_r.shape)
        _, _, Grev_r, Grev_i = tl.associative_scan((Ar, Ai, F_r, F_i), 0, _affine_combine)
        Gn_r = tl.dot(unflip_next, Grev_r, input_precision="tf32x3") + tl.where(rows[:, None] == R - 1, g_r[None, :], 0.0)
        Gn_i = tl.dot(unflip_next, Grev_i, input_precision="tf32x3") + tl.where(rows[:, None] == R - 1, g_i[None, :], 0.0)
        g_r = tl.sum(tl.where(rows[:, None] == R - 1, Grev_r, 0.0), axis=0)
        g_i = tl.sum(tl.where(rows[:, None] == R - 1, Grev_i, 0.0), axis=0)

        dU = tl.dot(G, tl.trans(K), input_precision=PREC)
        dU = tl.dot(Gn_r, tl.trans(Q_re), dU, input_precision=PREC)
        dU = tl.dot(Gn_i, tl.trans(Q_im), dU, input_precision=PREC)
        if HAS_D:
            dU += d * G
            dd += tl.sum(G * U, axis=0)
        tl.store(du_base + t, dU.to(du_ptr.dtype.element_ty), mask=m)

        Ut = tl.trans(U)
        dK = tl.dot(Ut, G, dK, input_precision=PREC)
        dP_re = tl.dot(tl.trans(Hs_r), G, dP_re, input_precision=PREC)
        dP_im = tl.dot(tl.trans(Hs_i), G, dP_im, input_precision=PREC)
        dQ_re = tl.dot(Ut, Gn_r, dQ_re, input_precision=PREC)
        dQ_im = tl.dot(Ut, Gn_i, dQ_im, input_precision=PREC)
        xr, xi = _cmulc(Gn_r, Gn_i, Hs_r, Hs_i)  # Γ[r+1] conj(Hs[r])
        daT_r += tl.sum(xr, axis=0)
        daT_i += tl.sum(xi, axis=0)

    # pull dK, dP, dQ, dĀ^T back to (dt A, B̄, C); complex gradients are d/dRe + i d/dIm
    s = tl.arange(0, T)
    ks = s.to(tl.float32)
    lag = s[:, None] + s[None, :]  # G[s, l] = dK[s, s + l]
    dkvec = tl.sum(tl.where(lag < T, tl.gather(dK, tl.minimum(lag, T - 1), axis=1), 0.0), axis=0)  # (T)
    # y_state uses p = C Ā^{t+1}: dp = 2 dP_re - 2i dP_im
    wr, wi = _cpow(dr[:, None], di[:, None], (ks + 1.0)[None, :])
    pr, pi = _cmul(cr[:, None], ci[:, None], wr, wi)
    dpr = 2.0 * dP_re
    dpi = -2.0 * dP_im
    x1r, x1i = _cmulc(dpr, dpi, wr, wi)
    dc_r = tl.sum(x1r, axis=1)
    dc_i = tl.sum(x1i, axis=1)
    x2r, x2i = _cmulc(dpr, dpi, pr, pi)
    dA_r = tl.sum((ks + 1.0)[None, :] * x2r, axis=1)
    dA_i = tl.sum((ks + 1.0)[None, :] * x2i, axis=1)
    # chunk-end states use q = B̄ Ā^{T-1-s}
    kq = (T - 1.0 - ks)[:, None]
    vr, vi = _cpow(dr[None, :], di[None, :], kq)
    qr, qi = _cmul(br[None, :], bi[None, :], vr, vi)
    x3r, x3i = _cmulc(dQ_re, dQ_im, vr, vi)
    db_r = tl.sum(x3r, axis=0)
    db_i = tl.sum(x3i, axis=0)
    x4r, x4i = _cmulc(dQ_re, dQ_im, qr, qi)
    dA_r += tl.sum(kq * x4r, axis=0)
    dA_i += tl.sum(kq * x4i, axis=0)
    # Toeplitz kernel uses z = C B̄ Ā^l through 2 Re(z): dz = 2 dkvec
    zr, zi = _cpow(dr[None, :], di[None, :], ks[:, None])
    cbr, cbi = _cmul(cr, ci, br, bi)
    dz = 2.0 * dkvec[:, None]
    dcb_r = tl.sum(dz * zr, axis=0)
    dcb_i = tl.sum(-dz * zi, axis=0)
    x5r, x5i = _cmul(cbr[None, :], cbi[None, :], zr, zi)
    dA_r += tl.sum(ks[:, None] * dz * x5r, axis=0)
    dA_i += tl.sum(-ks[:, None] * dz * x5i, axis=0)
    x6r, x6i = _cmulc(dcb_r, dcb_i, br, bi)
    dc_r += x6r
    dc_i += x6i
    x7r, x7i = _cmulc(dcb_r, dcb_i, cr, ci)
    db_r += x7r
    db_i += x7i
    # Ā^T = exp(T dt A)
    x8r, x8i = _cmulc(daT_r, daT_i, aTr, aTi)
    dA_r += T * x8r
    dA_i += T * x8i

    nm = n < N
    op = dssm_ptr + (pid * N + n) * 6
    tl.store(op + 0, dA_r, mask=nm)
    tl.store(op + 1, dA_i, mask=nm)
    tl.store(op + 2, db_r, mask=nm)
    tl.store(op + 3, db_i, mask=nm)
    tl.store(op + 4, dc_r, mask=nm)
    tl.store(op + 5, dc_i, mask=nm)
    hp = dh0_ptr + (pid * N + n) * 2
    tl.store(hp, g_r, mask=nm)
    tl.store(hp + 1, g_i, mask=nm)
    if HAS_D:
        tl.store(dd_ptr + pid, tl.sum(dd, axis=0))


# ----------------------------------------------------------------------------- launch


def _config(u: torch.Tensor, N: int) -> dict:
    """Chunk length T, chunks per block R, padded state size NP, warps, register cap and dot precision."""
    if interpreting():  # small tiles: the interpreter runs the scan's combine element by element
        NP = triton.next_power_of_2(N)
        return {"T": 16, "R": 8, "NP": NP, "fwd_warps": 4, "bwd_warps": 4, "maxnreg": None, "PREC": "ieee"}
    NP = max(16, triton.next_power_of_2(N))  # tl.dot needs every dimension >= 16
    # float32 input keeps float32 accuracy (three TF32 products per dot) unless torch is told otherwise
    exact = u.dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest"
    # H100, B4 H256 L16384 N64, TF32 (benchmarks/kernels_diag_ssm.py --sweep): T=32 gave the fastest forward
    # (0.46 ms; T=64 with 4/8 warps: 0.79/0.59 ms) and forward+backward (2.2 ms; T=64: 2.35-2.58 ms)
    return {"T": 32, "R": 16, "NP": NP, "fwd_warps": 4, "bwd_warps": 8, "maxnreg": 128, "PREC": "tf32x3" if exact else "tf32"}


def _regs(maxnreg):
    """Launch option capping registers per thread (more programs per multiprocessor); none in the interpreter."""
    return {} if maxnreg is None or interpreting() else {"maxnreg": maxnreg}


class _DiagSSMScanFn(torch.autograd.Function):
    """y, h_mid = scan(u; ssm, D, h0); ssm (H, N, 6) float32 packs (dt A, B̄, C) as real pairs."""

    @staticmethod
    def forward(ctx, u, ssm, D, h0r, want_hmid, cfg):
        batch, H, L = u.shape
        N = ssm.shape[1]
        T, R, NP = cfg["T"], cfg["R"], cfg["NP"]
        n_blocks = triton.cdiv(triton.cdiv(L, T), R)
        needs_grad = any(ctx.needs_input_grad[:4])
        y = torch.empty((batch, H, L), device=u.device, dtype=u.dtype)
        hmid = torch.empty((batch, H, N, 2), device=u.device, dtype=torch.float32) if want_hmid else y
        ckpt = torch.empty((batch, H, n_blocks, NP, 2), device=u.device, dtype=torch.float32) if needs_grad else y
        h0_arg = h0r if h0r is not None else y
        sh = h0r.stride()[:3] if h0r is not None else (0, 0, 0)
        _diag_ssm_fwd_kernel[(batch * H,)](
            u, y, ssm, D if D is not None else y, h0_arg, hmid, ckpt,
            H, L, N, n_blocks, *u.stride(), *sh,
            T=T, R=R, NP=NP, HAS_D=D is not None, HAS_H0=h0r is not None,
            WRITE_HMID=want_hmid, WRITE_CKPT=needs_grad, PREC=cfg["PREC"],
            NB_STATIC=n_blocks if interpreting() else 0, num_warps=cfg["fwd_warps"], **_regs(cfg["maxnreg"]),
        )
        ctx.save_for_backward(u, ssm, D, ckpt)
        ctx.cfg = cfg
        ctx.has_h0 = h0r is not None
        return y, (hmid if want_hmid else None)

    @staticmethod
    def backward(ctx, dy, dhmid):
        u, ssm, D, ckpt = ctx.saved_tensors
        cfg = ctx.cfg
        batch, H, L = u.shape
        N = ssm.shape[1]
        du = torch.empty((batch, H, L), device=u.device, dtype=u.dtype)
        dssm = torch.empty((batch, H, N, 6), device=u.device, dtype=torch.float32)
        dd = torch.empty((batch, H), device=u.device, dtype=torch.float32)
        dh0 = torch.empty((batch, H, N, 2), device=u.device, dtype=torch.float32)
        if dhmid is not None:
            dhmid = dhmid.float().contiguous()
        _diag_ssm_bwd_kernel[(batch * H,)](
            u, dy, ssm, D if D is not None else u, ckpt, dhmid if dhmid is not None else dh0,
            du, dssm, dd, dh0,
            H, L, N, ckpt.shape[2], *u.stride(), *dy.stride(),
            T=cfg["T"], R=cfg["R"], NP=cfg["NP"], HAS_D=D is not None, HAS_DHMID=dhmid is not None,
            PREC=cfg["PREC"], NB_STATIC=ckpt.shape[2] if interpreting() else 0, num_warps=cfg["bwd_warps"],
            **_regs(cfg.get("bwd_maxnreg")),
        )
        dD = dd.sum(0).to(D.dtype) if D is not None else None
        return du, dssm.sum(0), dD, (dh0 if ctx.has_h0 else None), None, None


def _check(u, A, B, C, dt, D, h0):
    if u.dim() != 3 or u.is_complex():
        raise ValueError(f"u must be real with shape (B, H, L), got {tuple(u.shape)} {u.dtype}")
    batch, H, L = u.shape
    for name, z in (("A", A), ("B", B), ("C", C)):
        if not z.is_complex() or z.dim() != 2 or z.shape[0] != H:
            raise ValueError(
                f"{name} must be a complex tensor of shape (H, N) with H={H}, got {tuple(z.shape)} {z.dtype}; "
                "parameters stored as real pairs (..., 2) convert with torch.view_as_complex"
            )
    if not (A.shape == B.shape == C.shape):
        raise ValueError(f"A, B, C must share the shape (H, N), got {tuple(A.shape)}, {tuple(B.shape)}, {tuple(C.shape)}")
    if dt.shape != (H,) or dt.is_complex():
        raise ValueError(f"dt must be real with shape ({H},) (the step itself, exp(log_dt)), got {tuple(dt.shape)}")
    if D is not None and (D.shape != (H,) or D.is_complex()):
        raise ValueError(f"D must be real with shape ({H},), got {tuple(D.shape)}")
    if h0 is not None and (h0.shape != (batch, H, A.shape[1]) or not h0.is_complex()):
        raise ValueError(f"h0 must be complex with shape ({batch}, {H}, {A.shape[1]}), got {tuple(h0.shape)} {h0.dtype}")
    if L == 0:
        raise ValueError("u has length 0 along its last axis; the scan needs at least one step")


def diag_ssm_scan(
    u: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    dt: torch.Tensor,
    D: torch.Tensor | None = None,
    h0: torch.Tensor | None = None,
    return_final_state: bool = False,
    backend: Backend = "auto",
):
    """Diagonal state-space scan of S4D / LSSL in recurrent mode, fused (no (B, H, N, L) states in memory).

    Per channel h (H of them) and state n (N of them), with the zero-order hold
    Ā = exp(dt A), B̄ = (exp(dt A) - 1) / A * B:

        h_t = Ā h_{t-1} + B̄ u_t            (complex, h_{-1} = h0 or 0)
        y_t = 2 Re(sum_n C_n h_{t,n}) + D u_t

    The factor 2 is S4D's convention (`models/s4/s4d.py`): A, B, C keep one
    eigenvalue of each conjugate pair, the other half contributes the complex
    conjugate. Equals the S4D convolution y = K * u + D u with
    K_l = 2 Re(sum_n C_n B̄_n Ā_n^l) (with B = 1 this is S4DKernel's K).

    Args:
        u: (B, H, L) float32, bfloat16 or float16, any strides.
        A: (H, N) complex64, Re(A) < 0 for a stable system (not checked).
        B, C: (H, N) complex64. Parameters kept as real pairs: pass torch.view_as_complex(p).
        dt: (H,) real, positive: the step itself (S4D keeps log_dt; pass exp(log_dt)).
        D: (H,) real skip connection, or None.
        h0: (B, H, N) complex initial state, or None for zeros.
        return_final_state: also return h_{L-1}, (B, H, N) complex64.
        backend: "auto" (Triton on CUDA tensors, the reference elsewhere), "triton" or "torch".

    Returns:
        y (B, H, L) in u's dtype, or (y, h_final) if return_final_state.

    Arithmetic is float32 (complex as real pairs) for every input dtype. On the
    GPU the matrix products run on tensor cores: for float32 input in three
    TF32 passes (float32 accuracy) unless torch.set_float32_matmul_precision
    is "high" or "medium" (one TF32 pass, about 1e-3 relative error); for
    bfloat16/float16 input in one TF32 pass. Gradients flow to u, A, B, C, dt,
    D and h0 (complex gradients follow torch: d/dRe + i d/dIm).
    """
    _check(u, A, B, C, dt, D, h0)
    if not use_triton(backend, u, A, B, C, dt, D, h0):
        return diag_ssm_scan_ref(u, A, B, C, dt, D, h0, return_final_state)
    return _diag_ssm_scan_triton(u, A, B, C, dt, D, h0, return_final_state, _config(u, A.shape[1]))


def _diag_ssm_scan_triton(u, A, B, C, dt, D, h0, return_final_state, cfg):
    """The Triton path of `diag_ssm_scan` with an explicit launch configuration (see `_config`)."""
    A, B, C = A.to(torch.complex64), B.to(torch.complex64), C.to(torch.complex64)
    dtA, Bbar = zoh(A, B, dt.float())  # (H N)
    ssm = torch.cat([torch.view_as_real(dtA), torch.view_as_real(Bbar), torch.view_as_real(C)], dim=-1)  # (H N 6)
    h0r = torch.view_as_real(h0.to(torch.complex64)) if h0 is not None else None  # (B H N 2)
    D = D.contiguous() if D is not None else None
    y, hmid = _DiagSSMScanFn.apply(u, ssm, D, h0r, return_final_state, cfg)
    if not return_final_state:
        return y
    # the kernel returns the state after the last full chunk; the last T0 < T steps are added here
    L = u.shape[-1]
    hmid = torch.view_as_complex(hmid)  # (B H N)
    T0 = L % cfg["T"]
    if T0 == 0:
        return y, hmid
    steps = torch.arange(T0 - 1, -1, -1, device=u.device, dtype=torch.float32)  # T0-1-s
    w = Bbar.unsqueeze(-1) * torch.exp(dtA.unsqueeze(-1) * steps)  # (H N T0): Ā^{T0-1-s} B̄
    tail = u[..., L - T0 :].to(torch.float32).to(torch.complex64)  # (B H T0)
    h_final = torch.exp(T0 * dtA) * hmid + torch.einsum("bhs,hns->bhn", tail, w)
    return y, h_final
