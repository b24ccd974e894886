"""The interface shared by the S4, S4D and LSSL layers, and the structured-matrix primitives they use.

An :class:`SSMLayer` is H independent single-input single-output linear
state-space models x' = A x + B u, y = C x + D u, one per channel, in two
views that give the same outputs:

- convolution (training): ``forward(u)`` builds the kernel K_l = C Ā^l B̄
  (``kernel(L)``, each layer by its own structured algorithm) and convolves it
  with the input through ``fftconv``;
- recurrence (streaming, generation): ``step(u_t, state)`` advances the
  discrete system by one step with O(1) memory in time, and
  ``recurrent(u, state)`` runs it over a whole sequence.

``mode`` chooses the view ``forward`` uses: ``"conv"`` (the default) or
``"recurrent"`` (differentiable, so usable in training too: S4D's runs on the
fused diagonal scan; S4's and LSSL's are a Python loop of steps, for checks
only); ``conv_backend`` is passed to ``tsuite.kernels.fftconv`` (``"torch"``
forces the plain ``torch.fft`` reference, the peer of the benchmarks).

Parameters of the state matrices (A, B, Δt, and P for S4) carry an ``_optim``
attribute with their own learning rate and no weight decay, as in the papers;
:func:`tsuite.forecasting.ssm_backbone.ssm_param_groups` reads it.
"""

from __future__ import annotations

import abc
import math

import torch
from torch import nn

import tsuite.kernels as _kernels

# The Triton FFT convolution when the kernels package exports it (not just a submodule of that name).
_kernel_fftconv = getattr(_kernels, "fftconv", None)
_kernel_fftconv = _kernel_fftconv if callable(_kernel_fftconv) else None


def fftconv(u: torch.Tensor, k: torch.Tensor, D: torch.Tensor | None = None, backend: str = "auto") -> torch.Tensor:
    """Causal convolution y_t = Σ_{s≤t} k_{t−s} u_s (+ D u_t) of u (B, H, L) with k (H, L), by FFT.

    Uses ``tsuite.kernels.fftconv`` (with ``backend``: ``auto``, ``triton`` or
    ``torch``) when available; otherwise zero-pads to 2L (no circular
    wrap-around) with ``torch.fft``. Returns u's dtype.
    """
    L = u.shape[-1]
    k = k[..., :L]
    if _kernel_fftconv is not None:
        return _kernel_fftconv(u, k, D, backend=backend)
    n = 2 * L
    y = torch.fft.irfft(torch.fft.rfft(u.float(), n=n) * torch.fft.rfft(k.float(), n=n), n=n)[..., :L]  # (B H L)
    if D is not None:
        y = y + D.float().unsqueeze(-1) * u.float()
    return y.to(u.dtype)


def krylov(L: int, A: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Krylov matrix [b, A b, A² b, …, A^{L−1} b] (…, N, L) of A (…, N, N) and b (…, N), by doubling.

    log2(L) matrix products: the columns computed so far are multiplied by
    A^{2^j}, then A is squared.
    """
    x = b.unsqueeze(-1)  # (... N 1)
    power = A
    while x.shape[-1] < L:
        x = torch.cat([x, power @ x], dim=-1)  # (... N 2l)
        if x.shape[-1] < L:
            power = power @ power
    return x[..., :L]


def matrix_power(A: torch.Tensor, n: int) -> torch.Tensor:
    """A^n (…, N, N) by repeated squaring (n ≥ 0)."""
    out = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device).expand_as(A)
    while n:
        if n & 1:
            out = out @ A
        n >>= 1
        if n:
            A = A @ A
    return out


def log_dt_init(H: int, dt_min: float, dt_max: float) -> torch.Tensor:
    """log Δt (H,) drawn uniformly in [log dt_min, log dt_max] (the papers' initialisation)."""
    if not 0 < dt_min <= dt_max:
        raise ValueError(f"need 0 < dt_min ≤ dt_max, got dt_min={dt_min}, dt_max={dt_max}")
    return torch.rand(H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)


class SSMLayer(nn.Module, abc.ABC):
    """H parallel linear SSMs: u (B, H, L) → y (B, H, L), by convolution or by recurrence.

    Subclasses define :meth:`kernel`, :meth:`default_state` and
    :meth:`_discrete_step` (the discrete matrices a step needs); they own a
    ``D`` parameter (H,) for the skip term D u.
    """

    d_model: int
    D: nn.Parameter
    MODES = ("conv", "recurrent")

    def __init__(self) -> None:
        super().__init__()
        self._step_cache: dict | None = None
        self.mode, self.conv_backend = "conv", "auto"

    def set_mode(self, mode: str, conv_backend: str = "auto") -> None:
        """The view :meth:`forward` uses: ``conv`` (FFT convolution through ``conv_backend``) or ``recurrent``."""
        if mode not in self.MODES or conv_backend not in ("auto", "triton", "torch"):
            raise ValueError(f"mode must be one of {self.MODES} and conv_backend 'auto', 'triton' or 'torch'; "
                             f"got {mode!r}, {conv_backend!r}")
        self.mode, self.conv_backend = mode, conv_backend

    def register_ssm(self, name: str, tensor: torch.Tensor, trainable: bool = True, lr: float | None = None) -> None:
        """Register a state-matrix tensor: a parameter with its own ``lr`` and no weight decay, or a fixed buffer."""
        if not trainable:
            self.register_buffer(name, tensor)
            return
        self.register_parameter(name, nn.Parameter(tensor))
        optim = {"weight_decay": 0.0}
        if lr is not None:
            optim["lr"] = lr
        getattr(self, name)._optim = optim

    @abc.abstractmethod
    def kernel(self, L: int) -> torch.Tensor:
        """The convolution kernel K (H, L), K_l = C Ā^l B̄, in float32."""

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """u (B, H, L) → y (B, H, L) in the view of ``mode`` (convolution unless set otherwise)."""
        if self.training:
            self._step_cache = None  # the parameters are changing: discrete step matrices go stale
        if self.mode == "recurrent":
            return self.recurrent(u)[0]
        return fftconv(u, self.kernel(u.shape[-1]), self.D, self.conv_backend)

    # -- recurrent view ------------------------------------------------------------------------
    @abc.abstractmethod
    def default_state(self, batch: int) -> torch.Tensor:
        """The zero state for ``batch`` sequences."""

    @abc.abstractmethod
    def _discrete_step(self) -> dict:
        """The tensors :meth:`_step` needs (discrete Ā, B̄, C, ...), computed from the parameters."""

    @abc.abstractmethod
    def _step(self, u: torch.Tensor, state: torch.Tensor, m: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """One step with the tensors ``m`` of :meth:`_discrete_step`."""

    def setup_step(self) -> None:
        """(Re)compute the discrete step matrices from the current parameters; call after any parameter update."""
        self._step_cache = self._discrete_step()

    def step(self, u: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Recurrent view, one step: u_t (B, H), state → (y_t (B, H), next state). O(1) memory in time."""
        if self._step_cache is None:
            self.setup_step()
        return self._step(u, state, self._step_cache)

    def recurrent(self, u: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Recurrent view over a sequence: u (B, H, L) → (y (B, H, L), final state), from ``state`` or zeros."""
        m = self._discrete_step()
        state = self.default_state(u.shape[0]) if state is None else state
        ys = []
        for t in range(u.shape[-1]):
            y, state = self._step(u[..., t], state, m)
            ys.append(y)
        return torch.stack(ys, dim=-1), state
