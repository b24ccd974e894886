"""`tsuite fit` against a real MLflow tracking server: runs, artifacts (proxied) and the registry go through
the server, and the registered model loads back from it; an unreachable server stops `fit` before training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tests.ops.conftest import SUNSPOTS, free_port
from tsuite.cli import main


def test_fit_tracks_registers_and_loads_back_through_the_server(registered, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered["uri"])
    mlflow.set_tracking_uri(registered["uri"])
    client = MlflowClient(registered["uri"])
    (experiment,) = [e for e in client.search_experiments() if e.name == "tsuite"]
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert len(client.get_metric_history(run.info.run_id, "val_mae")) == 2  # one per epoch
    assert np.isfinite(run.data.metrics["test_mae"])
    version = client.get_model_version_by_alias("sun", "champion")
    assert int(version.version) == 1
    # Artifacts went through the server's proxy into --artifacts-destination, not to the client's disk.
    stored = {p.name for p in (registered["home"] / "artifacts").rglob("*") if p.is_file()}
    assert {"config.yaml", "MLmodel", "weights.pt"} <= stored
    assert not (registered["work"] / "mlruns").exists() and not (registered["work"] / "mlartifacts").exists()

    from tsuite.forecasting import statsmodels_series
    from tsuite.tracking import load_model

    history = statsmodels_series("sunspots")
    model = load_model("models:/sun@champion")
    direct = model.predict_frame(history, horizon=4)
    pyfunc = mlflow.pyfunc.load_model("models:/sun@champion")
    served = pyfunc.predict(history, params={"horizon": 4})
    assert list(direct["ds"]) == [2009, 2010, 2011, 2012] and np.isfinite(direct["ARNet"]).all()
    pd.testing.assert_frame_equal(direct, served)


def test_fit_with_an_unreachable_server_fails_before_training(mlflow_home, monkeypatch, capsys):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens on a port just released
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    code = main(["fit", "--config", SUNSPOTS, "--trainer.enable_progress_bar", "false", "--trainer.max_epochs", "1"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"cannot reach the MLflow tracking server at {uri}" in err
    assert not Path("outputs").exists() or not list(Path("outputs").rglob("*.ckpt"))  # nothing was trained
