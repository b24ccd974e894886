"""The ``tsuite`` command line.

``tsuite fit|validate|test|predict --config FILE.yaml`` is a LightningCLI
(model and data chosen by class path in the config). After ``fit`` the model
is tested (when the data has a test split), logged to MLflow as a pyfunc
model and, with ``--register NAME``, registered; ``--ckpt_path last`` resumes an
interrupted fit into its MLflow run (:mod:`tsuite.resume`). The other commands are jobs
that are not Trainer actions; this module only dispatches to them:

- ``tsuite forecast``  batch forecasts of a series table (:mod:`tsuite.forecasting.forecast_job`)
- ``tsuite separate``  speech separation of audio files (:mod:`tsuite.audio.separate_job`)
- ``tsuite caption``   captions for video clips (:mod:`tsuite.vision_video.caption_job`)
- ``tsuite register``  put a logged model in the MLflow model registry
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Optional

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import MLFlowLogger

from tsuite.resume import ResumeState, checkpoint_run_id, find_last_checkpoint
from tsuite.tables import InputError
from tsuite.tracking import TrackingServerUnreachable, check_tracking_uri, tracking_uri

# Jobs that are not Trainer actions: name -> "module:function" taking argv.
JOBS = {
    "forecast": "tsuite.forecasting.forecast_job:main",
    "separate": "tsuite.audio.separate_job:main",
    "caption": "tsuite.vision_video.caption_job:main",
    "register": "tsuite.cli:register_main",
}
TRAINER_ACTIONS = ("fit", "validate", "test", "predict")


def _unreadable_checkpoint(path: object, err: Exception) -> InputError:
    return InputError(f"--ckpt_path {path}: cannot be read as a checkpoint ({err}); expected a Lightning "
                      "checkpoint written by tsuite fit")


class MLflowSaveConfig(SaveConfigCallback):
    """Log the fully resolved config to the MLflow run as ``config.yaml`` (MLflow has no log_dir to write to)."""

    def save_config(self, trainer, pl_module, stage) -> None:  # noqa: ANN001 - Lightning's signature
        if isinstance(trainer.logger, MLFlowLogger):
            text = self.parser.dump(self.config, skip_none=False)
            trainer.logger.experiment.log_text(trainer.logger.run_id, text, "config.yaml")


class TsuiteCLI(LightningCLI):
    """LightningCLI with MLflow tracking by default and model logging/registration after ``fit``."""

    def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001
        parser.add_argument("--register", type=Optional[str], default=None,
                            help="After fit, register the logged model under this name in the MLflow registry.")
        parser.add_argument("--alias", type=Optional[str], default="champion",
                            help="Alias set on the registered version (with --register).")
        parser.add_argument("--log_model", type=bool, default=True,
                            help="After fit, log the trained model to the MLflow run.")
        parser.add_argument("--test_after_fit", type=bool, default=True,
                            help="After fit, evaluate on the test split when the data module has one.")

    def _option(self, name: str):
        return self.config[self.subcommand].get(name)

    def _parse_ckpt_path(self) -> None:
        # LightningCLI reads --ckpt_path's hyperparameters while parsing: name a file it cannot read.
        try:
            super()._parse_ckpt_path()
        except Exception as err:  # noqa: BLE001 - a truncated or foreign file
            raise _unreadable_checkpoint(self.config[self.config.subcommand].get("ckpt_path"), err) from err

    def before_instantiate_classes(self) -> None:
        if self.subcommand == "fit":
            self._resolve_resume(self.config.fit)

    def _resolve_resume(self, cfg) -> None:  # noqa: ANN001 - a jsonargparse Namespace
        """``--ckpt_path last`` → the newest last.ckpt of this model class; resume into its MLflow run."""
        ckpt = cfg.get("ckpt_path")
        if not ckpt:
            return
        logger = cfg.trainer.get("logger")
        if str(getattr(logger, "class_path", "")).endswith("MLFlowLogger"):
            # Fail before searching or loading anything when the server is down.
            check_tracking_uri(logger.init_args.get("tracking_uri"))
        if ckpt == "last":
            root = cfg.trainer.get("default_root_dir") or "."
            path = find_last_checkpoint(root, cfg.model.get("class_path"))
            if path is None:
                print(f"tsuite: --ckpt_path last: no last.ckpt of {cfg.model.get('class_path')} under {root}; "
                      "training from the start")
                cfg.ckpt_path = None
                return
            cfg.ckpt_path = ckpt = str(path)
        if "://" in str(ckpt) or ckpt in ("best", "hpc", "registry"):
            return  # Lightning resolves these itself
        if not Path(ckpt).is_file():
            raise InputError(f"--ckpt_path {ckpt}: no such checkpoint file; expected a .ckpt file or 'last'")
        try:
            run_id = checkpoint_run_id(ckpt)
        except Exception as err:  # noqa: BLE001 - a truncated or foreign file: name it, before any training
            raise _unreadable_checkpoint(ckpt, err) from err
        if run_id and str(getattr(logger, "class_path", "")).endswith("MLFlowLogger") \
                and not logger.init_args.get("run_id"):
            logger.init_args.run_id = run_id
            print(f"tsuite: resuming {ckpt} into MLflow run {run_id}")

    def before_fit(self) -> None:
        logger = self.trainer.logger
        if isinstance(logger, MLFlowLogger):
            check_tracking_uri(logger._tracking_uri)
        # Keep last.ckpt and the state that resumes into the same run (see tsuite.resume).
        for callback in self.trainer.checkpoint_callbacks:
            if callback.save_last is None:
                callback.save_last = True
        if not any(isinstance(c, ResumeState) for c in self.trainer.callbacks):
            self.trainer.callbacks.insert(0, ResumeState())
        # Load and validate the data now, so bad input fails before any run or training starts.
        self.datamodule.prepare_data()
        self.datamodule.setup("fit")

    def after_fit(self) -> None:
        trainer, model, data = self.trainer, self.model, self.datamodule
        if trainer.interrupted:
            return
        if self._option("test_after_fit") and getattr(data, "has_test_split", False):
            trainer.test(model, datamodule=data, verbose=trainer.is_global_zero)
        logger = trainer.logger
        if not (trainer.is_global_zero and isinstance(logger, MLFlowLogger) and self._option("log_model")):
            return
        if not hasattr(model, "predict_frame") or not hasattr(data, "input_example"):
            print("tsuite: model or data module has no table interface; the model was not logged to MLflow")
            return
        from tsuite.tracking import log_model

        register = self._option("register")
        uri = log_model(model.cpu(), data.input_example(), logger.run_id, register, self._option("alias"))
        print(f"tsuite: logged model {uri} (tracking URI {logger._tracking_uri})")
        if register:
            alias = self._option("alias")
            print(f"tsuite: registered as models:/{register}" + (f"@{alias}" if alias else ""))


def run_lightning_cli(argv: list[str] | None) -> None:
    """Run the LightningCLI on ``argv`` (None: read sys.argv, as the console script does)."""
    TsuiteCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=MLflowSaveConfig,
        save_config_kwargs={"save_to_log_dir": False},
        trainer_defaults={
            "logger": {
                "class_path": "lightning.pytorch.loggers.MLFlowLogger",
                "init_args": {"experiment_name": "tsuite", "tracking_uri": tracking_uri()},
            },
            "default_root_dir": "outputs",
        },
        args=argv,
    )


def register_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="tsuite register", description="Register a logged model in the MLflow model registry."
    )
    parser.add_argument("source", help="a run ID, runs:/<run_id>/model, or a models:/ URI")
    parser.add_argument("--name", required=True, help="registered model name")
    parser.add_argument("--alias", default=None, help="alias to point at the new version, e.g. champion")
    args = parser.parse_args(argv)
    from tsuite.tracking import register

    check_tracking_uri()
    version = register(args.source, args.name, args.alias)
    target = f"models:/{args.name}@{args.alias}" if args.alias else f"models:/{args.name}/{version}"
    print(f"registered {args.source} as {args.name} version {version}: {target}")


USAGE = """usage: tsuite COMMAND [options]

Trainer actions (LightningCLI; see `tsuite fit --help`):
  fit        train a model:  tsuite fit --config configs/forecasting/arnet_sunspots.yaml
  validate   evaluate on the validation split
  test       evaluate on the test split
  predict    run the predict loop

Jobs:
  forecast   tsuite forecast --model MODEL --input TABLE --output TABLE [--horizon H]
  separate   tsuite separate --model MODEL --input WAV_OR_DIR --output DIR
  caption    tsuite caption --model MODEL --input VIDEO_OR_DIR [--output FILE]
  register   tsuite register RUN_OR_URI --name NAME [--alias champion]

MODEL is an MLflow model URI (models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/model),
a local MLflow model folder or a Lightning checkpoint. Runs are tracked at
$MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working directory.
"""


def main(argv: list[str] | None = None) -> int:
    from_console = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    try:
        if argv[0] in JOBS:
            module, _, func = JOBS[argv[0]].partition(":")
            getattr(importlib.import_module(module), func)(argv[1:])
        else:
            run_lightning_cli(None if from_console else argv)
    except (InputError, TrackingServerUnreachable, FileNotFoundError) as err:
        print(f"tsuite: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
