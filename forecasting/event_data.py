"""Event sequences (marked temporal point processes): readers, checks and ``EventDataModule``.

An event table has one row per event with columns ``seq_id``, ``time`` (a
number, non-decreasing within a sequence) and ``mark`` (an integer in
``0 .. n_marks-1``), as CSV or Parquet. JSON lines hold one sequence per line:
``{"seq_id": "a", "time": [0.3, 1.2], "mark": [0, 2]}`` (``seq_id`` optional).
The built-in source ``hawkes`` draws sequences from a multivariate Hawkes
process with known parameters (:class:`tsuite.forecasting.hawkes.HawkesProcess`).

Bad input stops before training with a message naming the file, the row (or
line and event) and the field, what was wrong and what was expected.

Time origin: with ``time_origin="zero"`` every sequence starts at time 0 (the
Hawkes generator's convention) and the first event's inter-event time is
τ_1 = t_1; with ``"first_event"`` the first event only sets the origin, and the
likelihood and metrics count events 2..n.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from tsuite.forecasting.hawkes import HawkesProcess
from tsuite.tables import InputError, read_table

EVENT_COLUMNS = ("seq_id", "time", "mark")
TimeOrigin = Literal["zero", "first_event"]
Sequence = tuple[str, np.ndarray, np.ndarray]  # (seq_id, times (n,) float64, marks (n,) int64)


# -- reading ---------------------------------------------------------------------------------------
def read_jsonl(path: Path) -> tuple[pd.DataFrame, list[str]]:
    """JSON lines of sequences → a long event table and, per row, where it came from ("line 3, event 2")."""
    rows: list[dict] = []
    where: list[str] = []
    seen: set[str] = set()
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise InputError(f"{path} line {n}: not UTF-8 text ({err.reason}); expected JSON lines in "
                                 "UTF-8") from err
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(
                    f"{path} line {n}: not valid JSON ({err.msg}); expected one JSON object per line"
                ) from err
            if not isinstance(obj, dict) or "time" not in obj or "mark" not in obj:
                raise InputError(f'{path} line {n}: expected an object with lists "time" and "mark" '
                                 '(and optionally "seq_id")')
            times, marks = obj["time"], obj["mark"]
            sid = str(obj.get("seq_id", n))
            if not isinstance(times, list) or not isinstance(marks, list) or len(times) != len(marks):
                raise InputError(f'{path} line {n}: "time" and "mark" must be lists of the same length')
            if not times:
                raise InputError(f"{path} line {n}: sequence {sid!r} is empty; expected at least one event")
            if sid in seen:
                raise InputError(f"{path} line {n}: seq_id {sid!r} appears on an earlier line; expected unique seq_ids")
            seen.add(sid)
            for k, (t, m) in enumerate(zip(times, marks)):
                rows.append({"seq_id": sid, "time": t, "mark": m})
                where.append(f"line {n}, event {k + 1}")
    if not rows:
        raise InputError(f"{path}: no sequences; expected one JSON object per line")
    return pd.DataFrame(rows, columns=list(EVENT_COLUMNS)), where


def load_events(source: str, hawkes: HawkesProcess | None = None) -> tuple[pd.DataFrame, str, list[str] | None]:
    """The raw event table of ``source`` (``hawkes`` or a CSV / Parquet / JSON-lines path), its name, row labels."""
    if source == "hawkes":
        return (hawkes or HawkesProcess()).generate(), "hawkes", None
    path = Path(source)
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        if not path.exists():
            raise InputError(f"{path}: no such file; expected JSON lines of event sequences")
        df, where = read_jsonl(path)
        return df, str(path), where
    return read_table(path), str(path), None


# -- checking --------------------------------------------------------------------------------------
def validate_events(
    df: pd.DataFrame,
    name: str,
    n_marks: int | None = None,
    time_origin: TimeOrigin = "zero",
    where: list[str] | None = None,
) -> list[Sequence]:
    """Check an event table and return its sequences, in order of first appearance.

    Raises :class:`InputError` for missing columns, an empty table, missing or
    non-numeric times, marks that are not integers or lie outside ``0 ..
    n_marks-1``, times that decrease within a sequence, negative times with
    ``time_origin="zero"`` and, with ``"first_event"``, sequences of one event.
    """
    missing = [c for c in EVENT_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(
            f"{name}: missing column(s) {', '.join(missing)}; expected an event table with columns seq_id, time, "
            f"mark (found {', '.join(map(str, df.columns)) or 'none'})"
        )
    if len(df) == 0:
        raise InputError(f"{name}: the table has no rows; expected at least one event")
    df = df.reset_index(drop=True)

    def at(r: int) -> str:
        return f"{name} {where[r]}" if where is not None else f"{name} data row {r + 1}"

    if df["seq_id"].isna().any():
        r = int(np.flatnonzero(df["seq_id"].isna().to_numpy())[0])
        raise InputError(f"{at(r)}: seq_id is missing; expected the id of the event's sequence")
    times = _numbers(df["time"], "time", at)
    marks = _marks(df["mark"], n_marks, at)
    ids = df["seq_id"].astype(str).to_numpy()

    order = np.argsort(pd.factorize(ids)[0], kind="stable")  # rows grouped by sequence, file order kept
    same = ids[order][1:] == ids[order][:-1]
    back = same & (times[order][1:] < times[order][:-1])
    if back.any():
        i = int(np.flatnonzero(back)[0])
        r, prev = int(order[i + 1]), int(order[i])
        raise InputError(
            f"{at(r)}: time {times[r]:g} is earlier than the previous event {times[prev]:g} in sequence {ids[r]!r}; "
            "times must be non-decreasing within a sequence"
        )
    if time_origin == "zero" and (times < 0).any():
        r = int(np.flatnonzero(times < 0)[0])
        raise InputError(
            f"{at(r)}: time {times[r]:g} is before the start of the sequence at 0; with time_origin='zero' times "
            "are measured from the start of each sequence (or set time_origin='first_event')"
        )
    sequences = []
    starts = np.r_[0, np.flatnonzero(~same) + 1, len(order)]
    for a, b in zip(starts[:-1], starts[1:]):
        rows = order[a:b]
        if time_origin == "first_event" and len(rows) < 2:
            raise InputError(
                f"{at(int(rows[0]))}: sequence {ids[rows[0]]!r} has 1 event; with time_origin='first_event' the "
                "first event only sets the origin, so at least 2 events are needed"
            )
        sequences.append((str(ids[rows[0]]), times[rows], marks[rows]))
    return sequences


def _numbers(col: pd.Series, field: str, at) -> np.ndarray:
    values = pd.to_numeric(col, errors="coerce")
    bad = values.isna().to_numpy()
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raw = col.iloc[r]
        missing = raw is None or (np.ndim(raw) == 0 and pd.isna(raw))
        what = "is missing" if missing else f"value {_plain(raw)!r} is not a number"
        raise InputError(f"{at(r)}: {field} {what}; expected a number")
    out = values.to_numpy(np.float64)
    if not np.isfinite(out).all():
        r = int(np.flatnonzero(~np.isfinite(out))[0])
        raise InputError(f"{at(r)}: {field} {out[r]} is not finite; expected a finite number")
    return out


def _plain(value):
    """A numpy scalar as its Python value, so messages read 'x' and 1.5, not np.str_('x')."""
    return value.item() if isinstance(value, np.generic) else value


def _marks(col: pd.Series, n_marks: int | None, at) -> np.ndarray:
    values = _numbers(col, "mark", at)
    frac = values != np.round(values)
    if frac.any():
        r = int(np.flatnonzero(frac)[0])
        raise InputError(f"{at(r)}: mark {values[r]:g} is not an integer; expected an integer mark")
    marks = values.astype(np.int64)
    hi = n_marks if n_marks is not None else None
    bad = (marks < 0) | (marks >= hi if hi is not None else False)
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        allowed = f"0..{hi - 1} (n_marks={hi})" if hi is not None else "0 or more"
        raise InputError(f"{at(r)}: mark {marks[r]} is outside the declared range {allowed}; expected a mark in "
                         f"{allowed}")
    return marks


# -- batches ---------------------------------------------------------------------------------------
def sequence_arrays(times: np.ndarray, time_origin: TimeOrigin) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(times from the origin, inter-event times τ, scored) of one sequence; τ_1 = t_1 − origin."""
    origin = times[0] if time_origin == "first_event" else 0.0
    rel = times - origin
    tau = np.diff(rel, prepend=0.0)
    scored = np.ones(len(times), dtype=bool)
    if time_origin == "first_event":
        scored[0] = False
    return rel, tau, scored


def collate_events(batch: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Right-pad sequences to the longest: time, tau (B, N) float32; mark (B, N) long; mask (B, N) bool (scored)."""
    n = max(len(b[0]) for b in batch)
    out = {
        "time": torch.zeros(len(batch), n),
        "tau": torch.zeros(len(batch), n),
        "mark": torch.zeros(len(batch), n, dtype=torch.long),
        "mask": torch.zeros(len(batch), n, dtype=torch.bool),
    }
    for i, (rel, tau, marks, scored) in enumerate(batch):
        k = len(rel)
        out["time"][i, :k] = torch.from_numpy(rel)
        out["tau"][i, :k] = torch.from_numpy(tau)
        out["mark"][i, :k] = torch.from_numpy(marks)
        out["mask"][i, :k] = torch.from_numpy(scored)
    return out


class EventDataModule(pl.LightningDataModule):
    """Event sequences split into train / validation / test by sequence, padded in batches.

    Args:
        source: a CSV / Parquet table (seq_id, time, mark), a JSON-lines file, or ``hawkes``.
        n_marks: the number of marks; marks must lie in 0..n_marks-1 (None: the Hawkes process's
            dimension, or 1 + the largest mark in a file).
        hawkes: the Hawkes process generated when ``source`` is ``hawkes``.
        val_size, test_size: shares (< 1) or counts of sequences held out.
        batch_size: sequences per batch.
        time_origin: ``zero`` (sequences start at time 0) or ``first_event`` (see the module docstring).
        split_seed: seed of the random assignment of sequences to splits.
    """

    def __init__(
        self,
        source: str,
        n_marks: int | None = None,
        hawkes: HawkesProcess | None = None,
        val_size: float = 0.1,
        test_size: float = 0.1,
        batch_size: int = 32,
        time_origin: TimeOrigin = "zero",
        split_seed: int = 0,
        num_workers: int = 0,
    ):
        super().__init__()
        if n_marks is not None and n_marks < 1:
            raise InputError(f"n_marks must be ≥ 1, got {n_marks}")
        self.save_hyperparameters()
        self.source, self.hawkes, self.batch_size = source, hawkes, batch_size
        self.val_size, self.test_size, self.time_origin = val_size, test_size, time_origin
        self.split_seed, self.num_workers = split_seed, num_workers
        self.n_marks = n_marks
        if source == "hawkes":
            dim = (hawkes or HawkesProcess()).n_marks
            if n_marks is not None and n_marks != dim:
                raise InputError(f"n_marks={n_marks} but the Hawkes process has {dim} marks; set n_marks: {dim}")
            self.n_marks = dim
        self.sequences: list[Sequence] | None = None
        self.splits: dict[str, list[Sequence]] = {}
        self.stats: dict[str, float] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.sequences is not None:
            return
        raw, name, where = load_events(self.source, self.hawkes)
        seqs = validate_events(raw, name, self.n_marks, self.time_origin, where)
        if self.n_marks is None:
            self.n_marks = int(max(s[2].max() for s in seqs)) + 1
        n = len(seqs)
        n_val, n_test = (int(round(s * n)) if s < 1 else int(s) for s in (self.val_size, self.test_size))
        if n - n_val - n_test < 1:
            raise InputError(f"{name}: {n} sequence(s) leave none for training after holding out {n_val} for "
                             f"validation and {n_test} for testing; lower val_size / test_size")
        perm = np.random.default_rng(self.split_seed).permutation(n)
        bounds = {"test": perm[:n_test], "val": perm[n_test:n_test + n_val], "train": perm[n_test + n_val:]}
        self.splits = {k: [seqs[i] for i in sorted(idx)] for k, idx in bounds.items() if len(idx)}
        self.sequences = seqs
        self.stats = self._fit_stats(self.splits["train"])

    def _fit_stats(self, train: list[Sequence]) -> dict[str, float]:
        """Scale of the inter-event times on the training split: mean τ and mean / std of log τ (τ > 0)."""
        taus = np.concatenate([tau[scored] for _, tau, _, scored in self._items(train)])
        pos = taus[taus > 0]
        if len(pos) == 0:
            raise InputError(f"{self.source}: every inter-event time in the training split is 0; expected times "
                             "that increase")
        log = np.log(pos)
        return {"time_scale": float(taus.mean()), "log_tau_mean": float(log.mean()),
                "log_tau_std": float(max(log.std(), 1e-3))}

    @property
    def has_test_split(self) -> bool:
        self.setup()
        return "test" in self.splits

    def _items(self, seqs: list[Sequence]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """(times from the origin, τ, marks, scored) of each sequence: what :func:`collate_events` pads."""
        out = []
        for _, times, marks in seqs:
            rel, tau, scored = sequence_arrays(times, self.time_origin)
            out.append((rel, tau, marks, scored))
        return out

    def _loader(self, split: str, shuffle: bool) -> DataLoader | list:
        if split not in self.splits:
            return []
        return DataLoader(self._items(self.splits[split]), batch_size=self.batch_size, shuffle=shuffle,
                          collate_fn=collate_events, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader | list:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader | list:
        return self._loader("test", shuffle=False)

    def frame(self, split: str) -> pd.DataFrame:
        """The sequences of one split as an event table (seq_id, time, mark)."""
        seqs = self.splits.get(split, [])
        if not seqs:
            return pd.DataFrame({c: [] for c in EVENT_COLUMNS})
        return pd.DataFrame({
            "seq_id": np.concatenate([[s] * len(t) for s, t, _ in seqs]),
            "time": np.concatenate([t for _, t, _ in seqs]),
            "mark": np.concatenate([m for _, _, m in seqs]),
        })

    def input_example(self, rows: int = 8) -> pd.DataFrame:
        """Histories of two sequences (up to ``rows`` events each): the MLflow input example."""
        self.setup()
        split = "test" if "test" in self.splits else "train"
        seqs = self.splits[split][:2]
        return pd.DataFrame({
            "seq_id": np.concatenate([[s] * min(rows, len(t)) for s, t, _ in seqs]),
            "time": np.concatenate([t[:rows] for _, t, _ in seqs]),
            "mark": np.concatenate([m[:rows] for _, _, m in seqs]).astype(np.int64),
        })
