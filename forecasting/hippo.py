"""HiPPO state matrices (LegS, LegT, LagT) and their normal-plus-low-rank (NPLR / DPLR) forms.

HiPPO (Gu, Dao, Ermon, Rudra, Ré, "HiPPO: Recurrent Memory with Optimal
Polynomial Projections", NeurIPS 2020, arXiv 2008.07669) gives the matrices
(A, B) of the linear ODE x' = A x + B u whose state x holds the coefficients
of an optimal polynomial approximation of the input's history. LSSL
(:mod:`tsuite.forecasting.lssl`) uses them as dense matrices; S4
(:mod:`tsuite.forecasting.s4`) uses the NPLR form of S4 (Gu, Goel, Ré 2021,
arXiv 2111.00396, Theorem 1): every HiPPO matrix is A = V (Λ − P P^*) V^* with V
unitary, Λ diagonal and P of rank 1 (LegS, LagT) or 2 (LegT).

Conventions (those of the state-spaces code): LegS is the time-invariant
form of the scaled Legendre measure; LegT is the normalised translated
Legendre measure of window length 1; LagT is the translated Laguerre measure
with diagonal −1/2. Complex quantities keep one eigenvalue of each conjugate
pair (N/2 of them); the other half is their complex conjugate.
"""

from __future__ import annotations

from typing import Literal

import torch

Measure = Literal["legs", "legt", "lagt"]
MEASURES = ("legs", "legt", "lagt")


def transition(measure: Measure, N: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The HiPPO matrices (A (N, N), B (N,)) of ``measure``, float64.

    - legs: A[n, k] = −√(2n+1)√(2k+1) for n > k, −(n+1) for n = k, 0 above; B[n] = √(2n+1).
    - legt: A[n, k] = −√(2n+1)√(2k+1) · (1 if n ≥ k else (−1)^(n−k)); B[n] = √(2n+1).
    - lagt: A[n, k] = −1 for n > k, −1/2 for n = k, 0 above; B[n] = 1.
    """
    if N < 1:
        raise ValueError(f"the state size N must be ≥ 1, got {N}")
    n = torch.arange(N, dtype=torch.float64)
    row, col = n[:, None], n[None, :]
    r = torch.sqrt(2 * n + 1)
    if measure == "legs":
        A = -torch.where(row > col, r[:, None] * r[None, :], torch.zeros(())) - torch.diag(n + 1)
        B = r.clone()
    elif measure == "legt":
        sign = torch.where(row >= col, torch.ones(()), (-1.0) ** (row - col))
        A = -(r[:, None] * r[None, :]) * sign
        B = r.clone()
    elif measure == "lagt":
        A = 0.5 * torch.eye(N, dtype=torch.float64) - torch.tril(torch.ones(N, N, dtype=torch.float64))
        B = torch.ones(N, dtype=torch.float64)
    else:
        raise ValueError(f"unknown HiPPO measure {measure!r}; expected one of {', '.join(MEASURES)}")
    return A, B


def rank_correction(measure: Measure, N: int) -> torch.Tensor:
    """P (r, N), float64, such that A + Pᵀ P is normal (a multiple of I plus a skew-symmetric matrix)."""
    n = torch.arange(N, dtype=torch.float64)
    if measure == "legs":
        return torch.sqrt(n + 0.5)[None, :]  # (1 N)
    if measure == "legt":
        r = torch.sqrt(2 * n + 1)
        odd, even = r.clone(), r.clone()
        odd[0::2] = 0.0
        even[1::2] = 0.0
        return torch.stack([odd, even])  # (2 N): couples states of the same parity
    if measure == "lagt":
        return torch.full((1, N), 0.5**0.5, dtype=torch.float64)  # (1 N)
    raise ValueError(f"unknown HiPPO measure {measure!r}; expected one of {', '.join(MEASURES)}")


def nplr(measure: Measure, N: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normal-plus-low-rank form of a HiPPO matrix, in complex128, keeping one half of each conjugate pair.

    Returns (Λ (N/2,), P (r, N/2), B (N/2,), V (N, N/2)) such that, with the
    conjugate halves appended (Λ_f = [Λ, Λ̄], P_f = [P, P̄], B_f = [B, B̄],
    V_f = [V, V̄]), the real matrices are A = V_f (diag(Λ_f) − P_f P_f^*) V_f^*
    and B = V_f B_f; V_f is unitary. The eigenvalues Λ have imaginary part > 0.
    """
    if N % 2:
        raise ValueError(f"the NPLR form keeps conjugate pairs: the state size N must be even, got {N}")
    A, B = transition(measure, N)
    P = rank_correction(measure, N)  # (r N)
    normal = A + P.T @ P  # c I + S with S skew-symmetric
    c = torch.diagonal(normal).mean()
    skew = normal - c * torch.eye(N, dtype=torch.float64)
    if (skew + skew.T).abs().max() > 1e-8 * max(1.0, skew.abs().max().item()):
        raise RuntimeError(f"HiPPO-{measure}: A + PᵀP is not identity plus skew-symmetric")
    mu, V = torch.linalg.eigh(-1j * skew.to(torch.complex128))  # S = i V diag(mu) V^*
    keep = mu > 0
    if int(keep.sum()) != N // 2:
        raise RuntimeError(f"HiPPO-{measure} N={N}: eigenvalues are not in distinct conjugate pairs")
    V = V[:, keep]  # (N N/2); the columns for -mu are their conjugates
    Lambda = c + 1j * mu[keep]  # (N/2)
    Vh = V.conj().T  # (N/2 N)
    return Lambda, P.to(torch.complex128) @ Vh.T, Vh @ B.to(torch.complex128), V


def dense_from_nplr(Lambda: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """Full state matrix diag(Λ_f) − P_f P_f^* (…, N, N) from half-stored Λ (…, N/2), P (r, …, N/2)."""
    lam = torch.cat([Lambda, Lambda.conj()], dim=-1)  # (... N)
    Pf = torch.cat([P, P.conj()], dim=-1)  # (r ... N)
    low_rank = torch.einsum("r...m,r...n->...mn", Pf, Pf.conj())  # (... N N)
    return torch.diag_embed(lam) - low_rank
