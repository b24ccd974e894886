"""The rolling-origin backtest: origins, MASE and sMAPE, exact baselines on a periodic series, the markdown report."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from tsuite.forecasting import backtest
from tsuite.forecasting.backtest import SeriesSpec, backtest_series, cutoffs, mase, smape


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_origins_tile_the_end_of_the_series():
    assert cutoffs(100, 5, 3, min_history=10) == [85, 90, 95]
    with pytest.raises(ValueError, match="too short"):
        cutoffs(30, 5, 4, min_history=20)


def test_mase_and_smape_on_hand_computed_values():
    history = np.array([1.0, 3.0, 2.0, 4.0, 3.0])  # seasonal naive (m=2) in-sample MAE: |2-1|, |4-3|, |3-2| → 1
    assert mase(np.array([5.0, 5.0]), np.array([4.0, 7.0]), history, season=2) == pytest.approx(1.5)
    assert mase(np.array([5.0]), np.array([4.0]), history, season=1) == pytest.approx(1 / 1.5)  # naive MAE 1.5
    assert smape(np.array([1.0, 0.0]), np.array([3.0, 0.0])) == pytest.approx(200 * (2 / 4 + 0) / 2)


def test_baselines_are_exact_on_a_periodic_series(tmp_path):
    t = np.arange(240)
    y = 10 + np.sin(2 * np.pi * t / 12) + 0.5 * np.cos(2 * np.pi * t / 4)  # period 12
    path = tmp_path / "periodic.csv"
    pd.DataFrame({"unique_id": "p", "ds": t, "y": y}).to_csv(path, index=False)
    spec = SeriesSpec("periodic", str(path), n_lags=4, horizon=6, season=12)  # two sinusoids: an exact AR(4)
    errors = backtest_series(spec, models=[], n_cutoffs=4)
    assert sorted(errors["cutoff"].unique()) == [216, 222, 228, 234]
    table = errors.groupby("method")["MASE"].max()
    assert table["seasonal naive"] < 1e-9 and table["least-squares AR"] < 1e-6


def test_command_writes_the_markdown_tables(tmp_path, monkeypatch):
    out = tmp_path / "docs" / "backtest.md"
    monkeypatch.setattr(backtest.MODELS[1], "build", backtest._ssm("s4d", d_model=8, n_layers=1, d_state=8))
    backtest.main(["--output", str(out), "--series", "nile", "--models", "S4D", "--steps", "3", "--cutoffs", "2",
                   "--errors", str(tmp_path / "errors.csv")])
    text = out.read_text()
    assert "## MASE" in text and "## sMAPE" in text
    assert "| series | S4D | least-squares AR | seasonal naive |" in text
    rows = [line for line in text.splitlines() if line.startswith("| nile |")]
    assert len(rows) == 3  # the set-up table and the two metric tables
    errors = pd.read_csv(tmp_path / "errors.csv")
    assert len(errors) == 3 * 2 and np.isfinite(errors[["MASE", "sMAPE"]]).all().all()
    assert not list(out.parent.glob(".*.tmp"))  # written atomically
