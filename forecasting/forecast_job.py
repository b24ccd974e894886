"""``tsuite forecast``: the next H steps of every series of a table, from any saved forecasting model.

The input is cut into chunks of ``--chunk-size`` series (:class:`SeriesChunks`).
A Parquet file is read chunk by chunk (the row groups that hold a chunk), and
a CSV file is first copied in pieces to a temporary Parquet file, so memory
stays bounded by a row group (pyarrow's default: about a million rows)
whatever the number of series, provided each series' rows are contiguous; a
table whose series are interleaved is read whole. Each chunk's forecasts are
appended to a temporary file that is renamed onto ``--output`` once every
series is done, so a failed or interrupted run leaves any earlier output
untouched and no partial file.

With ``--devices N`` (and ``--strategy ddp`` or ``ddp_spawn``) the chunks are
sharded across ranks by Lightning's predict loop (its distributed sampler):
each rank writes its chunks' forecasts as part files and rank 0 merges them,
in the input's series order, into ``--output``; the result equals the
single-process run's.
"""

from __future__ import annotations

import abc

import argparse
import shutil
import sys
import tempfile
import weakref
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from tsuite.forecasting.sources import load_series
from tsuite.forecasting.validation import REQUIRED
from tsuite.sharding import add_sharding_arguments, parse_devices, predict_sharded
from tsuite.tables import AtomicTableWriter, InputError, read_table, write_table_atomic
from tsuite.tracking import load_model

CSV_ROWS_PER_PIECE = 500_000  # rows of a CSV read at a time (and one row group of its Parquet copy)


# -- the input, chunk by chunk ----------------------------------------------------------------------
class SeriesChunks(Dataset, abc.ABC):
    """Map-style dataset of series chunks: item ``i`` is ``(i, table of series i·size .. (i+1)·size − 1)``.

    Series are numbered in order of first appearance in the input; a chunk's
    table holds all rows of its series (columns unique_id, ds, y).
    """

    n_series: int
    chunk_size: int

    def __len__(self) -> int:
        return -(-self.n_series // self.chunk_size)

    def __getitem__(self, i: int) -> tuple[int, pd.DataFrame]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        lo, hi = i * self.chunk_size, min((i + 1) * self.chunk_size, self.n_series)
        return i, self.rows(lo, hi)

    @abc.abstractmethod
    def rows(self, lo: int, hi: int) -> pd.DataFrame:
        """Implemented by each subclass."""

    @staticmethod
    def from_frame(df: pd.DataFrame, chunk_size: int) -> "FrameChunks":
        return FrameChunks(df, chunk_size)


class FrameChunks(SeriesChunks):
    """Chunks of an in-memory table; a series' rows need not be contiguous."""

    def __init__(self, df: pd.DataFrame, chunk_size: int):
        if "unique_id" not in df.columns:
            raise InputError("input table: missing column unique_id; expected columns unique_id, ds, y")
        self.df, self.chunk_size = df, chunk_size
        codes, uniques = df["unique_id"].astype(str).factorize()
        self.order = np.argsort(codes, kind="stable")
        self.bounds = np.searchsorted(codes[self.order], np.arange(len(uniques) + 1))
        self.n_series = len(uniques)

    def rows(self, lo: int, hi: int) -> pd.DataFrame:
        return self.df.iloc[self.order[self.bounds[lo]: self.bounds[hi]]]


class ParquetChunks(SeriesChunks):
    """Chunks of a Parquet file whose series' rows are contiguous, read by row groups.

    One pass over the ``unique_id`` column finds where each series starts; a
    chunk then reads only the row groups that hold its rows (the last two are
    cached, since chunks are read in order).
    """

    def __init__(self, path: str | Path, chunk_size: int, name: str | None = None):
        import pyarrow.parquet as pq

        self.path, self.chunk_size, self.name = str(path), chunk_size, name or str(path)
        try:
            pf = pq.ParquetFile(self.path)
        except Exception as err:  # noqa: BLE001 - any reader failure names the file
            raise InputError(f"{self.name}: cannot be read as a parquet table: {err}") from err
        columns = pf.schema_arrow.names
        missing = [c for c in REQUIRED if c not in columns]
        if missing:
            raise InputError(f"{self.name}: missing column(s) {', '.join(missing)}; expected a long-format table "
                             f"with columns unique_id, ds, y (found {', '.join(columns) or 'none'})")
        sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)]
        self.group_start = np.r_[0, np.cumsum(sizes)].astype(np.int64)
        starts, seen, last = [], set(), None
        self.contiguous = True
        for g in range(pf.num_row_groups):
            column = pf.read_row_group(g, columns=["unique_id"]).column(0).to_pandas()
            if not len(column):
                continue
            if column.isna().any():
                r = int(self.group_start[g] + np.flatnonzero(column.isna().to_numpy())[0])
                raise InputError(f"{self.name} data row {r + 1}: unique_id is missing; expected the id of the "
                                 "row's series")
            ids = column.astype(str).to_numpy()
            new = np.r_[ids[0] != last, ids[1:] != ids[:-1]]
            for r in np.flatnonzero(new):
                if ids[r] in seen:
                    self.contiguous = False
                    break
                seen.add(ids[r])
                starts.append(self.group_start[g] + r)
            if not self.contiguous:
                break
            last = ids[-1]
        self.starts = np.r_[np.asarray(starts, dtype=np.int64), self.group_start[-1]]
        self.n_series = len(starts)
        self._file = None
        self._cache: dict[int, pd.DataFrame] = {}

    def __getstate__(self) -> dict:  # sent to ddp_spawn workers: no open file, no cache
        return {**self.__dict__, "_file": None, "_cache": {}}

    def _group(self, g: int) -> pd.DataFrame:
        if g not in self._cache:
            import pyarrow.parquet as pq

            if self._file is None:
                self._file = pq.ParquetFile(self.path)
            if len(self._cache) >= 2:
                self._cache.pop(next(iter(self._cache)))
            self._cache[g] = self._file.read_row_group(g, columns=list(REQUIRED)).to_pandas()
        return self._cache[g]

    def rows(self, lo: int, hi: int) -> pd.DataFrame:
        a, b = int(self.starts[lo]), int(self.starts[hi])
        first = int(np.searchsorted(self.group_start, a, side="right")) - 1
        last = int(np.searchsorted(self.group_start, b, side="left"))
        parts = [self._group(g) for g in range(first, last)]
        frame = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
        offset = int(self.group_start[first])
        return frame.iloc[a - offset: b - offset].reset_index(drop=True)


def csv_to_parquet(path: Path, dest: Path) -> None:
    """Copy the unique_id, ds, y columns of a CSV file to Parquet in pieces of bounded size, with typed columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer, schema, ds_int, offset = None, None, False, 0
    try:
        reader = pd.read_csv(path, chunksize=CSV_ROWS_PER_PIECE, dtype={"unique_id": str})
        for piece in reader:
            missing = [c for c in REQUIRED if c not in piece.columns]
            if missing:
                raise InputError(f"{path}: missing column(s) {', '.join(missing)}; expected a long-format table "
                                 f"with columns unique_id, ds, y (found {', '.join(map(str, piece.columns))})")
            no_id = np.flatnonzero(piece["unique_id"].isna().to_numpy())
            if len(no_id):
                raise InputError(f"{path} data row {offset + no_id[0] + 1}: unique_id is missing; expected the id "
                                 "of the row's series")
            y = pd.to_numeric(piece["y"], errors="coerce")
            bad = np.flatnonzero((y.isna() & piece["y"].notna()).to_numpy())
            if len(bad):
                raise InputError(f"{path} data row {offset + bad[0] + 1}: y value {piece['y'].iloc[bad[0]]!r} is not "
                                 "a number; expected a numeric y")
            if writer is None:
                ds_int = pd.api.types.is_integer_dtype(piece["ds"])
            ds = piece["ds"]
            if ds_int and not pd.api.types.is_integer_dtype(ds):
                whole = pd.to_numeric(ds, errors="coerce")
                odd = np.flatnonzero((whole.isna() | (whole != whole.round())).to_numpy())
                if len(odd):
                    raise InputError(f"{path} data row {offset + odd[0] + 1}: ds value {ds.iloc[odd[0]]!r} is not an "
                                     "integer step like the rows before it; expected one kind of ds per table")
                ds = whole
            ds = ds.astype("int64") if ds_int else ds.astype("string")
            table = pa.Table.from_pandas(
                pd.DataFrame({"unique_id": piece["unique_id"].astype(str), "ds": ds, "y": y.astype("float64")}),
                schema=schema, preserve_index=False)
            if writer is None:
                schema = table.schema
                writer = pq.ParquetWriter(dest, schema)
            writer.write_table(table)
            offset += len(piece)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as err:
        if isinstance(err, InputError):
            raise
        raise InputError(f"{path}: cannot be read as a csv table: {err}") from err
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise InputError(f"{path}: the table has no rows; expected at least one series")


def open_series(source: str, chunk_size: int) -> SeriesChunks:
    """The series of ``source`` (a Parquet/CSV path or a built-in source) as :class:`SeriesChunks`."""
    path = Path(source)
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".pq", ".csv") or not path.is_file() or path.stat().st_size == 0:
        df, name = load_series(source)  # built-in sources; read_table names missing, empty or unknown files
        if len(df) == 0:
            raise InputError(f"{name}: the table has no rows; expected at least one series")
        return FrameChunks(df, chunk_size)
    if suffix == ".csv":
        tmp = Path(tempfile.mkdtemp(prefix="tsuite-forecast-"))
        copy = tmp / (path.stem + ".parquet")
        try:
            csv_to_parquet(path, copy)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        chunks: SeriesChunks = ParquetChunks(copy, chunk_size, name=str(path))
        weakref.finalize(chunks, shutil.rmtree, tmp, True)
    else:
        chunks = ParquetChunks(path, chunk_size)
    if not chunks.contiguous:
        print(f"tsuite forecast: the rows of a series in {path} are not contiguous; reading the whole table "
              "(sort it by unique_id to forecast in bounded memory)", file=sys.stderr)
        return FrameChunks(read_table(chunks.path), chunk_size)
    if chunks.n_series == 0:
        raise InputError(f"{path}: the table has no rows; expected at least one series")
    return chunks


def forecast_chunks(model, chunks: SeriesChunks, horizon: int | None, output: str, progress: bool = True) -> int:
    """Forecast every chunk in one process; write ``output`` atomically. Returns rows written."""
    if chunks.n_series == 0:
        raise InputError("input table: the table has no rows; expected at least one series")
    rows = 0
    with AtomicTableWriter(output) as writer:
        bar = tqdm(total=chunks.n_series, unit="series", desc="forecast", disable=not progress)
        for i in range(len(chunks)):
            _, frame = chunks[i]
            out = model.predict_frame(frame, horizon=horizon)
            writer.write(out)
            rows += len(out)
            bar.update(frame["unique_id"].nunique())
        bar.close()
    return rows


def forecast_table(model, df: pd.DataFrame, horizon: int | None, output: str, chunk_size: int = 1024,
                   progress: bool = True) -> int:
    """Forecast every series of the DataFrame ``df`` in chunks of ``chunk_size`` series; write ``output``."""
    return forecast_chunks(model, SeriesChunks.from_frame(df, chunk_size), horizon, output, progress)


# -- sharded across ranks with Lightning's predict loop ---------------------------------------------
class ChunkForecaster(pl.LightningModule):
    """Predict step = the model's table forecast of one chunk: (index, frame) → (index, forecasts)."""

    def __init__(self, model: pl.LightningModule, horizon: int | None):
        super().__init__()
        self.model, self.horizon = model, horizon

    def predict_step(self, batch: tuple[int, pd.DataFrame], batch_idx: int) -> tuple[int, pd.DataFrame]:
        index, frame = batch
        return int(index), self.model.predict_frame(frame, horizon=self.horizon)


class ChunkWriter(BasePredictionWriter):
    """Each rank writes its chunks as part files; after the epoch rank 0 merges them in chunk order."""

    def __init__(self, output: str, n_chunks: int):
        super().__init__(write_interval="batch")
        self.output, self.n_chunks = Path(output), n_chunks
        self.parts: Path | None = None
        self.rows = 0

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        parts = None
        if trainer.is_global_zero:
            self.output.parent.mkdir(parents=True, exist_ok=True)
            parts = tempfile.mkdtemp(prefix=f".{self.output.name}.parts-", dir=self.output.parent)
        self.parts = Path(trainer.strategy.broadcast(parts, src=0))

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,  # noqa: ANN001
                           dataloader_idx) -> None:
        index, frame = prediction
        write_table_atomic(frame, self.parts / f"chunk-{index:09d}.parquet")

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainer.strategy.barrier("tsuite-forecast-parts")
        if trainer.is_global_zero:
            try:
                with AtomicTableWriter(self.output) as writer:
                    for i in range(self.n_chunks):
                        part = read_table(self.parts / f"chunk-{i:09d}.parquet")
                        writer.write(part)
                        self.rows += len(part)
            finally:
                shutil.rmtree(self.parts, ignore_errors=True)
        trainer.strategy.barrier("tsuite-forecast-merged")

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if trainer.is_global_zero and self.parts is not None:
            shutil.rmtree(self.parts, ignore_errors=True)


def forecast_sharded(model, chunks: SeriesChunks, horizon: int | None, output: str, accelerator: str = "auto",
                     devices: int | str = "auto", strategy: str = "auto", progress: bool = True) -> int:
    """Forecast the chunks on ``devices`` ranks (Lightning predict loop + :class:`ChunkWriter`); returns rows."""
    writer = ChunkWriter(output, len(chunks))
    trainer = predict_sharded(ChunkForecaster(model, horizon), chunks, writer, accelerator, devices, strategy,
                              progress)
    if not trainer.is_global_zero:
        return 0
    if writer.rows == 0 and len(chunks):  # ddp_spawn: the merge ran in the worker; count from the file
        writer.rows = len(read_table(output))
    return writer.rows


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="tsuite forecast", description="Forecast the next H steps of every series in a long-format table."
    )
    parser.add_argument("--model", required=True,
                        help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/model, a model folder or a .ckpt")
    parser.add_argument("--input", required=True,
                        help="CSV/Parquet table (unique_id, ds, y) or a built-in source such as statsmodels:sunspots")
    parser.add_argument("--output", required=True, help="output table (.csv or .parquet)")
    parser.add_argument("--horizon", type=int, default=None, help="steps to forecast (default: the model's horizon)")
    parser.add_argument("--chunk-size", type=int, default=1024, help="series forecast per chunk")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_sharding_arguments(parser, "chunks")
    args = parser.parse_args(argv)
    if args.horizon is not None and args.horizon < 1:
        parser.error(f"--horizon must be ≥ 1, got {args.horizon}")
    if args.chunk_size < 1:
        parser.error(f"--chunk-size must be ≥ 1, got {args.chunk_size}")
    if Path(args.output).suffix.lower() not in (".csv", ".parquet", ".pq"):
        raise InputError(f"--output {args.output}: unknown table format; expected a .csv or .parquet file name")
    chunks = open_series(args.input, args.chunk_size)
    model = load_model(args.model)
    if args.devices is None:
        rows = forecast_chunks(model, chunks, args.horizon, args.output, progress=not args.no_progress)
    else:
        rows = forecast_sharded(model, chunks, args.horizon, args.output, args.accelerator,
                                parse_devices(args.devices), args.strategy, progress=not args.no_progress)
    if rows or args.devices is None:
        print(f"wrote {rows} forecasts of {chunks.n_series} series to {args.output}")
