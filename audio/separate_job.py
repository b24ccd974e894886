"""``tsuite separate``: separate the speakers of audio files of any length with a trained model.

    tsuite separate --model MODEL --input FILE_OR_DIR --output DIR [--overwrite]
        [--chunk-seconds S] [--overlap-seconds O] [--device cpu|cuda|auto] [--no-progress]
        [--devices N --strategy ddp|ddp_spawn --accelerator cpu|gpu|auto]

- MODEL: an MLflow model URI or folder, or a Lightning checkpoint (:func:`tsuite.tracking.load_model`).
- Input: one file, or a folder searched recursively for .wav/.flac/.ogg files; outputs mirror
  the input's subfolders under DIR. ``<name>.wav`` gives ``<name>_s1.wav``, ``<name>_s2.wav``, ...
  (32-bit float WAV) at the input's sample rate and length.
- Any sample rate: each chunk is resampled to the model's rate and its outputs back. Stereo input
  is mixed down to mono (the mean of the channels); more than two channels are refused.
- Any length, bounded memory: the file is streamed from disk in chunks of ``chunk`` seconds that
  overlap by ``overlap`` seconds; only one chunk is in memory (and on the GPU) at a time. Each
  chunk's outputs are permuted to best match the previous chunk's on the overlap (cosine similarity
  of the overlapping samples), so speakers keep their output file across chunk boundaries, and the
  overlaps are cross-faded linearly. Each chunk's sources are rescaled to add up to the chunk's
  mixture (least squares), so levels match across chunks.
- Outputs are written to temporary files and renamed into place when a file is done; existing
  outputs are refused (before anything is processed) unless ``--overwrite``; output paths are
  checked to stay inside DIR. Unreadable, empty, non-finite or silent input is an error naming
  the file (exit code 2).
- ``--devices N`` (with ``--strategy ddp`` or ``ddp_spawn`` and ``--accelerator``) shards the files
  across N ranks with Lightning's predict loop (its distributed sampler deals each file to one rank,
  without repeats): each rank separates its files into the same output names, each file's outputs
  written atomically as above, and after a barrier rank 0 prints the summary. The outputs equal the
  single-process run's; files are independent, so there is nothing to merge. A file that fails does
  not stop the other ranks: after the barrier every rank raises one error naming all failed files.
  Without ``--devices`` one process separates the files in order (no Trainer).
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
from pathlib import Path
from typing import Iterator


import lightning.pytorch as pl
import numpy as np
import soundfile as sf
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from tsuite.audio.mixture_data import AUDIO_SUFFIXES, SILENCE_PEAK, resample
from tsuite.sharding import add_sharding_arguments, parse_devices, predict_sharded
from tsuite.tables import InputError


class ChunkedSeparator:
    """Separate a stream of samples at ``rate`` Hz chunk by chunk with overlap-add and speaker alignment.

    ``model`` has ``separate(mix (T,)) -> (S, T)`` at ``model.sample_rate`` and ``num_speakers``.
    Feed blocks with :meth:`run_blocks` (or a whole array with :meth:`run_array`).
    """

    def __init__(self, model, rate: int, chunk_seconds: float, overlap_seconds: float):
        self.model, self.rate = model, int(rate)
        self.chunk = max(int(round(chunk_seconds * rate)), 1)
        self.overlap = int(round(overlap_seconds * rate))
        if chunk_seconds <= 0 or overlap_seconds < 0 or 2 * self.overlap > self.chunk:
            raise InputError(f"--chunk-seconds {chunk_seconds} and --overlap-seconds {overlap_seconds}: expected a "
                             "positive chunk and an overlap of at most half the chunk")
        self.hop = self.chunk - self.overlap
        self.swaps = 0  # chunks whose outputs were reordered to keep the speakers in place

    def separate_chunk(self, block: np.ndarray) -> np.ndarray:
        """(L,) at ``rate`` -> (S, L) at ``rate``."""
        model_rate = int(self.model.sample_rate)
        x = resample(block, self.rate, model_rate)
        out = self.model.separate(torch.from_numpy(np.ascontiguousarray(x))).float().cpu().numpy()  # (S, L')
        out = resample(out, model_rate, self.rate)
        if out.shape[-1] < len(block):
            out = np.pad(out, ((0, 0), (0, len(block) - out.shape[-1])))
        return out[:, : len(block)]

    def blocks_from(self, read) -> Iterator[tuple[np.ndarray, bool]]:
        """(block, is_last) from ``read(n) -> (n',) samples``: each block repeats the previous one's last overlap."""
        tail = np.zeros(0, np.float32)
        first = True
        while True:
            want = self.chunk if first else self.hop
            new = read(want)
            if len(new) == 0:
                return
            block = np.concatenate([tail, new]) if not first else new
            last = len(new) < want
            yield block, last
            if last:
                return
            tail, first = block[-self.overlap :] if self.overlap else block[:0], False

    def run_blocks(self, blocks: Iterator[tuple[np.ndarray, bool]]) -> Iterator[np.ndarray]:
        """Yield finished output samples (S, n) in order, for blocks from :meth:`blocks_from`."""
        carry: np.ndarray | None = None  # (S, overlap): the previous chunk's raw outputs on the overlap
        for block, last in blocks:
            y = self.separate_chunk(block)  # (S, L)
            ov = 0 if carry is None else carry.shape[1]
            if ov:
                perm = best_permutation(carry, y[:, :ov])
                if perm != tuple(range(len(perm))):
                    self.swaps += 1
                y = y[list(perm)]
                w = (np.arange(ov, dtype=np.float32) + 0.5) / ov  # fade-in of the new chunk
                head = carry * (1 - w) + y[:, :ov] * w
            else:
                head = y[:, :0]
            keep = y.shape[1] if last or not self.overlap else y.shape[1] - self.overlap
            yield np.concatenate([head, y[:, ov:keep]], axis=1)
            carry = None if last or not self.overlap else y[:, keep:]
            if last:
                return
        if carry is not None:
            yield carry

    def run_array(self, wave: np.ndarray) -> np.ndarray:
        """Separate a whole in-memory waveform (T,) -> (S, T)."""
        pos = 0

        def read(n: int) -> np.ndarray:
            nonlocal pos
            out = wave[pos : pos + n]
            pos += len(out)
            return out

        parts = list(self.run_blocks(self.blocks_from(read)))
        return np.concatenate(parts, axis=1) if parts else np.zeros((self.model.num_speakers, 0), np.float32)


def best_permutation(previous: np.ndarray, current: np.ndarray) -> tuple[int, ...]:
    """The order of ``current``'s sources (S, n) that best matches ``previous`` (S, n): max summed cosine similarity."""
    a = previous / np.maximum(np.linalg.norm(previous, axis=1, keepdims=True), 1e-12)
    b = current / np.maximum(np.linalg.norm(current, axis=1, keepdims=True), 1e-12)
    sim = a @ b.T  # (S, S): sim[i, j] = match of previous source i with current source j
    s = len(sim)
    return max(itertools.permutations(range(s)), key=lambda p: sum(sim[i, p[i]] for i in range(s)))


def input_files(source: Path, output: Path) -> list[tuple[Path, Path]]:
    """(input file, its path relative to the input root) for a file or a folder (recursive, sorted)."""
    if source.is_file():
        return [(source, Path(source.name))]
    if not source.is_dir():
        raise InputError(f"{source}: no such file or folder; expected an audio file or a folder of them")
    out_root = output.resolve()
    files = [p for p in sorted(source.rglob("*")) if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES
             and not p.resolve().is_relative_to(out_root)]
    if not files:
        raise InputError(f"{source}: no audio files ({', '.join(AUDIO_SUFFIXES)}) in this folder or below")
    return [(p, p.relative_to(source)) for p in files]


def output_paths(rel: Path, output: Path, num_speakers: int) -> list[Path]:
    """``output/<rel folder>/<stem>_s<k>.wav``, refusing any path that would leave ``output``."""
    root = output.resolve()
    paths = []
    for k in range(1, num_speakers + 1):
        path = (output / rel.parent / f"{rel.stem}_s{k}.wav").resolve()
        if not path.is_relative_to(root):
            raise InputError(f"{rel}: output name {path} would fall outside the output folder {root}")
        paths.append(path)
    return paths


def separate_file(model, source: Path, targets: list[Path], chunk_seconds: float, overlap_seconds: float,
                  bar: tqdm | None = None) -> int:
    """Separate one file into ``targets`` (one per speaker), streaming it; returns the number of samples."""
    try:
        handle = sf.SoundFile(str(source))
    except Exception as err:  # noqa: BLE001 - libsndfile raises several error types
        raise InputError(f"{source}: cannot be read as audio ({err}); expected a WAV, FLAC or OGG file") from err
    temps: list[Path] = []
    writers: list[sf.SoundFile] = []
    try:
        with handle:
            if handle.frames == 0:
                raise InputError(f"{source}: no audio samples (empty file); expected speech")
            if handle.channels > 2:
                raise InputError(f"{source}: {handle.channels} channels; expected mono or stereo (stereo is mixed "
                                 "down to mono)")
            rate = handle.samplerate
            for target in targets:
                target.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".tmp.wav", dir=target.parent)
                os.close(fd)
                temps.append(Path(tmp))
                writers.append(sf.SoundFile(tmp, "w", rate, 1, subtype="FLOAT", format="WAV"))
            peak, done = 0.0, 0

            def read(n: int) -> np.ndarray:
                nonlocal peak, done
                data = handle.read(n, dtype="float32", always_2d=True)
                mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
                if len(mono) and not np.isfinite(mono).all():
                    where = done + int(np.flatnonzero(~np.isfinite(mono))[0])
                    raise InputError(f"{source}: sample {where} is not a finite number; expected finite samples")
                peak = max(peak, float(np.abs(mono).max())) if len(mono) else peak
                done += len(mono)
                if bar is not None:
                    bar.update(len(mono) / rate)
                return mono

            engine = ChunkedSeparator(model, rate, chunk_seconds, overlap_seconds)
            written = 0
            for out in engine.run_blocks(engine.blocks_from(read)):
                for k, w in enumerate(writers):
                    w.write(out[k])
                written += out.shape[1]
            if peak < SILENCE_PEAK:
                raise InputError(f"{source}: silent (peak amplitude below {SILENCE_PEAK:g}); expected speech")
        for w in writers:
            w.close()
        for tmp, target in zip(temps, targets):
            os.replace(tmp, target)
        return written
    finally:
        for w in writers:
            if not w.closed:
                w.close()
        for tmp in temps:
            tmp.unlink(missing_ok=True)


def _seconds(path: Path) -> float:
    """Duration for the progress bar (0 for files that cannot be read; they fail later with their name)."""
    try:
        info = sf.info(str(path))
        return info.frames / info.samplerate
    except Exception:  # noqa: BLE001
        return 0.0


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available; use --device cpu or auto")
    return torch.device(name)


def plan_jobs(model, source: Path, output: Path, overwrite: bool, chunk_seconds: float | None,
              overlap_seconds: float | None) -> tuple[list[tuple[Path, list[Path]]], float, float]:
    """(input file, its output paths) for every input, and the chunking; refuses clashes and existing outputs."""
    chunk = chunk_seconds or float(model.hparams.chunk_seconds)
    overlap = float(model.hparams.overlap_seconds) if overlap_seconds is None else overlap_seconds
    ChunkedSeparator(model, int(model.sample_rate), chunk, overlap)  # check the chunking before any work
    jobs = [(src, output_paths(rel, output, model.num_speakers)) for src, rel in input_files(source, output)]
    owner: dict[Path, Path] = {}
    for src, targets in jobs:
        if targets[0] in owner:
            raise InputError(f"{src} and {owner[targets[0]]} would both be written to {targets[0]}; rename one")
        owner[targets[0]] = src
    if not overwrite:
        for _, targets in jobs:
            for t in targets:
                if t.exists():
                    raise InputError(f"{t}: already exists; pass --overwrite to replace it")
    return jobs, chunk, overlap


def separate_paths(model, source: Path, output: Path, overwrite: bool = False, chunk_seconds: float | None = None,
                   overlap_seconds: float | None = None, progress: bool = True) -> list[Path]:
    """Separate every input file under ``source`` into ``output`` in this process; returns the written paths."""
    jobs, chunk, overlap = plan_jobs(model, source, output, overwrite, chunk_seconds, overlap_seconds)
    total = sum(_seconds(src) for src, _ in jobs)
    written = []
    with tqdm(total=round(total, 2), unit="s", desc="separate", disable=not progress) as bar:
        for src, targets in jobs:
            separate_file(model, src, targets, chunk, overlap, bar)
            written.extend(targets)
    return written


# -- sharded across ranks with Lightning's predict loop ---------------------------------------------
class FileJobs(Dataset):
    """Map-style dataset of the input files: item ``i`` is ``(i, input file, its output paths)``."""

    def __init__(self, jobs: list[tuple[Path, list[Path]]]):
        self.jobs = jobs

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int) -> tuple[int, Path, list[Path]]:
        src, targets = self.jobs[i]
        return i, src, targets


class FileSeparator(pl.LightningModule):
    """Predict step = :func:`separate_file` of one input: (index, file, targets) → (index, targets, error or None)."""

    def __init__(self, model: pl.LightningModule, chunk_seconds: float, overlap_seconds: float):
        super().__init__()
        self.model, self.chunk, self.overlap = model, chunk_seconds, overlap_seconds

    def predict_step(self, batch: tuple[int, Path, list[Path]], batch_idx: int) -> tuple[int, list[Path], str | None]:
        index, src, targets = batch
        try:
            separate_file(self.model, src, targets, self.chunk, self.overlap)
        except InputError as err:  # raised by every rank after the barrier, so that no rank waits for ever
            return index, targets, str(err)
        return index, targets, None


class SeparationSummary(BasePredictionWriter):
    """Each rank's files are already written by the predict step; this counts them and, after a barrier,
    rank 0 prints the total (or every rank raises if any file failed)."""

    def __init__(self, output: Path):
        super().__init__(write_interval="batch")
        self.output = output
        self.written: list[Path] = []
        self.errors: list[str] = []

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,  # noqa: ANN001
                           dataloader_idx) -> None:
        _, targets, error = prediction
        if error is None:
            self.written.extend(targets)
        else:
            self.errors.append(error)

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainer.strategy.barrier("tsuite-separate-done")
        counts = torch.tensor([len(self.written), len(self.errors)], dtype=torch.float64, device=pl_module.device)
        written, failed = (int(v) for v in trainer.strategy.reduce(counts, reduce_op="sum").round().tolist())
        if failed:
            errors = self.errors
            if trainer.world_size > 1:  # every rank raises the same message, naming every failed file
                parts: list[list[str]] = [[] for _ in range(trainer.world_size)]
                torch.distributed.all_gather_object(parts, self.errors)
                errors = [e for part in parts for e in part]
            raise InputError(f"{failed} input file(s) failed ({'; '.join(errors)}); {written} output file(s) "
                             "were written")
        if trainer.is_global_zero:
            print(f"wrote {written} file(s) to {self.output}")


def separate_sharded(model, source: Path, output: Path, overwrite: bool = False, chunk_seconds: float | None = None,
                     overlap_seconds: float | None = None, accelerator: str = "auto", devices: int | str = "auto",
                     strategy: str = "auto", progress: bool = True) -> list[Path]:
    """Separate the input files on ``devices`` ranks (Lightning predict loop + :class:`SeparationSummary`).

    Returns every written path on rank 0 (all outputs: a run that returns has written every file), [] elsewhere.
    """
    jobs, chunk, overlap = plan_jobs(model, source, output, overwrite, chunk_seconds, overlap_seconds)
    trainer = predict_sharded(FileSeparator(model, chunk, overlap), FileJobs(jobs), SeparationSummary(output),
                              accelerator, devices, strategy, progress)
    return [t for _, targets in jobs for t in targets] if trainer.is_global_zero else []


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="tsuite separate",
                                     description="Separate the speakers of audio files with a trained model.")
    parser.add_argument("--model", required=True,
                        help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/model, a model folder or a .ckpt")
    parser.add_argument("--input", required=True, help="an audio file, or a folder searched recursively")
    parser.add_argument("--output", required=True, help="output folder for <name>_s1.wav, <name>_s2.wav, ...")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--chunk-seconds", type=float, default=None, help="chunk length (default: the model's)")
    parser.add_argument("--overlap-seconds", type=float, default=None, help="overlap of chunks (default: the model's)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_sharding_arguments(parser, "files")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    from tsuite.tracking import load_model

    model = load_model(args.model)
    if not hasattr(model, "separate"):
        raise InputError(f"{args.model}: not a speech-separation model ({type(model).__name__})")
    if args.devices is not None:  # the Trainer places the model on each rank's device
        separate_sharded(model.eval(), Path(args.input), Path(args.output), args.overwrite, args.chunk_seconds,
                         args.overlap_seconds, args.accelerator, parse_devices(args.devices), args.strategy,
                         progress=not args.no_progress)  # rank 0 prints the summary
        return
    model = model.to(device).eval()
    written = separate_paths(model, Path(args.input), Path(args.output), args.overwrite, args.chunk_seconds,
                             args.overlap_seconds, progress=not args.no_progress)
    print(f"wrote {len(written)} file(s) to {args.output}")
