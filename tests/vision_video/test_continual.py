"""Continual learning over a task sequence: metrics, the output regulariser, forgetting vs. protection, MLflow."""

from __future__ import annotations

import importlib
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from tsuite.cli import main
from tsuite.tables import InputError
from tsuite.vision_video.continual import continual_metrics, output_regularizer
from tsuite.vision_video.continual_baselines import TargetNetContinual

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs" / "continual"


def test_continual_metrics_on_a_known_matrix():
    R = np.array([[90.0, 10, 10], [80, 95, 10], [70, 85, 99]])
    m = continual_metrics(R)
    assert m["avg_acc"] == pytest.approx((70 + 85 + 99) / 3)
    assert m["bwt"] == pytest.approx(((70 - 90) + (85 - 95)) / 2)  # Lopez-Paz & Ranzato 2017
    assert m["forgetting"] == pytest.approx(((90 - 70) + (95 - 85)) / 2)  # Chaudhry et al. 2018
    up = continual_metrics(np.array([[80.0, 0], [90, 99]]))
    assert up["bwt"] == pytest.approx(10) and up["forgetting"] == pytest.approx(-10)
    assert continual_metrics(np.array([[88.0]])) == {"avg_acc": 88.0, "bwt": 0.0, "forgetting": 0.0}


def test_output_regularizer_is_beta_over_old_tasks_times_summed_squares():
    stored, gen = torch.zeros(3, 4), torch.arange(12.0).reshape(3, 4)
    expected = 0.1 / 3 * (gen**2).sum()
    assert output_regularizer(gen, stored, beta=0.1).item() == pytest.approx(expected.item())
    imp = torch.tensor([2.0, 0, 0, 0]).expand(3, 4)
    assert output_regularizer(gen, stored, 0.1, imp).item() == pytest.approx(0.1 / 3 * 2 * (0 + 16 + 64))


def test_empirical_fisher_matches_a_loop_over_examples():
    torch.manual_seed(0)
    model = TargetNetContinual(n_tasks=2, input_shape=[1, 8, 8], classes_per_task=2, method="ewc",
                               target_hidden=[8])
    x, y = torch.randn(5, 1, 8, 8), torch.tensor([0, 1, 1, 0, 1])
    fisher = model.empirical_fisher(1, x, y)
    for name, p in model.net.named_parameters():
        expected = torch.zeros_like(p)
        for i in range(5):
            loss = torch.nn.functional.cross_entropy(model.logits(x[i : i + 1], 1), y[i : i + 1])
            (g,) = torch.autograd.grad(loss, p)
            expected += g**2 / 5
        torch.testing.assert_close(fisher[name], expected, rtol=1e-5, atol=1e-7)


def _run(config: str, n_tasks: int = 5, **model_args):
    """Fit a config of configs/continual/ on its first ``n_tasks`` tasks (no MLflow); the fitted model."""
    cfg = yaml.safe_load((CONFIGS / config).read_text())
    margs = {**cfg["model"]["init_args"], "n_tasks": n_tasks, **model_args}
    dargs = {**cfg["data"]["init_args"], "n_tasks": n_tasks}

    def build(spec, args):
        module, _, name = spec["class_path"].rpartition(".")
        return getattr(importlib.import_module(module), name)(**args)

    pl.seed_everything(cfg["seed_everything"], verbose=False)
    model, data = build(cfg["model"], margs), build(cfg["data"], dargs)
    trainer = pl.Trainer(max_epochs=n_tasks * margs["epochs_per_task"], reload_dataloaders_every_n_epochs=1,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, data)
    return model, data


@pytest.fixture(scope="module")
def lstm_run():
    torch.set_num_threads(1)
    return _run("hnet_lstm_split_digits.yaml")


@pytest.fixture(scope="module")
def finetune_bwt():
    torch.set_num_threads(1)
    return _run("finetune_split_digits.yaml")[0].results()


def test_lstm_hypernetwork_keeps_old_tasks_while_fine_tuning_forgets(lstm_run, finetune_bwt):
    """Split digits, 5 tasks, the configs' budget (20 epochs per task): the checked claim of docs/continual.md."""
    hnet, tune = lstm_run[0].results(), finetune_bwt
    assert hnet["tasks"] == tune["tasks"] == 5
    assert hnet["bwt"] >= -1.0, hnet["R"]  # percentage points
    assert hnet["avg_acc"] >= 97.0
    assert tune["bwt"] <= -10.0, tune["R"]  # the same target network trained directly forgets
    assert np.diag(tune["R"]).min() >= 95.0  # … although it learnt each task when it was trained


def test_predict_frame_uses_given_or_inferred_task(lstm_run):
    model, data = lstm_run
    res = model.results()
    for j in range(5):
        df = data.frame(j)
        out = model.predict_frame(df)
        truth = np.asarray(data.task_classes[j])[data.tasks[j].y_test.numpy()]
        acc = 100 * (out["class"].to_numpy() == truth).mean()
        assert acc == pytest.approx(res["R"][4, j], abs=1e-3)  # the task given: R's last row
        assert (out["task_id"] == j).all() and out["probability"].between(0.5, 1).all()
    both = pd.concat([data.frame(j) for j in range(5)], ignore_index=True).assign(task_id=-1)
    inferred = model.predict_frame(both)
    truth = np.concatenate([np.asarray(data.task_classes[j])[data.tasks[j].y_test.numpy()] for j in range(5)])
    cil = 100 * (inferred["class"].to_numpy() == truth).mean()
    assert cil > 10 + 20  # class-incremental by entropy task inference: well above chance (10 classes)
    assert cil == pytest.approx(np.average(model.cil_matrix[4].numpy(), weights=[len(t.y_test) for t in
                                                                              data.tasks]), abs=1e-3)


def test_predict_frame_rejects_bad_tables(lstm_run):
    model, data = lstm_run
    df = data.frame(0, rows=3)
    with pytest.raises(InputError, match="missing column.*pixel_5"):
        model.predict_frame(df.drop(columns=["pixel_5"]))
    bad = df.astype({"pixel_7": object})
    bad.loc[1, "pixel_7"] = "dark"
    with pytest.raises(InputError, match="row 2: pixel_7 value 'dark' is not a number"):
        model.predict_frame(bad)
    with pytest.raises(InputError, match="row 1: task_id 9 is outside -1..4"):
        model.predict_frame(df.assign(task_id=9))


def test_ewc_and_si_forget_less_than_fine_tuning(finetune_bwt):
    tune = finetune_bwt["bwt"]
    ewc = _run("ewc_split_digits.yaml")[0].results()["bwt"]
    si = _run("si_split_digits.yaml")[0].results()["bwt"]
    assert ewc > tune + 3 and si > tune + 3, (tune, ewc, si)


def test_fit_logs_matrix_metrics_and_a_servable_model(mlflow_home):
    import mlflow

    args = ["fit", "--config", str(CONFIGS / "hnet_lstm_split_digits.yaml"), "--trainer.enable_progress_bar", "false",
            "--model.init_args.n_tasks", "2", "--data.init_args.n_tasks", "2", "--model.init_args.epochs_per_task",
            "2", "--trainer.max_epochs", "4", "--register", "cl_lstm"]
    assert main(args) == 0
    run = mlflow.search_runs(experiment_names=["tsuite"]).iloc[0]
    for key in ("cl_avg_acc", "cl_bwt", "cl_forgetting", "cl_cil_avg_acc", "n_params", "test_acc"):
        assert np.isfinite(run[f"metrics.{key}"]), key
    assert run["metrics.n_params"] == 54_764 - 3 * 32  # two task embeddings instead of five
    csv = pd.read_csv(mlflow.artifacts.download_artifacts(f"runs:/{run.run_id}/accuracy_matrix.csv"))
    assert list(csv.columns) == ["after_task", "task_0", "task_1"] and len(csv) == 2
    assert run["metrics.cl_avg_acc"] == pytest.approx(csv.iloc[-1, 1:].mean(), abs=1e-3)
    assert run["metrics.cl_bwt"] == pytest.approx(csv.iloc[1, 1] - csv.iloc[0, 1], abs=1e-3)
    names = {a.path for a in mlflow.MlflowClient().list_artifacts(run.run_id)}
    assert {"accuracy_matrix.json", "accuracy_matrix.png", "config.yaml"} <= names
    pyfunc = mlflow.pyfunc.load_model("models:/cl_lstm@champion")
    from tsuite.vision_video import ContinualDataModule

    example = ContinualDataModule("split_digits", n_tasks=2).input_example()
    out = pyfunc.predict(example)
    assert list(out.columns) == ["task_id", "class", "probability"]
    assert out["task_id"].tolist()[:2] == [0, 0] and set(out["class"]) <= {0, 1, 2, 3}


def test_mismatched_model_and_data_fail_before_training(mlflow_home, capsys):
    args = ["fit", "--config", str(CONFIGS / "hnet_lstm_split_digits.yaml"), "--trainer.enable_progress_bar", "false",
            "--model.init_args.n_tasks", "3", "--data.init_args.n_tasks", "3",
            "--model.init_args.classes_per_task", "3", "--trainer.logger", "false"]
    assert main(args) == 2
    assert "classes_per_task=3" in capsys.readouterr().err


def test_cnn_target_on_split_cifar10_pickles(tmp_path):
    """The whole pipeline with the small CNN target network, on tiny CIFAR-10 batches written here."""
    import pickle

    from tsuite.vision_video import ContinualDataModule, HypernetworkContinual

    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = np.arange(20) % 10
        data = (rng.integers(0, 10, (20, 3072)) + labels[:, None] * 25).astype(np.uint8)
        (tmp_path / name).write_bytes(pickle.dumps({b"data": data, b"labels": labels.tolist()}))
    data = ContinualDataModule("split_cifar10", path=str(tmp_path), n_tasks=2, val_size=0.1, batch_size=16)
    pl.seed_everything(0, verbose=False)
    model = HypernetworkContinual(n_tasks=2, input_shape=[3, 32, 32], classes_per_task=2, epochs_per_task=15,
                                  hypernetwork="lstm", target="cnn", target_hidden=[4, 8], chunk_size=500,
                                  hnet_hidden=[32], lr=0.003)
    pl.Trainer(max_epochs=30, reload_dataloaders_every_n_epochs=1, logger=False, enable_checkpointing=False,
               enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0).fit(model, data)
    R = model.results()["R"]
    assert R.shape == (2, 2) and R[1, 1] >= 90 and R[1, 0] >= 90, R  # classes differ in brightness: easy to learn
    out = model.predict_frame(data.frame(1))
    assert out["class"].tolist() == [2, 3, 2, 3]  # the test batch holds two images of each class
