"""The rolling-origin backtest: origins, MASE and sMAPE, exact baselines on a periodic series, the markdown report."""

from __future__ import annotations

import sys
from dataclasses import replace

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


def test_training_budget_is_steps_capped_by_epochs():
    assert backtest.training_epochs(640, 400, 32, 50) == (20, 400)  # 20 batches an epoch, 20 epochs
    assert backtest.training_epochs(60, 400, 32, 50) == (50, 100)  # a short series: 50 epochs of 2 batches
    assert backtest.training_epochs(60, 3, 32, 50) == (2, 4)


def _periodic_csv(tmp_path, noise: float = 0.0):
    t = np.arange(240)
    y = 10 + np.sin(2 * np.pi * t / 12) + 0.5 * np.cos(2 * np.pi * t / 4)
    y = y + noise * np.random.default_rng(0).standard_normal(len(t))
    path = tmp_path / "periodic.csv"
    pd.DataFrame({"unique_id": "p", "ds": t, "y": y}).to_csv(path, index=False)
    return path, y


def test_peers_forecast_the_same_origins_with_our_training_budget(tmp_path, monkeypatch):
    pytest.importorskip("neuralforecast")
    path, y = _periodic_csv(tmp_path)
    spec = SeriesSpec("periodic", str(path), n_lags=24, horizon=6, season=12)
    seen = []
    fit_peer = backtest.fit_peer

    def spy(peer, history, n_lags, horizon, seed=0):
        nf = fit_peer(peer, history, n_lags, horizon, seed)
        model = nf.models[0]
        seen.append((peer.name, len(history), model.input_size, model.h, model.max_steps, model.windows_batch_size))
        return nf

    monkeypatch.setattr(backtest, "fit_peer", spy)
    peers = [replace(p, steps=60) for p in backtest.PEERS]
    errors = backtest_series(spec, models=[], n_cutoffs=2, refit="first", peers=peers)
    by_method = errors.groupby("method")["cutoff"].apply(sorted)
    assert by_method["NHITS"] == by_method["PatchTST"] == by_method["seasonal naive"] == [228, 234]
    # fitted once on the history before the first origin, with our window, horizon and step budget
    _, budget = backtest.training_epochs(228 - 24 - 6 + 1, 60, 32, 50)
    assert seen == [("NHITS", 228, 24, 6, budget, 32), ("PatchTST", 228, 24, 6, budget, 32)]
    # a noiseless sum of two sinusoids is easy: far under the MAE of forecasting the history's mean (≈ 0.71);
    # the MASE scale is 1 here (the seasonal naive MAE is 0), so MASE is the MAE (measured: 0.014 and 0.11)
    mae_of_mean = np.abs(y[228:240] - y[:228].mean()).mean()
    mase = errors.groupby("method")["MASE"].max()
    assert mase["NHITS"] < 0.1 * mae_of_mean and mase["PatchTST"] < 0.3 * mae_of_mean


def test_backtest_runs_without_neuralforecast_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "neuralforecast", None)  # import fails as if it were not installed
    out = tmp_path / "backtest.md"
    monkeypatch.setattr(backtest.MODELS[1], "build", backtest._ssm("s4d", d_model=8, n_layers=1, d_state=8))
    backtest.main(["--output", str(out), "--series", "nile", "--models", "S4D", "NHITS", "PatchTST", "--steps", "2",
                   "--cutoffs", "2"])
    text = out.read_text()
    assert backtest.PEERS_MISSING in text
    assert "| series | S4D | least-squares AR | seasonal naive |" in text and "NHITS |" not in text


def test_rewriting_the_report_keeps_its_discussion(tmp_path):
    out = tmp_path / "backtest.md"
    out.write_text("# old tables\n\n## Discussion\n\nNHITS wins on co2 because ...\n")
    backtest.main(["--output", str(out), "--series", "nile", "--models", "--cutoffs", "2"])
    text = out.read_text()
    assert "old tables" not in text and text.count("## Discussion") == 1
    assert text.endswith("\n## Discussion\n\nNHITS wins on co2 because ...\n") and "## MASE" in text
