"""AR-Net learns what it should: AR coefficients (sTPE against least squares), forecasts that beat the
naive baseline, and the paper's λ ramp."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from tsuite.forecasting import ARNet, ARProcess, SeriesDataModule, stpe
from tsuite.forecasting.baselines import least_squares_ar, least_squares_forecast, seasonal_naive

TRUE = [0.2, 0.3, -0.5]


def fit(model: ARNet, data: SeriesDataModule, epochs: int, callbacks=()) -> ARNet:
    pl.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, callbacks=list(callbacks)).fit(model, data)
    return model


def ar_data(length: int, n_lags: int, seed: int, batch_size: int, **kw) -> SeriesDataModule:
    ar = ARProcess(coefficients=TRUE, noise=1.0, length=length, seed=seed)
    return SeriesDataModule("ar", n_lags=n_lags, horizon=kw.pop("horizon", 1), ar=ar, val_size=kw.pop("val_size", 0),
                            test_size=kw.pop("test_size", 0), batch_size=batch_size, **kw)


def test_recovers_ar3_coefficients_from_1000_points_with_20_lags():
    pl.seed_everything(1, verbose=False)
    data = ar_data(1000, 20, seed=1, batch_size=128)
    model = fit(ARNet(n_lags=20, sparsity=3 / 20, reg_strength=0.15, lr=0.01), data, epochs=100)
    arnet = stpe(model.ar_coefficients[0], TRUE)
    ols = stpe(least_squares_ar(data.frame["y"].to_numpy(), 20), TRUE)
    assert arnet < 5.0, f"AR-Net sTPE {arnet:.2f} (least squares {ols:.2f})"
    assert ols > 15.0  # the paper's contrast: least squares spreads weight over the 17 spurious lags
    np.testing.assert_allclose(model.ar_coefficients[0, :3].numpy(), TRUE, atol=0.06)
    assert model.trainer.callback_metrics["train_stpe"].item() == pytest.approx(arnet, rel=1e-5)  # logged too
    assert model.ar_coefficients[0, 3:].abs().max() < 0.05


@pytest.mark.slow
@pytest.mark.parametrize("n_lags", [3, 100])
def test_beats_least_squares_at_many_lags_on_100k_points(n_lags):
    pl.seed_everything(0, verbose=False)
    data = ar_data(100_000, n_lags, seed=0, batch_size=1024)
    model = fit(ARNet(n_lags=n_lags, sparsity=min(1.0, 3 / n_lags), reg_strength=0.02), data, epochs=5)
    arnet = stpe(model.ar_coefficients[0], TRUE)
    ols = stpe(least_squares_ar(data.frame["y"].to_numpy(), n_lags), TRUE)
    if n_lags == 3:  # the true order: both are near exact
        assert arnet < 2.0 and ols < 2.0, (arnet, ols)
    else:
        assert arnet < 0.75 * ols, f"AR-Net sTPE {arnet:.2f} vs least squares {ols:.2f}"


def test_coefficients_are_in_original_units_for_a_shifted_scaled_series(tmp_path):
    frame = ARProcess(coefficients=TRUE, length=3000, seed=3).generate()
    frame["y"] = 50.0 + 100.0 * frame["y"]
    path = tmp_path / "series.parquet"
    frame.to_parquet(path)
    pl.seed_everything(0, verbose=False)
    data = SeriesDataModule(str(path), n_lags=3, horizon=1, val_size=0, test_size=0, batch_size=64)
    model = fit(ARNet(n_lags=3), data, epochs=20)
    np.testing.assert_allclose(model.ar_coefficients[0].numpy(), TRUE, atol=0.05)


def test_multi_step_coefficients_have_horizon_rows_and_hidden_layers_have_none():
    model = ARNet(n_lags=7, horizon=4)
    assert model.ar_coefficients.shape == (4, 7)
    w = model.net[0].weight.detach()
    assert torch.equal(model.ar_coefficients[:, 0], w[:, -1])  # lag 1 is the newest input
    with pytest.raises(ValueError, match="linear AR-Net"):
        _ = ARNet(n_lags=7, hidden_sizes=[16]).ar_coefficients


def test_lambda_ramps_in_quadratically_to_its_maximum():
    seen: list[float] = []

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            seen.append(module.lam())

    model = ARNet(n_lags=10, sparsity=0.2, reg_strength=0.05, reg_start=0.0, reg_full=0.5)
    fit(model, ar_data(500, 10, seed=0, batch_size=49), epochs=4, callbacks=[Record()])
    lam_max = 0.05 * (1 / 0.2 - 1)
    assert model.lam_max == pytest.approx(lam_max)
    assert seen[0] < 0.01 * lam_max
    assert all(b >= a for a, b in zip(seen, seen[1:]))
    assert seen[-1] == pytest.approx(lam_max)
    k = len(seen) // 4  # about a quarter through: λ = λ_max · (progress / 0.5)², progress = (k + 1) / steps
    assert seen[k] == pytest.approx(lam_max * ((k + 1) / len(seen) / 0.5) ** 2, rel=1e-6)


def test_forecasts_beat_naive_and_match_least_squares_on_held_out_ar_data():
    pl.seed_everything(0, verbose=False)
    data = ar_data(3000, 10, seed=5, batch_size=64, horizon=3, val_size=0.1, test_size=0.2)
    model = fit(ARNet(n_lags=10, horizon=3, sparsity=0.3), data, epochs=15).eval()
    x, y, loc, scale = data.datasets["test"].tensors[:4]
    with torch.no_grad():
        pred = (model(x) * scale[:, None] + loc[:, None]).numpy()
    truth = (y * scale[:, None] + loc[:, None]).numpy()
    hist = (x * scale[:, None] + loc[:, None]).numpy()
    naive = np.stack([seasonal_naive(h, 3) for h in hist])
    series = data.frame["y"].to_numpy()
    train = series[: len(series) - 300 - 600]
    ols = np.stack([least_squares_forecast(train, 10, h, 3) for h in hist])
    mae = lambda p: np.abs(p - truth).mean()  # noqa: E731
    assert mae(pred) < 0.8 * mae(naive), (mae(pred), mae(naive))
    assert mae(pred) < 1.05 * mae(ols), (mae(pred), mae(ols))
