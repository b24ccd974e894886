"""Forecast metrics beyond torchmetrics' own: MASE and sTPE (coefficient recovery of AR-Net)."""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics import Metric


class MeanAbsoluteScaledError(Metric):
    """MASE: mean |ŷ − y| / s, where s is each series' in-sample MAE of the seasonal naive forecast.

    ``update(preds, target, scale)`` takes the per-sample scale ``s`` (B,) that
    the data module computed on the training part of each series.
    """

    is_differentiable = True
    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor, scale: torch.Tensor) -> None:
        err = (preds - target).abs() / scale.reshape(-1, *([1] * (preds.dim() - 1)))
        self.total += err.sum().double()
        self.count += err.numel()

    def compute(self) -> torch.Tensor:
        return (self.total / self.count).float()


def stpe(estimated, true) -> float:
    """Symmetric total percentage error of estimated AR coefficients, in percent (AR-Net paper, eq. 5).

    sTPE = 100 · Σ|ŵ − w| / Σ(|ŵ| + |w|); the shorter vector is padded with
    zeros (a model with more lags than the process has zero true weights there).
    """
    est = np.asarray(torch.as_tensor(estimated).detach().cpu(), dtype=np.float64).ravel()
    ref = np.asarray(true, dtype=np.float64).ravel()
    if not np.all(np.isfinite(est)):
        raise ValueError("stpe: the estimated coefficients are not all finite")
    n = max(len(est), len(ref))
    est, ref = np.pad(est, (0, n - len(est))), np.pad(ref, (0, n - len(ref)))
    denom = np.abs(est).sum() + np.abs(ref).sum()
    return float(100.0 * np.abs(est - ref).sum() / denom) if denom > 0 else 0.0
