"""A `tsuite fit` interrupted mid-epoch resumes from last.ckpt into the same MLflow run and ends with the
same weights as an uninterrupted run."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback

from tsuite.cli import main

REPO = Path(__file__).resolve().parents[2]
SUNSPOTS = str(REPO / "configs/forecasting/arnet_sunspots.yaml")
EPOCHS = 3
ARGS = ["fit", "--config", SUNSPOTS, "--trainer.enable_progress_bar", "false", "--trainer.max_epochs", str(EPOCHS),
        "--trainer.deterministic", "true", "--log_model", "false", "--test_after_fit", "false"]


class InterruptAtStep(Callback):
    """Raise KeyboardInterrupt (what Ctrl-C raises) before training batch number ``step``."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


@pytest.fixture
def keep_sigint():
    handler = signal.getsignal(signal.SIGINT)  # Lightning ignores SIGINT after an interrupt; put it back
    yield
    signal.signal(signal.SIGINT, handler)


def final_state(root: str) -> dict[str, torch.Tensor]:
    (last,) = Path(root).rglob("last.ckpt")
    return torch.load(last, map_location="cpu", weights_only=True)


def test_fit_interrupted_mid_epoch_resumes_into_the_same_run_with_the_same_weights(mlflow_home, keep_sigint):
    import mlflow
    from mlflow import MlflowClient

    assert main([*ARGS, "--trainer.default_root_dir", "straight"]) == 0
    straight = final_state("straight")
    steps_per_epoch = straight["global_step"] // EPOCHS
    kill_at = steps_per_epoch + steps_per_epoch // 2  # the middle of the second epoch

    interrupt = ["--trainer.callbacks+=tests.ops.test_resume.InterruptAtStep",
                 f"--trainer.callbacks.init_args.step={kill_at}"]
    with pytest.raises(SystemExit) as exit_info:
        main([*ARGS, "--trainer.default_root_dir", "cut", *interrupt])
    assert exit_info.value.code == 1
    cut = final_state("cut")
    assert cut["epoch"] == 0 and cut["global_step"] == steps_per_epoch  # end of the first epoch
    runs = mlflow.search_runs(experiment_names=["tsuite"], order_by=["start_time ASC"])
    run_id = runs.iloc[1]["run_id"]
    assert runs.iloc[1]["status"] in ("FAILED", "KILLED")  # Lightning ends an interrupted run as FAILED
    assert cut["callbacks"]["ResumeState"]["mlflow_run_id"] == run_id

    assert main([*ARGS, "--trainer.default_root_dir", "cut", "--ckpt_path", "last"]) == 0
    runs = mlflow.search_runs(experiment_names=["tsuite"])
    assert len(runs) == 2  # resumed into the interrupted run, no new run
    assert mlflow.get_run(run_id).info.status == "FINISHED"
    history = MlflowClient().get_metric_history(run_id, "val_mae")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == \
        [steps_per_epoch * (e + 1) - 1 for e in range(EPOCHS)]  # epoch 1 before, 2-3 after the resume

    resumed = final_state("cut")
    assert resumed["global_step"] == straight["global_step"]
    for name, value in straight["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][name], value, rtol=0, atol=1e-6, msg=name)
    straight_val = MlflowClient().get_metric_history(runs[runs.run_id != run_id].iloc[0]["run_id"], "val_mae")
    assert sorted(m.value for m in history)[0] == pytest.approx(sorted(m.value for m in straight_val)[0], abs=1e-6)


def test_a_missing_or_truncated_checkpoint_is_named_before_training(mlflow_home, capsys):
    bad = mlflow_home / "cut.ckpt"
    bad.write_bytes(b"PK\x03\x04 truncated")
    for path in ("missing.ckpt", str(bad)):
        assert main([*ARGS, "--ckpt_path", path]) == 2
        err = capsys.readouterr().err
        assert f"--ckpt_path {path}:" in err and ("no such checkpoint file" in err or "cannot be read" in err)
    assert not Path("outputs").exists() or not list(Path("outputs").rglob("*.ckpt"))


def test_ckpt_path_last_without_a_checkpoint_trains_from_the_start(mlflow_home, capsys):
    assert main([*ARGS, "--trainer.max_epochs", "1", "--ckpt_path", "last"]) == 0
    assert "no last.ckpt of tsuite.forecasting.ARNet" in capsys.readouterr().out
    assert len(list(Path("outputs").rglob("last.ckpt"))) == 1
