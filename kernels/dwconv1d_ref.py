"""Pure-PyTorch reference for the depthwise dilated 1-D convolution (TCN, FSMN) and its streaming step.

Channel c of x (B, C, L) is convolved with its own taps weight[c] (K of them),
spaced `dilation` = d steps apart, as a cross-correlation (F.conv1d's
convention) with P zeros on the left and (K - 1) d - P on the right:

    y[b, c, t] = bias[c] + sum_{j<K} weight[c, j] * x[b, c, t + j d - P]      (x = 0 outside 0..L-1)

- causal:  P = (K - 1) d; y[t] sees x[t - (K-1) d], ..., x[t - d], x[t]; the
  last tap weight[:, K-1] multiplies the current input.
- centred: P = ((K - 1) d) // 2, the "same"-length convolution FSMN uses
  (K = 2 order - 1). When (K - 1) d is odd (even K, odd d) the extra tap reaches
  the future: the right side gets ceil((K-1) d / 2) inputs, the left
  floor((K-1) d / 2), exactly as F.conv1d(..., padding="same").

`dwconv1d_ref` is the CPU path of `tsuite.kernels.dwconv1d` and the reference
its Triton kernels are tested against; `dwconv1d_step` is the streaming form of
the causal convolution (exported by `tsuite.kernels`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def left_padding(kernel_size: int, dilation: int, causal: bool) -> int:
    """P, the zeros on the left: (K - 1) d when causal, floor((K - 1) d / 2) when centred."""
    span = (kernel_size - 1) * dilation
    return span if causal else span // 2


def check_args(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dilation: int) -> torch.Tensor:
    """Validate shapes; return the weight as (C, K) (an nn.Conv1d weight (C, 1, K) is accepted too)."""
    if x.dim() != 3:
        raise ValueError(f"x must have shape (B, C, L); got {tuple(x.shape)}")
    C = x.shape[1]
    if weight.dim() == 3 and weight.shape[1] == 1:
        weight = weight[:, 0]
    if weight.dim() != 2 or weight.shape[0] != C or weight.shape[1] < 1:
        raise ValueError(
            f"weight must have shape (C, K) = ({C}, K) with K >= 1 (or nn.Conv1d's (C, 1, K)); "
            f"got {tuple(weight.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (C,):
        raise ValueError(f"bias must have shape (C,) = ({C},); got {tuple(bias.shape)}")
    if int(dilation) != dilation or dilation < 1:
        raise ValueError(f"dilation must be a positive integer; got {dilation!r}")
    if not (x.dtype.is_floating_point and weight.dtype.is_floating_point):
        raise ValueError(f"x and weight must be floating point; got {x.dtype} and {weight.dtype}")
    return weight


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def dwconv1d_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    dilation: int = 1,
    causal: bool = True,
) -> torch.Tensor:
    """Depthwise convolution through F.conv1d(groups=C) on explicitly padded x.

    x (B, C, L), weight (C, K) or (C, 1, K), bias (C,) or None. Computes in
    float32 (float64 for float64 x), differentiable in all three, returns
    (B, C, L) in x's dtype.
    """
    weight = check_args(x, weight, bias, dilation)
    K = weight.shape[1]
    ct = _compute_dtype(x)
    P = left_padding(K, dilation, causal)
    xp = F.pad(x.to(ct), (P, (K - 1) * dilation - P))
    b = None if bias is None else bias.to(ct)
    y = F.conv1d(xp, weight.to(ct)[:, None, :], b, dilation=dilation, groups=x.shape[1])
    return y.to(x.dtype)


def dwconv1d_step(
    state: torch.Tensor | None,
    x_t: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    dilation: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the causal depthwise convolution, for streaming.

    Args:
        state: (B, C, (K - 1) d), the last (K - 1) d inputs, oldest first (None
            or zeros before the first step: the convolution's left zero padding).
        x_t: (B, C), the new input.
        weight: (C, K) or (C, 1, K); bias: (C,) or None; dilation: d.

    Returns:
        (y_t, new_state): y_t (B, C) in x_t's dtype, equal to step t of
        `dwconv1d(x, weight, bias, dilation, causal=True)`; new_state (B, C,
        (K - 1) d) in x_t's dtype (the inputs themselves, unrounded).
        Differentiable; pure PyTorch on any device.
    """
    if x_t.dim() != 2:
        raise ValueError(f"x_t must have shape (B, C); got {tuple(x_t.shape)}")
    weight = check_args(x_t[:, :, None], weight, bias, dilation)
    B, C = x_t.shape
    K = weight.shape[1]
    span = (K - 1) * dilation
    if state is None:
        state = x_t.new_zeros(B, C, span)
    if tuple(state.shape) != (B, C, span):
        raise ValueError(f"state must have shape (B, C, (K - 1) * dilation) = {(B, C, span)}; got {tuple(state.shape)}")
    window = torch.cat([state.to(x_t.dtype), x_t[:, :, None]], dim=2)  # (B C span+1), oldest first
    ct = _compute_dtype(x_t)
    taps = window[:, :, ::dilation].to(ct)  # (B C K): x[t - (K-1) d], ..., x[t]
    y = (taps * weight.to(ct)).sum(-1)
    if bias is not None:
        y = y + bias.to(ct)
    return y.to(x_t.dtype), window[:, :, 1:]
