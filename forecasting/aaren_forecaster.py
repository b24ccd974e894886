"""Aaren as the backbone of window forecasting (``SeriesDataModule``; ``tsuite forecast``; the pyfunc model).

Feng et al. 2024, "Attention as an RNN" (arXiv 2405.13956), section 4.4: time
series forecasting with Aaren in place of a Transformer's attention.

Each of the ``n_lags`` scaled inputs becomes a token (a linear embedding of the
value plus a learned embedding of its position in the window: Aaren's constant
query has no other way to tell lags apart); a stack of Aaren blocks reads the
window, and a linear head maps the output after the newest value to the
``horizon`` forecasts. Training, metrics, multi-step recursion and
:meth:`predict_frame` come from :class:`~tsuite.forecasting.base.WindowForecaster`.

Differences from the paper: the paper follows the Time-Series-Library setting
(an encoder-decoder forecaster over long multivariate windows); here one global
univariate model reads each series' window, as AR-Net does, so the two are
interchangeable in configs; with ``linear_skip`` a linear map of the window is added to the
head's output (an AR path, as in AR-Net), so the model starts from, and can fall back to, a
linear autoregression.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from tsuite.forecasting.aaren import AarenEncoder
from tsuite.forecasting.base import WindowForecaster
from tsuite.forecasting.event_model import warmup_cosine


class AarenForecaster(WindowForecaster):
    """Aaren window forecaster.

    Args:
        n_lags: window length (the data's n_lags).
        horizon: steps forecast at once.
        d_model, n_heads, n_layers, d_ff, dropout: encoder sizes.
        linear_skip: add a linear AR path from the window to the forecasts.
        loss: ``mse`` or ``huber``.
        lr, weight_decay: AdamW, linear warm-up then cosine decay of the learning rate.
    """

    def __init__(
        self,
        n_lags: int,
        horizon: int = 1,
        d_model: int = 32,
        n_heads: int = 4,
        n_layers: int = 2,
        d_ff: int = 64,
        dropout: float = 0.0,
        linear_skip: bool = True,
        loss: Literal["mse", "huber"] = "mse",
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.n_lags, self.horizon, self.loss = n_lags, horizon, loss
        self.value_embedding = nn.Linear(1, d_model)
        self.position = nn.Parameter(torch.randn(n_lags, d_model) * 0.1)  # oldest → newest lag
        self.encoder = AarenEncoder(d_model, n_heads, n_layers, d_ff, dropout)
        self.head = nn.Linear(d_model, horizon)
        self.skip = nn.Linear(n_lags, horizon) if linear_skip else None  # a linear AR path beside the encoder
        self._init_metrics()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.value_embedding(x[..., None]) + self.position  # (B, n_lags, D)
        h, _ = self.encoder(tokens)  # (B, n_lags, D)
        out = self.head(h[:, -1])  # (B, horizon)
        return out if self.skip is None else out + self.skip(x)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        sched = warmup_cosine(opt, max(int(self.trainer.estimated_stepping_batches), 1))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
