"""End to end: `tsuite fit` writes an MLflow run (config, params, metrics, model), registers it, and
`tsuite forecast` with models:/NAME@champion gives the same numbers as the pyfunc model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tsuite.cli import main

REPO = Path(__file__).resolve().parents[1]
SUNSPOTS = str(REPO / "configs/forecasting/arnet_sunspots.yaml")
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.max_epochs", "3"]


@pytest.fixture
def fitted(mlflow_home):
    assert main(["fit", "--config", SUNSPOTS, *QUIET, "--register", "sun", "--alias", "champion"]) == 0
    import mlflow

    runs = mlflow.search_runs(experiment_names=["tsuite"])
    assert len(runs) == 1
    return runs.iloc[0]


def test_fit_logs_config_params_metrics_and_model(fitted, mlflow_home):
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    run_id = fitted["run_id"]
    config = yaml.safe_load(mlflow.artifacts.load_text(f"runs:/{run_id}/config.yaml"))
    assert config["model"]["class_path"] == "tsuite.forecasting.ARNet"
    assert config["data"]["init_args"]["source"] == "statsmodels:sunspots"
    assert config["trainer"]["max_epochs"] == 3
    assert fitted["params.n_lags"] == "24" and fitted["params.horizon"] == "6"
    history = client.get_metric_history(run_id, "val_mae")
    assert len(history) == 3 and all(np.isfinite(m.value) for m in history)  # one value per epoch
    for name in ("train_loss", "val_rmse", "val_mase", "val_smape", "test_mae", "test_rmse", "test_mase"):
        assert np.isfinite(fitted[f"metrics.{name}"]), name
    version = client.get_model_version_by_alias("sun", "champion")
    assert int(version.version) == 1
    model_info = mlflow.models.get_model_info("models:/sun@champion")
    assert model_info.signature is not None and "horizon" in str(model_info.signature.params)


def test_forecast_from_registry_matches_pyfunc(fitted, mlflow_home):
    import mlflow

    out = mlflow_home / "fc.csv"
    assert main(["forecast", "--model", "models:/sun@champion", "--input", "statsmodels:sunspots",
                 "--output", str(out), "--horizon", "9", "--no-progress"]) == 0
    fc = pd.read_csv(out)
    assert list(fc.columns) == ["unique_id", "ds", "ARNet"]
    assert len(fc) == 1 * 9 and np.isfinite(fc["ARNet"]).all()
    assert fc["ds"].tolist() == list(range(2009, 2018))

    from tsuite.forecasting import statsmodels_series

    pyfunc = mlflow.pyfunc.load_model("models:/sun@champion")
    direct = pyfunc.predict(statsmodels_series("sunspots"), params={"horizon": 9})
    np.testing.assert_allclose(direct["ARNet"].to_numpy(), fc["ARNet"].to_numpy(), rtol=1e-6)


def test_register_command_adds_a_version_and_alias(fitted, mlflow_home):
    from mlflow import MlflowClient

    assert main(["register", fitted["run_id"], "--name", "sun", "--alias", "staging"]) == 0
    assert int(MlflowClient().get_model_version_by_alias("sun", "staging").version) == 2


def test_forecast_from_lightning_checkpoint(mlflow_home):
    assert main(["fit", "--config", SUNSPOTS, *QUIET, "--log_model", "false"]) == 0
    ckpt = next(Path("outputs").rglob("*.ckpt"))
    out = mlflow_home / "fc.parquet"
    assert main(["forecast", "--model", str(ckpt), "--input", "statsmodels:sunspots", "--output", str(out),
                 "--no-progress"]) == 0
    fc = pd.read_parquet(out)
    assert len(fc) == 6 and np.isfinite(fc["ARNet"]).all()


def test_validate_test_and_predict_from_a_checkpoint(mlflow_home):
    import mlflow

    assert main(["fit", "--config", SUNSPOTS, *QUIET, "--log_model", "false"]) == 0
    ckpt = str(next(Path("outputs").rglob("*.ckpt")))
    for action in ("validate", "test", "predict"):
        assert main([action, "--config", SUNSPOTS, "--trainer.enable_progress_bar", "false", "--ckpt_path", ckpt]) == 0
    runs = mlflow.search_runs(experiment_names=["tsuite"])
    assert len(runs) == 4
    assert runs["metrics.test_mae"].notna().sum() == 2  # fit (test after fit) and test
    assert runs["metrics.val_mae"].notna().sum() >= 2  # fit and validate


def test_bad_data_fails_before_any_training(mlflow_home, capsys):
    bad = mlflow_home / "bad.csv"
    pd.DataFrame({"unique_id": ["a"] * 50, "ds": range(50), "y": ["x"] * 50}).to_csv(bad, index=False)
    code = main(["fit", "--config", SUNSPOTS, *QUIET, "--data.init_args.source", str(bad)])
    assert code == 2
    assert "data row 1: y value 'x' is not a number" in capsys.readouterr().err
    assert not list(Path("outputs").rglob("*.ckpt"))  # nothing was trained


def test_unreachable_tracking_server_fails_before_training(mlflow_home, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    assert main(["fit", "--config", SUNSPOTS, *QUIET]) == 2
    assert "http://127.0.0.1:9" in capsys.readouterr().err
    assert not Path("outputs").exists() or not list(Path("outputs").rglob("*.ckpt"))


def test_print_config_shows_resolved_config(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", SUNSPOTS, "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["init_args"]["n_lags"] == 24
    assert printed["trainer"]["logger"]["class_path"].endswith("MLFlowLogger")


def _user_data_stand_in(config: Path, home: Path) -> list[str]:
    """Overrides for configs that point at a dataset the user supplies (absent here): a tiny generated stand-in."""
    if config.name == "mossformer2_librimix.yaml":  # a LibriMix folder: mix/, s1/, s2/ from a tiny espeak corpus
        from tsuite.audio import corpus

        corpus.generate_corpus(home / "corpus", speakers=3, utterances=3, sample_rate=8000)
        librimix = corpus.write_librimix(home / "corpus", home / "Libri2Mix", mixtures=10)
        return ["--data.init_args.source", str(librimix), "--data.init_args.segment_seconds", "0.25",
                "--data.init_args.eval_segment_seconds", "0.25"]
    return []


@pytest.mark.parametrize("config", sorted((REPO / "configs").rglob("*.yaml")), ids=lambda p: p.name)
def test_every_config_fits_a_few_steps(config, mlflow_home):
    args = ["fit", "--config", str(config), "--trainer.enable_progress_bar", "false",
            "--trainer.max_steps", "3", "--trainer.max_epochs", "1", "--log_model", "false",
            *_user_data_stand_in(config, mlflow_home)]
    assert main(args) == 0
