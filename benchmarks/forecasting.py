"""AR-Net against its baselines (least-squares AR by statsmodels AutoReg, seasonal naive) on held-out data.

Runs on the CPU: ``python -m benchmarks.forecasting`` prints a markdown table for BENCHMARKS.md.
Each series is split in time (the last 20% is the test part); every method forecasts ``horizon``
steps from each test window of ``n_lags`` past values; errors are in the series' units, MASE is
scaled by the in-sample seasonal naive MAE of the training part.
"""

from __future__ import annotations

import time
import warnings

import lightning.pytorch as pl
import numpy as np
import torch

from tsuite.forecasting import ARNet, ARProcess, SeriesDataModule, stpe
from tsuite.forecasting.baselines import least_squares_ar, least_squares_forecast, seasonal_naive

CASES = [
    # name, source, n_lags, horizon, season, sparsity, epochs
    ("sunspots", "statsmodels:sunspots", 24, 6, 11, 0.5, 60),
    ("nile", "statsmodels:nile", 10, 3, 1, 0.5, 100),
    ("AR(3)", "ar", 20, 1, 1, 0.15, 60),
]


def evaluate(name, source, n_lags, horizon, season, sparsity, epochs, seed=0):
    pl.seed_everything(seed, verbose=False)
    ar = ARProcess(length=5000, seed=seed) if source == "ar" else None
    data = SeriesDataModule(source, n_lags=n_lags, horizon=horizon, ar=ar, val_size=0, test_size=0.2,
                            batch_size=32, season_length=season)
    data.setup("fit")
    model = ARNet(n_lags=n_lags, horizon=horizon, sparsity=sparsity, reg_strength=0.05)
    start = time.perf_counter()
    pl.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False).fit(model, data)
    fit_s = time.perf_counter() - start
    x, y, loc, scale, mase_scale = data.datasets["test"].tensors[:5]
    with torch.no_grad():
        arnet = (model.eval()(x) * scale[:, None] + loc[:, None]).numpy()
    truth = (y * scale[:, None] + loc[:, None]).numpy()
    hist = (x * scale[:, None] + loc[:, None]).numpy()
    series = data.frame["y"].to_numpy()
    train = series[: len(series) - int(round(0.2 * len(series)))]
    preds = {
        "AR-Net": arnet,
        "AutoReg (least squares)": np.stack([least_squares_forecast(train, n_lags, h, horizon) for h in hist]),
        f"seasonal naive (m={season})": np.stack([seasonal_naive(h, horizon, season) for h in hist]),
    }
    rows = []
    for method, p in preds.items():
        err = p - truth
        rows.append({
            "data": name, "method": method, "MAE": np.abs(err).mean(), "RMSE": np.sqrt((err**2).mean()),
            "MASE": (np.abs(err) / mase_scale.numpy()[:, None]).mean(),
        })
    rows[0]["fit s"] = fit_s
    if source == "ar":
        rows[0]["sTPE"] = stpe(model.ar_coefficients[0], ar.coefficients)
        rows[1]["sTPE"] = stpe(least_squares_ar(train, n_lags), ar.coefficients)
    return rows


def main() -> None:
    warnings.filterwarnings("ignore")
    rows = [r for case in CASES for r in evaluate(*case)]
    print("| data | method | MAE | RMSE | MASE | sTPE |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        stpe_cell = f"{r['sTPE']:.1f}" if "sTPE" in r else ""
        print(f"| {r['data']} | {r['method']} | {r['MAE']:.3f} | {r['RMSE']:.3f} | {r['MASE']:.3f} | {stpe_cell} |")


if __name__ == "__main__":
    main()
