"""Lightning modules on the deep SSM backbone: window forecasting and whole-sequence classification/regression.

- :class:`SSMForecaster` is a :class:`~tsuite.forecasting.base.WindowForecaster`
  (``tsuite forecast``, the MLflow pyfunc model and the metrics work exactly as
  for AR-Net) that reads the window as a sequence and forecasts from the
  features of its last step. Being causal, it also follows a series one
  observation at a time (:meth:`SSMForecaster.stream`) with a state whose size
  does not depend on how many observations it has seen.
- :class:`SSMSequenceModel` classifies (or regresses) whole sequences
  (sequential digits, UCR archives, the adding problem); its table interface
  takes long-format sequences and returns class probabilities. With
  ``pool="none"`` it labels every step instead (per-step tasks such as the
  copying memory task), scored only where a target is given.

The backbone, its layers (S4, S4D, LSSL) and the optimiser groups are in
:mod:`tsuite.forecasting.ssm_backbone`.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Accuracy, MeanSquaredError

from tsuite.forecasting.base import WindowForecaster
from tsuite.forecasting.sequence_data import IGNORE_INDEX, frame_to_sequences
from tsuite.forecasting.ssm_backbone import LAYER_NAMES, LayerKind, SSMBackbone, configure_ssm_optimizer
from tsuite.module import TsuiteModule
from tsuite.tables import InputError


def _backbone(d_input: int, hp: dict, l_max: int | None) -> SSMBackbone:
    layer_args = dict(hp["layer_args"] or {})
    if hp["layer"] == "s4" and l_max is not None:
        layer_args.setdefault("l_max", l_max)  # C̃ tied to the training length
    return SSMBackbone(d_input, hp["d_model"], hp["n_layers"], hp["layer"], hp["d_state"], hp["dropout"], hp["norm"],
                       hp["prenorm"], hp["activation"], hp["bidirectional"], hp["dt_min"], hp["dt_max"], hp["lr_ssm"],
                       layer_args)


class SSMForecaster(WindowForecaster):
    """S4 / S4D / LSSL forecaster: the last ``n_lags`` values → the next ``horizon`` values.

    The window enters as a sequence of values (with ``differences``, of
    (value, first difference) pairs); the forecast is the decoded features of
    the last step, plus the last value when ``residual`` (predicting the
    change keeps level shifts and trends out of the network). With
    ``train_positions`` > 1 the loss also covers the forecasts made at
    earlier steps of the window (from shorter histories), which all come from
    the same causal pass.

    Args:
        n_lags: window length (the sequence the SSM reads).
        horizon: steps forecast at once.
        layer: ``s4``, ``s4d`` or ``lssl``.
        d_model, n_layers, d_state, dropout, norm, prenorm, activation, bidirectional, dt_min, dt_max,
        layer_args: the backbone's (:class:`~tsuite.forecasting.ssm_backbone.SSMBackbone`).
        lr, lr_ssm, weight_decay, warmup: AdamW learning rates (the model's; the SSM matrices'), weight decay
            (not on the SSM matrices) and warm-up share of a cosine schedule.
        loss: ``mse`` or ``huber``.
        train_positions: number of final window steps whose forecasts enter the training loss.
        differences: add the first difference of the series as a second input channel.
        residual: forecast the change from the last value.
    """

    def __init__(
        self,
        n_lags: int,
        horizon: int = 1,
        layer: LayerKind = "s4d",
        d_model: int = 32,
        n_layers: int = 2,
        d_state: int = 64,
        dropout: float = 0.0,
        norm: Literal["layer", "batch"] = "layer",
        prenorm: bool = False,
        activation: Literal["glu", "gelu"] = "glu",
        bidirectional: bool = False,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        layer_args: dict[str, Any] | None = None,
        lr: float = 0.003,
        lr_ssm: float = 0.001,
        weight_decay: float = 0.01,
        warmup: float = 0.05,
        loss: Literal["mse", "huber"] = "mse",
        train_positions: int = 1,
        differences: bool = True,
        residual: bool = True,
    ):
        super().__init__()
        if not 1 <= train_positions <= n_lags:
            raise ValueError(f"train_positions must be in [1, n_lags={n_lags}], got {train_positions}")
        self.save_hyperparameters()
        self.n_lags, self.horizon, self.loss = n_lags, horizon, loss
        self.backbone = _backbone(2 if differences else 1, dict(self.hparams), l_max=n_lags)
        self.decoder = nn.Linear(d_model, horizon)
        self._init_metrics()

    @property
    def model_name(self) -> str:
        return LAYER_NAMES[self.hparams.layer]

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L) values → (B, L, 1) values or (B, L, 2) (value, first difference; 0 at the first step)."""
        if not self.hparams.differences:
            return x.unsqueeze(-1)
        return torch.stack([x, torch.diff(x, dim=1, prepend=x[:, :1])], dim=-1)

    def forward(self, x: torch.Tensor, positions: int = 1) -> torch.Tensor:
        """x (B, n_lags) → (B, horizon), or (B, positions, horizon): forecasts from the last ``positions`` steps."""
        feats = self.backbone(self._inputs(x))[:, -positions:]  # (B P H)
        out = self.decoder(feats)  # (B P horizon)
        if self.hparams.residual:
            out = out + x[:, -positions:, None]
        return out[:, -1] if positions == 1 else out

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        P = self.hparams.train_positions
        if P == 1:
            return super().training_step(batch, batch_idx)
        x, y = batch[0], batch[1]
        full = torch.cat([x, y], dim=1)  # (B n_lags+horizon)
        idx = torch.arange(self.n_lags - P, self.n_lags, device=x.device)[:, None] + torch.arange(
            1, self.horizon + 1, device=x.device)  # (P horizon): targets of the forecast made at each step
        loss = self._loss(self(x, positions=P), full[:, idx])
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return configure_ssm_optimizer(self, self.hparams.lr, self.hparams.weight_decay, self.hparams.warmup)

    def predict_frame(self, df: pd.DataFrame, horizon: int | None = None) -> pd.DataFrame:
        """As :meth:`WindowForecaster.predict_frame`, with the forecast column named S4, S4D or LSSL."""
        return super().predict_frame(df, horizon).rename(columns={type(self).__name__: self.model_name})

    # -- streaming -------------------------------------------------------------------------------
    def stream(self, batch: int = 1, loc: Any = 0.0, scale: Any = 1.0) -> "ForecastStream":
        """A :class:`ForecastStream` over ``batch`` series scaled as (y − loc) / scale, from the zero state."""
        return ForecastStream(self, batch, loc, scale)


class ForecastStream:
    """Forecasts of an :class:`SSMForecaster` that follow series one observation at a time.

    The state is the backbone's recurrent state (n_layers × H × N per series)
    and the last value: its size does not grow with the number of
    observations. After ``update`` has consumed exactly the n_lags values of a
    window from the zero state, the forecast equals the model's window
    forecast; over longer streams the state carries the whole history.
    """

    def __init__(self, model: SSMForecaster, batch: int, loc: Any, scale: Any):
        self.model = model.eval()
        self.model.backbone.setup_step()
        self.loc = np.broadcast_to(np.asarray(loc, dtype=np.float64), (batch,)).copy()
        self.scale = np.broadcast_to(np.asarray(scale, dtype=np.float64), (batch,)).copy()
        self.states = self.model.backbone.default_state(batch)
        self.last: torch.Tensor | None = None
        self.seen = 0
        self.forecast: np.ndarray | None = None

    @torch.no_grad()
    def update(self, y: Any) -> np.ndarray:
        """Consume one new observation per series (batch,); return the next ``horizon`` values (batch, horizon)."""
        value = (np.asarray(y, dtype=np.float64).reshape(-1) - self.loc) / self.scale
        x = torch.as_tensor(value, dtype=torch.float32, device=self.model.device)  # (B)
        inputs = x[:, None]
        if self.model.hparams.differences:
            diff = torch.zeros_like(x) if self.last is None else x - self.last
            inputs = torch.stack([x, diff], dim=-1)
        feats, self.states = self.model.backbone.step(inputs, self.states)  # (B H)
        pred = self.model.decoder(feats)  # (B horizon)
        if self.model.hparams.residual:
            pred = pred + x[:, None]
        pred = pred.double().cpu().numpy()
        self.last, self.seen = x, self.seen + 1
        self.forecast = pred * self.scale[:, None] + self.loc[:, None]
        return self.forecast

    def state_size(self) -> int:
        """Numbers held in the state (independent of the number of observations consumed)."""
        return sum(s.numel() * (2 if s.is_complex() else 1) for s in self.states) + (0 if self.last is None else
                                                                                      self.last.numel())


class SSMSequenceModel(TsuiteModule):
    """S4 / S4D / LSSL model of whole sequences: class probabilities (classification) or values (regression).

    The backbone's features are pooled over time (mean, or the last step for
    a causal read-out) and decoded to ``d_output`` logits or targets. With
    ``pool="none"`` (classification only, causal backbone only) every step is
    decoded to logits; targets (B, L) hold ``IGNORE_INDEX`` (−100) at steps
    with no output asked, which the cross-entropy and the accuracy skip. Inputs
    are standardised per channel with the training data's statistics, kept
    in buffers so that the saved model takes raw values.

    Args:
        d_input: channels per time step (the data module's ``d_input``).
        d_output: number of classes, or of regression targets.
        task: ``classification`` (cross-entropy) or ``regression`` (MSE).
        pool: ``mean``, ``last`` or ``none`` (per-step logits).
        class_names, input_columns: names of the classes and of the input table's value columns
            (filled in from the data module when not given).
        Others: as :class:`SSMForecaster`.
    """

    def __init__(
        self,
        d_input: int = 1,
        d_output: int = 10,
        task: Literal["classification", "regression"] = "classification",
        layer: LayerKind = "s4d",
        d_model: int = 64,
        n_layers: int = 4,
        d_state: int = 64,
        dropout: float = 0.1,
        norm: Literal["layer", "batch"] = "layer",
        prenorm: bool = False,
        activation: Literal["glu", "gelu"] = "glu",
        bidirectional: bool = False,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        layer_args: dict[str, Any] | None = None,
        pool: Literal["mean", "last", "none"] = "mean",
        lr: float = 0.01,
        lr_ssm: float = 0.001,
        weight_decay: float = 0.01,
        warmup: float = 0.05,
        class_names: list[str] | None = None,
        input_columns: list[str] | None = None,
    ):
        super().__init__()
        if task not in ("classification", "regression") or pool not in ("mean", "last", "none"):
            raise ValueError(f"task must be classification or regression and pool mean, last or none; "
                             f"got {task!r}, {pool!r}")
        if pool == "none" and (task != "classification" or bidirectional):
            raise ValueError("pool='none' (per-step outputs) needs task='classification' and a causal backbone "
                             "(bidirectional=False)")
        self.save_hyperparameters()
        self.backbone = _backbone(d_input, dict(self.hparams), l_max=None)
        self.decoder = nn.Linear(d_model, d_output)
        self.register_buffer("input_loc", torch.zeros(d_input))
        self.register_buffer("input_scale", torch.ones(d_input))
        if task == "classification":
            self.metrics = nn.ModuleDict({s: Accuracy("multiclass", num_classes=d_output, ignore_index=IGNORE_INDEX)
                                          for s in ("val", "test")})
        else:
            self.metrics = nn.ModuleDict({s: MeanSquaredError() for s in ("val", "test")})

    def setup(self, stage: str) -> None:
        data = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if data is None:
            return
        for name in ("d_input", "d_output", "task"):
            if hasattr(data, name) and getattr(data, name) != self.hparams[name]:
                raise InputError(f"model.{name}={self.hparams[name]!r} but the data has "
                                 f"{name}={getattr(data, name)!r}; set the model's value to the data's in the config")
        if stage == "fit" and hasattr(data, "input_stats"):
            loc, scale = data.input_stats()
            self.input_loc.copy_(torch.as_tensor(loc, dtype=torch.float32))
            self.input_scale.copy_(torch.as_tensor(scale, dtype=torch.float32))
            for name in ("class_names", "input_columns"):
                if self.hparams[name] is None and getattr(data, name, None) is not None:
                    self.hparams[name] = list(getattr(data, name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, L, d_input) raw values → (B, d_output) logits or predictions; (B, L, d_output) when pool='none'."""
        feats = self.backbone((x - self.input_loc) / self.input_scale)  # (B L H)
        if self.hparams.pool == "none":
            return self.decoder(feats)  # (B L d_output)
        pooled = feats.mean(dim=1) if self.hparams.pool == "mean" else feats[:, -1]
        return self.decoder(pooled)

    @staticmethod
    def _flat(out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-step logits (B, L, C) and targets (B, L) → (B·L, C) and (B·L); pooled ones unchanged."""
        return (out.reshape(-1, out.shape[-1]), y.reshape(-1)) if out.dim() == 3 else (out, y)

    def _loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.hparams.task == "classification":
            out, y = self._flat(out, y)
            if self.hparams.pool == "none":
                return F.cross_entropy(out, y, ignore_index=IGNORE_INDEX)
            return F.cross_entropy(out, y)
        return F.mse_loss(out, y.view_as(out))

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        out = self(x)
        loss = self._loss(out, y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True)
        if self.hparams.task == "classification":
            asked = y != IGNORE_INDEX
            self.log("train_acc", (out.argmax(-1) == y)[asked].float().mean(), on_step=False, on_epoch=True)
        return loss

    def _evaluate(self, batch, split: str) -> None:
        x, y = batch
        out = self(x)
        self.log(f"{split}_loss", self._loss(out, y), on_epoch=True, prog_bar=split == "val")
        metric = self.metrics[split]
        if self.hparams.task == "classification":
            metric.update(*self._flat(out, y))
            self.log(f"{split}_acc", metric, on_epoch=True, prog_bar=split == "val")
        else:
            metric.update(out, y.view_as(out))
            self.log(f"{split}_mse", metric, on_epoch=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        out = self(batch[0])
        return out.softmax(-1) if self.hparams.task == "classification" else out

    def configure_optimizers(self):
        return configure_ssm_optimizer(self, self.hparams.lr, self.hparams.weight_decay, self.hparams.warmup)

    # -- tables ----------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_frame(self, df: pd.DataFrame, batch_size: int = 256) -> pd.DataFrame:
        """Predict each sequence of a long table (``unique_id``, ``ds``, the input columns), one row per sequence.

        Classification: columns ``unique_id``, ``label`` (the most probable class)
        and ``prob_<class>`` per class. Regression: ``unique_id`` and
        ``prediction`` (``prediction_<i>`` for several targets). With
        ``pool="none"``: one row per step, ``unique_id``, ``ds``, ``label`` and
        the ``prob_<class>`` columns of that step (causal: from the steps up to it).
        """
        self.eval()
        columns = self.hparams.input_columns or (["y"] if self.hparams.d_input == 1 else None)
        if columns is None or len(columns) != self.hparams.d_input:
            raise InputError(f"the model has no input column names for its {self.hparams.d_input} channels")
        ids, seqs = frame_to_sequences(df, columns, "input table")
        per_step = self.hparams.pool == "none"
        outs: list = [None] * len(seqs) if per_step else np.zeros((len(seqs), self.hparams.d_output))
        for length in sorted({len(s) for s in seqs}):  # one batch shape per length
            rows = [i for i, s in enumerate(seqs) if len(s) == length]
            for lo in range(0, len(rows), batch_size):
                chunk = rows[lo : lo + batch_size]
                x = torch.as_tensor(np.stack([seqs[i] for i in chunk]), dtype=torch.float32, device=self.device)
                out = self(x)
                out = out.softmax(-1) if self.hparams.task == "classification" else out
                out = out.double().cpu().numpy()
                if per_step:
                    for j, i in enumerate(chunk):
                        outs[i] = out[j]  # (L_i d_output)
                else:
                    outs[chunk] = out
        if per_step:
            ds = df.assign(unique_id=df["unique_id"].astype(str)).sort_values(["unique_id", "ds"], kind="stable")
            steps = dict(list(ds.groupby("unique_id", sort=False)["ds"]))
            result = pd.DataFrame({"unique_id": np.repeat(ids, [len(s) for s in seqs]),
                                   "ds": np.concatenate([steps[i].to_numpy() for i in ids])})
            outs = np.concatenate(outs)  # (sum L_i d_output)
        else:
            result = pd.DataFrame({"unique_id": ids})
        if self.hparams.task == "regression":
            names = ["prediction"] if outs.shape[1] == 1 else [f"prediction_{i}" for i in range(outs.shape[1])]
            return pd.concat([result, pd.DataFrame(outs, columns=names)], axis=1)
        classes = self.hparams.class_names or [str(i) for i in range(self.hparams.d_output)]
        result["label"] = np.asarray(classes, dtype=object)[outs.argmax(1)]
        return pd.concat([result, pd.DataFrame(outs, columns=[f"prob_{c}" for c in classes])], axis=1)
