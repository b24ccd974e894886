"""Checks of long-format series tables (``unique_id``, ``ds``, ``y``), with errors that name the problem.

Each error names the source, the data row (1-based, header not counted) or
series, what was wrong and what was expected, and is raised before any
training starts.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from tsuite.tables import InputError

REQUIRED = ("unique_id", "ds", "y")
FillMethod = Literal["error", "interpolate", "ffill", "zero"]


def validate_series(
    df: pd.DataFrame,
    name: str,
    min_length: int = 1,
    freq: str | None = None,
    fill_missing: FillMethod = "error",
    sort: bool = False,
) -> pd.DataFrame:
    """Return a clean copy of ``df``: typed columns, sorted rows, regular timestamps, no missing ``y``.

    Raises :class:`InputError` for missing columns, non-numeric ``y``, bad or
    duplicate timestamps, unsorted rows (unless ``sort``), irregular
    timestamps, missing values (unless ``fill_missing`` says how to fill them)
    and series shorter than ``min_length``.
    """
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise InputError(
            f"{name}: missing column(s) {', '.join(missing)}; expected a long-format table with columns "
            f"unique_id, ds, y (found {', '.join(map(str, df.columns)) or 'none'})"
        )
    if len(df) == 0:
        raise InputError(f"{name}: the table has no rows; expected at least one series")
    df = df.reset_index(drop=True).copy()
    missing_id = df["unique_id"].isna().to_numpy()
    if missing_id.any():
        r = int(np.flatnonzero(missing_id)[0])
        raise InputError(f"{name} data row {r + 1}: unique_id is missing; expected the id of the row's series")
    df["unique_id"] = df["unique_id"].astype(str)
    df["y"] = _numeric_y(df["y"], name)
    df["ds"] = _timestamps(df["ds"], name)

    dup = df.duplicated(["unique_id", "ds"], keep=False)
    if dup.any():
        rows = np.flatnonzero(dup.to_numpy())[:2] + 1
        uid, ds = df.loc[rows[0] - 1, ["unique_id", "ds"]]
        raise InputError(
            f"{name} data rows {rows[0]} and {rows[1]}: duplicate (unique_id, ds) = ({uid!r}, {ds}); "
            "expected one row per series and timestamp"
        )
    if not sort:
        _check_sorted(df, name)
    df = df.sort_values(["unique_id", "ds"], kind="stable").reset_index(drop=True)
    df = pd.concat([_regular(g, uid, name, freq, fill_missing) for uid, g in df.groupby("unique_id", sort=False)],
                   ignore_index=True)
    nan_rows = np.flatnonzero(df["y"].isna().to_numpy())
    if len(nan_rows):
        r = nan_rows[0]
        raise InputError(
            f"{name}: y is missing (NaN) in series {df.loc[r, 'unique_id']!r} at ds={df.loc[r, 'ds']} "
            f"({len(nan_rows)} missing value(s) in all); expected numbers, or set fill_missing to "
            "'interpolate', 'ffill' or 'zero' to fill them"
        )
    lengths = df.groupby("unique_id", sort=False).size()
    short = lengths[lengths < min_length]
    if len(short):
        uid, n = short.index[0], int(short.iloc[0])
        raise InputError(
            f"{name}: series {uid!r} has {n} observation(s); at least {min_length} are needed "
            f"(n_lags + horizon); {len(short)} series are too short"
        )
    return df


def _numeric_y(y: pd.Series, name: str) -> pd.Series:
    values = pd.to_numeric(y, errors="coerce")
    bad = values.isna() & y.notna()
    if bad.any():
        r = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(f"{name} data row {r + 1}: y value {y.iloc[r]!r} is not a number; expected a numeric y")
    values = values.astype("float64")
    inf = np.isinf(values.to_numpy())
    if inf.any():
        r = int(np.flatnonzero(inf)[0])
        raise InputError(f"{name} data row {r + 1}: y value {y.iloc[r]} is infinite; expected a finite number")
    return values


def _timestamps(ds: pd.Series, name: str) -> pd.Series:
    if pd.api.types.is_integer_dtype(ds):
        return ds.astype("int64")
    if pd.api.types.is_float_dtype(ds):
        ok = ds.notna() & (ds == ds.round())
        if ok.all():
            return ds.astype("int64")
        r = int(np.flatnonzero(~ok.to_numpy())[0])
        if pd.isna(ds.iloc[r]):
            raise InputError(f"{name} data row {r + 1}: ds is missing; expected a timestamp or an integer step")
        raise InputError(f"{name} data row {r + 1}: ds value {float(ds.iloc[r])!r} is not an integer step or a "
                         "timestamp; expected e.g. 2024-01-31 or 17")
    if pd.api.types.is_datetime64_any_dtype(ds):
        out = ds
    else:
        out = pd.to_datetime(ds, errors="coerce")
        bad = out.isna()
        if bad.any():
            r = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(
                f"{name} data row {r + 1}: ds value {ds.iloc[r]!r} is not a timestamp or an integer step; "
                "expected e.g. 2024-01-31 or 17"
            )
    if out.isna().any():
        r = int(np.flatnonzero(out.isna().to_numpy())[0])
        raise InputError(f"{name} data row {r + 1}: ds is missing; expected a timestamp or an integer step")
    return out


def _check_sorted(df: pd.DataFrame, name: str) -> None:
    same = df["unique_id"].to_numpy()[1:] == df["unique_id"].to_numpy()[:-1]
    back = same & (df["ds"].to_numpy()[1:] < df["ds"].to_numpy()[:-1])
    if back.any():
        r = int(np.flatnonzero(back)[0]) + 1
        raise InputError(
            f"{name} data row {r + 1}: ds={df.loc[r, 'ds']} comes before the previous row's ds={df.loc[r - 1, 'ds']} "
            f"in series {df.loc[r, 'unique_id']!r}; rows must be sorted by ds within each series (or set sort=True)"
        )


def series_freq(ds: pd.Series, uid: str, name: str, freq: str | None = None) -> str | int:
    """The step of one series: an integer for integer ``ds``, else ``freq`` or the inferred pandas frequency."""
    if pd.api.types.is_integer_dtype(ds):
        if len(ds) < 2:
            return 1
        steps = np.diff(ds.to_numpy())
        return int(np.min(steps))
    if freq is not None:
        return freq
    if len(ds) < 3:
        raise InputError(f"{name}: series {uid!r} has fewer than 3 timestamps, so its frequency cannot be inferred; "
                         "pass freq (e.g. 'D', 'MS')")
    inferred = pd.infer_freq(ds) or pd.infer_freq(ds.iloc[:3])
    if inferred is None:
        raise InputError(f"{name}: cannot infer the frequency of series {uid!r} from ds; pass freq (e.g. 'D', 'W', 'MS')")
    return inferred


def _regular(g: pd.DataFrame, uid: str, name: str, freq: str | None, fill: FillMethod) -> pd.DataFrame:
    """Check that a series' timestamps are regular; with a fill method, insert and fill the gaps."""
    ds = g["ds"]
    step = series_freq(ds, uid, name, freq)
    if isinstance(step, int):
        full = pd.Index(np.arange(ds.iloc[0], ds.iloc[-1] + 1, step), dtype="int64")
    else:
        full = pd.date_range(ds.iloc[0], ds.iloc[-1], freq=step)
    if len(full) != len(ds) or not (full == pd.Index(ds)).all():
        extra = pd.Index(ds).difference(full)
        if len(extra):
            raise InputError(
                f"{name}: series {uid!r} has a timestamp {extra[0]} off its regular step {step}; "
                "expected evenly spaced timestamps"
            )
        if fill == "error":
            gap = full.difference(pd.Index(ds))[0]
            raise InputError(
                f"{name}: series {uid!r} is irregular: timestamp {gap} is missing for step {step} "
                f"({len(full) - len(ds)} missing); expected evenly spaced timestamps, or set fill_missing to fill gaps"
            )
        g = g.set_index("ds").reindex(full).rename_axis("ds").reset_index()
        g["unique_id"] = uid
    if fill != "error" and g["y"].isna().any():
        if fill == "interpolate":
            g["y"] = g["y"].interpolate(limit_direction="both")
        elif fill == "ffill":
            g["y"] = g["y"].ffill().bfill()
        else:
            g["y"] = g["y"].fillna(0.0)
    return g[["unique_id", "ds", "y"]]
