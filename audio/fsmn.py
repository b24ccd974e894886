"""MossFormer2's recurrent module: the gated, dilated, dense FSMN block, and the convolutional feed-forward unit.

Part of :class:`tsuite.audio.MossFormer2` (Zhao et al. 2023, "MossFormer2: Combining Transformer and
RNN-Free Recurrent Network for Enhanced Time-Domain Monaural Speech Separation", arXiv 2312.11825).
The FSMN (feedforward sequential memory network) replaces a recurrence by a learnable memory: a long
depthwise convolution along time (memory order 20, kernel 2*20-1 = 39, centred). MossFormer2 stacks two
of them with dilations 1 and 2 and dense connections (layer 2 sees layer 1's output and the input), and
wraps them in a gated convolutional unit between a 512->256 bottleneck and a 256->512 projection.

Every depthwise convolution here runs on :func:`tsuite.kernels.dwconv1d` on CUDA (Triton) and on the
CPU as ``F.conv2d(groups=C)`` of the channels-last (B, C, 1, L) view (oneDNN's depthwise path: 27x
faster at (C, L, K) = (2048, 4000, 17) than ``F.conv1d`` on the same view, which the kernels package's
CPU reference uses); both compute the same centred ("same"-length) convolution. Tensors are channels-last,
(B, L, C), as the linear layers want them; the convolutions read the (B, C, L) transposed view in place.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from tsuite.kernels import dwconv1d

__all__ = ["ConvFFN", "DilatedDenseMemory", "GatedFSMNBlock", "ScaleNorm", "depthwise_conv_time"]


def depthwise_conv_time(x: torch.Tensor, weight: torch.Tensor, dilation: int = 1) -> torch.Tensor:
    """Centred depthwise convolution along time of a channels-last x (B, L, C) with taps weight (C, K).

    y[b, t, c] = sum_j weight[c, j] x[b, t + j d - (K-1) d / 2, c], zero padded; (K-1) d must be even.
    CUDA: tsuite.kernels.dwconv1d (Triton, fp32 accumulation, any dtype); CPU: F.conv2d(groups=C) (oneDNN).
    """
    C, K = weight.shape[0], weight.shape[-1]
    w = weight.reshape(C, K)  # (C, K)
    xt = x.transpose(1, 2)  # (B, C, L), a view
    if x.is_cuda:
        y = _dwconv_cuda(xt, w, dilation)
    else:
        return _depthwise_conv_cpu(x, w, dilation)
    return y.transpose(1, 2)  # (B, L, C)


def _depthwise_conv_cpu(x: torch.Tensor, w: torch.Tensor, dilation: int) -> torch.Tensor:
    """The CPU form: a (B, C, 1, L) image in channels-last memory, oneDNN's fast depthwise path.

    oneDNN is fast only for a dense channels-last input and no dilation: a dilation d is run as d
    undilated convolutions of the time phases t = p mod d (batched), which is the same sum.
    """
    B, L, C = x.shape
    K = w.shape[-1]
    pad = (K - 1) * dilation // 2
    if dilation > 1:
        Lp = -(-L // dilation) * dilation
        xp = F.pad(x, (0, 0, 0, Lp - L)) if Lp != L else x  # (B, Lp, C)
        phases = xp.view(B, Lp // dilation, dilation, C).transpose(1, 2).reshape(B * dilation, Lp // dilation, C)
        y = _depthwise_conv_cpu(phases.contiguous(), w, 1) if pad % dilation == 0 else None
        if y is not None:
            y = y.view(B, dilation, Lp // dilation, C).transpose(1, 2).reshape(B, Lp, C)  # (B, Lp, C)
            return y[:, :L]
    # float32 always: oneDNN's bfloat16 depthwise kernels stalled for some channel counts (C = 8, 16)
    xf = x.to(torch.promote_types(x.dtype, torch.float32)).contiguous()
    with torch.autocast("cpu", enabled=False):
        y = F.conv2d(xf.transpose(1, 2)[:, :, None, :], w.to(xf.dtype)[:, None, None, :], padding=(0, pad),
                     dilation=(1, dilation), groups=C)  # (B, C, 1, L), channels-last
    return y[:, :, 0, :].transpose(1, 2).to(x.dtype)  # (B, L, C)


def _dwconv_cuda(x: torch.Tensor, weight: torch.Tensor, dilation: int) -> torch.Tensor:
    """tsuite.kernels.dwconv1d, centred; under torch.compile one opaque custom-op node of the graph."""
    return dwconv1d(x, weight.to(x.dtype) if x.dtype == torch.float64 else weight, dilation=dilation, causal=False)


class ScaleNorm(nn.Module):
    """x / max(||x||_2 / sqrt(dim), eps) * g, one learnable gain g (Nguyen & Salazar 2019)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.scale = dim**-0.5
        self.eps = eps
        self.g = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True) * self.scale  # (..., 1)
        return x / norm.clamp(min=self.eps) * self.g


class ConvFFN(nn.Module):
    """The convolution-augmented projection of MossFormer(2): norm -> Linear -> SiLU -> x + dwconv(x) -> dropout.

    norm is ScaleNorm ("scale", the attention module's projections) or LayerNorm ("layer", the FSMN
    gates); the depthwise convolution (kernel 17, no bias) is centred and added to its input.
    """

    def __init__(
        self, dim_in: int, dim_out: int, norm: str = "layer", kernel_size: int = 17, dropout: float = 0.1
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd for a centred convolution; got {kernel_size}")
        self.norm = ScaleNorm(dim_in) if norm == "scale" else nn.LayerNorm(dim_in)
        self.linear = nn.Linear(dim_in, dim_out)
        self.conv = nn.Conv1d(dim_out, dim_out, kernel_size, groups=dim_out, bias=False)  # holds (C, 1, K) taps
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.linear(self.norm(x)))  # (B, L, dim_out)
        h = h + depthwise_conv_time(h, self.conv.weight)  # (B, L, dim_out)
        return self.dropout(h)


class DilatedDenseMemory(nn.Module):
    """The dilated dense FSMN memory: `depth` centred convolutions of width 2*order-1, dilation 2**i.

    Layer i reads the concatenation [out_{i-1}, ..., out_0, x] (i*C + C channels) in C groups of i+1
    channels each (the release's grouped Conv2d: group c reads channels c(i+1) .. c(i+1)+i of the
    concatenation), then InstanceNorm over time (affine) and a per-channel PReLU. Returns the last
    layer's output. A grouped convolution with i+1 inputs per group is one depthwise convolution over
    all (i+1)C channels followed by a sum of each group's i+1 outputs: that is how it runs on dwconv1d.
    """

    def __init__(self, channels: int, order: int = 20, depth: int = 2) -> None:
        super().__init__()
        self.channels, self.depth = channels, depth
        self.kernel_size = 2 * order - 1  # 39 for order 20
        # weight i: (C, i+1, K), the release's Conv2d weight (C, i+1, K, 1) without the trailing 1
        self.weights = nn.ParameterList()
        for i in range(depth):
            w = torch.empty(channels, i + 1, self.kernel_size)
            bound = 1.0 / ((i + 1) * self.kernel_size) ** 0.5  # PyTorch's default conv initialisation
            nn.init.uniform_(w, -bound, bound)
            self.weights.append(nn.Parameter(w))
        self.norm_weight = nn.Parameter(torch.ones(depth, channels))
        self.norm_bias = nn.Parameter(torch.zeros(depth, channels))
        self.prelu = nn.Parameter(torch.full((depth, channels), 0.25))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, C = x.shape
        skip = x  # (B, L, (i+1) C): [out_{i-1}, ..., out_0, x]
        out = x
        for i in range(self.depth):
            w = self.weights[i]  # (C, i+1, K)
            y = depthwise_conv_time(skip, w.reshape(C * (i + 1), self.kernel_size), dilation=2**i)  # (B, L, (i+1)C)
            if i > 0:  # (B, L, C): each group's i+1 outputs summed (strided adds: a size-2 sum() is slow on CPU)
                y = sum(y[..., j :: i + 1] for j in range(1, i + 1)) + y[..., 0 :: i + 1]
            y32 = y.to(torch.promote_types(y.dtype, torch.float32))
            mean = y32.mean(1, keepdim=True)  # (B, 1, C): instance norm over time
            var = (y32 * y32).mean(1, keepdim=True).sub_(mean.square()).clamp_(min=0.0)
            y = ((y32 - mean) * torch.rsqrt(var + 1e-5)).to(y.dtype) * self.norm_weight[i] + self.norm_bias[i]
            out = F.prelu(y.transpose(1, 2), self.prelu[i]).transpose(1, 2)  # (B, L, C) PReLU per channel
            if i + 1 < self.depth:
                skip = torch.cat([out, skip], dim=-1)  # (B, L, (i+2) C)
        return out


class FSMNMemory(nn.Module):
    """UniDeepFSMN with the dilated dense memory: x + Memory(W_p ReLU(W_1 x + b_1))."""

    def __init__(self, channels: int, order: int = 20, depth: int = 2) -> None:
        super().__init__()
        self.linear = nn.Linear(channels, channels)
        self.project = nn.Linear(channels, channels, bias=False)
        self.memory = DilatedDenseMemory(channels, order, depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.project(F.relu(self.linear(x)))  # (B, L, C)
        return x + self.memory(p)


class GatedFSMNBlock(nn.Module):
    """MossFormer2's recurrent module (the release's Gated_FSMN_Block_Dilated), on channels-last x (B, L, D).

        h = LN(PReLU(W_in x))                      # bottleneck D -> C (512 -> 256)
        g = ConvFFN_v(h) * FSMN(ConvFFN_u(h)) + h  # gated convolutional unit around the FSMN memory
        y = x + W_out LN(g)                        # C -> D, residual
    """

    def __init__(
        self,
        dim: int = 512,
        channels: int = 256,
        order: int = 20,
        depth: int = 2,
        kernel_size: int = 17,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.proj_in = nn.Linear(dim, channels)
        self.prelu = nn.PReLU()
        self.norm1 = nn.LayerNorm(channels)
        self.to_u = ConvFFN(channels, channels, "layer", kernel_size, dropout)
        self.to_v = ConvFFN(channels, channels, "layer", kernel_size, dropout)
        self.fsmn = FSMNMemory(channels, order, depth)
        self.norm2 = nn.LayerNorm(channels)
        self.proj_out = nn.Linear(channels, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(self.prelu(self.proj_in(x)))  # (B, L, C)
        g = self.to_v(h) * self.fsmn(self.to_u(h)) + h  # (B, L, C)
        return x + self.proj_out(self.norm2(g))  # (B, L, D)
