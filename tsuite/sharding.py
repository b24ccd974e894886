"""Sharding a batch job over ranks with Lightning's predict loop (``tsuite forecast``, ``tsuite separate``).

A job hands :func:`predict_sharded` a map-style dataset of work items (series
chunks, audio files), a module whose ``predict_step`` does one item, and a
callback that writes what the ranks produce. Lightning's distributed sampler
gives each rank its share of the items; no distribution code of our own.
"""

from __future__ import annotations

import argparse
import warnings
from typing import Any

import lightning.pytorch as pl
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset


def add_sharding_arguments(parser: argparse.ArgumentParser, items: str) -> None:
    """``--devices``, ``--accelerator`` and ``--strategy``; without ``--devices`` the job runs in one process."""
    parser.add_argument("--devices", default=None,
                        help=f"shard the {items} over this many devices/processes with Lightning's predict loop "
                             "(default: one process, no Trainer)")
    parser.add_argument("--accelerator", default="auto", help="with --devices: cpu, gpu, auto")
    parser.add_argument("--strategy", default="auto", help="with --devices: ddp, ddp_spawn, auto")


def parse_devices(value: str) -> int | str:
    """``--devices`` as Lightning takes it: a count, or a string such as ``auto`` or ``0,1``."""
    return int(value) if str(value).isdigit() else value


def _as_is(item: Any) -> Any:
    return item


class _ReleaseProcessGroup(pl.Callback):
    """Wait for every rank, then destroy the process group, as the last teardown hook of the run.

    Lightning destroys an NCCL group at exit but leaves a gloo one to the interpreter's shutdown, where a rank that
    exits while its peer's gloo threads still run aborts ("terminate called without an active exception"), after
    the job's files are written but with a failed exit status.
    """

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def predict_sharded(module: pl.LightningModule, items: Dataset, callback: pl.Callback, accelerator: str = "auto",
                    devices: int | str = "auto", strategy: str = "auto", progress: bool = True) -> pl.Trainer:
    """Run ``module.predict_step`` over ``items``, one item per step, sharded over ranks; return the Trainer."""
    trainer = pl.Trainer(accelerator=accelerator, devices=devices, strategy=strategy, logger=False,
                         callbacks=[callback, _ReleaseProcessGroup()], enable_progress_bar=progress, enable_model_summary=False,
                         use_distributed_sampler=True)
    loader = DataLoader(items, batch_size=None, shuffle=False, collate_fn=_as_is)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Couldn't infer the batch indices")
        trainer.predict(module, loader, return_predictions=False)
    return trainer
