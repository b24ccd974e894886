"""S4D: the diagonal structured state-space layer.

Gu, Gupta, Goel, Ré. "On the Parameterization and Initialization of Diagonal
State Space Models", NeurIPS 2022, arXiv 2206.11893.

Each of the H channels is a diagonal SSM with N/2 complex modes (the other
N/2 are their conjugates, so outputs are real): A = diag(−exp(log_A_real) + i·A_imag),
B, C complex, step Δt = exp(log_dt). Discretisation is the zero-order hold
(Ā = exp(ΔA), B̄ = (exp(ΔA) − 1)/A · B) or the bilinear transform. The
convolution kernel is a Vandermonde product, K_l = 2 Re Σ_n C_n B̄_n Ā_n^l, and the
recurrent view runs on the fused diagonal scan ``tsuite.kernels.diag_ssm_scan``
(Triton on CUDA, its exact PyTorch reference elsewhere).

Initialisations (the paper's): log Δt uniform in [log dt_min, log dt_max];
S4D-Lin A_n = −1/2 + iπn; S4D-Inv A_n = −1/2 + i (N/π)(N/(2n+1) − 1);
C ~ N(0, 1) complex; B = 1; D ~ N(0, 1).

Differences from the paper: none in the layer. The bilinear variant runs on the
zero-order-hold scan kernel through the exact change of variables
A' = log(Ā)/Δt, B' = B̄ A' / (Ā − 1) (same Ā, B̄).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from tsuite.forecasting.ssm_layer import SSMLayer, log_dt_init
from tsuite.kernels import diag_ssm_scan


def s4d_eigenvalues(init: Literal["lin", "inv"], N: int) -> torch.Tensor:
    """The N/2 diagonal entries of A for S4D-Lin or S4D-Inv (N = full state size)."""
    n = torch.arange(N // 2, dtype=torch.float64)
    if init == "lin":
        imag = math.pi * n
    elif init == "inv":
        imag = N / math.pi * (N / (2 * n + 1) - 1)
    else:
        raise ValueError(f"unknown S4D initialisation {init!r}; expected 'lin' or 'inv'")
    return torch.complex(torch.full_like(n, -0.5), imag)


class S4DLayer(SSMLayer):
    """H diagonal SSMs with N/2 complex modes each: u (B, H, L) → y (B, H, L).

    Args:
        d_model: H, the number of channels.
        d_state: N, the state size (N/2 complex conjugate pairs); even.
        init: ``lin`` (S4D-Lin) or ``inv`` (S4D-Inv).
        disc: ``zoh`` (the paper's default) or ``bilinear``.
        dt_min, dt_max: range of the initial Δt.
        lr: learning rate of A, B and Δt (no weight decay); None to use the model's.
        learn_A: train A and B (otherwise fixed at their initialisation).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        init: Literal["lin", "inv"] = "lin",
        disc: Literal["zoh", "bilinear"] = "zoh",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        lr: float | None = 0.001,
        learn_A: bool = True,
    ):
        super().__init__()
        if d_state < 2 or d_state % 2:
            raise ValueError(f"S4D: d_state must be even and ≥ 2 (conjugate pairs), got {d_state}")
        if disc not in ("zoh", "bilinear"):
            raise ValueError(f"S4D: unknown discretisation {disc!r}; expected 'zoh' or 'bilinear'")
        H, N2 = d_model, d_state // 2
        self.d_model, self.d_state, self.disc = H, d_state, disc
        A = s4d_eigenvalues(init, d_state).to(torch.complex64).expand(H, N2)  # (H N/2)
        self.register_ssm("log_dt", log_dt_init(H, dt_min, dt_max), True, lr)
        self.register_ssm("log_A_real", torch.log(-A.real).clone(), learn_A, lr)
        self.register_ssm("A_imag", A.imag.clone(), learn_A, lr)
        self.register_ssm("B", torch.view_as_real(torch.ones(H, N2, dtype=torch.complex64)).clone(), learn_A, lr)
        self.C = nn.Parameter(torch.view_as_real(torch.randn(H, N2, dtype=torch.complex64)).clone())  # (H N/2 2)
        self.D = nn.Parameter(torch.randn(H))

    def ssm(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Continuous parameters (Δt (H,), A, B, C (H, N/2) complex)."""
        dt = torch.exp(self.log_dt)
        A = torch.complex(-torch.exp(self.log_A_real), self.A_imag)
        return dt, A, torch.view_as_complex(self.B), torch.view_as_complex(self.C)

    def discretize(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log Ā, B̄, C), each (H, N/2) complex64: Ā = exp(log Ā).

        Computed in complex128 (small (H, N/2) tensors): exp(ΔA) − 1 and the
        bilinear logarithm lose digits to cancellation in single precision.
        """
        dt, A, B, C = self.ssm()
        dt, A, B = dt.double().unsqueeze(-1), A.to(torch.complex128), B.to(torch.complex128)
        dtA = dt * A  # (H N/2)
        if self.disc == "zoh":
            log_dA, dB = dtA, (torch.exp(dtA) - 1.0) / A * B
        else:
            log_dA, dB = torch.log((1 + dtA / 2) / (1 - dtA / 2)), B * dt / (1 - dtA / 2)
        return log_dA.to(torch.complex64), dB.to(torch.complex64), C

    def kernel(self, L: int) -> torch.Tensor:
        """Vandermonde kernel K_l = 2 Re Σ_n C_n B̄_n Ā_n^l, (H, L)."""
        log_dA, dB, C = self.discretize()
        powers = torch.exp(log_dA.unsqueeze(-1) * torch.arange(L, device=log_dA.device))  # (H N/2 L)
        return 2 * torch.einsum("hn,hnl->hl", C * dB, powers).real

    # -- recurrent view ------------------------------------------------------------------------
    def default_state(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, self.d_model, self.d_state // 2, dtype=torch.complex64, device=self.C.device)

    def _discrete_step(self) -> dict:
        log_dA, dB, C = self.discretize()
        return {"dA": torch.exp(log_dA), "dB": dB, "C": C}

    def _step(self, u, state, m):
        state = m["dA"] * state + m["dB"] * u.unsqueeze(-1).to(m["dB"].dtype)  # (B H N/2)
        y = 2 * torch.einsum("hn,bhn->bh", m["C"], state).real + self.D * u  # (B H)
        return y.to(u.dtype), state

    def recurrent(self, u: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Recurrent view over u (B, H, L) on the fused diagonal scan; returns (y, final state (B, H, N/2))."""
        dt, A, B, C = self.ssm()
        if self.disc == "bilinear":  # the same Ā, B̄ written as a zero-order hold of (A', B'), in complex128
            dt64, dtA = dt.double().unsqueeze(-1), dt.double().unsqueeze(-1) * A.to(torch.complex128)
            dA = (1 + dtA / 2) / (1 - dtA / 2)
            A64 = torch.log(dA) / dt64
            B = (B.to(torch.complex128) * dt64 / (1 - dtA / 2) * A64 / (dA - 1.0)).to(torch.complex64)
            A = A64.to(torch.complex64)
        return diag_ssm_scan(u, A, B, C, dt, self.D, h0=state, return_final_state=True)
