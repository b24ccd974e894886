"""Resuming an interrupted ``tsuite fit`` into the same MLflow run, with the same random stream.

``tsuite fit`` keeps ``last.ckpt`` (``ModelCheckpoint(save_last=True)``) in
its checkpoint folder, and :class:`ResumeState` stores two things in every
checkpoint beside Lightning's own trainer state: the MLflow run id and the
random number generator states (torch, numpy, python) at the time of saving.
``tsuite fit --config X.yaml --ckpt_path last`` then finds the newest
``last.ckpt`` of the same model class under ``trainer.default_root_dir``
(:func:`find_last_checkpoint`), points the MLflow logger at the stored run
(metrics continue at the next step) and, at the start of the first
epoch, puts the random states back and draws that epoch's shuffle from
them, so that a deterministic run (``seed_everything``,
``trainer.deterministic``) killed mid-epoch ends with the same weights as an
uninterrupted one: the epoch that was cut short is replayed from its start
with the same shuffling.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback
from lightning.pytorch.loggers import MLFlowLogger

from tsuite.module import CLASS_PATH_KEY


class ResumeState(Callback):
    """Saves the MLflow run id and RNG states in checkpoints; restores the RNG states when training resumes."""

    def __init__(self) -> None:
        self.run_id: str | None = None
        self._rng: dict[str, Any] | None = None

    @property
    def state_key(self) -> str:
        return "ResumeState"

    def setup(self, trainer, pl_module, stage: str) -> None:  # noqa: ANN001 - Lightning's signature
        if isinstance(trainer.logger, MLFlowLogger):
            self.run_id = trainer.logger.run_id

    def state_dict(self) -> dict[str, Any]:
        return {"mlflow_run_id": self.run_id, "rng": rng_states()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._rng = state_dict.get("rng")

    def on_train_epoch_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        # A resumed fit reuses the train-loader iterator made before the checkpoint was restored, whose
        # shuffle would come from the fresh process's RNG. Put the saved states back and start the epoch's
        # iterator from them, as an uninterrupted run does at the start of every epoch after the first.
        if self._rng is None:
            return
        set_rng_states(self._rng)
        self._rng = None
        fetcher = getattr(trainer.fit_loop, "_data_fetcher", None)
        if fetcher is not None:
            iter(fetcher)


def rng_states() -> dict[str, Any]:
    """The torch, numpy and python RNG states as tensors and plain values (loadable with weights_only=True)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": list(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_states(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_run_id(path: str | os.PathLike) -> str | None:
    """The MLflow run id stored in a tsuite checkpoint, or None."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return ckpt.get("callbacks", {}).get("ResumeState", {}).get("mlflow_run_id")


def find_last_checkpoint(root: str | os.PathLike, model_class_path: str | None = None) -> Path | None:
    """The newest ``last.ckpt`` under ``root`` written by a model of class ``model_class_path`` (any when None)."""
    candidates = sorted(Path(root).rglob("last*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in candidates:
        if model_class_path is None:
            return path
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if ckpt.get(CLASS_PATH_KEY) == model_class_path:
            return path
    return None
