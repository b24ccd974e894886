"""One device against two with DDP, for every model family, through the unchanged ``tsuite fit`` command.

For each family (AR-Net on sunspots, S4D forecasting sunspots, S4D on
sequential digits, Aaren on Hawkes events, Conv-TasNet speech separation on
espeak-ng mixtures, LRCN activity recognition on moving shapes, the LSTM
hypernetwork on split digits) this runs ``tsuite fit`` twice in a
subprocess: on one device with the config's batch size B, and with
``--trainer.strategy ddp --trainer.devices 2`` and ``--data.init_args.batch_size
B/2``, so the global batch and the number of epochs are the same. Runs are
tracked in ``sqlite:///<out folder>/ddp_check.db``. It then writes a markdown
table to ``argv[1]``: the final validation metric of each run (a torchmetrics
metric, synchronised across ranks), the training throughput in samples/s
(samples per epoch × (epochs − 1) over the time between the first and the
last epoch's logged training loss: start-up excluded) and the wall time.

    python benchmarks/ddp_check.py OUT/ddp.md                      # GPUs: 1 vs 2
    python benchmarks/ddp_check.py OUT/ddp.md --smoke              # CPU, gloo, tiny: checks the script works
    python benchmarks/ddp_check.py OUT/ddp.md --families arnet_sunspots

A family's ``smoke_args`` are added to its command line under ``--smoke`` only
(the continual family learns one task per epoch there, so that the two smoke
epochs cross a task boundary: a fresh optimizer and the task's consolidation
under DDP).

If ``/tmp/site`` exists (packages carried to a machine without them), it is
put on ``PYTHONPATH`` for the runs. Where MLflow is not installed (the GPU
machine), ``--logger csv`` (the default there) logs with Lightning's
``CSVLogger`` and times epochs with :class:`EpochTimer` instead; the training
code is the same.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lightning.pytorch import Callback

REPO = Path(__file__).resolve().parents[1]
EXTRA_SITE = Path("/tmp/site")


@dataclass
class Family:
    name: str
    config: str
    metric: str  # a synchronised validation metric to compare
    epochs: int
    smoke_args: tuple[str, ...] = ()  # extra command-line arguments with --smoke only


FAMILIES = [
    Family("arnet_sunspots", "configs/forecasting/arnet_sunspots.yaml", "val_mae", 60),
    Family("s4d_sunspots", "configs/forecasting/s4d_sunspots.yaml", "val_mae", 60),
    Family("s4d_digits", "configs/sequence/s4d_digits.yaml", "val_acc", 15),
    Family("aaren_hawkes", "configs/events/aaren_hawkes.yaml", "val_nll", 15),
    Family("convtasnet_espeak", "configs/audio/convtasnet_espeak.yaml", "val_si_snri", 20),
    Family("lrcn_activity", "configs/vision_video/lrcn_shapes_activity.yaml", "val_acc_clip", 25),
    Family("hnet_lstm_split_digits", "configs/continual/hnet_lstm_split_digits.yaml", "val_acc", 100,
           ("--model.init_args.epochs_per_task", "1")),
]


class EpochTimer(Callback):
    """Append the wall time of every training epoch's end (rank 0) to ``path``: one float per line."""

    def __init__(self, path: str):
        self.path = path

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        if trainer.is_global_zero:
            with open(self.path, "a") as f:
                f.write(f"{time.time()}\n")


def config_batch_size(config: Path) -> int:
    import yaml

    return int(yaml.safe_load(config.read_text())["data"]["init_args"]["batch_size"])


def train_samples(config: Path, extra: list[str] = ()) -> int:
    """Training samples per epoch of a config's data module (built as `tsuite fit` builds it)."""
    from lightning.pytorch import LightningDataModule, LightningModule

    from tsuite.cli import TsuiteCLI

    cli = TsuiteCLI(LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                    save_config_callback=None, run=False,
                    args=["--config", str(config), "--trainer.logger", "false", *extra])
    cli.datamodule.setup("fit")
    return len(cli.datamodule.train_dataloader().dataset)


def fit(family: Family, devices: int, batch: int, epochs: int, out: Path, env: dict[str, str],
        smoke: bool, logger: str = "mlflow", extra: list[str] = ()) -> tuple[str, float]:
    """Run `tsuite fit`; return (run name, wall seconds)."""
    run_name = f"{family.name}_{devices}dev"
    cmd = [sys.executable, "-m", "tsuite.cli", "fit", "--config", str(REPO / family.config),
           "--trainer.max_epochs", str(epochs), "--trainer.devices", str(devices),
           "--trainer.strategy", "ddp" if devices > 1 else "auto",
           "--data.init_args.batch_size", str(batch // devices), *extra,
           "--trainer.default_root_dir", str(out / "runs" / run_name),
           "--trainer.enable_progress_bar", "false", "--log_model", "false", "--test_after_fit", "false"]
    if logger == "mlflow":
        cmd += ["--trainer.logger.init_args.run_name", run_name]
    else:
        (out / f"{run_name}.epochs").unlink(missing_ok=True)
        cmd += ["--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
                "--trainer.logger.init_args.save_dir", str(out / "csv"), "--trainer.logger.init_args.name", run_name,
                "--trainer.logger.init_args.version", "0",
                "--trainer.callbacks+=benchmarks.ddp_check.EpochTimer",
                "--trainer.callbacks.init_args.path", str(out / f"{run_name}.epochs")]
    if smoke:
        cmd += ["--trainer.accelerator", "cpu", "--trainer.limit_train_batches", "4",
                "--trainer.limit_val_batches", "2", *family.smoke_args]
    start = time.perf_counter()
    log = out / f"{run_name}.log"
    with open(log, "wb") as f:
        code = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=out)
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed with code {code}; see {log}:\n{log.read_text()[-3000:]}")
    return run_name, time.perf_counter() - start


def run_numbers(uri: str, run_name: str, metric: str) -> tuple[float, float]:
    """(final value of ``metric``, seconds between the first and the last epoch's train_loss) of a run."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == "tsuite"]
    runs = client.search_runs([experiment.experiment_id], f"tags.mlflow.runName = '{run_name}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    run = runs[0]
    loss = sorted(client.get_metric_history(run.info.run_id, "train_loss"), key=lambda m: m.step)
    span = (loss[-1].timestamp - loss[0].timestamp) / 1000 if len(loss) > 1 else float("nan")
    return run.data.metrics.get(metric, float("nan")), span


def csv_numbers(out: Path, run_name: str, metric: str) -> tuple[float, float]:
    """As :func:`run_numbers`, from the CSVLogger's metrics.csv and the EpochTimer's file."""
    import pandas as pd

    frame = pd.read_csv(out / "csv" / run_name / "version_0" / "metrics.csv")
    value = float(frame[metric].dropna().iloc[-1]) if metric in frame else float("nan")
    ends = [float(t) for t in (out / f"{run_name}.epochs").read_text().split()]
    return value, (ends[-1] - ends[0]) if len(ends) > 1 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="markdown file to write")
    parser.add_argument("--families", nargs="+", default=[f.name for f in FAMILIES],
                        choices=[f.name for f in FAMILIES])
    parser.add_argument("--epochs", type=int, default=None, help="override every family's number of epochs")
    parser.add_argument("--smoke", action="store_true",
                        help="CPU, DDP over gloo, 2 epochs of 4 batches: checks that everything runs")
    parser.add_argument("--extra", action="append", default=[],
                        help="an extra `tsuite fit` argument for every run, e.g. --extra=--data.init_args.source=DIR")
    parser.add_argument("--logger", choices=["mlflow", "csv"], default=None,
                        help="where the runs log (default: mlflow if installed, else csv)")
    args = parser.parse_args()

    out = Path(args.output).resolve().parent / "ddp_check"
    out.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{out / 'ddp_check.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "4")}
    if EXTRA_SITE.is_dir():
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(EXTRA_SITE), env.get("PYTHONPATH")]))
        sys.path.insert(0, str(EXTRA_SITE))
    os.environ["MLFLOW_TRACKING_URI"] = uri
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if args.logger is None:
        import importlib.util

        args.logger = "mlflow" if importlib.util.find_spec("mlflow") else "csv"

    rows = ["| family | devices | batch per device × devices | epochs | final val metric | train samples/s "
            "| speed-up | wall (s) |", "|---|---|---|---|---|---|---|---|"]
    for family in [f for f in FAMILIES if f.name in args.families]:
        config = REPO / family.config
        batch = config_batch_size(config)
        epochs = 2 if args.smoke else (args.epochs or family.epochs)
        samples = train_samples(config, args.extra)
        if args.smoke:
            samples = min(samples, 4 * batch)
        base = None
        for devices in (1, 2):
            run_name, wall = fit(family, devices, batch, epochs, out, env, args.smoke, args.logger,
                                 args.extra)
            numbers = run_numbers if args.logger == "mlflow" else (lambda _uri, *a: csv_numbers(out, *a))
            value, span = numbers(uri, run_name, family.metric)
            rate = samples * (epochs - 1) / span if span > 0 else float("nan")
            base = rate if devices == 1 else base
            row = (f"| {family.name} | {devices} | {batch // devices} × {devices} | {epochs} | "
                   f"{family.metric} = {value:.4g} | {rate:,.0f} | {rate / base:.2f} | {wall:.0f} |")
            rows.append(row)
            print(row, flush=True)
    text = "\n".join(rows) + "\n"
    Path(args.output).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
