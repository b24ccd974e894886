"""Video clips with action labels and/or captions: readers, checks and ``VideoDataModule``.

A dataset is a folder of clips, each a video file (``.mp4``, ``.avi``, ``.mov``,
``.mkv``, ``.webm``; decoded with PyAV) or a folder of frame images (``.png``,
``.jpg``, ``.jpeg``, ``.bmp``; read in name order), named by its stem, plus

- ``labels.csv``: columns ``clip, label`` (activity recognition);
- ``captions.json``: ``{"clip": ["a caption", ...], ...}`` (captioning);
- ``splits.csv`` (optional): columns ``clip, split`` with split in
  ``train, val, test, test_unseen``; without it clips are split at random.

``root: shapes:auto`` generates the moving-shapes data
(:class:`~tsuite.vision_video.shapes.MovingShapes`) into a cache folder once
and reads it from there. Frames are sampled every ``frame_step`` frames (at
most ``max_frames`` of them, evenly spaced) and resized to ``frame_size``
squares. Training draws a random window of ``n_frames`` consecutive frames
per clip; evaluation reads every window at ``clip_stride`` (activity: clip
accuracy per window, video accuracy from their averaged probabilities) or the
centre window (captioning). The caption vocabulary is built from the training
captions only (``min_count``, ``<unk>``).

Bad input stops in ``setup`` (before training) with an :class:`InputError`
naming the file, row or clip, what was wrong and what was expected.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Literal

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from tsuite.tables import InputError, read_table
from tsuite.vision_video.shapes import MovingShapes
from tsuite.vision_video.vocab import Vocab

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
SPLIT_NAMES = ("train", "val", "test", "test_unseen")
Task = Literal["activity", "caption"]


# -- reading ---------------------------------------------------------------------------------------
def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """(T, H, W, 3) uint8 → (T, size, size, 3) uint8 (bilinear, antialiased; unchanged when already that size)."""
    if frames.shape[1] == size and frames.shape[2] == size:
        return frames
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()  # (T, 3, H, W)
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def sample_indices(n: int, frame_step: int = 1, max_frames: int | None = None) -> np.ndarray:
    """Indices of the frames kept from ``n``: every ``frame_step``-th, at most ``max_frames`` evenly spaced."""
    idx = np.arange(0, n, frame_step)
    if max_frames is not None and len(idx) > max_frames:
        idx = idx[np.linspace(0, len(idx) - 1, max_frames).round().astype(int)]
    return idx


def read_video(path: str | os.PathLike, size: int | None = None, frame_step: int = 1,
               max_frames: int | None = None) -> np.ndarray:
    """Frames (T, H, W, 3) uint8 of a video file or a folder of frame images; resized to ``size`` if given."""
    path = Path(path)
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise InputError(f"{path}: a folder without frame images; expected {', '.join(IMAGE_SUFFIXES)} files")
        keep = sample_indices(len(images), frame_step, max_frames)
        frames = []
        from PIL import Image, UnidentifiedImageError

        for i in keep:
            try:
                with Image.open(images[i]) as im:
                    frame = np.asarray(im.convert("RGB"))
            except (UnidentifiedImageError, OSError) as err:
                raise InputError(f"{images[i]}: cannot be read as an image ({err}); expected a frame image") from err
            if frames and frame.shape != frames[0].shape:
                raise InputError(f"{images[i]}: frame size {frame.shape[1]}x{frame.shape[0]} differs from the first "
                                 f"frame's {frames[0].shape[1]}x{frames[0].shape[0]}; expected frames of one size")
            frames.append(frame)
        video = np.stack(frames)
    else:
        if not path.exists():
            raise InputError(f"{path}: no such video file or frame folder")
        import av

        try:
            with av.open(str(path)) as container:
                decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        except (av.error.FFmpegError, ValueError, IndexError, OSError) as err:
            raise InputError(f"{path}: cannot be decoded as a video ({err}); expected an mp4 or other video file "
                             "that FFmpeg reads, or a folder of frame images") from err
        if not decoded:
            raise InputError(f"{path}: the video has no frames; expected at least one decodable frame")
        video = np.stack([decoded[i] for i in sample_indices(len(decoded), frame_step, max_frames)])
    return resize_frames(video, size) if size is not None else video


def find_clips(root: Path) -> dict[str, Path]:
    """Clip name → path of every video file or frame folder in ``root``."""
    if not root.is_dir():
        raise InputError(f"{root}: no such folder; expected a folder of video clips (or root: shapes:auto)")
    clips: dict[str, Path] = {}
    for p in sorted(root.iterdir()):
        is_video = p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES
        if is_video or (p.is_dir() and not p.name.startswith(".")):
            name = p.stem if is_video else p.name
            if name in clips:
                raise InputError(f"{root}: two clips are named {name!r} ({clips[name].name}, {p.name}); expected "
                                 "one video file or frame folder per clip name")
            clips[name] = p
    if not clips:
        raise InputError(f"{root}: no clips; expected video files ({', '.join(VIDEO_SUFFIXES)}) or frame folders")
    return clips


def clip_name(value: object) -> str:
    """A clip reference from a labels/captions file: the name, without a video suffix if one is given."""
    text = str(value).strip()
    stem, suffix = os.path.splitext(text)
    return stem if suffix.lower() in VIDEO_SUFFIXES else text


def _check_table(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    df = read_table(path)
    unknown = [str(c) for c in df.columns if c not in columns]
    missing = [c for c in columns if c not in df.columns]
    if unknown or missing:
        parts = ([f"unknown column(s) {', '.join(unknown)}"] if unknown else []) + (
            [f"missing column(s) {', '.join(missing)}"] if missing else [])
        raise InputError(f"{path}: {'; '.join(parts)}; expected exactly the columns {', '.join(columns)}")
    if len(df) == 0:
        raise InputError(f"{path}: the table has no rows; expected one row per clip")
    for col in columns:
        bad = df[col].isna() | (df[col].astype(str).str.strip() == "")
        if bad.any():
            r = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(f"{path} row {r + 1}: {col} is empty; expected a value")
    dup = df["clip"].map(clip_name).duplicated()
    if dup.any():
        r = int(np.flatnonzero(dup.to_numpy())[0])
        raise InputError(f"{path} row {r + 1}: clip {clip_name(df['clip'].iloc[r])!r} appears on an earlier row; "
                         "expected one row per clip")
    return df


def read_labels(path: Path, clips: dict[str, Path]) -> dict[str, str]:
    """``labels.csv`` → clip → label, every clip present in ``clips``."""
    df = _check_table(path, ("clip", "label"))
    out = {}
    for r, (clip, label) in enumerate(zip(df["clip"], df["label"])):
        name = clip_name(clip)
        if name not in clips:
            raise InputError(f"{path} row {r + 1}: clip {name!r} has no video in {path.parent} (looked for "
                             f"{name}.mp4 or a frame folder {name}/); expected the name of a clip in the folder")
        out[name] = str(label).strip()
    return out


def read_splits(path: Path, clips: dict[str, Path]) -> dict[str, str]:
    """``splits.csv`` → clip → split (train, val, test or test_unseen)."""
    df = _check_table(path, ("clip", "split"))
    out = {}
    for r, (clip, split) in enumerate(zip(df["clip"], df["split"])):
        name, split = clip_name(clip), str(split).strip()
        if name not in clips:
            raise InputError(f"{path} row {r + 1}: clip {name!r} has no video in {path.parent}; expected the name "
                             "of a clip in the folder")
        if split not in SPLIT_NAMES:
            raise InputError(f"{path} row {r + 1}: split {split!r} is unknown; expected one of "
                             f"{', '.join(SPLIT_NAMES)}")
        out[name] = split
    return out


def read_captions(path: Path, clips: dict[str, Path]) -> dict[str, list[str]]:
    """``captions.json`` → clip → non-empty list of non-empty captions, every clip present in ``clips``."""
    if not path.exists():
        raise InputError(f"{path}: no such file; expected a JSON object mapping clip names to lists of captions")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not valid JSON ({err}); expected an object mapping clip names to lists of "
                         "captions") from err
    if not isinstance(obj, dict) or not obj:
        raise InputError(f"{path}: expected a non-empty JSON object mapping clip names to lists of captions, "
                         f"got {type(obj).__name__}")
    from tsuite.vision_video.vocab import tokenize

    out = {}
    for key, caps in obj.items():
        name = clip_name(key)
        if name not in clips:
            raise InputError(f"{path}: clip {name!r} has no video in {path.parent}; expected the name of a clip in "
                             "the folder")
        if isinstance(caps, str):
            caps = [caps]
        if not isinstance(caps, list) or not caps:
            raise InputError(f"{path}: clip {name!r}: expected a non-empty list of caption strings, got {caps!r}")
        for k, cap in enumerate(caps):
            if not isinstance(cap, str) or not tokenize(cap):
                raise InputError(f"{path}: clip {name!r} caption {k + 1} ({cap!r}) is empty; expected a caption "
                                 "with at least one word")
        out[name] = [c.strip() for c in caps]
    return out


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tsuite"


# -- batches ---------------------------------------------------------------------------------------
def collate_clips(batch: list[dict]) -> dict:
    """Stack frames (B, T, H, W, 3) uint8; labels / video ids (B,); pad token ids (B, L) with 0; keep refs as lists."""
    out: dict = {"frames": torch.from_numpy(np.stack([b["frames"] for b in batch]))}
    for key in ("label", "video"):
        if key in batch[0]:
            out[key] = torch.tensor([b[key] for b in batch], dtype=torch.long)
    if "tokens" in batch[0]:
        n = max(len(b["tokens"]) for b in batch)
        tokens = torch.zeros(len(batch), n, dtype=torch.long)
        for i, b in enumerate(batch):
            tokens[i, : len(b["tokens"])] = torch.tensor(b["tokens"])
        out["tokens"] = tokens
    if "refs" in batch[0]:
        out["refs"] = [b["refs"] for b in batch]
    return out


class ClipDataset(torch.utils.data.Dataset):
    """Windows of ``n_frames`` consecutive frames: random ones (training) or fixed (video index, start) pairs."""

    def __init__(self, data: "VideoDataModule", names: list[str], train: bool):
        self.data, self.names, self.train = data, names, train
        T = data.n_frames
        if train:
            self.items = [(i, None, k) for i, n in enumerate(names) for k in range(data.n_captions(n))]
        elif data.task == "activity":
            self.items = [(i, s, 0) for i, n in enumerate(names)
                          for s in range(0, len(data.videos[n]) - T + 1, data.clip_stride)]
        else:
            self.items = [(i, (len(data.videos[n]) - T) // 2, 0) for i, n in enumerate(names)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int) -> dict:
        i, start, k = self.items[idx]
        name, T, data = self.names[i], self.data.n_frames, self.data
        video = data.videos[name]
        if start is None:
            start = random.randint(0, len(video) - T)
        item = {"frames": video[start : start + T], "video": i}
        if data.task == "activity":
            item["label"] = data.class_index[data.labels[name]]
        else:
            caps = data.captions[name]
            item["tokens"] = data.vocab.encode(caps[k], data.max_caption_len)
            item["refs"] = caps
        return item


class VideoDataModule(pl.LightningDataModule):
    """Video clips for activity recognition (``task: activity``) or captioning (``task: caption``).

    Args:
        root: a folder of clips, or ``shapes:auto`` (moving shapes generated into ``cache_dir``).
        task: ``activity`` (needs ``labels``) or ``caption`` (needs ``captions``).
        labels, captions, splits: file names inside ``root`` (or paths).
        n_frames: T, frames per training / evaluation window.
        frame_size: frames are resized to squares of this size.
        frame_step, max_frames: frame sampling of every video when it is read.
        clip_stride: step between evaluation windows (activity: video accuracy averages them).
        min_count: words seen fewer times in the training captions become ``<unk>``.
        max_caption_len: words kept per caption.
        val_size, test_size: shares of clips held out when there is no splits file.
        split_seed: seed of that random split.
        shapes: the generator used with ``root: shapes:auto``.
        shapes_format: how generated clips are stored (``frames``: PNG folders, fast to read; ``mp4``).
        cache_dir: where generated data is kept (default ``$XDG_CACHE_HOME/tsuite`` or ``~/.cache/tsuite``).
        batch_size, num_workers: DataLoader settings.
    """

    def __init__(
        self,
        root: str = "shapes:auto",
        task: Task = "activity",
        labels: str = "labels.csv",
        captions: str = "captions.json",
        splits: str = "splits.csv",
        n_frames: int = 8,
        frame_size: int = 32,
        frame_step: int = 1,
        max_frames: int | None = None,
        clip_stride: int = 2,
        min_count: int = 1,
        max_caption_len: int = 20,
        val_size: float = 0.1,
        test_size: float = 0.2,
        split_seed: int = 0,
        shapes: MovingShapes | None = None,
        shapes_format: Literal["frames", "mp4"] = "frames",
        cache_dir: str | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
    ):
        super().__init__()
        if task not in ("activity", "caption"):
            raise InputError(f"task {task!r} is unknown; expected activity or caption")
        if n_frames < 1 or frame_size < 8 or clip_stride < 1 or frame_step < 1:
            raise InputError(f"need n_frames ≥ 1, frame_size ≥ 8, clip_stride ≥ 1, frame_step ≥ 1; got {n_frames}, "
                             f"{frame_size}, {clip_stride}, {frame_step}")
        self.save_hyperparameters(ignore=["shapes"])
        self.root, self.task, self.n_frames, self.frame_size = root, task, n_frames, frame_size
        self.clip_stride, self.max_caption_len, self.batch_size = clip_stride, max_caption_len, batch_size
        self.shapes = shapes or MovingShapes(size=frame_size)
        self.videos: dict[str, np.ndarray] = {}
        self.splits: dict[str, list[str]] = {}
        self.labels: dict[str, str] = {}
        self.captions: dict[str, list[str]] = {}
        self.classes: list[str] = []
        self.class_index: dict[str, int] = {}
        self.vocab: Vocab | None = None
        self.folder: Path | None = None

    # -- loading ---------------------------------------------------------------------------------
    def data_folder(self) -> Path:
        """The folder read: ``root``, or the cache folder of generated shapes (generated if missing)."""
        if self.root != "shapes:auto":
            return Path(self.root)
        settings = {**self.shapes.settings(), "format": self.hparams.shapes_format}
        key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
        folder = Path(self.hparams.cache_dir or default_cache_dir()) / "shapes" / key
        if not (folder / "captions.json").exists():
            self.shapes.generate(folder, self.hparams.shapes_format, overwrite=False)
        return folder

    def prepare_data(self) -> None:
        self.data_folder()

    def setup(self, stage: str | None = None) -> None:
        if self.videos:
            return
        folder = self.folder = self.data_folder()
        clips = find_clips(folder)
        resolve = lambda name: Path(name) if Path(name).is_absolute() else folder / name  # noqa: E731
        labels_path, captions_path, splits_path = (resolve(self.hparams[k]) for k in ("labels", "captions", "splits"))
        if self.task == "activity":
            if not labels_path.exists():
                raise InputError(f"{labels_path}: no such file; task: activity needs a labels table (clip, label)")
            self.labels = read_labels(labels_path, clips)
            used = list(self.labels)
        else:
            self.captions = read_captions(captions_path, clips)
            used = list(self.captions)
        if splits_path.exists():
            assigned = read_splits(splits_path, clips)
            missing = [c for c in used if c not in assigned]
            if missing:
                raise InputError(f"{splits_path}: clip {missing[0]!r} has no row; expected a split for every clip "
                                 f"({len(missing)} missing)")
            self.splits = {s: [c for c in used if assigned[c] == s] for s in SPLIT_NAMES}
        else:
            self.splits = self._random_split(used)
        self.splits = {s: v for s, v in self.splits.items() if v}
        if "train" not in self.splits:
            raise InputError(f"{folder}: no clips in the training split; expected some clips with split train")
        hp = self.hparams
        for name in used:
            video = read_video(clips[name], self.frame_size, hp.frame_step, hp.max_frames)
            if len(video) < self.n_frames:
                raise InputError(f"{clips[name]}: {len(video)} frames after sampling (frame_step={hp.frame_step}) "
                                 f"but clips need n_frames={self.n_frames}; use a longer clip or a smaller n_frames")
            self.videos[name] = video
        if self.task == "activity":
            self.classes = sorted({self.labels[c] for c in self.splits["train"]})
            self.class_index = {c: i for i, c in enumerate(self.classes)}
            for split, names in self.splits.items():
                for c in names:
                    if self.labels[c] not in self.class_index:
                        raise InputError(f"{labels_path}: clip {c!r} ({split}) has label {self.labels[c]!r}, never "
                                         "seen in the training split; expected one of the training labels")
        else:
            self.vocab = Vocab.build((cap for c in self.splits["train"] for cap in self.captions[c]),
                                     hp.min_count)

    def _random_split(self, names: list[str]) -> dict[str, list[str]]:
        n = len(names)
        n_val, n_test = (int(round(s * n)) if s < 1 else int(s) for s in (self.hparams.val_size,
                                                                           self.hparams.test_size))
        if n - n_val - n_test < 1:
            raise InputError(f"{self.root}: {n} clip(s) leave none for training after holding out {n_val} for "
                             f"validation and {n_test} for testing; lower val_size / test_size")
        perm = np.random.default_rng(self.hparams.split_seed).permutation(n)
        parts = {"test": perm[:n_test], "val": perm[n_test:n_test + n_val], "train": perm[n_test + n_val:]}
        return {s: [names[i] for i in sorted(idx)] for s, idx in parts.items()}

    def n_captions(self, name: str) -> int:
        return len(self.captions[name]) if self.task == "caption" else 1

    # -- loaders ---------------------------------------------------------------------------------
    @property
    def has_test_split(self) -> bool:
        self.setup()
        return "test" in self.splits or "test_unseen" in self.splits

    @property
    def test_split_names(self) -> list[str]:
        """The evaluation splits served by :meth:`test_dataloader`, in order (dataloader index → name)."""
        return [s for s in ("test", "test_unseen") if s in self.splits]

    def _loader(self, split: str, train: bool = False) -> DataLoader:
        return DataLoader(ClipDataset(self, self.splits[split], train), batch_size=self.batch_size, shuffle=train,
                          collate_fn=collate_clips, num_workers=self.hparams.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("val") if "val" in self.splits else []

    def test_dataloader(self) -> list[DataLoader]:
        return [self._loader(s) for s in self.test_split_names]

    def predict_dataloader(self) -> list[DataLoader]:
        return self.test_dataloader()

    def input_example(self, n: int = 2) -> pd.DataFrame:
        """Two clips as a table (``clip``, ``frames`` flattened uint8 values, ``shape`` (T, H, W, 3)): the MLflow example."""
        self.setup()
        split = self.test_split_names[0] if self.test_split_names else "train"
        names = self.splits[split][:n]
        return frames_table(names, [self.videos[c][: self.n_frames] for c in names])


def frames_table(names: list[str], videos: list[np.ndarray]) -> pd.DataFrame:
    """The table form of clips that the models' ``predict_frame`` reads: clip, frames (flat int64), shape."""
    return pd.DataFrame({
        "clip": list(names),
        "frames": [np.asarray(v, dtype=np.int64).reshape(-1) for v in videos],
        "shape": [np.asarray(v.shape, dtype=np.int64) for v in videos],
    })


def table_frames(df: pd.DataFrame) -> list[tuple[str, np.ndarray]]:
    """Inverse of :func:`frames_table`: (clip, frames (T, H, W, 3) uint8) per row, with checks."""
    missing = [c for c in ("frames", "shape") if c not in df.columns]
    if missing:
        raise InputError(f"input table: missing column(s) {', '.join(missing)}; expected columns clip (optional), "
                         "frames (flattened T*H*W*3 uint8 values) and shape ([T, H, W, 3])")
    out = []
    for r, (frames, shape) in enumerate(zip(df["frames"], df["shape"])):
        name = str(df["clip"].iloc[r]) if "clip" in df.columns else str(r)
        shape = [int(s) for s in np.asarray(shape).reshape(-1)]
        values = np.asarray(frames).reshape(-1)
        if len(shape) != 4 or shape[3] != 3 or int(np.prod(shape)) != values.size:
            raise InputError(f"input table row {r + 1}: shape {shape} does not fit {values.size} frame values; "
                             "expected shape [T, H, W, 3] with T*H*W*3 values in frames")
        if values.size and (values.min() < 0 or values.max() > 255):
            raise InputError(f"input table row {r + 1}: frame values outside 0..255; expected uint8 RGB values")
        out.append((name, values.astype(np.uint8).reshape(shape)))
    return out
