"""Triton kernel of the diagonal state-space scan's backward pass 3 (see `diag_ssm_scan_triton.py`).

Per block of R chunks, from the state entering the block (forward pass 2) and
the adjoint entering it from later blocks (backward pass 2): the states inside
the block again (the forward's scan), the adjoint of the chunk states Γ (a
reverse scan with conj(Ā^T) over dY P^T shifted up by one chunk), du = dY K^T +
Γ Q^T + D dY, and the sums U^T dY, Hs^T dY, U^T Γ, Γ conj(Hs) that are the
gradients of the tables K, P, Q and of Ā^T. Each program pulls its sums back to
(dt A, B̄, C) at its end; the host adds the programs' shares.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .diag_ssm_scan_triton import (
    _affine_combine, _chunk_states, _cmul, _cmulc, _cpow, _load_params, _load_tab, _mma, _powers, _split,
)


@triton.jit
def _pullback(dK, dPT_re, dPT_im, dQ_re, dQ_im, daT_r, daT_i, dr, di, br, bi, cr, ci, T: tl.constexpr):
    """Gradients of (dt A, B̄, C) from those of K, P^T, Q (T NP) and Ā^T; complex ones are d/dRe + i d/dIm.

    Each gradient's terms are gathered in one (T, NP) tile first: one reduction over T per output.
    """
    s = tl.arange(0, T)
    ks = s.to(tl.float32)[:, None]
    lag = s[:, None] + s[None, :]  # G[s, l] = dK[s, s + l]
    dkvec = tl.sum(tl.where(lag < T, tl.gather(dK, tl.minimum(lag, T - 1), axis=1), 0.0), axis=0)  # (T)
    z_r, z_i, w_r, w_i, v_r, v_i = _powers(dr, di, T)  # Ā^t, Ā^{t+1}, Ā^{T-1-t}
    # y_state uses p = C Ā^{t+1}: dp = 2 dP_re - 2i dP_im; dC += dp conj(Ā^{t+1}), dA += (t+1) dp conj(p)
    p_r, p_i = _cmul(cr[None, :], ci[None, :], w_r, w_i)
    dp_r = 2.0 * dPT_re
    dp_i = -2.0 * dPT_im
    x1r, x1i = _cmulc(dp_r, dp_i, w_r, w_i)
    x2r, x2i = _cmulc(dp_r, dp_i, p_r, p_i)
    # chunk-end states use q = B̄ Ā^{T-1-s}: dB̄ += dQ conj(Ā^{T-1-s}), dA += (T-1-s) dQ conj(q)
    q_r, q_i = _cmul(br[None, :], bi[None, :], v_r, v_i)
    x3r, x3i = _cmulc(dQ_re, dQ_im, v_r, v_i)
    x4r, x4i = _cmulc(dQ_re, dQ_im, q_r, q_i)
    # the Toeplitz kernel uses c = C B̄ Ā^l through 2 Re(c): dc = 2 dkvec; d(C B̄) += dc conj(Ā^l), dA += l dc conj(c)
    cb_r, cb_i = _cmul(cr, ci, br, bi)
    dz = 2.0 * dkvec[:, None]
    x5r, x5i = _cmul(cb_r[None, :], cb_i[None, :], z_r, z_i)
    dc_r = tl.sum(x1r, axis=0)
    dc_i = tl.sum(x1i, axis=0)
    db_r = tl.sum(x3r, axis=0)
    db_i = tl.sum(x3i, axis=0)
    dA_r = tl.sum((ks + 1.0) * x2r + (T - 1.0 - ks) * x4r + ks * dz * x5r, axis=0)
    dA_i = tl.sum((ks + 1.0) * x2i + (T - 1.0 - ks) * x4i - ks * dz * x5i, axis=0)
    dcb_r = tl.sum(dz * z_r, axis=0)
    dcb_i = tl.sum(-dz * z_i, axis=0)
    x6r, x6i = _cmulc(dcb_r, dcb_i, br, bi)
    x7r, x7i = _cmulc(dcb_r, dcb_i, cr, ci)
    # Ā^T = exp(T dt A)
    aT_r, aT_i = _cpow(dr, di, T * 1.0)
    x8r, x8i = _cmulc(daT_r, daT_i, aT_r, aT_i)
    return dA_r + T * x8r, dA_i + T * x8i, db_r + x7r, db_i + x7i, dc_r + x6r, dc_i + x6i


@triton.jit(do_not_specialize=["n_heads", "L", "N", "n_blocks", "n_prog", "su_b", "su_h", "sg_b", "sg_h", "j_mid"])
def _bwd_kernel(
    u_ptr, dy_ptr, ssm_ptr, tab_ptr, d_ptr, states_ptr, adj_ptr, dmid_ptr,
    du_ptr, dssm_ptr, dd_ptr,
    n_heads, L, N, n_blocks, n_prog,
    su_b, su_h, su_l,
    sg_b, sg_h, sg_l,
    j_mid,
    T: tl.constexpr, R: tl.constexpr, NP: tl.constexpr, G: tl.constexpr,
    HAS_D: tl.constexpr, HAS_DMID: tl.constexpr, PREC: tl.constexpr,
):
    """du of G blocks, and this program's share of the gradients of (dt A, B̄, C) and D.

    states (B H, n_blocks + 1, 2, NP): state entering block k (forward);
    adj (B H, n_blocks + 1, 2, NP): adjoint entering block k from later blocks is adj[k + 1];
    dmid (B H, 2, NP): gradient of the state entering chunk j_mid;
    dssm (B H n_prog, N, 6) and dd (B H n_prog): partial sums.
    """
    SIZE: tl.constexpr = T * T + 4 * T * NP
    PARTS: tl.constexpr = 2 if PREC == "bf16x3" else (2 if PREC == "bf16x3_emu" else 1)
    pid = tl.program_id(0)
    bh = pid // n_prog
    g0 = (pid % n_prog) * G
    b = bh // n_heads
    h = bh % n_heads
    rows = tl.arange(0, R)
    cols = tl.arange(0, T)
    n = tl.arange(0, NP)
    tab = tab_ptr + h.to(tl.int64) * (PARTS * SIZE)
    KT_hi, KT_lo = _load_tab(tab, cols[:, None] + cols[None, :] * T, SIZE, PREC)  # K^T[t, s] = K[s, t]
    tidx = cols[:, None] * NP + n[None, :]  # (T NP)
    Pr_hi, Pr_lo = _load_tab(tab, T * T + tidx, SIZE, PREC)
    Pi_hi, Pi_lo = _load_tab(tab, T * T + T * NP + tidx, SIZE, PREC)
    Qr_hi, Qr_lo = _load_tab(tab, T * T + 2 * T * NP + tidx, SIZE, PREC)
    Qi_hi, Qi_lo = _load_tab(tab, T * T + 3 * T * NP + tidx, SIZE, PREC)
    qtidx = n[:, None] + cols[None, :] * NP  # (NP T): Q^T[n, s] = Q[s, n]
    QTr_hi, QTr_lo = _load_tab(tab, T * T + 2 * T * NP + qtidx, SIZE, PREC)
    QTi_hi, QTi_lo = _load_tab(tab, T * T + 3 * T * NP + qtidx, SIZE, PREC)
    dr, di, br, bi, cr, ci = _load_params(ssm_ptr, h, N, NP)
    aT_r, aT_i = _cpow(dr, di, T * 1.0)
    d = 0.0
    if HAS_D:
        d = tl.load(d_ptr + h).to(tl.float32)
    last = rows[:, None] == R - 1
    cA_r = tl.broadcast_to(aT_r[None, :], (R, NP))
    cA_i = tl.broadcast_to(-aT_i[None, :], (R, NP))

    dK = tl.zeros((T, T), tl.float32)
    dP_re = tl.zeros((NP, T), tl.float32)
    dP_im = tl.zeros((NP, T), tl.float32)
    dQ_re = tl.zeros((T, NP), tl.float32)
    dQ_im = tl.zeros((T, NP), tl.float32)
    daT_r = tl.zeros((NP,), tl.float32)
    daT_i = tl.zeros((NP,), tl.float32)
    dd = tl.zeros((R, T), tl.float32)

    u_base = u_ptr + b.to(tl.int64) * su_b + h.to(tl.int64) * su_h
    g_base = dy_ptr + b.to(tl.int64) * sg_b + h.to(tl.int64) * sg_h
    du_base = du_ptr + bh.to(tl.int64) * L
    for gg in range(G):
        k = g0 + gg
        kc = tl.minimum(k, n_blocks - 1)
        t = k * (R * T) + rows[:, None] * T + cols[None, :]
        m = t < L
        st_ptr = states_ptr + (bh.to(tl.int64) * (n_blocks + 1) + kc) * (2 * NP)
        H_r, H_i = _chunk_states(u_base, su_l, t, L, rows, st_ptr, n, Qr_hi, Qr_lo, Qi_hi, Qi_lo, aT_r, aT_i, T, NP, PREC)
        # Γn[r] = adjoint of the state leaving chunk r = dY[r+1] P^T + conj(Ā^T) Γn[r+1], Γn[R-1] = adj[k+1]
        tu = t + T
        Gu = tl.load(g_base + tu.to(tl.int64) * sg_l, mask=(rows[:, None] < R - 1) & (tu < L), other=0.0).to(tl.float32)
        gu_hi, gu_lo = _split(Gu, PREC)
        ap = adj_ptr + (bh.to(tl.int64) * (n_blocks + 1) + kc + 1) * (2 * NP) + n
        f_r = tl.where(last, tl.load(ap, mask=n < NP, other=0.0)[None, :], 0.0)
        f_i = tl.where(last, tl.load(ap + NP, mask=n < NP, other=0.0)[None, :], 0.0)
        if HAS_DMID:
            jm = j_mid - k * R  # dh_mid enters Γ[jm] = Γn[jm - 1]; jm = R: already in adj[k + 1]
            if (jm >= 1) & (jm < R):
                dm_r = tl.load(dmid_ptr + bh.to(tl.int64) * (2 * NP) + n, mask=n < N, other=0.0)
                dm_i = tl.load(dmid_ptr + bh.to(tl.int64) * (2 * NP) + NP + n, mask=n < N, other=0.0)
                f_r += tl.where(rows[:, None] == jm - 1, dm_r[None, :], 0.0)
                f_i += tl.where(rows[:, None] == jm - 1, dm_i[None, :], 0.0)
        f_r = _mma(gu_hi, gu_lo, Pr_hi, Pr_lo, f_r, PREC)
        f_i = _mma(gu_hi, gu_lo, Pi_hi, Pi_lo, f_i, PREC)
        _, _, Gn_r, Gn_i = tl.associative_scan((cA_r, cA_i, f_r, f_i), 0, _affine_combine, reverse=True)

        U = tl.load(u_base + t.to(tl.int64) * su_l, mask=m, other=0.0).to(tl.float32)
        Gy = tl.load(g_base + t.to(tl.int64) * sg_l, mask=m, other=0.0).to(tl.float32)
        g_hi, g_lo = _split(Gy, PREC)
        nr_hi, nr_lo = _split(Gn_r, PREC)
        ni_hi, ni_lo = _split(Gn_i, PREC)
        dU = d * Gy
        dU = _mma(g_hi, g_lo, KT_hi, KT_lo, dU, PREC)
        dU = _mma(nr_hi, nr_lo, QTr_hi, QTr_lo, dU, PREC)
        dU = _mma(ni_hi, ni_lo, QTi_hi, QTi_lo, dU, PREC)
        tl.store(du_base + t, dU.to(du_ptr.dtype.element_ty), mask=m)
        if HAS_D:
            dd += Gy * U

        ut_hi, ut_lo = _split(tl.trans(U), PREC)
        hr_hi, hr_lo = _split(tl.trans(H_r), PREC)
        hi_hi, hi_lo = _split(tl.trans(H_i), PREC)
        dK = _mma(ut_hi, ut_lo, g_hi, g_lo, dK, PREC)
        dP_re = _mma(hr_hi, hr_lo, g_hi, g_lo, dP_re, PREC)
        dP_im = _mma(hi_hi, hi_lo, g_hi, g_lo, dP_im, PREC)
        dQ_re = _mma(ut_hi, ut_lo, nr_hi, nr_lo, dQ_re, PREC)
        dQ_im = _mma(ut_hi, ut_lo, ni_hi, ni_lo, dQ_im, PREC)
        xr, xi = _cmulc(Gn_r, Gn_i, H_r, H_i)  # Γn[r] conj(Hs[r])
        valid = k < n_blocks
        daT_r += tl.where(valid, tl.sum(xr, axis=0), 0.0)
        daT_i += tl.where(valid, tl.sum(xi, axis=0), 0.0)

    dA_r, dA_i, db_r, db_i, dc_r, dc_i = _pullback(
        dK, tl.trans(dP_re), tl.trans(dP_im), dQ_re, dQ_im, daT_r, daT_i, dr, di, br, bi, cr, ci, T
    )
    nm = n < N
    op = dssm_ptr + (pid.to(tl.int64) * N + n) * 6
    tl.store(op + 0, dA_r, mask=nm)
    tl.store(op + 1, dA_i, mask=nm)
    tl.store(op + 2, db_r, mask=nm)
    tl.store(op + 3, db_i, mask=nm)
    tl.store(op + 4, dc_r, mask=nm)
    tl.store(op + 5, dc_i, mask=nm)
    if HAS_D:
        tl.store(dd_ptr + pid, tl.sum(tl.sum(dd, axis=1), axis=0))
