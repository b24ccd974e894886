"""``SpeechSeparation``: the Lightning module that trains, evaluates and serves a speech-separation network.

The network is built by name (``mossformer2``: :class:`tsuite.audio.mossformer2.MossFormer2`,
arXiv 2312.11825; ``convtasnet``: :class:`tsuite.audio.conv_tasnet.ConvTasNet`, arXiv 1809.07454;
or any importable ``package.module.Class`` with the same interface: ``Class(num_speakers=S, **kwargs)``
maps a (B, T) waveform to (B, S, T)), so the hyperparameters are plain values and the model rebuilds
from its class path and hyperparameters alone.

Training recipe (MossFormer2 / ClearerVoice-Studio): negative SI-SNR with utterance-level PIT
(:mod:`tsuite.audio.losses`), Adam (lr 1.5e-4), the learning rate halved when the validation
loss stops improving (``ReduceLROnPlateau``, factor 0.5), gradient clipping at 5 and early stopping
(both set in the configs: ``trainer.gradient_clip_val`` and an ``EarlyStopping`` callback).
Differences: the patience of the learning-rate halving and of early stopping are our choices
(``lr_patience``, the callback's ``patience``), and the small espeak configs use a larger learning
rate (1e-3) than the full-size recipe.

Test: per-mixture SI-SNRi and SDRi (permutation chosen by SI-SNR), logged as ``test_si_snri`` and
``test_sdri`` (averages) and, with an MLflow logger, as the artifact ``separation_scores.csv``.

Serving: :meth:`SpeechSeparation.predict_frame` takes a table with a ``waveform`` column (a 1-D float
array per row) and an optional ``sample_rate`` column and returns columns ``s1`` ... ``sS`` (arrays at
the input rate), separated in overlapping chunks (see :mod:`tsuite.audio.separate_job`).
"""

from __future__ import annotations

import importlib
import itertools
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from tsuite.audio.losses import pit_si_snr_loss, separation_scores
from tsuite.module import TsuiteModule
from tsuite.tables import InputError

NETWORKS = {
    "mossformer2": "tsuite.audio.mossformer2.MossFormer2",
    "convtasnet": "tsuite.audio.conv_tasnet.ConvTasNet",
}
SCORES_FILE = "separation_scores.csv"


def build_network(name: str, num_speakers: int, kwargs: dict[str, Any] | None) -> nn.Module:
    """Instantiate a separation network by table name or ``package.module.Class`` path (imported lazily)."""
    path = NETWORKS.get(name, name)
    module, _, cls = path.rpartition(".")
    if not module:
        raise ValueError(f"unknown network {name!r}; expected one of {sorted(NETWORKS)} or a package.module.Class path")
    return getattr(importlib.import_module(module), cls)(num_speakers=num_speakers, **(kwargs or {}))


def fit_to_mixture(estimate: torch.Tensor, mixture: torch.Tensor, loading: float = 1e-4) -> torch.Tensor:
    """Rescale each source so that the sources best add up to the mixture (least squares over S gains).

    SI-SNR training leaves the output scale free; this gives the sources the mixture's units, and the
    same units in every chunk of a long file. ``loading`` adds that share of each source's own energy
    to the diagonal (scale-free; keeps near-silent or collinear estimates from getting huge gains).
    ``estimate`` (B, S, T), ``mixture`` (B, T) -> (B, S, T).
    """
    e = estimate.double()
    gram = e @ e.transpose(1, 2)  # (B, S, S)
    rhs = (e @ mixture.double().unsqueeze(-1)).squeeze(-1)  # (B, S)
    energy = gram.diagonal(dim1=1, dim2=2)  # (B, S)
    floor = 1e-12 * energy.sum(-1, keepdim=True) + 1e-20  # all-zero estimates
    gains = torch.linalg.solve(gram + torch.diag_embed(loading * energy + floor), rhs)  # (B, S)
    return (e * gains.unsqueeze(-1)).to(estimate.dtype)


class SpeechSeparation(TsuiteModule):
    """Separate a mixture of ``num_speakers`` voices with a named network, trained by SI-SNR PIT.

    Args:
        network: ``mossformer2``, ``convtasnet`` or a ``package.module.Class`` path.
        network_kwargs: keyword arguments of the network (its sizes).
        num_speakers: S, sources per mixture.
        sample_rate: the rate the network works at; other rates are resampled in serving and jobs.
        lr: Adam learning rate (1.5e-4 in the MossFormer2 recipe).
        weight_decay: Adam weight decay.
        lr_factor, lr_patience: ReduceLROnPlateau on the validation loss (halve after ``lr_patience``
            epochs without improvement).
        chunk_seconds, overlap_seconds: default chunking of :meth:`predict_frame` and ``tsuite separate``.
        test_sdr: also compute SDR/SDRi at test time (slower than SI-SNR alone).
    """

    def __init__(
        self,
        network: str = "mossformer2",
        network_kwargs: dict[str, Any] | None = None,
        num_speakers: int = 2,
        sample_rate: int = 8000,
        lr: float = 1.5e-4,
        weight_decay: float = 0.0,
        lr_factor: float = 0.5,
        lr_patience: int = 2,
        chunk_seconds: float = 8.0,
        overlap_seconds: float = 1.0,
        test_sdr: bool = True,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.num_speakers, self.sample_rate = num_speakers, sample_rate
        self.net = build_network(network, num_speakers, network_kwargs)
        self._scores: list[dict[str, Any]] = []

    def forward(self, mixture: torch.Tensor) -> torch.Tensor:
        return self.net(mixture)  # (B, T) -> (B, S, T)

    # -- training ----------------------------------------------------------------------------------
    def _estimate(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        mix, sources = batch["mix"], batch["sources"]  # (B, T), (B, S, T)
        est = self(mix)  # (B, S, T)
        t = min(est.shape[-1], sources.shape[-1])
        return est[..., :t], sources[..., :t]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        est, ref = self._estimate(batch)
        loss = pit_si_snr_loss(est, ref)
        self.log("train_loss", loss, prog_bar=True, batch_size=len(ref))
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        est, ref = self._estimate(batch)
        scores = separation_scores(est, ref, batch["mix"][..., : ref.shape[-1]], sdr=False)
        n = len(ref)
        self.log("val_loss", -scores["si_snr"].mean(), prog_bar=True, batch_size=n, sync_dist=True)
        self.log("val_si_snri", scores["si_snri"].mean(), batch_size=n, sync_dist=True)  # mean over ranks

    def on_test_epoch_start(self) -> None:
        self._scores = []

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        est, ref = self._estimate(batch)
        scores = separation_scores(est, ref, batch["mix"][..., : ref.shape[-1]], sdr=self.hparams.test_sdr)
        n = len(ref)
        for name, value in scores.items():
            self.log(f"test_{name}", value.mean(), batch_size=n, sync_dist=True)
        for i in range(n):
            row = {"mixture": batch["name"][i], "seconds": ref.shape[-1] / self.sample_rate}
            row.update({k: float(v[i]) for k, v in scores.items()})
            self._scores.append(row)

    def on_test_epoch_end(self) -> None:
        from lightning.pytorch.loggers import MLFlowLogger

        logger = self.logger
        if self.trainer.world_size > 1:  # DDP: every rank scored its share; the table holds all mixtures
            import torch.distributed as dist

            parts: list[list[dict]] = [[] for _ in range(self.trainer.world_size)]
            dist.all_gather_object(parts, self._scores)
            # the distributed sampler deals item i to rank i mod W and pads the last round with repeats of the first
            rows = [row for group in itertools.zip_longest(*parts) for row in group if row is not None]
            loader = self.trainer.test_dataloaders
            loader = loader[0] if isinstance(loader, (list, tuple)) else loader
            self._scores = rows[: len(loader.dataset)]
        if not (self._scores and isinstance(logger, MLFlowLogger) and self.trainer.is_global_zero):
            return
        table = self.scores_table()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / SCORES_FILE
            table.to_csv(path, index=False)
            logger.experiment.log_artifact(logger.run_id, str(path))

    def scores_table(self) -> pd.DataFrame:
        """Per-mixture test scores of the last test run, with an ``average`` row last."""
        table = pd.DataFrame(self._scores)
        mean = table.drop(columns=["mixture"]).mean().to_dict()
        return pd.concat([table, pd.DataFrame([{"mixture": "average", **mean}])], ignore_index=True)

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=self.hparams.lr_factor,
                                                           patience=self.hparams.lr_patience)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val_loss", "interval": "epoch",
                                                   "strict": False}}

    # -- inference ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def separate(self, mixture: torch.Tensor) -> torch.Tensor:
        """Separate mixtures at the model's sample rate: (B, T) or (T,) -> (B, S, T) or (S, T), in mixture units."""
        single = mixture.dim() == 1
        mix = mixture[None] if single else mixture  # (B, T)
        mix = mix.to(self.device, torch.float32)
        est = self(mix)[..., : mix.shape[-1]]  # (B, S, T)
        if est.shape[-1] < mix.shape[-1]:
            est = nn.functional.pad(est, (0, mix.shape[-1] - est.shape[-1]))
        est = fit_to_mixture(est.float(), mix)
        return est[0] if single else est

    def predict_params(self) -> dict[str, Any]:
        return {"chunk_seconds": float(self.hparams.chunk_seconds), "overlap_seconds": float(self.hparams.overlap_seconds)}

    def predict_frame(self, df: pd.DataFrame, chunk_seconds: float | None = None,
                      overlap_seconds: float | None = None) -> pd.DataFrame:
        """Separate each row's ``waveform`` (at ``sample_rate`` if given, else the model's): columns s1 ... sS."""
        from tsuite.audio.separate_job import ChunkedSeparator

        if "waveform" not in df.columns:
            raise InputError(f"input table: no column 'waveform'; expected columns waveform (a 1-D float array per "
                             f"row) and optionally sample_rate, got {list(df.columns)}")
        chunk = chunk_seconds or self.hparams.chunk_seconds
        overlap = self.hparams.overlap_seconds if overlap_seconds is None else overlap_seconds
        columns: dict[str, list[np.ndarray]] = {f"s{k + 1}": [] for k in range(self.num_speakers)}
        for row, value in enumerate(df["waveform"]):
            wave = _waveform(value, row)
            rate = int(df["sample_rate"].iloc[row]) if "sample_rate" in df.columns else self.sample_rate
            if rate <= 0:
                raise InputError(f"input table row {row}: sample_rate {rate} must be a positive number of Hz")
            out = ChunkedSeparator(self, rate, chunk, overlap).run_array(wave)  # (S, T)
            for k in range(self.num_speakers):
                columns[f"s{k + 1}"].append(out[k].astype(np.float32))
        return pd.DataFrame(columns, index=df.index)


def _waveform(value: Any, row: int) -> np.ndarray:
    try:
        wave = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise InputError(f"input table row {row}: waveform is not an array of numbers ({err})") from err
    if wave.ndim != 1 or wave.size == 0:
        raise InputError(f"input table row {row}: waveform has shape {wave.shape}; expected a non-empty 1-D array")
    if not np.isfinite(wave).all():
        raise InputError(f"input table row {row}: waveform has non-finite samples; expected finite numbers")
    return wave

