"""LSSL: the linear state-space layer with a HiPPO state matrix.

Gu, Johnson, Goel, Saab, Dao, Rudra, Ré. "Combining Recurrent, Convolutional,
and Continuous-time Models with Linear State-Space Layers", NeurIPS 2021,
arXiv 2110.13985.

Each of the H channels maps u to y through x' = A x + B u, y = C x + D u,
with the dense N × N HiPPO matrix A and vector B (LegS by default; LegT and
LagT available; :mod:`tsuite.forecasting.hippo`) and its own step Δt. The
generalised bilinear transform (GBT) with parameter α discretises it:

    Ā = (I − αΔA)^{-1} (I + (1−α)ΔA),   B̄ = Δ (I − αΔA)^{-1} B,

α = 1/2 the bilinear transform (default), 0 forward and 1 backward Euler.
Convolution view: K_l = C Ā^l B̄ from the Krylov matrix [B̄, ĀB̄, Ā²B̄, …]
(by doubling: log2 L products) and ``fftconv``. Recurrent view: the
dense recurrence x_t = Ā x_{t−1} + B̄ u_t, one ``step()`` at a time.

``learn_A`` / ``learn_dt`` choose between the paper's LSSL (A, B and Δt
trained) and LSSL-fixed (both kept at their initialisation); C and D are
always trained.

Differences from the paper: a trained A is a dense matrix shared by the H
channels of a layer, initialised at HiPPO (the paper trains a structured
quasiseparable parameterisation of A); the Krylov matrix is computed by
plain matrix doubling in double precision (single precision loses up to
3e-5 relative accuracy on the non-normal LagT powers) rather than the
paper's structured fast algorithms; one output per channel (the paper's M copies
of C per channel are the backbone's width instead). ``linear_scan`` does not
apply: it is an element-wise recurrence and A is dense (LagT is not even
diagonalisable, and LegS's eigenvectors are exponentially ill-conditioned).
"""

from __future__ import annotations

import torch
from torch import nn

from tsuite.forecasting.hippo import Measure, transition
from tsuite.forecasting.ssm_layer import SSMLayer, krylov, log_dt_init


class LSSLLayer(SSMLayer):
    """H linear state-space models with a HiPPO state matrix: u (B, H, L) → y (B, H, L).

    Args:
        d_model: H, the number of channels.
        d_state: N, the order of the HiPPO projection.
        measure: ``legs`` (default), ``legt`` or ``lagt``.
        alpha: the GBT parameter α in [0, 1] (1/2: bilinear).
        learn_A: train A and B (the paper's LSSL) or keep them fixed (LSSL-fixed).
        learn_dt: train Δt.
        dt_min, dt_max: range of the initial Δt (log-uniform over the channels).
        lr: learning rate of A, B and Δt (no weight decay); None to use the model's.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        measure: Measure = "legs",
        alpha: float = 0.5,
        learn_A: bool = True,
        learn_dt: bool = True,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        lr: float | None = 0.001,
    ):
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"LSSL: the GBT parameter alpha must be in [0, 1], got {alpha}")
        self.d_model, self.d_state, self.alpha = d_model, d_state, alpha
        A, B = transition(measure, d_state)
        self.register_ssm("A", A.float(), learn_A, lr)  # (N N)
        self.register_ssm("B", B.float(), learn_A, lr)  # (N)
        self.register_ssm("log_dt", log_dt_init(d_model, dt_min, dt_max), learn_dt, lr)  # (H)
        self.C = nn.Parameter(torch.randn(d_model, d_state) / d_state**0.5)  # (H N)
        self.D = nn.Parameter(torch.randn(d_model))

    def discretize(self, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
        """GBT discretisation: (Ā (H, N, N), B̄ (H, N)) in ``dtype``."""
        dt = torch.exp(self.log_dt).to(dtype)[:, None, None]  # (H 1 1)
        A, B = self.A.to(dtype), self.B.to(dtype)
        eye = torch.eye(self.d_state, dtype=dtype, device=A.device)
        back = eye - self.alpha * dt * A  # (H N N)
        dA = torch.linalg.solve(back, eye + (1 - self.alpha) * dt * A)
        dB = torch.linalg.solve(back, dt[..., 0] * B)
        return dA, dB

    def kernel(self, L: int) -> torch.Tensor:
        """K_l = C Ā^l B̄ (H, L) through the Krylov matrix."""
        dA, dB = self.discretize()
        return torch.einsum("hn,hnl->hl", self.C.double(), krylov(L, dA, dB)).float()

    # -- recurrent view -----------------------------------------------------------------------
    def default_state(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, self.d_model, self.d_state, device=self.C.device)

    def _discrete_step(self) -> dict:
        dA, dB = self.discretize()
        return {"dA": dA.float(), "dB": dB.float()}

    def _step(self, u, state, m):
        state = torch.einsum("hmn,bhn->bhm", m["dA"], state) + m["dB"] * u.unsqueeze(-1)  # (B H N)
        y = torch.einsum("hn,bhn->bh", self.C, state) + self.D * u  # (B H)
        return y, state
