"""Task sequences for continual learning, their file readers, and :class:`ContinualDataModule`.

Benchmarks (each a list of :class:`Task` with train / validation / test splits):

- ``split_digits``: scikit-learn's 8×8 digits (ships with scikit-learn, no download), classes
  {0,1}, {2,3}, …, {8,9} as 5 two-class tasks.
- ``permuted_digits``: the 10-class digits under a fixed random pixel permutation per task
  (10 tasks; task 0 keeps the original pixel order).
- ``split_mnist`` / ``permuted_mnist``: the same from MNIST-format IDX files in the folder
  ``path`` (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
  ``t10k-labels-idx1-ubyte``, each raw or ``.gz``).
- ``split_cifar10``: CIFAR-10 from the python-pickle batches in ``path`` (``data_batch_1`` …
  ``data_batch_5``, ``test_batch``), 5 two-class tasks.

Labels inside a task are local (0..classes_per_task−1); ``Task.classes`` maps them to the
original labels. Bad files raise :class:`tsuite.tables.InputError` naming the file, the field
and what was expected, before any training starts.
"""

from __future__ import annotations

import gzip
import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, TensorDataset

from tsuite.tables import InputError

Benchmark = Literal["split_digits", "permuted_digits", "split_mnist", "permuted_mnist", "split_cifar10"]
IDX_DTYPES = {0x08: np.uint8}
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclass
class Task:
    """One task: images (N, C, H, W) float32 in [0, 1], local labels (N,) int64, and its original classes."""

    name: str
    classes: list[int]
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


# -- readers ---------------------------------------------------------------------------------------
def _read_bytes(path: Path, what: str) -> bytes:
    if not path.exists():
        raise InputError(f"{path}: no such file; expected {what}")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise InputError(f"{path}: a damaged gzip file ({err}); expected {what}, raw or gzip-compressed") from err
    return raw


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """Read an IDX file (MNIST format, unsigned bytes) with ``ndim`` dimensions, raw or gzip-compressed."""
    path = Path(path)
    what = f"an IDX file of unsigned bytes with {ndim} dimension(s)"
    raw = _read_bytes(path, what)
    if len(raw) < 4:
        raise InputError(f"{path}: truncated: {len(raw)} byte(s), shorter than the 4-byte IDX magic number; "
                         f"expected {what}")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise InputError(f"{path}: wrong magic number 0x{raw[:4].hex()}; expected 0x0000080{ndim} ({what})")
    if raw[3] != ndim:
        raise InputError(f"{path}: the header declares {raw[3]} dimension(s); expected {what}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise InputError(f"{path}: truncated header ({len(raw)} bytes, {header} needed for {ndim} dimension sizes)")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if any(d == 0 for d in dims):
        raise InputError(f"{path}: the header declares dimension sizes {dims}; expected sizes of at least 1")
    size = int(np.prod(dims))
    if len(raw) - header != size:
        state = "truncated" if len(raw) - header < size else "has trailing bytes"
        raise InputError(f"{path}: {state}: {len(raw) - header} data bytes after the header, but its dimension "
                         f"sizes {dims} need {size}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).exists():
            return folder / name
    raise InputError(f"{folder}: no file {stem} or {stem}.gz; expected the four MNIST IDX files "
                     f"({', '.join(MNIST_FILES.values())}), raw or .gz")


def read_mnist(folder: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images (N, 28, 28), train labels (N,), test images, test labels) from MNIST IDX files in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder; expected a folder with the MNIST IDX files")
    paths = {key: _find(folder, stem) for key, stem in MNIST_FILES.items()}  # all four present before reading
    out = []
    for split in ("train", "test"):
        ipath, lpath = paths[f"{split}_images"], paths[f"{split}_labels"]
        images, labels = read_idx(ipath, 3), read_idx(lpath, 1)
        if len(images) != len(labels):
            raise InputError(f"{lpath}: {len(labels)} labels for {len(images)} images in {ipath.name}; "
                             "expected one label per image")
        _check_labels(labels, lpath, 10)
        out += [images, labels.astype(np.int64)]
    return out[0], out[1], out[2], out[3]


def _check_labels(labels: np.ndarray, where: Path | str, n_classes: int) -> None:
    bad = (labels < 0) | (labels >= n_classes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"{where}: label {int(labels[i])} of item {i + 1} is outside 0..{n_classes - 1}; "
                         f"expected a class in 0..{n_classes - 1}")


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickle only plain containers and numpy arrays (CIFAR batches), never arbitrary objects."""

    ALLOWED = {(f"numpy.{core}.multiarray", name) for core in ("core", "_core") for name in ("_reconstruct", "scalar")}
    ALLOWED |= {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's signature
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) of one CIFAR-10 python-pickle batch."""
    path = Path(path)
    what = "a CIFAR-10 python batch (a pickled dict with 'data' (N, 3072) uint8 and 'labels')"
    raw = _read_bytes(path, what)
    try:
        obj = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as err:  # noqa: BLE001 - any unpickling failure names the file
        raise InputError(f"{path}: cannot be read as a pickle ({err}); expected {what}") from err
    if not isinstance(obj, dict):
        raise InputError(f"{path}: holds a {type(obj).__name__}; expected {what}")
    obj = {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}
    for key in ("data", "labels"):
        if key not in obj:
            raise InputError(f"{path}: missing key {key!r} (found {', '.join(map(repr, obj)) or 'none'}); "
                             f"expected {what}")
    data = obj["data"]
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
        desc = f"shape {data.shape} {data.dtype}" if isinstance(data, np.ndarray) else type(data).__name__
        raise InputError(f"{path}: field 'data' has {desc}; expected an array of shape (N, 3072), uint8")
    try:
        labels = np.asarray(obj["labels"], dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise InputError(f"{path}: field 'labels' is not a list of integers ({err})") from err
    if len(labels) != len(data):
        raise InputError(f"{path}: field 'labels' has {len(labels)} entries for {len(data)} images; "
                         "expected one label per image")
    _check_labels(labels, f"{path} field 'labels'", 10)
    return data.reshape(-1, 3, 32, 32), labels


def read_cifar10(folder: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images (50000, 3, 32, 32), labels, test images, labels) from the CIFAR-10 python batches."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder; expected cifar-10-batches-py with data_batch_1..5, test_batch")
    train = [read_cifar_batch(folder / f"data_batch_{i}") for i in range(1, 6)]
    xt, yt = read_cifar_batch(folder / "test_batch")
    return np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]), xt, yt


# -- task sequences --------------------------------------------------------------------------------
def _holdout(x: np.ndarray, y: np.ndarray, share: float, rng: np.random.Generator):
    perm = rng.permutation(len(x))
    n = int(round(share * len(x)))
    return x[perm[n:]], y[perm[n:]], x[perm[:n]], y[perm[:n]]


def _task(name: str, classes: list[int], train, val, test) -> Task:
    def tensors(x, y):
        return torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)

    return Task(name, classes, *tensors(*train), *tensors(*val), *tensors(*test))


def split_tasks(x_train, y_train, x_test, y_test, classes_per_task: int, val_size: float, seed: int,
                max_train: int | None = None, prefix: str = "split") -> list[Task]:
    """Consecutive groups of ``classes_per_task`` classes, one task each (labels made local)."""
    classes = np.unique(np.concatenate([y_train, y_test]))
    if len(classes) % classes_per_task:
        raise InputError(f"{len(classes)} classes cannot be split into tasks of {classes_per_task}; "
                         f"set classes_per_task to a divisor of {len(classes)}")
    rng = np.random.default_rng(seed)
    tasks = []
    for t in range(len(classes) // classes_per_task):
        group = classes[t * classes_per_task : (t + 1) * classes_per_task]
        tr, te = np.isin(y_train, group), np.isin(y_test, group)
        local = {int(c): i for i, c in enumerate(group)}
        ytr, yte = np.vectorize(local.get)(y_train[tr]), np.vectorize(local.get)(y_test[te])
        xtr, ytr, xva, yva = _holdout(x_train[tr], ytr, val_size, rng)
        if max_train:
            xtr, ytr = xtr[:max_train], ytr[:max_train]
        tasks.append(_task(f"{prefix}_{'_'.join(map(str, group))}", [int(c) for c in group],
                           (xtr, ytr), (xva, yva), (x_test[te], yte)))
    return tasks


def permuted_tasks(x_train, y_train, x_test, y_test, n_tasks: int, val_size: float, seed: int,
                   max_train: int | None = None) -> list[Task]:
    """``n_tasks`` copies of the whole problem, each under its own fixed pixel permutation (task 0: identity)."""
    rng = np.random.default_rng(seed)
    shape = x_train.shape[1:]
    d = int(np.prod(shape))
    classes = [int(c) for c in np.unique(y_train)]
    xtr, ytr, xva, yva = _holdout(x_train, y_train, val_size, rng)
    if max_train:
        xtr, ytr = xtr[:max_train], ytr[:max_train]
    tasks = []
    for t in range(n_tasks):
        perm = np.arange(d) if t == 0 else rng.permutation(d)

        def p(x):
            return x.reshape(len(x), d)[:, perm].reshape(len(x), *shape)

        tasks.append(_task(f"permuted_{t}", classes, (p(xtr), ytr), (p(xva), yva), (p(x_test), y_test)))
    return tasks


def load_digits_arrays(test_size: float, seed: int):
    """scikit-learn digits as (train x (N, 1, 8, 8) in [0, 1], y, test x, y), a stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8)
    xtr, xte, ytr, yte = train_test_split(x, digits.target, test_size=test_size, random_state=seed,
                                          stratify=digits.target)
    return xtr, ytr, xte, yte


def build_tasks(benchmark: str, path: str | None = None, n_tasks: int | None = None, classes_per_task: int = 2,
                val_size: float = 0.1, test_size: float = 0.3, seed: int = 0,
                max_train_per_task: int | None = None) -> list[Task]:
    """The task sequence of ``benchmark`` (see the module docstring)."""
    if benchmark.endswith("digits"):
        arrays = load_digits_arrays(test_size, seed)
    elif benchmark.endswith("mnist"):
        if path is None:
            raise InputError(f"benchmark {benchmark!r} needs path: the folder of the MNIST IDX files")
        xtr, ytr, xte, yte = read_mnist(path)
        arrays = ((xtr / 255.0).astype(np.float32)[:, None], ytr, (xte / 255.0).astype(np.float32)[:, None], yte)
    elif benchmark == "split_cifar10":
        if path is None:
            raise InputError("benchmark 'split_cifar10' needs path: the folder of the CIFAR-10 python batches")
        xtr, ytr, xte, yte = read_cifar10(path)
        arrays = ((xtr / 255.0).astype(np.float32), ytr, (xte / 255.0).astype(np.float32), yte)
    else:
        raise InputError(f"unknown benchmark {benchmark!r}; expected one of split_digits, permuted_digits, "
                         "split_mnist, permuted_mnist, split_cifar10")
    if benchmark.startswith("permuted"):
        tasks = permuted_tasks(*arrays, n_tasks or 10, val_size, seed, max_train_per_task)
    else:
        tasks = split_tasks(*arrays, classes_per_task, val_size, seed, max_train_per_task)
        if n_tasks is not None:
            if not 1 <= n_tasks <= len(tasks):
                raise InputError(f"n_tasks={n_tasks}, but {benchmark} has {len(tasks)} tasks; expected 1..{len(tasks)}")
            tasks = tasks[:n_tasks]
    return tasks


# -- data module -----------------------------------------------------------------------------------
class ContinualDataModule(pl.LightningDataModule):
    """A sequence of tasks; the training loader serves the task the model is currently learning.

    The training loader asks the model for ``current_task`` (set by
    :class:`tsuite.vision_video.continual.ContinualLearner` from the epoch), so
    the trainer must reload it each epoch (``reload_dataloaders_every_n_epochs: 1``,
    which the model checks). Validation and test loaders hold one loader per task.

    Args:
        benchmark: split_digits | permuted_digits | split_mnist | permuted_mnist | split_cifar10.
        path: folder of the MNIST IDX files or of the CIFAR-10 python batches.
        n_tasks: number of tasks (permuted: how many permutations; split: the first n groups).
        classes_per_task: classes per task of the split benchmarks.
        val_size: share of each task's training data held out for validation.
        test_size: share of the digits held out for testing (MNIST and CIFAR have their own test files).
        batch_size: training batch size.
        seed: seed of the splits and permutations.
        max_train_per_task: cap on training examples per task (short runs on MNIST / CIFAR).
    """

    def __init__(self, benchmark: Benchmark = "split_digits", path: str | None = None, n_tasks: int | None = None,
                 classes_per_task: int = 2, val_size: float = 0.1, test_size: float = 0.3, batch_size: int = 32,
                 seed: int = 0, max_train_per_task: int | None = None, num_workers: int = 0):
        super().__init__()
        self.save_hyperparameters()
        self.tasks: list[Task] | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.tasks is None:
            h = self.hparams
            self.tasks = build_tasks(h.benchmark, h.path, h.n_tasks, h.classes_per_task, h.val_size, h.test_size,
                                     h.seed, h.max_train_per_task)

    @property
    def n_tasks(self) -> int:
        self.setup()
        return len(self.tasks)

    @property
    def input_shape(self) -> list[int]:
        self.setup()
        return list(self.tasks[0].x_train.shape[1:])

    @property
    def task_classes(self) -> list[list[int]]:
        self.setup()
        return [t.classes for t in self.tasks]

    @property
    def has_test_split(self) -> bool:
        return True

    def current_task(self) -> int:
        module = self.trainer.lightning_module if self.trainer is not None else None
        return int(getattr(module, "current_task", 0))

    def _loader(self, x: torch.Tensor, y: torch.Tensor, shuffle: bool) -> DataLoader:
        return DataLoader(TensorDataset(x, y), batch_size=self.hparams.batch_size if shuffle else 512,
                          shuffle=shuffle, num_workers=self.hparams.num_workers)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        task = self.tasks[min(self.current_task(), len(self.tasks) - 1)]
        return self._loader(task.x_train, task.y_train, shuffle=True)

    def val_dataloader(self) -> list[DataLoader]:
        self.setup()
        return [self._loader(t.x_val, t.y_val, shuffle=False) for t in self.tasks]

    def test_dataloader(self) -> list[DataLoader]:
        self.setup()
        return [self._loader(t.x_test, t.y_test, shuffle=False) for t in self.tasks]

    def predict_dataloader(self) -> list[DataLoader]:
        return self.test_dataloader()

    def frame(self, task: int, split: str = "test", rows: int | None = None) -> pd.DataFrame:
        """A task's images as the model's input table: ``pixel_0 … pixel_{D-1}`` and ``task_id``."""
        self.setup()
        x = getattr(self.tasks[task], f"x_{split}")[:rows].flatten(1).numpy()
        df = pd.DataFrame(x, columns=[f"pixel_{i}" for i in range(x.shape[1])])
        df["task_id"] = np.int64(task)
        return df

    def input_example(self) -> pd.DataFrame:
        """Two test images of each of the first two tasks; the second task's with task_id −1 (infer the task)."""
        df = pd.concat([self.frame(0, rows=2), self.frame(min(1, self.n_tasks - 1), rows=2)], ignore_index=True)
        df.loc[2:, "task_id"] = -1
        return df
