"""Property-based tests of the series and event readers: malformed files (wrong types, missing fields,
NaN/inf, empty or truncated files, huge values, unicode names, duplicated timestamps, mixed types) give an
InputError that names the file, or a correct parse; never any other exception."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tsuite.forecasting.event_data import load_events, validate_events
from tsuite.forecasting.forecast_job import open_series
from tsuite.forecasting.sources import load_series
from tsuite.forecasting.validation import validate_series
from tsuite.tables import InputError

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=6)
cells = st.one_of(
    st.integers(-3, 40), st.integers(-(10**20), 10**20), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e308, -1e308, 5e-324]), names, st.none(), st.booleans(),
    st.sampled_from(["2024-01-31", "2024-02-29", "17", "1e3", "nan", "inf", " ", "ünï", "../../x"]),
)


def columns(required: tuple[str, ...]):
    extra = st.lists(names, max_size=2)
    return st.tuples(st.lists(st.sampled_from(required), min_size=0, max_size=len(required), unique=True),
                     extra).map(lambda t: list(dict.fromkeys([*t[0], *t[1]])))


@st.composite
def tables(draw, required: tuple[str, ...], typical) -> pd.DataFrame:
    """Mostly well-formed long tables with a few malformed columns or cells."""
    cols = draw(st.one_of(st.just(list(required)), columns(required)))
    n = draw(st.integers(0, 25))
    data = {}
    for c in cols:
        if c in required and draw(st.booleans()):
            data[c] = draw(typical[c](n))
        else:
            data[c] = draw(st.lists(cells, min_size=n, max_size=n))
    return pd.DataFrame(data, columns=cols)


series_typical = {
    "unique_id": lambda n: st.lists(st.sampled_from(["a", "b", "ß🙂", "../../x"]), min_size=n, max_size=n),
    "ds": lambda n: st.lists(st.integers(0, 30), min_size=n, max_size=n),
    "y": lambda n: st.lists(st.floats(-1e6, 1e6) | st.sampled_from([math.nan, math.inf]), min_size=n, max_size=n),
}
event_typical = {
    "seq_id": lambda n: st.lists(st.sampled_from(["s1", "s2", "日本"]), min_size=n, max_size=n),
    "time": lambda n: st.lists(st.floats(0, 100), min_size=n, max_size=n).map(sorted),
    "mark": lambda n: st.lists(st.integers(0, 3), min_size=n, max_size=n),
}


def write(df: pd.DataFrame, folder: Path, fmt: str, cut: float | None) -> Path:
    """Write ``df`` as CSV or Parquet (mixed columns as text for Parquet); ``cut`` truncates the file."""
    path = folder / f"tåble {fmt}.{fmt}"
    if fmt == "csv":
        df.to_csv(path, index=False)
    else:
        try:
            df.to_parquet(path, index=False)
        except Exception:  # noqa: BLE001 - pyarrow refuses mixed object columns: store them as text
            df.astype(str).to_parquet(path, index=False)
    if cut is not None:
        raw = path.read_bytes()
        path.write_bytes(raw[: int(len(raw) * cut)])
    return path


def check_error(err: InputError, path: Path) -> None:
    message = str(err)
    assert str(path) in message or "input table" in message, message
    assert len(message) > len(str(path)) + 20, message  # says what was wrong, not just where


def check_series(df: pd.DataFrame) -> None:
    assert list(df.columns) == ["unique_id", "ds", "y"]
    assert df["y"].dtype == np.float64 and np.isfinite(df["y"]).all()
    assert not df.duplicated(["unique_id", "ds"]).any()
    for _, g in df.groupby("unique_id"):
        assert g["ds"].is_monotonic_increasing


@SETTINGS
@given(df=tables(("unique_id", "ds", "y"), series_typical), fmt=st.sampled_from(["csv", "parquet"]),
       cut=st.none() | st.floats(0, 0.99), sort=st.booleans())
def test_series_reader_gives_an_input_error_or_a_clean_table(df, fmt, cut, sort):
    with tempfile.TemporaryDirectory() as tmp:
        path = write(df, Path(tmp), fmt, cut)
        try:
            raw, name = load_series(str(path))
            clean = validate_series(raw, name, min_length=1, sort=sort)
        except InputError as err:
            check_error(err, path)
            return
        check_series(clean)
        assert set(clean["unique_id"]) == set(raw["unique_id"].astype(str))


@SETTINGS
@given(df=tables(("unique_id", "ds", "y"), series_typical), fmt=st.sampled_from(["csv", "parquet"]),
       cut=st.none() | st.floats(0, 0.99), chunk=st.integers(1, 3))
def test_forecast_job_reader_gives_an_input_error_or_every_row_once(df, fmt, cut, chunk):
    with tempfile.TemporaryDirectory() as tmp:
        path = write(df, Path(tmp), fmt, cut)
        try:
            chunks = open_series(str(path), chunk)
            parts = [chunks[i][1] for i in range(len(chunks))]
            for part in parts:
                check_series(validate_series(part, "input table", sort=True))
        except InputError as err:
            check_error(err, path)
            return
        assert sum(len(p) for p in parts) == sum(1 for _ in open(path, encoding="utf-8")) - 1 if fmt == "csv" \
            else sum(len(p) for p in parts) == len(df)
        ids = [set(p["unique_id"].astype(str)) for p in parts]
        assert all(a.isdisjoint(b) for i, a in enumerate(ids) for b in ids[i + 1:])  # a series is in one chunk


@SETTINGS
@given(df=tables(("seq_id", "time", "mark"), event_typical), fmt=st.sampled_from(["csv", "parquet"]),
       cut=st.none() | st.floats(0, 0.99), n_marks=st.none() | st.integers(1, 4),
       origin=st.sampled_from(["zero", "first_event"]))
def test_event_table_reader_gives_an_input_error_or_valid_sequences(df, fmt, cut, n_marks, origin):
    with tempfile.TemporaryDirectory() as tmp:
        path = write(df, Path(tmp), fmt, cut)
        try:
            raw, name, where = load_events(str(path))
            seqs = validate_events(raw, name, n_marks, origin, where)
        except InputError as err:
            check_error(err, path)
            return
        assert sum(len(t) for _, t, _ in seqs) == len(raw)
        for _, times, marks in seqs:
            assert times.dtype == np.float64 and np.isfinite(times).all() and (np.diff(times) >= 0).all()
            assert marks.dtype == np.int64 and (marks >= 0).all()
            assert n_marks is None or (marks < n_marks).all()
            assert origin == "first_event" or (times >= 0).all()


json_values = st.recursive(cells | st.lists(cells, max_size=4), lambda inner: st.lists(inner, max_size=3), max_leaves=8)


@st.composite
def jsonl_lines(draw) -> list[str]:
    lines = []
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["good", "object", "garbage", "blank"]))
        if kind == "good":
            n = draw(st.integers(0, 5))
            obj = {"time": sorted(draw(st.lists(st.floats(0, 50), min_size=n, max_size=n))),
                   "mark": draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))}
            if draw(st.booleans()):
                obj["seq_id"] = draw(names | st.integers())
            lines.append(json.dumps(obj))
        elif kind == "object":
            keys = draw(st.lists(st.sampled_from(["time", "mark", "seq_id", "x"]), unique=True))
            lines.append(json.dumps({k: draw(json_values) for k in keys}, allow_nan=True))
        elif kind == "garbage":
            lines.append(draw(st.text(max_size=20)).replace("\n", " "))
        else:
            lines.append("")
    return lines


@SETTINGS
@given(lines=jsonl_lines(), cut=st.none() | st.floats(0, 0.99))
@example(lines=['{"time": [[]], "seq_id": 0, "x": [], "mark": [0]}'], cut=None)  # a nested list as a time
def test_event_jsonl_reader_gives_an_input_error_or_valid_sequences(lines, cut):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "évents.jsonl"
        raw_text = "\n".join(lines).encode("utf-8")
        path.write_bytes(raw_text[: int(len(raw_text) * cut)] if cut is not None else raw_text)
        try:
            raw, name, where = load_events(str(path))
            seqs = validate_events(raw, name, None, "zero", where)
        except InputError as err:
            check_error(err, path)
            return
        assert sum(len(t) for _, t, _ in seqs) == len(raw)
        for _, times, marks in seqs:
            assert np.isfinite(times).all() and (np.diff(times) >= 0).all() and (marks >= 0).all()


@pytest.mark.parametrize("content", [b"", b"\xff\xfe\x00garbage", b"unique_id,ds,y\n", b"PAR1\x00\x00"])
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_empty_and_corrupt_series_files_name_the_file(tmp_path, content, suffix):
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(content)
    with pytest.raises(InputError) as info:
        raw, name = load_series(str(path))
        validate_series(raw, name)
    assert str(path) in str(info.value)
    with pytest.raises(InputError) as info:
        open_series(str(path), 2)
    assert str(path) in str(info.value)


def test_unicode_and_path_like_series_ids_parse_as_data(tmp_path):
    ids = ["ß🙂", "../../x", "/etc/passwd", "a,b", 'q"uote']
    df = pd.DataFrame({"unique_id": np.repeat(ids, 3), "ds": np.tile([0, 1, 2], len(ids)), "y": np.arange(15.0)})
    path = tmp_path / "ids.csv"
    df.to_csv(path, index=False)
    clean = validate_series(*load_series(str(path)))
    assert sorted(clean["unique_id"].unique()) == sorted(ids)
