"""``SeriesDataModule``: windows of ``n_lags`` inputs and ``horizon`` targets over many series.

Splits are time-ordered per series (train, then validation, then test; a
window belongs to the split that holds all its targets, so no target is seen
by an earlier split), and each series is scaled with the mean and standard
deviation of its training part only. One global model learns from all series.
"""

from __future__ import annotations

from typing import Literal

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, TensorDataset

from tsuite.forecasting.sources import ARProcess, load_series
from tsuite.forecasting.validation import FillMethod, validate_series
from tsuite.tables import InputError

SPLITS = ("train", "val", "test")


def split_sizes(n: int, val_size: float, test_size: float, horizon: int) -> tuple[int, int]:
    """Number of validation and test steps at the end of a series of ``n`` steps (fractions or counts)."""

    def size(s: float) -> int:
        if s <= 0:
            return 0
        k = int(round(s * n)) if s < 1 else int(s)
        return max(k, horizon)

    return size(val_size), size(test_size)


def make_windows(values: np.ndarray, n_lags: int, horizon: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """All windows whose targets y[t : t+horizon] lie in [start, stop): inputs (W, n_lags), targets (W, horizon)."""
    first = max(start, n_lags)
    last = stop - horizon  # last target start
    if last < first:
        return np.empty((0, n_lags)), np.empty((0, horizon))
    idx = np.arange(first, last + 1)
    x = np.lib.stride_tricks.sliding_window_view(values, n_lags)[idx - n_lags]
    y = np.lib.stride_tricks.sliding_window_view(values, horizon)[idx]
    return x, y


class SeriesDataModule(pl.LightningDataModule):
    """Long-format series → (window, horizon) samples for global forecasting models.

    Args:
        source: a CSV/Parquet path (columns unique_id, ds, y), ``statsmodels:NAME[:COLS]``
            (sunspots, nile, co2, elnino, macrodata) or ``ar`` (the ``ar`` generator).
        n_lags: input window length.
        horizon: number of future steps predicted from each window.
        ar: the AR(p) process generated when ``source`` is ``ar``.
        val_size, test_size: the last steps of every series held out, as a fraction (< 1) or a count.
        batch_size: samples per batch.
        scaling: ``standard`` (per-series mean/std of the training part) or ``none``.
        freq: pandas frequency of datetime ``ds`` when it cannot be inferred.
        fill_missing: ``error``, or how to fill missing values and timestamp gaps.
        sort: sort rows by ``ds`` within each series instead of rejecting unsorted input.
        season_length: season of the naive forecast that scales MASE (1: the random walk).
    """

    def __init__(
        self,
        source: str,
        n_lags: int,
        horizon: int = 1,
        ar: ARProcess | None = None,
        val_size: float = 0.1,
        test_size: float = 0.1,
        batch_size: int = 32,
        scaling: Literal["standard", "none"] = "standard",
        freq: str | None = None,
        fill_missing: FillMethod = "error",
        sort: bool = False,
        season_length: int = 1,
        num_workers: int = 0,
    ):
        super().__init__()
        if n_lags < 1 or horizon < 1:
            raise InputError(f"n_lags and horizon must be ≥ 1, got n_lags={n_lags}, horizon={horizon}")
        self.save_hyperparameters()
        self.source, self.n_lags, self.horizon, self.ar = source, n_lags, horizon, ar
        self.val_size, self.test_size, self.batch_size = val_size, test_size, batch_size
        self.scaling, self.freq, self.fill_missing, self.sort = scaling, freq, fill_missing, sort
        self.season_length, self.num_workers = season_length, num_workers
        self.frame: pd.DataFrame | None = None
        self.datasets: dict[str, TensorDataset] = {}
        self.stats: pd.DataFrame | None = None

    # -- loading -------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.frame is not None:
            return
        raw, name = load_series(self.source, self.ar)
        df = validate_series(raw, name, self.n_lags + self.horizon, self.freq, self.fill_missing, self.sort)
        parts: dict[str, list] = {s: [] for s in SPLITS}
        stats = []
        for sid, (uid, g) in enumerate(df.groupby("unique_id", sort=False)):
            y = g["y"].to_numpy(np.float64)
            n = len(y)
            n_val, n_test = split_sizes(n, self.val_size, self.test_size, self.horizon)
            train_end, val_end = n - n_val - n_test, n - n_test
            if train_end < self.n_lags + self.horizon:
                raise InputError(
                    f"{name}: series {uid!r} has {n} steps, leaving {train_end} for training after holding out "
                    f"{n_val} validation and {n_test} test steps; at least n_lags + horizon = "
                    f"{self.n_lags + self.horizon} are needed"
                )
            train = y[:train_end]
            loc, scale = (train.mean(), train.std()) if self.scaling == "standard" else (0.0, 1.0)
            scale = scale if scale > 1e-12 else 1.0
            m = self.season_length
            naive = np.abs(train[m:] - train[:-m]).mean() if train_end > m else np.nan
            mase_scale = naive if naive > 1e-12 else 1.0
            stats.append((uid, loc, scale, mase_scale))
            z = (y - loc) / scale
            bounds = {"train": (0, train_end), "val": (train_end, val_end), "test": (val_end, n)}
            for split, (lo, hi) in bounds.items():
                x, t = make_windows(z, self.n_lags, self.horizon, lo, hi)
                if len(x):
                    parts[split].append((x, t, np.full(len(x), sid)))
        self.frame = df
        self.stats = pd.DataFrame(stats, columns=["unique_id", "loc", "scale", "mase_scale"])
        loc = torch.tensor(self.stats["loc"].to_numpy(), dtype=torch.float32)
        scale = torch.tensor(self.stats["scale"].to_numpy(), dtype=torch.float32)
        mase = torch.tensor(self.stats["mase_scale"].to_numpy(), dtype=torch.float32)
        for split, chunks in parts.items():
            if not chunks:
                continue
            x = torch.tensor(np.concatenate([c[0] for c in chunks]), dtype=torch.float32)
            t = torch.tensor(np.concatenate([c[1] for c in chunks]), dtype=torch.float32)
            sid = torch.tensor(np.concatenate([c[2] for c in chunks]), dtype=torch.long)
            self.datasets[split] = TensorDataset(x, t, loc[sid], scale[sid], mase[sid], sid)

    @property
    def true_ar_coefficients(self) -> list[float] | None:
        """The generating AR coefficients (lag 1 first) when the source is the ``ar`` generator, else None."""
        if self.source in ("ar", "ar:"):
            return list((self.ar or ARProcess()).coefficients)
        return None

    @property
    def has_test_split(self) -> bool:
        self.setup()
        return "test" in self.datasets

    # -- loaders ---------------------------------------------------------------------------------
    def _loader(self, split: str, shuffle: bool) -> DataLoader | list:
        if split not in self.datasets:
            return []
        return DataLoader(self.datasets[split], batch_size=self.batch_size, shuffle=shuffle,
                          num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        if "train" not in self.datasets:
            raise InputError(f"{self.source}: no training windows; the series are too short for n_lags + horizon")
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader | list:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader | list:
        return self._loader("test", shuffle=False)

    # -- tables ----------------------------------------------------------------------------------
    def input_example(self, rows: int | None = None) -> pd.DataFrame:
        """A small long-format history (the last ``n_lags`` steps of the first series): the MLflow input example."""
        self.setup()
        first = self.frame[self.frame["unique_id"] == self.frame["unique_id"].iloc[0]]
        return first.tail(rows or max(self.n_lags, 3)).reset_index(drop=True)
