"""Reading and writing tables (CSV or Parquet) with clear errors and atomic writes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


class InputError(ValueError):
    """Bad user input: the message names the file, row or field, what was wrong and what was expected."""


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a CSV or Parquet file, failing with a message that names the file when it cannot be read."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file; expected a CSV or Parquet table")
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise InputError(f"{path}: unknown table format {suffix!r}; expected one of {', '.join(TABLE_SUFFIXES)}")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty; expected a table with a header row")
    try:
        if suffix == ".csv":
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except Exception as err:  # noqa: BLE001 - any parser failure becomes an error that names the file
        raise InputError(f"{path}: cannot be read as a {suffix[1:]} table: {err}") from err


class AtomicTableWriter:
    """Write a table in pieces to a temporary file beside ``path``; rename it into place on success.

    Use as a context manager and call :meth:`write` with each DataFrame chunk
    (same columns each time). A reader never sees a half-written file, and an
    existing file at ``path`` is replaced only once the new one is complete; on
    an error the temporary file is removed and ``path`` is left untouched.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.suffix = self.path.suffix.lower()
        if self.suffix not in TABLE_SUFFIXES:
            raise InputError(
                f"{self.path}: unknown output format {self.suffix!r}; expected one of {', '.join(TABLE_SUFFIXES)}"
            )
        self._tmp: Path | None = None
        self._parquet = None
        self._wrote_header = False

    def __enter__(self) -> "AtomicTableWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        return self

    def write(self, df: pd.DataFrame) -> None:
        assert self._tmp is not None, "use AtomicTableWriter as a context manager"
        if self.suffix == ".csv":
            df.to_csv(self._tmp, mode="a", header=not self._wrote_header, index=False)
            self._wrote_header = True
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(df, preserve_index=False)
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self._tmp, table.schema)
            self._parquet.write_table(table)

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._tmp is not None
        if self._parquet is not None:
            self._parquet.close()
        if exc_type is None:
            os.chmod(self._tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
            os.replace(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_table_atomic(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``df`` to ``path`` (CSV or Parquet by suffix) atomically: temporary file, then rename."""
    with AtomicTableWriter(path) as writer:
        writer.write(df)
    return Path(path)


def write_text_atomic(text: str, path: str | os.PathLike) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically: a temporary file beside it, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
