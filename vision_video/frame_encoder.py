"""Per-frame CNN encoders for LRCN: frames (B, T, H, W, 3) uint8 → features (B, T, D).

``small``: three 3x3 conv → batch norm → ReLU → 2x2 max-pool blocks and a fully connected
layer, trained from scratch. It keeps the spatial layout up to the last layer
(flatten, no global pooling), so the recurrent layers above can follow where
things move. ``resnet18``: torchvision's ResNet-18 with random weights
(``weights=None``, nothing is downloaded) and its classifier replaced by a
linear layer to D. ``freeze=True`` fixes the convolutional weights (the LSTM
and heads still learn), as in the paper's fixed-CNN runs.

Pixels are scaled to [-1, 1] inside the encoder, so every caller feeds raw uint8 frames.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

EncoderName = Literal["small", "resnet18"]


class SmallFrameCNN(nn.Module):
    """conv(3→c) → conv(c→2c) → conv(2c→2c), each 3x3 + batch norm + ReLU + 2x2 max-pool, then flatten → linear → ReLU."""

    def __init__(self, frame_size: int, feature_dim: int, channels: int = 16):
        super().__init__()
        c = channels
        self.conv = nn.Sequential(
            nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c, 2 * c, 3, padding=1), nn.BatchNorm2d(2 * c), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.BatchNorm2d(2 * c), nn.ReLU(), nn.MaxPool2d(2),
        )
        side = frame_size // 8
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(2 * c * side * side, feature_dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x))  # (N, 3, S, S) -> (N, D)


class FrameEncoder(nn.Module):
    """Encode every frame of a clip independently (shared weights over time).

    Args:
        frame_size: side of the square frames the encoder expects.
        feature_dim: D, features per frame.
        encoder: ``small`` (default) or ``resnet18`` (torchvision, random initialisation).
        freeze: keep the convolutional weights fixed.
        channels: width of the small CNN.
    """

    def __init__(self, frame_size: int, feature_dim: int = 256, encoder: EncoderName = "small",
                 freeze: bool = False, channels: int = 16):
        super().__init__()
        if encoder == "small":
            if frame_size % 8:
                raise ValueError(f"the small CNN needs a frame_size divisible by 8, got {frame_size}")
            self.cnn = SmallFrameCNN(frame_size, feature_dim, channels)
            frozen = self.cnn.conv
        elif encoder == "resnet18":
            from torchvision.models import resnet18  # optional dependency: pip install 'tsuite[vision]'

            self.cnn = resnet18(weights=None)
            self.cnn.fc = nn.Sequential(nn.Linear(self.cnn.fc.in_features, feature_dim), nn.ReLU())
            frozen = nn.ModuleList([m for name, m in self.cnn.named_children() if name != "fc"])
        else:
            raise ValueError(f"unknown encoder {encoder!r}; expected small or resnet18")
        if freeze:
            for p in frozen.parameters():
                p.requires_grad_(False)
        self.feature_dim = feature_dim

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        B, T = frames.shape[:2]  # frames (B, T, H, W, 3) uint8
        x = frames.reshape(B * T, *frames.shape[2:]).permute(0, 3, 1, 2).float()  # (B*T, 3, H, W)
        x = x / 127.5 - 1.0
        return self.cnn(x).reshape(B, T, -1)  # (B, T, D)
