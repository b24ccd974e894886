"""SeriesDataModule: built-in sources, windows, time-ordered splits without leakage, train-only scaling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tsuite.forecasting import ARProcess, SeriesDataModule, statsmodels_series
from tsuite.forecasting.baselines import least_squares_ar
from tsuite.forecasting.series_data import make_windows
from tsuite.tables import InputError


@pytest.mark.parametrize(
    "spec, n_series, first_ds, length",
    [
        ("sunspots", 1, 1700, 309),
        ("nile", 1, 1871, 100),
        ("co2", 1, pd.Timestamp("1958-03-29"), 2284),
        ("elnino", 1, pd.Timestamp("1950-01-01"), 61 * 12),
        ("macrodata", 12, pd.Timestamp("1959-01-01"), 203),
        ("macrodata:realgdp,cpi", 2, pd.Timestamp("1959-01-01"), 203),
    ],
)
def test_statsmodels_series_load_in_long_format(spec, n_series, first_ds, length):
    df = statsmodels_series(spec)
    assert list(df.columns) == ["unique_id", "ds", "y"]
    assert df["unique_id"].nunique() == n_series
    first = df[df["unique_id"] == df["unique_id"].iloc[0]]
    assert first["ds"].iloc[0] == first_ds and len(first) == length


def test_co2_has_gaps_that_need_a_fill_method():
    with pytest.raises(InputError, match="missing"):
        SeriesDataModule("statsmodels:co2", n_lags=52, horizon=4).setup("fit")
    dm = SeriesDataModule("statsmodels:co2", n_lags=52, horizon=4, fill_missing="interpolate")
    dm.setup("fit")
    assert dm.frame["y"].notna().all()


def test_unknown_statsmodels_series_lists_the_choices():
    with pytest.raises(InputError, match="unknown series 'airline'; expected one of sunspots, nile"):
        SeriesDataModule("statsmodels:airline", n_lags=3).setup("fit")


def test_ar_generator_is_seeded_and_has_the_given_coefficients():
    a = ARProcess(coefficients=[0.5, -0.3], length=20000, seed=7).generate()
    b = ARProcess(coefficients=[0.5, -0.3], length=20000, seed=7).generate()
    pd.testing.assert_frame_equal(a, b)
    np.testing.assert_allclose(least_squares_ar(a["y"].to_numpy(), 2), [0.5, -0.3], atol=0.02)
    with pytest.raises(InputError, match="not stationary"):
        ARProcess(coefficients=[1.2])


def test_windows_pair_inputs_with_the_following_targets():
    values = np.arange(20.0)
    x, y = make_windows(values, n_lags=4, horizon=2, start=0, stop=20)
    assert x.shape == (15, 4) and y.shape == (15, 2)
    np.testing.assert_array_equal(x[0], [0, 1, 2, 3])
    np.testing.assert_array_equal(y[0], [4, 5])
    np.testing.assert_array_equal(y[-1], [18, 19])


def test_splits_are_time_ordered_and_targets_never_leak(tmp_path):
    n = 200
    frame = pd.DataFrame({"unique_id": np.repeat(["a", "b"], n), "ds": np.tile(np.arange(n), 2),
                          "y": np.tile(np.arange(n, dtype=float), 2) + np.repeat([0.0, 1000.0], n)})
    path = tmp_path / "ramp.csv"
    frame.to_csv(path, index=False)
    dm = SeriesDataModule(str(path), n_lags=5, horizon=3, val_size=0.1, test_size=0.2, scaling="none")
    dm.setup("fit")
    sets = {s: dm.datasets[s].tensors for s in ("train", "val", "test")}
    target_steps = {s: (t[1] - 1000.0 * t[5][:, None]).numpy() for s, t in sets.items()}  # undo series offset
    assert target_steps["train"].max() < 140 <= target_steps["val"].min()
    assert target_steps["val"].max() < 160 <= target_steps["test"].min()
    assert target_steps["test"].max() == 199
    # every input precedes its targets
    for s, t in sets.items():
        assert (t[0][:, -1] < t[1][:, 0]).all()


def test_scaling_uses_the_training_part_only(tmp_path):
    y = np.r_[np.zeros(80), np.full(20, 100.0)] + np.random.default_rng(0).normal(size=100)
    path = tmp_path / "shift.csv"
    pd.DataFrame({"unique_id": "s", "ds": np.arange(100), "y": y}).to_csv(path, index=False)
    dm = SeriesDataModule(str(path), n_lags=4, horizon=1, val_size=0.1, test_size=0.1)
    dm.setup("fit")
    stats = dm.stats.iloc[0]
    assert stats["loc"] == pytest.approx(y[:80].mean())
    assert stats["scale"] == pytest.approx(y[:80].std())


def test_series_too_short_for_the_split_is_named(tmp_path):
    path = tmp_path / "short.csv"
    pd.DataFrame({"unique_id": "s", "ds": np.arange(30), "y": np.arange(30.0)}).to_csv(path, index=False)
    with pytest.raises(InputError, match=r"series 's' has 30 steps, leaving 18 for training"):
        SeriesDataModule(str(path), n_lags=15, horizon=4, val_size=0.2, test_size=0.2).setup("fit")
