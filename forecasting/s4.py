"""S4: the structured state-space layer with a normal-plus-low-rank (DPLR) state matrix.

Gu, Goel, Ré. "Efficiently Modeling Long Sequences with Structured State
Spaces", ICLR 2022, arXiv 2111.00396.

Each of the H channels is an SSM whose state matrix, in the basis that
diagonalises its normal part, is A = Λ − P P^* (Λ diagonal, P of rank r),
initialised at HiPPO-LegS (:func:`tsuite.forecasting.hippo.nplr`; LegT and
LagT also available). The convolution kernel of length L is computed as in
the paper's Algorithm 1: its generating function at the L roots of unity ω,

    K̂(ω) = C̃ (I − ω Ā)^{-1} B̄,   C̃ = C (I − Ā^L),

reduces for the bilinear transform to Cauchy sums Σ_n a_n b_n / d_n(ω) over
the diagonal Λ plus a Woodbury correction for the low-rank term, and an
inverse FFT gives K. As in the authors' code, C̃ itself is the trained
parameter, tied to the kernel length L it was set for (buffer ``l_kernel``,
fixed at the first call); the recurrent view recovers C = C̃ (I − Ā^L)^{-1}.

Discretisation: ``bilinear`` (the paper's; the Cauchy algorithm) or ``zoh``
(Ā = exp(ΔA): there is no Cauchy form for a non-diagonal matrix exponential,
so the kernel is computed from the dense Ā by a Krylov doubling, O(N² L)).
Kernels are computed in double precision and returned in float32.

Differences from the paper: the Cauchy sums are plain PyTorch (no pykeops or
CUDA extension) and are written with d_n(ω) = (1 − ω) − (Δ/2)(1 + ω) λ_n, which is
the paper's (2/(1+ω))·1/(g(ω) − λ_n) without the pole at ω = −1; a kernel
longer than ``l_kernel`` is obtained by rescaling C̃ with dense matrices
(differentiable) instead of the authors' in-place length doubling; the
recurrent view is the dense N × N recurrence in the NPLR basis.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from tsuite.forecasting.hippo import Measure, dense_from_nplr, nplr
from tsuite.forecasting.ssm_layer import SSMLayer, krylov, log_dt_init, matrix_power


def _full(x: torch.Tensor) -> torch.Tensor:
    """Append the conjugate half along the last axis: (…, N/2) → (…, N)."""
    return torch.cat([x, x.conj()], dim=-1)


class S4Layer(SSMLayer):
    """H SSMs with DPLR state matrices (HiPPO initialisation): u (B, H, L) → y (B, H, L).

    Args:
        d_model: H, the number of channels.
        d_state: N, the state size (N/2 conjugate pairs are stored); even.
        measure: HiPPO matrix of the initialisation: ``legs`` (the paper's), ``legt`` or ``lagt``.
        disc: ``bilinear`` (the paper's) or ``zoh``.
        dt_min, dt_max: range of the initial Δt.
        lr: learning rate of Λ, P, B and Δt (no weight decay); None to use the model's.
        l_max: kernel length C̃ is tied to; None: the length of the first sequence seen.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        measure: Measure = "legs",
        disc: Literal["bilinear", "zoh"] = "bilinear",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        lr: float | None = 0.001,
        l_max: int | None = None,
    ):
        super().__init__()
        if disc not in ("bilinear", "zoh"):
            raise ValueError(f"S4: unknown discretisation {disc!r}; expected 'bilinear' or 'zoh'")
        H = d_model
        self.d_model, self.d_state, self.disc = H, d_state, disc
        Lambda, P, B, _ = nplr(measure, d_state)  # (N/2), (r N/2), (N/2)
        Lambda, P, B = Lambda.to(torch.complex64), P.to(torch.complex64), B.to(torch.complex64)
        self.rank = P.shape[0]
        self.register_ssm("log_dt", log_dt_init(H, dt_min, dt_max), True, lr)
        # Re Λ is kept negative through −exp(·); LegT and LagT have Re Λ = 0, clamped to −1e-4.
        self.register_ssm("log_A_real", torch.log(-Lambda.real.clamp(max=-1e-4)).expand(H, -1).clone(), True, lr)
        self.register_ssm("A_imag", Lambda.imag.expand(H, -1).clone(), True, lr)
        self.register_ssm("P", torch.view_as_real(P.unsqueeze(1).expand(-1, H, -1)).clone(), True, lr)  # (r H N/2 2)
        self.register_ssm("B", torch.view_as_real(B.expand(H, -1)).clone(), True, lr)  # (H N/2 2)
        C = torch.randn(H, d_state // 2, dtype=torch.complex64)
        self.C = nn.Parameter(torch.view_as_real(C).clone())  # C̃ (H N/2 2)
        self.D = nn.Parameter(torch.randn(H))
        self.register_buffer("l_kernel", torch.tensor(l_max or 0))

    def ssm(self):
        """(Δt (H,), Λ (H, N/2), P (r, H, N/2), B (H, N/2), C̃ (H, N/2)), complex where complex."""
        dt = torch.exp(self.log_dt)
        Lambda = torch.complex(-torch.exp(self.log_A_real), self.A_imag)
        return dt, Lambda, torch.view_as_complex(self.P), torch.view_as_complex(self.B), torch.view_as_complex(self.C)

    # -- dense matrices (full N × N, NPLR basis) ---------------------------------------------------
    def dense(self, dtype: torch.dtype = torch.complex128):
        """Discrete (Ā (H, N, N), B̄ (H, N), C̃ (H, N)) in the full conjugate-pair basis."""
        dt, Lambda, P, B, C = self.ssm()
        A = dense_from_nplr(Lambda.to(dtype), P.to(dtype))  # (H N N)
        B, C = _full(B.to(dtype)), _full(C.to(dtype))
        dt = dt.to(A.real.dtype)[:, None, None]
        eye = torch.eye(A.shape[-1], dtype=dtype, device=A.device)
        if self.disc == "bilinear":
            back = eye - dt / 2 * A
            dA = torch.linalg.solve(back, eye + dt / 2 * A)
            dB = torch.linalg.solve(back, dt[..., 0] * B)
        else:
            dA = torch.linalg.matrix_exp(dt * A)
            dB = torch.linalg.solve(A, ((dA - eye) @ B.unsqueeze(-1)).squeeze(-1))
        return dA, dB, C

    def _retie(self, dA: torch.Tensor, C: torch.Tensor, old: int, new: int) -> torch.Tensor:
        """C̃ for length ``new`` from C̃ for ``old`` (0: C̃ is C): C̃' = C̃ (I − Ā^old)^{-1} (I − Ā^new)."""
        eye = torch.eye(dA.shape[-1], dtype=dA.dtype, device=dA.device)
        if old:  # row vector C = C̃ (I − Ā^old)^{-1}, i.e. (I − Ā^old)ᵀ Cᵀ = C̃ᵀ
            C = torch.linalg.solve((eye - matrix_power(dA, old)).transpose(-1, -2), C)
        if new:
            C = (C.unsqueeze(-2) @ (eye - matrix_power(dA, new))).squeeze(-2)
        return C

    # -- convolution view ---------------------------------------------------------------------
    def kernel(self, L: int) -> torch.Tensor:
        if int(self.l_kernel) == 0:
            self.l_kernel.fill_(L)  # the random initial C̃ is taken as C̃ for this length
        l_kernel = int(self.l_kernel)
        if self.disc == "zoh":
            return self._kernel_krylov(L)
        if L <= l_kernel:
            return self._kernel_cauchy(l_kernel)[..., :L]
        dA, _, C = self.dense()
        return self._kernel_cauchy(L, C_tilde=self._retie(dA, C, l_kernel, L)[..., : self.d_state // 2])

    def _kernel_cauchy(self, L: int, C_tilde: torch.Tensor | None = None) -> torch.Tensor:
        """Bilinear kernel (H, L) from the Cauchy sums at the roots of unity and the Woodbury identity.

        In double precision: where Re Λ is near 0 (LegT, LagT) the sums are large
        near resonance and the Woodbury correction cancels digits in single precision.
        """
        dt, Lambda, P, B, C = (x.to(torch.complex128 if x.is_complex() else torch.float64) for x in self.ssm())
        C = C if C_tilde is None else C_tilde.to(torch.complex128)
        k = torch.arange(L // 2 + 1, dtype=torch.float64, device=dt.device)
        omega = torch.exp(-2j * math.pi * k / L)  # (K) roots of unity for the rfft bins
        left = torch.cat([C.unsqueeze(0), P.conj()], dim=0)  # (1+r H N/2): C̃ and the rows of P^*
        right = torch.cat([B.unsqueeze(0), P], dim=0)  # (1+r H N/2): B and the columns of P
        v = left.unsqueeze(1) * right.unsqueeze(0)  # (1+r 1+r H N/2)
        s = dt.unsqueeze(-1) / 2 * (1 + omega)  # (H K)
        d = (1 - omega) - s.unsqueeze(1) * _full(Lambda).unsqueeze(-1)  # (H N K)
        r = torch.einsum("abhn,hnk->abhk", _full(v), 1.0 / d)  # (1+r 1+r H K) Cauchy sums
        r00, r01, r10, r11 = r[0, 0], r[0, 1:], r[1:, 0], r[1:, 1:]
        eye = torch.eye(self.rank, dtype=r.dtype, device=r.device)
        m = eye + s.unsqueeze(-1).unsqueeze(-1) * r11.permute(2, 3, 0, 1)  # (H K r r)
        corr = torch.linalg.solve(m, r10.permute(1, 2, 0).unsqueeze(-1)).squeeze(-1)  # (H K r)
        k_hat = dt.unsqueeze(-1) * (r00 - s * (r01.permute(1, 2, 0) * corr).sum(-1))  # (H K)
        return torch.fft.irfft(k_hat, n=L).float()  # (H L)

    def _kernel_krylov(self, L: int) -> torch.Tensor:
        """ZOH kernel (H, L) from the dense discrete matrices: K_l = Re(C Ā^l B̄)."""
        dA, dB, C = self.dense()
        C = self._retie(dA, C, int(self.l_kernel), 0)
        return torch.einsum("hn,hnl->hl", C, krylov(L, dA, dB)).real.float()

    # -- recurrent view -----------------------------------------------------------------------
    def default_state(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, self.d_model, self.d_state, dtype=torch.complex64, device=self.C.device)

    def _discrete_step(self) -> dict:
        dA, dB, C = self.dense()
        C = self._retie(dA, C, int(self.l_kernel), 0)
        return {"dA": dA.to(torch.complex64), "dB": dB.to(torch.complex64), "C": C.to(torch.complex64)}

    def _step(self, u, state, m):
        state = torch.einsum("hmn,bhn->bhm", m["dA"], state) + m["dB"] * u.unsqueeze(-1).to(m["dB"].dtype)
        y = torch.einsum("hn,bhn->bh", m["C"], state).real + self.D * u  # (B H): C x is real in the full basis
        return y.to(u.dtype), state
