"""Aaren as a window forecaster: learns an AR process as well as the optimal predictor, and answers tables
like every WindowForecaster (so `tsuite forecast` and the pyfunc model work unchanged)."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import torch

from tsuite.forecasting import AarenForecaster, ARProcess, SeriesDataModule


def test_learns_an_ar3_process_to_the_noise_level():
    pl.seed_everything(0, verbose=False)
    data = SeriesDataModule("ar", n_lags=10, horizon=1, ar=ARProcess(length=2000, seed=3), val_size=0.1,
                            test_size=0.2, batch_size=32)
    model = AarenForecaster(n_lags=10, horizon=1, d_model=16, d_ff=32, lr=3e-3)
    trainer = pl.Trainer(max_epochs=8, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(model, data)
    rmse = trainer.test(model, data, verbose=False)[0]["test_rmse"]
    # the noise has σ = 1: the best possible one-step RMSE is 1.0 (up to sampling error on 400 points)
    y = data.frame["y"].to_numpy()[-400:]
    naive = float(np.sqrt(np.mean(np.diff(y) ** 2)))
    assert rmse < 1.1 and rmse < 0.7 * naive, (rmse, naive)


def test_answers_a_history_table_with_recursive_forecasts():
    torch.manual_seed(0)
    model = AarenForecaster(n_lags=6, horizon=2, d_model=8, n_heads=2, n_layers=1, d_ff=16).eval()
    history = ARProcess(length=30, n_series=2, seed=1).generate()
    out = model.predict_frame(history, horizon=5)
    assert list(out.columns) == ["unique_id", "ds", "AarenForecaster"]
    assert len(out) == 2 * 5 and np.isfinite(out["AarenForecaster"]).all()
    assert out.groupby("unique_id")["ds"].apply(list).tolist() == [list(range(30, 35))] * 2
    # the first two steps are one direct forecast: the same as calling the network on the scaled window
    y = history[history["unique_id"] == "ar0"]["y"].to_numpy()
    loc, scale = y.mean(), y.std()
    with torch.no_grad():
        direct = model(torch.tensor((y[-6:] - loc) / scale, dtype=torch.float32)[None])[0].numpy() * scale + loc
    np.testing.assert_allclose(out["AarenForecaster"].to_numpy()[:2], direct, rtol=1e-5)
