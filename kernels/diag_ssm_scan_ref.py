"""Pure-PyTorch references for the diagonal state-space scan (S4D / LSSL recurrent mode).

`diag_ssm_scan_ref` is exact (no truncation, no FFT), differentiable for every
input and runs on any device; it is the CPU path of `diag_ssm_scan` and the
ground truth for the Triton kernels' gradients. It works chunk by chunk: inside
a chunk of `chunk` steps the output is a Toeplitz matrix product, between
chunks the complex state is carried exactly as in the recurrence.
`diag_ssm_scan_loop` is the recurrence itself, step by step in float64, for tests.

Conventions (S4D, Gu et al. 2022, `models/s4/s4d.py`): A holds one eigenvalue of
each conjugate pair, so the real output is y = 2 Re(C h); discretisation is the
zero-order hold, Ā = exp(dt A), B̄ = (exp(dt A) - 1) / A * B.
"""

from __future__ import annotations

import torch


def zoh(A: torch.Tensor, B: torch.Tensor, dt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-order-hold discretisation: returns (dt A, B̄) with B̄ = (exp(dt A) - 1) / A * B, all (H, N)."""
    dtA = dt.unsqueeze(-1) * A  # (H N)
    Bbar = (torch.exp(dtA) - 1.0) / A * B  # (H N)
    return dtA, Bbar


def _promote(u, A, B, C, dt, D, h0):
    """Real dtype of the arithmetic (float32, or float64 for float64 input) and the inputs cast to it."""
    rdt = torch.float64 if u.dtype == torch.float64 else torch.float32
    cdt = torch.complex128 if rdt == torch.float64 else torch.complex64
    cast = lambda z, dt_: None if z is None else z.to(dt_)  # noqa: E731
    return rdt, cdt, u.to(rdt), A.to(cdt), B.to(cdt), C.to(cdt), dt.to(rdt), cast(D, rdt), cast(h0, cdt)


def diag_ssm_scan_ref(
    u: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    dt: torch.Tensor,
    D: torch.Tensor | None = None,
    h0: torch.Tensor | None = None,
    return_final_state: bool = False,
    chunk: int = 64,
):
    """Reference of `tsuite.kernels.diag_ssm_scan` (same arguments and results, see there).

    Arithmetic in float32/complex64 (float64/complex128 when u is float64);
    y is returned in u's dtype, the final state as complex.
    """
    rdt, cdt, x, A, B, C, dt, D, h0 = _promote(u, A, B, C, dt, D, h0)
    batch, H, L = x.shape
    N = A.shape[-1]
    T = max(1, min(chunk, L))
    dtA, Bbar = zoh(A, B, dt)  # (H N)
    steps = torch.arange(T + 1, device=x.device, dtype=rdt)
    a_pow = torch.exp(dtA.unsqueeze(-1) * steps)  # (H N T+1): Ā^k
    kvec = 2 * torch.einsum("hn,hnl->hl", C * Bbar, a_pow[..., :T]).real  # (H T): K_l = 2 Re(C Ā^l B̄)
    lag = torch.arange(T, device=x.device)
    lag = lag.unsqueeze(1) - lag.unsqueeze(0)  # (T T): t - s
    kmat = kvec[:, lag.clamp(min=0)] * (lag >= 0)  # (H T T): causal Toeplitz
    P = C.unsqueeze(-1) * a_pow[..., 1:]  # (H N T): C Ā^{t+1}
    h = torch.zeros(batch, H, N, dtype=cdt, device=x.device) if h0 is None else h0  # (B H N)
    ys = []
    for start in range(0, L, T):
        Tc = min(T, L - start)
        uc = x[..., start : start + Tc]  # (B H Tc)
        yc = torch.einsum("bhs,hts->bht", uc, kmat[:, :Tc, :Tc])
        yc = yc + 2 * torch.einsum("bhn,hnt->bht", h, P[..., :Tc]).real
        Q = Bbar.unsqueeze(-1) * a_pow[..., :Tc].flip(-1)  # (H N Tc): Ā^{Tc-1-s} B̄
        h = a_pow[..., Tc] * h + torch.einsum("bhs,hns->bhn", uc.to(cdt), Q)
        ys.append(yc)
    y = torch.cat(ys, dim=-1)  # (B H L)
    if D is not None:
        y = y + D.unsqueeze(-1) * x
    y = y.to(u.dtype)
    return (y, h) if return_final_state else y


def diag_ssm_scan_loop(u, A, B, C, dt, D=None, h0=None):
    """The recurrence h_t = Ā h_{t-1} + B̄ u_t, y_t = 2 Re(C h_t) + D u_t, one step at a time in float64.

    Returns (y float64 (B, H, L), final state complex128 (B, H, N)). Slow: for tests only.
    """
    u = u.double()
    A, B, C = A.to(torch.complex128), B.to(torch.complex128), C.to(torch.complex128)
    dtA, Bbar = zoh(A, B, dt.double())
    a = torch.exp(dtA)  # (H N)
    h = torch.zeros(u.shape[0], *A.shape, dtype=torch.complex128, device=u.device) if h0 is None else h0.to(torch.complex128)
    ys = []
    for t in range(u.shape[-1]):
        h = a * h + Bbar * u[..., t : t + 1]
        ys.append(2 * (C * h).sum(-1).real)
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + D.double().unsqueeze(-1) * u
    return y, h
