"""``WindowForecaster``: the shared Lightning logic of window → horizon forecasting models.

A subclass defines ``forward(x)`` mapping scaled inputs ``(B, n_lags)`` to
scaled forecasts ``(B, horizon)`` (and may add ``regularization()``). This
class supplies training and evaluation steps (MAE, RMSE, MASE, sMAPE in the
series' original units) and :meth:`predict_frame`, the table-in, table-out
forecast used by ``tsuite forecast`` and the MLflow pyfunc model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection, SymmetricMeanAbsolutePercentageError

from tsuite.forecasting.metrics import MeanAbsoluteScaledError
from tsuite.forecasting.validation import series_freq, validate_series
from tsuite.module import TsuiteModule
from tsuite.tables import InputError


class WindowForecaster(TsuiteModule):
    """Base of models that forecast ``horizon`` steps from the last ``n_lags`` values of a series."""

    n_lags: int
    horizon: int
    loss: str = "mse"

    def _init_metrics(self) -> None:
        def collection(prefix: str) -> MetricCollection:
            return MetricCollection(
                {
                    "mae": MeanAbsoluteError(),
                    "rmse": MeanSquaredError(squared=False),
                    "smape": SymmetricMeanAbsolutePercentageError(),
                },
                prefix=prefix,
            )

        self.val_metrics, self.test_metrics = collection("val_"), collection("test_")
        self.val_mase, self.test_mase = MeanAbsoluteScaledError(), MeanAbsoluteScaledError()

    def regularization(self) -> torch.Tensor | float:
        return 0.0

    def setup(self, stage: str) -> None:
        data = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        for name in ("n_lags", "horizon"):
            if data is not None and hasattr(data, name) and getattr(data, name) != getattr(self, name):
                raise InputError(
                    f"model.{name}={getattr(self, name)} but data.{name}={getattr(data, name)}; "
                    "set the same value for both in the config"
                )

    def _loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.loss == "huber":
            return F.smooth_l1_loss(pred, target)
        return F.mse_loss(pred, target)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch[0], batch[1]
        fit = self._loss(self(x), y)
        reg = self.regularization()
        loss = fit + reg
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True)
        if torch.is_tensor(reg):
            self.log("train_regularization", reg, on_step=False, on_epoch=True)
        return loss

    def _evaluate(self, batch, metrics: MetricCollection, mase: MeanAbsoluteScaledError, prefix: str) -> None:
        x, y, loc, scale, mase_scale = batch[:5]
        pred = self(x)
        self.log(f"{prefix}_loss", self._loss(pred, y), on_epoch=True, prog_bar=prefix == "val")
        pred_o, y_o = pred * scale[:, None] + loc[:, None], y * scale[:, None] + loc[:, None]
        metrics.update(pred_o, y_o)
        mase.update(pred_o, y_o, mase_scale)
        self.log_dict(metrics, on_epoch=True)
        self.log(f"{prefix}_mase", mase, on_epoch=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics, self.val_mase, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, self.test_metrics, self.test_mase, "test")

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, _, loc, scale = batch[:4]
        return self(x) * scale[:, None] + loc[:, None]

    # -- tables ----------------------------------------------------------------------------------
    def predict_params(self) -> dict:
        return {"horizon": int(self.horizon)}

    @torch.no_grad()
    def forecast_array(self, history: np.ndarray, horizon: int) -> np.ndarray:
        """Forecast ``horizon`` steps for each row of ``history`` (S, n_lags), already scaled.

        Beyond the model's own horizon the forecasts are fed back as inputs
        (recursive multi-step forecasting).
        """
        window = torch.as_tensor(history, dtype=torch.float32, device=self.device)
        out = []
        steps = 0
        while steps < horizon:
            pred = self(window)  # (S, self.horizon)
            out.append(pred)
            steps += pred.shape[1]
            window = torch.cat([window, pred], dim=1)[:, -self.n_lags:]
        return torch.cat(out, dim=1)[:, :horizon].cpu().numpy()

    def predict_frame(self, df: pd.DataFrame, horizon: int | None = None) -> pd.DataFrame:
        """Forecast the next ``horizon`` steps of every series of a long-format table.

        Each series is scaled with the mean and standard deviation of the
        history given here; at least ``n_lags`` steps of history are needed.
        Returns a long table ``unique_id``, ``ds``, ``<model class name>``.
        """
        horizon = int(horizon or self.horizon)
        if horizon < 1:
            raise InputError(f"horizon must be ≥ 1, got {horizon}")
        self.eval()
        df = validate_series(df, "input table", min_length=self.n_lags, sort=True)
        ids, windows, locs, scales, future = [], [], [], [], []
        for uid, g in df.groupby("unique_id", sort=False):
            y = g["y"].to_numpy(np.float64)
            loc, scale = y.mean(), y.std()
            scale = scale if scale > 1e-12 else 1.0
            ids.append(uid)
            windows.append((y[-self.n_lags:] - loc) / scale)
            locs.append(loc)
            scales.append(scale)
            future.append(future_timestamps(g["ds"], horizon, uid))
        pred = self.forecast_array(np.stack(windows), horizon)
        pred = pred * np.asarray(scales)[:, None] + np.asarray(locs)[:, None]
        return pd.DataFrame(
            {
                "unique_id": np.repeat(ids, horizon),
                "ds": np.concatenate(future),
                type(self).__name__: pred.reshape(-1),
            }
        )


def future_timestamps(ds: pd.Series, horizon: int, uid: str) -> np.ndarray:
    """The ``horizon`` timestamps that follow a regular series' last ``ds``."""
    step = series_freq(ds, uid, "input table")
    if isinstance(step, int):
        return ds.iloc[-1] + step * np.arange(1, horizon + 1)
    return pd.date_range(ds.iloc[-1], periods=horizon + 1, freq=step)[1:].to_numpy()
