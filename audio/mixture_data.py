"""Speech-separation data: LibriMix/WSJ0-mix folders, or single-speaker utterances mixed on the fly.

``MixtureDataModule(source=...)`` reads one of:

- a LibriMix / WSJ0-mix folder: ``mix/`` (or LibriMix's ``mix_clean/``), ``s1/``, ``s2/`` [``s3/``]
  with the same file names. A root whose subfolders are named ``train*``, ``dev*``/``val*``, ``cv*``,
  ``tt*``/``test*`` (LibriMix's ``wav8k/min``, WSJ0-mix's ``tr``/``cv``/``tt``) gives the splits;
  a single layout folder is split by file, seeded (``val_size``, ``test_size``).
- a folder of single-speaker utterances, mixed on the fly. With subfolders, the first-level
  subfolder is the speaker (``<speaker>/.../<utt>.wav``, as in LibriSpeech or the espeak corpus) and
  mixtures take different speakers; loose files are treated as one speaker each. Each speaker's
  utterances are split into train/validation/test (seeded); training mixtures are drawn afresh every
  epoch (random speakers, utterances, crops and relative gains), validation and test mixtures are
  fixed by ``seed``.
- ``espeak:auto`` (or ``espeak:PATH``): the espeak-ng corpus of :mod:`tsuite.audio.corpus`,
  generated on first use into ``outputs/corpora/`` (or PATH), then used as an utterance folder.

Audio is WAV/FLAC/OGG read with soundfile and resampled to ``sample_rate`` with
torchaudio. Stereo files are mixed down to mono (the mean of the two channels);
more channels are refused. Empty, unreadable, non-finite or silent (peak below
1e-5) files raise :class:`~tsuite.tables.InputError` naming the file, during
``setup``, before training starts.
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import soundfile as sf
import torch
from torch.utils.data import DataLoader, Dataset

from tsuite.tables import InputError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
SILENCE_PEAK = 1e-5
SPLIT_PREFIXES = {"train": ("train", "tr"), "val": ("dev", "val", "cv"), "test": ("test", "tt")}


def to_mono(audio: np.ndarray, path: str | os.PathLike) -> np.ndarray:
    """(T, C) -> (T,): stereo is averaged; more than two channels are refused."""
    if audio.shape[1] > 2:
        raise InputError(f"{path}: {audio.shape[1]} channels; expected mono or stereo (stereo is mixed down to mono)")
    return audio.mean(axis=1, dtype=np.float32) if audio.shape[1] == 2 else audio[:, 0]


def resample(audio: np.ndarray, orig: int, new: int) -> np.ndarray:
    """Resample a float32 array along its last axis with torchaudio (windowed sinc)."""
    if orig == new:
        return audio
    import torchaudio.functional as AF

    return AF.resample(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)), orig, new).numpy()


def check_samples(audio: np.ndarray, path: str | os.PathLike) -> None:
    """Refuse empty, non-finite or silent audio, naming the file."""
    if audio.size == 0:
        raise InputError(f"{path}: no audio samples (empty file); expected speech")
    if not np.isfinite(audio).all():
        first = int(np.flatnonzero(~np.isfinite(audio))[0])
        raise InputError(f"{path}: sample {first} is not a finite number; expected finite samples")
    if float(np.abs(audio).max()) < SILENCE_PEAK:
        raise InputError(f"{path}: silent (peak amplitude below {SILENCE_PEAK:g}); expected speech")


def audio_info(path: str | os.PathLike) -> sf._SoundFileInfo:
    """soundfile's header of ``path``, with unreadable files as an InputError."""
    try:
        return sf.info(str(path))
    except Exception as err:  # noqa: BLE001 - libsndfile errors come in several types
        raise InputError(f"{path}: cannot be read as audio ({err}); expected a WAV, FLAC or OGG file") from err


def read_audio(path: str | os.PathLike, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Read a file as float32 mono samples (T,), resampled to ``sample_rate`` (None: keep the file's rate)."""
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:  # noqa: BLE001
        raise InputError(f"{path}: cannot be read as audio ({err}); expected a WAV, FLAC or OGG file") from err
    if audio.shape[0] == 0:
        raise InputError(f"{path}: no audio samples (empty file); expected speech")
    mono = to_mono(audio, path)
    check_samples(mono, path)
    if sample_rate is not None and rate != sample_rate:
        mono, rate = resample(mono, rate, sample_rate), sample_rate
    return mono, rate


def audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())


def mix_sources(sources: list[np.ndarray], gains_db: np.ndarray, peak: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """Scale equal-length sources to unit RMS times their gain (dB), sum them; scale all so no peak exceeds ``peak``.

    Returns the mixture (T,) and the scaled sources (S, T), which sum to it exactly.
    """
    scaled = np.stack([s / max(float(np.sqrt(np.mean(s**2))), 1e-8) * 10 ** (g / 20) for s, g in zip(sources, gains_db)])
    mix = scaled.sum(0)
    top = max(float(np.abs(mix).max()), float(np.abs(scaled).max()), 1e-8)
    scaled = (scaled * (peak / top)).astype(np.float32)
    return scaled.sum(0), scaled


def crop_or_pad(audio: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``length``-sample crop, or the whole utterance at a random offset in zeros when shorter."""
    if len(audio) >= length:
        start = int(rng.integers(0, len(audio) - length + 1))
        return audio[start : start + length]
    out = np.zeros(length, np.float32)
    start = int(rng.integers(0, length - len(audio) + 1))
    out[start : start + len(audio)] = audio
    return out


class UtterancePool:
    """Single-speaker utterances grouped by speaker, read (and by default cached) at one sample rate."""

    def __init__(self, by_speaker: dict[str, list[Path]], sample_rate: int | None, cache: bool = True):
        self.by_speaker = {k: v for k, v in by_speaker.items() if v}
        self.speakers = sorted(self.by_speaker)
        self.sample_rate = sample_rate
        self.cache: dict[Path, np.ndarray] | None = {} if cache else None

    @classmethod
    def from_folder(cls, root: str | os.PathLike, sample_rate: int | None, num_speakers: int,
                    cache: bool = True) -> "UtterancePool":
        root = Path(root)
        if not root.is_dir():
            raise InputError(f"{root}: no such folder; expected a folder of single-speaker utterances")
        files = audio_files(root)
        if not files:
            raise InputError(f"{root}: no audio files (.wav, .flac, .ogg) found; expected <speaker>/<utt>.wav")
        by_speaker: dict[str, list[Path]] = {}
        for f in files:
            rel = f.relative_to(root)
            key = rel.parts[0] if len(rel.parts) > 1 else f"file:{rel.name}"  # loose files: one speaker each
            by_speaker.setdefault(key, []).append(f)
        if len(by_speaker) < num_speakers:
            raise InputError(f"{root}: {len(by_speaker)} speaker(s) found; mixtures of {num_speakers} speakers need "
                             f"at least {num_speakers} (one subfolder per speaker)")
        pool = cls(by_speaker, sample_rate, cache)
        if sample_rate is None:
            pool.sample_rate = audio_info(files[0]).samplerate
        return pool

    def check(self) -> None:
        """Read every file once (caching it), so bad files fail now with their name."""
        for paths in self.by_speaker.values():
            for p in paths:
                self.audio(p)

    def audio(self, path: Path) -> np.ndarray:
        if self.cache is not None and path in self.cache:
            return self.cache[path]
        audio, _ = read_audio(path, self.sample_rate)
        if self.cache is not None:
            self.cache[path] = audio
        return audio

    def split(self, val_size: float, test_size: float, seed: int) -> dict[str, "UtterancePool"]:
        """Each speaker's utterances split into train/val/test (shares of them, seeded; ≥ 1 each when possible)."""
        parts: dict[str, dict[str, list[Path]]] = {"train": {}, "val": {}, "test": {}}
        rng = np.random.default_rng([seed, 3])
        for spk in self.speakers:
            paths = self.by_speaker[spk]
            n = len(paths)
            order = rng.permutation(n)
            n_val = min(max(int(round(val_size * n)), int(val_size > 0)), max(n - 1, 0)) if n > 1 else 0
            n_test = min(max(int(round(test_size * n)), int(test_size > 0)), max(n - 1 - n_val, 0)) if n > 2 else 0
            take = {"test": order[:n_test], "val": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}
            for split, idx in take.items():
                parts[split][spk] = [paths[i] for i in sorted(idx)]
        out = {}
        for split, by_speaker in parts.items():
            pool = UtterancePool(by_speaker, self.sample_rate, cache=False)
            pool.cache = self.cache  # one shared cache
            out[split] = pool
        return out

    def draw_speakers(self, rng: np.random.Generator, n: int) -> list[Path]:
        """One random utterance from each of ``n`` different random speakers."""
        if len(self.speakers) < n:
            raise InputError(f"{len(self.speakers)} speaker(s) with utterances in this split; {n} are needed")
        chosen = rng.choice(len(self.speakers), size=n, replace=False)
        out = []
        for c in chosen:
            paths = self.by_speaker[self.speakers[c]]
            out.append(paths[int(rng.integers(len(paths)))])
        return out


class OnTheFlyMixtures(Dataset):
    """Mixtures of utterances from a pool. With ``seed`` None each item is drawn afresh (training: the torch
    RNG seeds it, so every epoch differs); with a seed item i is always the same (validation, test).

    Training items are ``segment`` samples long (random crops, or zero-padded); fixed items are the
    utterances truncated to the shortest of them ("min" mode), capped at ``segment`` when it is set.
    """

    def __init__(self, pool: UtterancePool, size: int, num_speakers: int, segment: int | None, gain_db: float,
                 seed: int | None):
        self.pool, self.size, self.num_speakers = pool, size, num_speakers
        self.segment, self.gain_db, self.seed = segment, gain_db, seed

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> dict:
        if self.seed is None:
            rng = np.random.default_rng(int(torch.randint(2**62, ()).item()))
        else:
            rng = np.random.default_rng([self.seed, i])
        paths = self.pool.draw_speakers(rng, self.num_speakers)
        sources = [self.pool.audio(p) for p in paths]
        if self.seed is None:
            sources = [crop_or_pad(s, self.segment, rng) for s in sources]
        else:
            length = min(len(s) for s in sources)
            length = min(length, self.segment) if self.segment else length
            sources = [s[:length] for s in sources]
        gains = np.concatenate([[0.0], rng.uniform(-self.gain_db, self.gain_db, self.num_speakers - 1)])
        mix, scaled = mix_sources(sources, gains)
        name = "+".join(f"{p.parent.name}/{p.stem}" for p in paths)
        return {"mix": torch.from_numpy(mix), "sources": torch.from_numpy(scaled), "name": name}


class LibriMixFolder(Dataset):
    """A LibriMix / WSJ0-mix layout folder: items ``mix/NAME`` with ``s1/NAME``, ``s2/NAME`` ... .

    ``segment`` set: crops of that many samples (zero-padded when shorter), at random (training) or
    from the start (``random_crop`` False: validation, test); None: whole files.
    """

    def __init__(self, root: Path, num_speakers: int, sample_rate: int, segment: int | None = None,
                 names: list[str] | None = None, random_crop: bool = True):
        self.root, self.num_speakers, self.sample_rate, self.segment = root, num_speakers, sample_rate, segment
        self.random_crop = random_crop
        self.mix_dir = self.find_mix_dir(root)
        self.names = names if names is not None else self.scan()

    @staticmethod
    def find_mix_dir(root: Path) -> Path:
        for name in ("mix", "mix_clean"):
            if (root / name).is_dir():
                return root / name
        raise InputError(f"{root}: no mix/ (or mix_clean/) folder; expected the LibriMix layout mix/, s1/, s2/")

    def scan(self) -> list[str]:
        """File names present in mix/ and every s<k>/; mismatches and bad headers raise InputError."""
        names = sorted(p.name for p in self.mix_dir.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
        if not names:
            raise InputError(f"{self.mix_dir}: no audio files (.wav, .flac, .ogg); expected the mixtures")
        extra = self.root / f"s{self.num_speakers + 1}"
        if extra.is_dir():
            raise InputError(f"{self.root}: has {extra.name}/ but num_speakers is {self.num_speakers}; set "
                             f"num_speakers: {self.num_speakers + 1}")
        for k in range(1, self.num_speakers + 1):
            folder = self.root / f"s{k}"
            if not folder.is_dir():
                raise InputError(f"{self.root}: no s{k}/ folder; expected s1/ ... s{self.num_speakers}/ beside "
                                 f"{self.mix_dir.name}/")
            present = {p.name for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES}
            missing = [n for n in names if n not in present]
            if missing:
                raise InputError(f"{folder / missing[0]}: missing ({len(missing)} file(s) of {self.mix_dir.name}/ "
                                 f"have no match in s{k}/); expected the same file names in every folder")
            unmatched = sorted(present - set(names))
            if unmatched:
                raise InputError(f"{folder / unmatched[0]}: has no mixture {self.mix_dir / unmatched[0]}; expected "
                                 "the same file names in every folder")
        for n in names:
            info = [audio_info(self.mix_dir / n)] + [audio_info(self.root / f"s{k}" / n)
                                                     for k in range(1, self.num_speakers + 1)]
            paths = [self.mix_dir / n] + [self.root / f"s{k}" / n for k in range(1, self.num_speakers + 1)]
            for p, i in zip(paths, info):
                if i.frames == 0:
                    raise InputError(f"{p}: no audio samples (empty file); expected speech")
                if i.channels > 2:
                    raise InputError(f"{p}: {i.channels} channels; expected mono or stereo")
            if len({i.frames for i in info}) > 1 or len({i.samplerate for i in info}) > 1:
                sizes = ", ".join(f"{p.parent.name}/{p.name}: {i.frames} samples at {i.samplerate} Hz"
                                  for p, i in zip(paths, info))
                raise InputError(f"{self.mix_dir / n}: the mixture and its sources differ in length or sample rate "
                                 f"({sizes}); expected equal")
        return names

    def __len__(self) -> int:
        return len(self.names)

    def load(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        mix, _ = read_audio(self.mix_dir / name, self.sample_rate)
        sources = np.stack([read_audio(self.root / f"s{k}" / name, self.sample_rate)[0]
                            for k in range(1, self.num_speakers + 1)])
        return mix, sources

    def __getitem__(self, i: int) -> dict:
        mix, sources = self.load(self.names[i])
        if self.segment is not None:
            length = self.segment
            if len(mix) >= length:
                start = int(torch.randint(len(mix) - length + 1, ()).item()) if self.random_crop else 0
                mix, sources = mix[start : start + length], sources[:, start : start + length]
            else:
                mix = np.pad(mix, (0, length - len(mix)))
                sources = np.pad(sources, ((0, 0), (0, length - sources.shape[1])))
        return {"mix": torch.from_numpy(np.ascontiguousarray(mix)),
                "sources": torch.from_numpy(np.ascontiguousarray(sources, dtype=np.float32)), "name": self.names[i]}


def librimix_splits(root: Path) -> dict[str, list[Path]]:
    """Split subfolders (train*/tr, dev*/val*/cv, test*/tt) of ``root`` that hold the LibriMix layout."""
    found: dict[str, list[Path]] = {}
    if not root.is_dir():
        return found
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        if not any((sub / m).is_dir() for m in ("mix", "mix_clean")):
            continue
        for split, prefixes in SPLIT_PREFIXES.items():
            if sub.name.lower().startswith(prefixes):
                found.setdefault(split, []).append(sub)
                break
    return found


class MixtureDataModule(pl.LightningDataModule):
    """Speech mixtures (B, T) with their sources (B, S, T) for separation training (see the module docstring).

    Args:
        source: a LibriMix/WSJ0-mix folder, a folder of single-speaker utterances, or ``espeak:auto`` /
            ``espeak:PATH`` (a generated corpus, made on first use).
        num_speakers: S, speakers per mixture (2 or 3).
        sample_rate: the models' sample rate; files at other rates are resampled.
        segment_seconds: length of the training crops.
        eval_segment_seconds: cap on the length of validation/test mixtures (None: whole mixtures).
        gain_db: on-the-fly mixing: sources after the first get a relative gain uniform in ±gain_db dB.
        train_mixtures: on-the-fly mixing: mixtures per training epoch.
        val_mixtures, test_mixtures: on-the-fly mixing: sizes of the fixed validation/test sets.
        val_size, test_size: shares of each speaker's utterances (on-the-fly), or of the files of a single
            LibriMix folder without split subfolders, held out for validation and test.
        batch_size: training batch size (validation and test use whole mixtures, one at a time).
        seed: fixes the splits and the validation/test mixtures.
        cache_audio: keep decoded utterances in memory (on-the-fly mixing of small corpora).
        espeak_speakers, espeak_utterances: size of a generated espeak corpus.
    """

    def __init__(
        self,
        source: str = "espeak:auto",
        num_speakers: int = 2,
        sample_rate: int = 8000,
        segment_seconds: float = 4.0,
        eval_segment_seconds: float | None = None,
        gain_db: float = 5.0,
        train_mixtures: int = 2000,
        val_mixtures: int = 100,
        test_mixtures: int = 100,
        val_size: float = 0.1,
        test_size: float = 0.1,
        batch_size: int = 4,
        seed: int = 0,
        cache_audio: bool = True,
        espeak_speakers: int = 8,
        espeak_utterances: int = 20,
        num_workers: int = 0,
    ):
        super().__init__()
        if num_speakers not in (2, 3):
            raise InputError(f"num_speakers must be 2 or 3, got {num_speakers}")
        if sample_rate <= 0 or segment_seconds <= 0:
            raise InputError(f"sample_rate and segment_seconds must be > 0, got {sample_rate}, {segment_seconds}")
        self.save_hyperparameters()
        self.source, self.num_speakers, self.sample_rate = source, num_speakers, sample_rate
        self.segment = int(round(segment_seconds * sample_rate))
        self.eval_segment = int(round(eval_segment_seconds * sample_rate)) if eval_segment_seconds else None
        self.batch_size, self.num_workers = batch_size, num_workers
        self.datasets: dict[str, Dataset] = {}
        self.resolved_source: Path | None = None

    # -- loading ---------------------------------------------------------------------------------
    def corpus_path(self, source: str) -> Path:
        """The folder a source names; ``espeak:`` sources are generated there when absent."""
        if not source.startswith("espeak:"):
            return Path(source).expanduser()
        from tsuite.audio import corpus

        hp = self.hparams
        target = source.split(":", 1)[1]
        if target in ("", "auto"):
            target = (f"outputs/corpora/espeak-{hp.espeak_speakers}spk-{hp.espeak_utterances}utt-"
                      f"{self.sample_rate}hz-seed{hp.seed}")
        path = Path(target).expanduser()
        if not corpus.is_complete(path):
            corpus.generate_corpus(path, hp.espeak_speakers, hp.espeak_utterances, self.sample_rate, hp.seed)
        return path

    def prepare_data(self) -> None:
        self.resolve()

    def resolve(self) -> Path:
        if self.resolved_source is not None:
            return self.resolved_source
        path = self.corpus_path(self.source)
        if not path.is_dir():
            raise InputError(f"{path}: no such folder; expected a LibriMix/WSJ0-mix folder (mix/, s1/, s2/), "
                             "a folder of single-speaker utterances, or espeak:auto")
        self.resolved_source = path
        return path

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        root = self.resolve()
        splits = librimix_splits(root)
        if splits:
            self._setup_librimix_splits(splits)
        elif any((root / m).is_dir() for m in ("mix", "mix_clean")):
            self._setup_librimix_folder(root)
        else:
            self._setup_on_the_fly(root)

    def _setup_librimix_splits(self, splits: dict[str, list[Path]]) -> None:
        if "train" not in splits:
            raise InputError(f"{self.resolved_source}: split folders {sorted(splits)} but none named train*/tr; "
                             "expected train, dev and test folders in the LibriMix layout")
        from torch.utils.data import ConcatDataset

        for split, folders in splits.items():
            segment = self.segment if split == "train" else self.eval_segment
            parts = [LibriMixFolder(f, self.num_speakers, self.sample_rate, segment, random_crop=split == "train")
                     for f in folders]
            self.datasets[split] = parts[0] if len(parts) == 1 else ConcatDataset(parts)

    def _setup_librimix_folder(self, root: Path) -> None:
        names = LibriMixFolder(root, self.num_speakers, self.sample_rate).names
        n = len(names)
        n_val, n_test = (int(round(s * n)) if s < 1 else int(s) for s in (self.hparams.val_size, self.hparams.test_size))
        if n - n_val - n_test < 1:
            raise InputError(f"{root}: {n} mixture(s) leave none for training after holding out {n_val} for "
                             f"validation and {n_test} for testing; lower val_size / test_size")
        perm = np.random.default_rng([self.hparams.seed, 4]).permutation(n)
        idx = {"test": perm[:n_test], "val": perm[n_test : n_test + n_val], "train": perm[n_test + n_val :]}
        for split, chosen in idx.items():
            if len(chosen):
                segment = self.segment if split == "train" else self.eval_segment
                self.datasets[split] = LibriMixFolder(root, self.num_speakers, self.sample_rate, segment,
                                                      [names[i] for i in sorted(chosen)], split == "train")

    def _setup_on_the_fly(self, root: Path) -> None:
        hp = self.hparams
        pool = UtterancePool.from_folder(root, self.sample_rate, self.num_speakers, cache=hp.cache_audio)
        if hp.cache_audio:
            pool.check()
        pools = pool.split(hp.val_size, hp.test_size, hp.seed)
        sizes = {"train": hp.train_mixtures, "val": hp.val_mixtures, "test": hp.test_mixtures}
        for split, p in pools.items():
            if sizes[split] <= 0 or len(p.speakers) < self.num_speakers:
                if split == "train":
                    raise InputError(f"{root}: {len(p.speakers)} speaker(s) have training utterances; "
                                     f"{self.num_speakers} are needed")
                continue
            seed = None if split == "train" else hp.seed * 10 + {"val": 1, "test": 2}[split]
            segment = self.segment if split == "train" else self.eval_segment
            self.datasets[split] = OnTheFlyMixtures(p, sizes[split], self.num_speakers, segment, hp.gain_db, seed)

    @property
    def has_test_split(self) -> bool:
        self.setup()
        return "test" in self.datasets

    # -- loaders ---------------------------------------------------------------------------------
    def _loader(self, split: str, train: bool) -> DataLoader | list:
        if split not in self.datasets:
            return []
        return DataLoader(self.datasets[split], batch_size=self.batch_size if train else 1, shuffle=train,
                          num_workers=self.num_workers, drop_last=False)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader | list:
        return self._loader("test", False)

    def predict_dataloader(self) -> DataLoader | list:
        return self._loader("test", False)

    # -- tables ----------------------------------------------------------------------------------
    def input_example(self, seconds: float = 0.25) -> pd.DataFrame:
        """One short mixture as a table (``waveform`` array, ``sample_rate``): the MLflow input example.

        The waveform is float64 so that the signature's ``Array(double)`` accepts JSON input (served
        requests arrive as float64 lists); the model computes in float32.
        """
        self.setup()
        split = "test" if "test" in self.datasets else ("val" if "val" in self.datasets else "train")
        mix = self.datasets[split][0]["mix"].numpy()[: int(seconds * self.sample_rate)]
        return pd.DataFrame({"waveform": [mix.astype(np.float64)], "sample_rate": [self.sample_rate]})
