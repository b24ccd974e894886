"""Conv-TasNet, the separation baseline: torchaudio's implementation behind MossFormer2's (B, T) -> (B, S, T) interface.

Luo & Mesgarani 2019, "Conv-TasNet: Surpassing Ideal Time-Frequency Magnitude Masking for Speech
Separation", arXiv 1809.07454. The network is ``torchaudio.models.ConvTasNet`` unchanged (its defaults
are the paper's best non-causal configuration, N=512, L=16, B=Sc=128, H=512, P=3, X=8, R=3, sigmoid
masks, global layer norm: 5.0M parameters); this wrapper only fixes the tensor interface so that the
two separators are interchangeable, and pads inputs shorter than the encoder kernel.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchaudio.models import ConvTasNet as _TorchaudioConvTasNet

__all__ = ["ConvTasNet"]


class ConvTasNet(nn.Module):
    """Conv-TasNet: mix (B, T) float waveform -> (B, num_speakers, T) separated waveforms.

    Args:
        num_speakers: S, the number of sources.
        enc_kernel_size: encoder/decoder kernel L (16, stride L/2).
        enc_channels: encoder filters N (512).
        bottleneck_channels: B = Sc, the TCN's bottleneck and skip width (128).
        hidden_channels: H, the TCN blocks' hidden width (512).
        kernel_size: P, the TCN depthwise kernel (3).
        num_layers: X, dilated blocks per repeat (8, dilations 1 .. 128).
        num_stacks: R, repeats (3).
        mask_activation: "sigmoid" or "relu".
    """

    def __init__(
        self,
        num_speakers: int = 2,
        enc_kernel_size: int = 16,
        enc_channels: int = 512,
        bottleneck_channels: int = 128,
        hidden_channels: int = 512,
        kernel_size: int = 3,
        num_layers: int = 8,
        num_stacks: int = 3,
        mask_activation: str = "sigmoid",
    ) -> None:
        super().__init__()
        self.num_speakers, self.enc_kernel_size = num_speakers, enc_kernel_size
        self.net = _TorchaudioConvTasNet(
            num_sources=num_speakers,
            enc_kernel_size=enc_kernel_size,
            enc_num_feats=enc_channels,
            msk_kernel_size=kernel_size,
            msk_num_feats=bottleneck_channels,
            msk_num_hidden_feats=hidden_channels,
            msk_num_layers=num_layers,
            msk_num_stacks=num_stacks,
            msk_activate=mask_activation,
        )

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """mix (B, T) -> (B, S, T)."""
        if mix.dim() != 2:
            raise ValueError(f"mix must have shape (B, T); got {tuple(mix.shape)}")
        T = mix.shape[1]
        x = mix if T >= self.enc_kernel_size else F.pad(mix, (0, self.enc_kernel_size - T))
        y = self.net(x[:, None, :])  # (B, S, T'), torchaudio pads to whole strides and trims back
        return y[..., :T] if y.shape[-1] >= T else F.pad(y, (0, T - y.shape[-1]))
