"""The batch forecast job: every series gets H rows, chunking changes nothing, output is written atomically."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from tsuite.forecasting import ARNet, ARProcess
from tsuite.forecasting.forecast_job import forecast_table
from tsuite.tables import InputError


@pytest.fixture
def model() -> ARNet:
    torch.manual_seed(0)
    return ARNet(n_lags=6, horizon=2).eval()


@pytest.fixture
def history() -> pd.DataFrame:
    return ARProcess(length=50, n_series=7, seed=0).generate()


def test_every_series_gets_horizon_rows_with_following_timestamps(model, history, tmp_path):
    out = tmp_path / "fc.csv"
    rows = forecast_table(model, history, horizon=5, output=str(out), progress=False)
    fc = pd.read_csv(out)
    assert rows == len(fc) == 7 * 5
    assert set(fc["unique_id"]) == set(history["unique_id"])
    assert (fc.groupby("unique_id")["ds"].apply(list) == [[50, 51, 52, 53, 54]] * 7).all()
    assert np.isfinite(fc["ARNet"]).all()


def test_chunking_gives_the_same_forecasts(model, history, tmp_path):
    forecast_table(model, history, 3, str(tmp_path / "one.parquet"), chunk_size=1000, progress=False)
    forecast_table(model, history, 3, str(tmp_path / "many.parquet"), chunk_size=2, progress=False)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "one.parquet"), pd.read_parquet(tmp_path / "many.parquet"))


def test_recursive_forecast_beyond_the_model_horizon_feeds_predictions_back(model, history):
    one = history[history["unique_id"] == "ar0"]
    long = model.predict_frame(one, horizon=4)["ARNet"].to_numpy()
    y = one["y"].to_numpy()
    mu, sd = y.mean(), y.std()
    with torch.no_grad():
        z = torch.tensor((y[-6:] - mu) / sd, dtype=torch.float32)[None]
        first = model(z)[0]
        second = model(torch.cat([z[:, 2:], first[None]], dim=1))[0]
    expected = torch.cat([first, second]).numpy() * sd + mu
    np.testing.assert_allclose(long, expected, rtol=1e-5)


def test_datetime_series_get_future_dates_at_their_frequency(model):
    ds = pd.date_range("2020-01-31", periods=24, freq="ME")
    df = pd.DataFrame({"unique_id": "m", "ds": ds, "y": np.sin(np.arange(24.0))})
    fc = model.predict_frame(df, horizon=3)
    assert list(pd.to_datetime(fc["ds"])) == list(pd.date_range("2022-01-31", periods=3, freq="ME"))


def test_failed_run_leaves_the_previous_output_untouched(model, history, tmp_path):
    out = tmp_path / "fc.csv"
    out.write_text("previous results\n")
    bad = history.copy()
    bad.loc[bad["unique_id"] == "ar6", "y"] = np.nan  # the last chunk fails
    with pytest.raises(InputError, match="ar6"):
        forecast_table(model, bad, 2, str(out), chunk_size=2, progress=False)
    assert out.read_text() == "previous results\n"
    assert [p.name for p in tmp_path.iterdir()] == ["fc.csv"]  # no temporary file left behind


def test_history_shorter_than_n_lags_is_named(model):
    df = pd.DataFrame({"unique_id": "s", "ds": range(4), "y": np.arange(4.0)})
    with pytest.raises(InputError, match=r"series 's' has 4 observation\(s\); at least 6 are needed"):
        model.predict_frame(df)
