"""Whole-sequence classification and regression data: sequential digits, UCR-style archives, the adding problem.

Every data module here yields fixed-length sequences ``x`` (N, L, C) with a
class index or a regression target per sequence, in train / val / test
splits, and offers the table interface of the SSM sequence models: the
same sequences as a long table (``unique_id``, ``ds`` the step, one column
per channel), which is what the logged MLflow model takes.

- :class:`SequentialDigits`: scikit-learn's 8 × 8 digits read pixel by pixel
  (L = 64, the small cousin of sequential MNIST), optionally in a fixed
  random order of the pixels (permuted digits).
- :class:`UCRSequences`: a UCR/UEA-style archive from a path: sktime ``.ts``
  files (``@``-header, ``dim1:dim2:label`` rows) or UCR ``.tsv``/``.csv`` rows
  (label first, then the values), as a ``NAME_TRAIN``/``NAME_TEST`` pair or a
  single file that is split.
- :class:`AddingProblem`: Hochreiter & Schmidhuber's adding problem: a
  sequence of (value ~ U(0, 1), marker) pairs with two markers, one in each
  half; the target is the sum of the two marked values. Predicting the
  mean scores an MSE of 1/6 ≈ 0.167.
- :class:`CopyingMemory`: the copying memory task (K symbols, a long blank
  gap, a delimiter, then the K symbols to recall); per-step targets.
- :class:`DelayTask`: a random symbol stream; at step t output the symbol
  read at t − delay; per-step targets.
"""

from __future__ import annotations

import abc

from pathlib import Path
from typing import Literal

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, TensorDataset

from tsuite.tables import InputError

SPLITS = ("train", "val", "test")


def frame_to_sequences(df: pd.DataFrame, columns: list[str], name: str) -> tuple[list[str], list[np.ndarray]]:
    """A long table (``unique_id``, ``ds``, ``columns``) → (ids, sequences (L_i, C)), each sorted by ``ds``."""
    missing = [c for c in ("unique_id", "ds", *columns) if c not in df.columns]
    if missing:
        raise InputError(f"{name}: missing column(s) {', '.join(missing)}; expected a long table with columns "
                         f"unique_id, ds, {', '.join(columns)} (found {', '.join(map(str, df.columns)) or 'none'})")
    if len(df) == 0:
        raise InputError(f"{name}: the table has no rows; expected at least one sequence")
    values = df[columns].apply(pd.to_numeric, errors="coerce")
    bad = values.isna().to_numpy()
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise InputError(f"{name} data row {row + 1}: {columns[col]} value {df[columns[col]].iloc[row]!r} is missing "
                         "or not a number; expected numbers in every value column")
    frame = pd.DataFrame({"unique_id": df["unique_id"].astype(str).to_numpy(), "ds": df["ds"].to_numpy()})
    if frame.duplicated().any():
        row = int(np.flatnonzero(frame.duplicated(keep=False).to_numpy())[0])
        raise InputError(f"{name} data row {row + 1}: duplicate (unique_id, ds) = ({frame['unique_id'][row]!r}, "
                         f"{frame['ds'][row]}); expected one row per sequence and step")
    frame[columns] = values.to_numpy(np.float64)
    frame = frame.sort_values(["unique_id", "ds"], kind="stable")
    ids, seqs = [], []
    for uid, g in frame.groupby("unique_id", sort=False):
        ids.append(uid)
        seqs.append(g[columns].to_numpy(np.float64))
    return ids, seqs


def sequences_to_frame(x: np.ndarray, columns: list[str], ids: list[str] | None = None) -> pd.DataFrame:
    """Sequences x (N, L, C) → a long table ``unique_id``, ``ds`` (0 … L−1), one column per channel."""
    n, L, _ = x.shape
    ids = ids or [f"seq{i}" for i in range(n)]
    out = pd.DataFrame({"unique_id": np.repeat(ids, L), "ds": np.tile(np.arange(L), n)})
    for c, col in enumerate(columns):
        out[col] = x[:, :, c].reshape(-1)
    return out


class SequenceDataModule(pl.LightningDataModule, abc.ABC):
    """Base of fixed-length sequence data: subclasses fill ``self.arrays[split] = (x (N, L, C), y)`` in ``_load``."""

    task: Literal["classification", "regression"] = "classification"
    input_columns: list[str] = ["y"]
    class_names: list[str] | None = None

    def __init__(self, batch_size: int = 64, num_workers: int = 0):
        super().__init__()
        self.batch_size, self.num_workers = batch_size, num_workers
        self.arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    @abc.abstractmethod
    def _load(self) -> None:
        """Fill ``self.arrays`` for the splits ``train``, ``val`` and ``test``."""

    def setup(self, stage: str | None = None) -> None:
        if not self.arrays:
            self._load()

    @property
    def d_input(self) -> int:
        self.setup()
        return len(self.input_columns)

    @property
    def d_output(self) -> int:
        self.setup()
        if self.task == "classification":
            return len(self.class_names)
        y = self.arrays["train"][1]
        return 1 if y.ndim == 1 else y.shape[1]

    @property
    def seq_len(self) -> int:
        self.setup()
        return self.arrays["train"][0].shape[1]

    @property
    def has_test_split(self) -> bool:
        self.setup()
        return len(self.arrays.get("test", ((), ()))[0]) > 0

    def input_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and standard deviation of the training inputs (C,)."""
        self.setup()
        x = self.arrays["train"][0]
        loc, scale = x.mean(axis=(0, 1)), x.std(axis=(0, 1))
        return loc, np.where(scale > 1e-12, scale, 1.0)

    def _loader(self, split: str, shuffle: bool) -> DataLoader | list:
        if split not in self.arrays or len(self.arrays[split][0]) == 0:
            return []
        x, y = self.arrays[split]
        target = torch.as_tensor(y, dtype=torch.long if self.task == "classification" else torch.float32)
        data = TensorDataset(torch.as_tensor(x, dtype=torch.float32), target)
        return DataLoader(data, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader | list:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader | list:
        return self._loader("test", shuffle=False)

    def input_example(self, n: int = 2) -> pd.DataFrame:
        """The first ``n`` sequences of the test split (else train) as a long table: the MLflow input example."""
        self.setup()
        split = "test" if self.has_test_split else "train"
        return sequences_to_frame(self.arrays[split][0][:n], self.input_columns)

    def frame(self, split: str = "test") -> pd.DataFrame:
        """A split's sequences as a long table (``unique_id`` seq0, seq1, … in order)."""
        self.setup()
        return sequences_to_frame(self.arrays[split][0], self.input_columns)


def _split(n: int, val_size: float, test_size: float, seed: int, labels: np.ndarray | None = None) -> dict:
    """Shuffled (stratified when ``labels``) indices of train/val/test; sizes as fractions (< 1) or counts."""
    from sklearn.model_selection import train_test_split

    def count(s: float, total: int) -> int:
        return int(round(s * total)) if s < 1 else int(s)

    idx = np.arange(n)
    out = {}
    for split, size in (("test", test_size), ("val", val_size)):
        k = count(size, n)
        if k <= 0:
            out[split] = idx[:0]
            continue
        strat = labels[idx] if labels is not None else None
        try:
            idx, out[split] = train_test_split(idx, test_size=k, random_state=seed, stratify=strat)
        except ValueError:  # a class too rare to stratify: split without stratification
            idx, out[split] = train_test_split(idx, test_size=k, random_state=seed)
    out["train"] = idx
    return out


class SequentialDigits(SequenceDataModule):
    """scikit-learn's 8 × 8 handwritten digits (1797 images, 10 classes) read pixel by pixel: L = 64, one channel.

    Args:
        permuted: read the pixels in a fixed random order (drawn from ``permutation_seed``).
        val_size, test_size: held-out fractions (stratified split drawn from ``seed``).
        batch_size: sequences per batch.
    """

    def __init__(self, permuted: bool = False, permutation_seed: int = 0, val_size: float = 0.1,
                 test_size: float = 0.2, seed: int = 0, batch_size: int = 64, num_workers: int = 0):
        super().__init__(batch_size, num_workers)
        self.save_hyperparameters()
        self.permuted, self.permutation_seed = permuted, permutation_seed
        self.val_size, self.test_size, self.seed = val_size, test_size, seed
        self.class_names = [str(i) for i in range(10)]
        self.permutation = np.random.default_rng(permutation_seed).permutation(64) if permuted else np.arange(64)

    def _load(self) -> None:
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = digits.data[:, self.permutation].astype(np.float32)[:, :, None]  # (1797 64 1), values 0..16
        y = digits.target.astype(np.int64)
        for split, idx in _split(len(y), self.val_size, self.test_size, self.seed, y).items():
            self.arrays[split] = (x[idx], y[idx])


class AddingProblem(SequenceDataModule):
    """The adding problem: (value, marker) sequences of ``length``; target = the sum of the two marked values.

    Values are U(0, 1); one marker falls uniformly in each half of the
    sequence. Splits are generated independently from ``seed``.
    """

    task = "regression"
    input_columns = ["value", "marker"]

    def __init__(self, length: int = 1000, n_train: int = 10000, n_val: int = 1000, n_test: int = 1000,
                 seed: int = 0, batch_size: int = 64, num_workers: int = 0):
        super().__init__(batch_size, num_workers)
        if length < 2:
            raise InputError(f"adding problem: length must be ≥ 2 (one marker per half), got {length}")
        self.save_hyperparameters()
        self.length, self.sizes, self.seed = length, {"train": n_train, "val": n_val, "test": n_test}, seed

    @staticmethod
    def generate(n: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """n sequences (n, length, 2) and their targets (n,)."""
        values = rng.random((n, length), dtype=np.float32)
        half = length // 2
        first = rng.integers(0, half, n)
        second = rng.integers(half, length, n)
        markers = np.zeros((n, length), dtype=np.float32)
        markers[np.arange(n), first] = 1.0
        markers[np.arange(n), second] = 1.0
        target = values[np.arange(n), first] + values[np.arange(n), second]
        return np.stack([values, markers], axis=-1), target.astype(np.float32)

    def _load(self) -> None:
        for i, split in enumerate(SPLITS):
            rng = np.random.default_rng([self.seed, i])
            self.arrays[split] = self.generate(self.sizes[split], self.length, rng)


IGNORE_INDEX = -100  # per-step targets: no output asked at this step (torch's cross-entropy default)


class _SymbolTask(SequenceDataModule):
    """Per-step symbol tasks: one-hot inputs (N, L, C), targets (N, L) int64 with ``IGNORE_INDEX`` where none."""

    per_step = True

    def input_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """One-hot inputs are fed as they are (standardising a rare symbol's channel would blow it up)."""
        C = len(self.input_columns)
        return np.zeros(C), np.ones(C)

    def _load(self) -> None:
        for i, split in enumerate(SPLITS):
            self.arrays[split] = self.generate_split(self.sizes[split], np.random.default_rng([self.seed, i]))

    @abc.abstractmethod
    def generate_split(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """n sequences (n, L, C) float32 and their targets (n, L) int64."""


class CopyingMemory(_SymbolTask):
    """The copying memory task (Arjovsky et al. 2016, arXiv:1511.06464; used as a benchmark in S4, arXiv:2111.00396).

    Layout of one sequence of total length ``L = 2 K + length + 1`` (K = ``n_symbols``):

    - steps ``0 … K−1``: K symbols drawn uniformly (with replacement) from an alphabet of A = ``alphabet``;
    - steps ``K … K+length−1``: blanks (the gap to bridge);
    - step ``K+length``: the delimiter (the cue to start recalling);
    - steps ``K+length+1 … L−1``: K blanks, during which the model must output the K symbols in order.

    Inputs are one-hot over C = A + 2 channels (``blank``, ``delimiter``, ``s0`` … ``s{A−1}``). Targets (N, L)
    are the symbol indices 0 … A−1 at the last K steps and ``IGNORE_INDEX`` (−100) everywhere else, so a per-step
    model (``SSMSequenceModel(pool="none")``) is scored on the copied positions only; chance accuracy there is 1/A.
    Arjovsky et al. use A = 8, K = 10 and also ask for blanks elsewhere; here nothing is asked elsewhere (the
    S4-style masked variant). The default ``length`` 1003 gives L = 1024. Splits are generated independently
    from ``seed``.
    """

    def __init__(self, length: int = 1003, alphabet: int = 8, n_symbols: int = 10, n_train: int = 10000,
                 n_val: int = 1000, n_test: int = 1000, seed: int = 0, batch_size: int = 64, num_workers: int = 0):
        super().__init__(batch_size, num_workers)
        if length < 0 or alphabet < 2 or n_symbols < 1:
            raise InputError(f"copying task: need length ≥ 0, alphabet ≥ 2 and n_symbols ≥ 1; got length={length}, "
                             f"alphabet={alphabet}, n_symbols={n_symbols}")
        self.save_hyperparameters()
        self.length, self.alphabet, self.n_symbols, self.seed = length, alphabet, n_symbols, seed
        self.sizes = {"train": n_train, "val": n_val, "test": n_test}
        self.input_columns = ["blank", "delimiter", *[f"s{i}" for i in range(alphabet)]]
        self.class_names = [f"s{i}" for i in range(alphabet)]

    @property
    def total_length(self) -> int:
        return 2 * self.n_symbols + self.length + 1

    def generate_split(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return self.generate(n, self.length, self.alphabet, self.n_symbols, rng)

    @staticmethod
    def generate(n: int, length: int, alphabet: int, n_symbols: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """n sequences (n, L, A+2) one-hot and targets (n, L) (see the class docstring for the layout)."""
        K = n_symbols
        L = 2 * K + length + 1
        symbols = rng.integers(0, alphabet, (n, K))  # (n K)
        code = np.zeros((n, L), dtype=np.int64)  # channel index per step: 0 blank, 1 delimiter, 2 + symbol
        code[:, :K] = 2 + symbols
        code[:, K + length] = 1
        x = np.eye(alphabet + 2, dtype=np.float32)[code]  # (n L A+2)
        y = np.full((n, L), IGNORE_INDEX, dtype=np.int64)
        y[:, L - K :] = symbols
        return x, y


class DelayTask(_SymbolTask):
    """Delay line: a stream of symbols drawn uniformly from A = ``alphabet``; at step t output the input at t − d.

    Inputs are one-hot (N, L, A) (columns ``s0`` … ``s{A−1}``); targets (N, L) are the symbol read ``delay``
    steps earlier, ``IGNORE_INDEX`` at the first ``delay`` steps. Chance accuracy is 1/A. A long-range
    memory probe in the spirit of the S4 paper's synthetic tasks (arXiv:2111.00396).
    """

    def __init__(self, length: int = 1024, delay: int = 1000, alphabet: int = 4, n_train: int = 10000,
                 n_val: int = 1000, n_test: int = 1000, seed: int = 0, batch_size: int = 64, num_workers: int = 0):
        super().__init__(batch_size, num_workers)
        if not 0 <= delay < length or alphabet < 2:
            raise InputError(f"delay task: need 0 ≤ delay < length and alphabet ≥ 2; got delay={delay}, "
                             f"length={length}, alphabet={alphabet}")
        self.save_hyperparameters()
        self.length, self.delay, self.alphabet, self.seed = length, delay, alphabet, seed
        self.sizes = {"train": n_train, "val": n_val, "test": n_test}
        self.input_columns = [f"s{i}" for i in range(alphabet)]
        self.class_names = list(self.input_columns)

    def generate_split(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        symbols = rng.integers(0, self.alphabet, (n, self.length))  # (n L)
        x = np.eye(self.alphabet, dtype=np.float32)[symbols]  # (n L A)
        y = np.full((n, self.length), IGNORE_INDEX, dtype=np.int64)
        y[:, self.delay :] = symbols[:, : self.length - self.delay]
        return x, y


def read_ts(path: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """Read an sktime ``.ts`` file: (x (N, L, C), labels or targets (N,) as strings/floats, ``class``/``target``)."""
    kind, rows, labels, in_data = "class", [], [], False
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                key = line.split()[0].lower()
                if key == "@targetlabel" and line.split()[1].lower() == "true":
                    kind = "target"
                elif key == "@data":
                    in_data = True
                continue
            *dims, label = line.split(":")
            if not dims:
                raise InputError(f"{path} line {lineno}: expected 'values:...:label', found {line[:60]!r}")
            try:
                series = [np.array([float("nan") if v == "?" else float(v) for v in d.split(",")]) for d in dims]
            except ValueError as err:
                raise InputError(f"{path} line {lineno}: a value is not a number ({err})") from err
            lengths = {len(s) for s in series}
            if len(lengths) > 1 or (rows and (len(series), len(series[0])) != rows[0].shape[::-1]):
                expected = f"{rows[0].shape[1]} dimension(s) of length {rows[0].shape[0]}" if rows else "equal lengths"
                raise InputError(f"{path} line {lineno}: dimensions of lengths {sorted(lengths)}; expected {expected} "
                                 "(only equal-length series are supported)")
            if any(np.isnan(s).any() for s in series):
                raise InputError(f"{path} line {lineno}: missing values ('?'); fill them before training")
            rows.append(np.stack(series, axis=-1))
            labels.append(label.strip())
    if not in_data or not rows:
        raise InputError(f"{path}: no @data section with series; expected an sktime .ts file")
    return np.stack(rows).astype(np.float32), np.asarray(labels), kind


def read_ucr_table(path: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """Read a UCR ``.tsv``/``.csv`` file (label, then the values, one series per row; no header)."""
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        table = pd.read_csv(path, sep=sep, header=None, dtype=str)
    except Exception as err:  # noqa: BLE001 - any parser failure names the file
        raise InputError(f"{path}: cannot be read as a UCR table ({err})") from err
    values = table.iloc[:, 1:].apply(pd.to_numeric, errors="coerce")
    if len(table) and values.iloc[0].isna().all():  # a header row
        table, values = table.iloc[1:], values.iloc[1:]
    if values.shape[1] == 0 or len(values) == 0:
        raise InputError(f"{path}: no series; expected rows of a label followed by the values")
    bad = values.isna().to_numpy()
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise InputError(f"{path} row {row + 1}, column {col + 2}: missing or non-numeric value; expected numbers")
    return values.to_numpy(np.float32)[:, :, None], table.iloc[:, 0].str.strip().to_numpy(), "class"


def read_sequences(path: str | Path) -> tuple[np.ndarray, np.ndarray, str]:
    """Read a ``.ts``, ``.tsv`` or ``.csv`` sequence file (see :class:`UCRSequences`)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file; expected a .ts, .tsv or .csv file of labelled series")
    if path.suffix.lower() == ".ts":
        return read_ts(path)
    if path.suffix.lower() in (".tsv", ".csv"):
        return read_ucr_table(path)
    raise InputError(f"{path}: unknown format {path.suffix!r}; expected .ts, .tsv or .csv")


class UCRSequences(SequenceDataModule):
    """Labelled equal-length series from a UCR/UEA-style archive.

    Args:
        path: a ``NAME_TRAIN.{ts,tsv,csv}`` file (its ``NAME_TEST`` twin beside it is the test split), a folder
            holding such a pair, or any single file (then ``test_size`` of it is held out).
        val_size, test_size: fractions (< 1) or counts held out of the training file (test only without a twin).
        seed: seed of the splits.
    """

    def __init__(self, path: str, val_size: float = 0.1, test_size: float = 0.2, seed: int = 0,
                 batch_size: int = 64, num_workers: int = 0):
        super().__init__(batch_size, num_workers)
        self.save_hyperparameters()
        self.path, self.val_size, self.test_size, self.seed = Path(path), val_size, test_size, seed

    def _files(self) -> tuple[Path, Path | None]:
        path = self.path
        if path.is_dir():
            train = sorted(p for p in path.iterdir() if p.stem.upper().endswith("_TRAIN")
                           and p.suffix.lower() in (".ts", ".tsv", ".csv"))
            if not train:
                raise InputError(f"{path}: no NAME_TRAIN.ts/.tsv/.csv file in this folder")
            path = train[0]
        if not path.exists():
            raise InputError(f"{path}: no such file or folder; expected a UCR/UEA .ts, .tsv or .csv archive")
        twin = path.with_name(path.name[: -len(path.suffix) - 6] + "_TEST" + path.suffix)
        return path, (twin if path.stem.upper().endswith("_TRAIN") and twin.exists() else None)

    def _load(self) -> None:
        train_file, test_file = self._files()
        x, labels, kind = read_sequences(train_file)
        parts = {"train": (x, labels)}
        if test_file is not None:
            xt, lt, _ = read_sequences(test_file)
            if xt.shape[1:] != x.shape[1:]:
                raise InputError(f"{test_file}: series of shape {xt.shape[1:]} (length, dims) but {train_file} has "
                                 f"{x.shape[1:]}; expected the same")
            parts["test"] = (xt, lt)
        self.task = "classification" if kind == "class" else "regression"
        C = x.shape[2]
        self.input_columns = ["y"] if C == 1 else [f"dim_{i}" for i in range(C)]
        if self.task == "classification":
            names = np.unique(np.concatenate([p[1] for p in parts.values()]))
            try:
                names = names[np.argsort(names.astype(float))]
            except ValueError:
                pass
            self.class_names = [str(n) for n in names]
            code = {n: i for i, n in enumerate(self.class_names)}
            parts = {s: (xs, np.array([code[v] for v in ls])) for s, (xs, ls) in parts.items()}
        else:
            parts = {s: (xs, ls.astype(np.float32)) for s, (xs, ls) in parts.items()}
        x, y = parts["train"]
        strat = y if self.task == "classification" and np.bincount(y).min() >= 2 else None
        idx = _split(len(y), self.val_size, 0 if "test" in parts else self.test_size, self.seed, strat)
        self.arrays = {s: (x[i], y[i]) for s, i in idx.items()}
        if "test" in parts:
            self.arrays["test"] = parts["test"]
