"""Bad series tables are rejected before training with a message that names the problem."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tsuite.forecasting import SeriesDataModule, validate_series
from tsuite.tables import InputError


def table(n: int = 40, ids=("a", "b")) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {"unique_id": np.repeat(ids, n), "ds": np.tile(np.arange(n), len(ids)), "y": rng.normal(size=n * len(ids))}
    )


def test_clean_table_passes_unchanged():
    df = table()
    out = validate_series(df, "t.csv", min_length=10)
    assert len(out) == len(df)
    np.testing.assert_allclose(out["y"].to_numpy(), df["y"].to_numpy())


def test_missing_column_is_named():
    with pytest.raises(InputError, match=r"t\.csv: missing column\(s\) y; expected .*unique_id, ds, y"):
        validate_series(table().drop(columns="y"), "t.csv")


def test_non_numeric_y_names_row_and_value():
    df = table().astype({"y": object})
    df.loc[5, "y"] = "abc"
    with pytest.raises(InputError, match=r"t\.csv data row 6: y value 'abc' is not a number"):
        validate_series(df, "t.csv")


def test_duplicate_timestamp_names_rows_and_key():
    df = table()
    df.loc[3, "ds"] = 2
    with pytest.raises(InputError, match=r"data rows 3 and 4: duplicate \(unique_id, ds\) = \('a', 2\)"):
        validate_series(df, "t.csv")


def test_unsorted_rows_are_rejected_unless_sort():
    df = table()
    df.loc[[3, 4], "ds"] = [4, 3]
    with pytest.raises(InputError, match=r"data row 5: ds=3 comes before the previous row's ds=4 in series 'a'"):
        validate_series(df, "t.csv")
    out = validate_series(df, "t.csv", sort=True)
    assert out.groupby("unique_id")["ds"].apply(lambda s: s.is_monotonic_increasing).all()


def test_irregular_timestamps_name_the_gap():
    df = table().drop(index=7)
    with pytest.raises(InputError, match=r"series 'a' is irregular: timestamp 7 is missing for step 1"):
        validate_series(df, "t.csv")
    filled = validate_series(df, "t.csv", fill_missing="interpolate")
    assert len(filled) == len(table()) and filled["y"].notna().all()


def test_irregular_datetimes_name_the_gap():
    ds = pd.date_range("2024-01-01", periods=30, freq="D").delete(10)
    df = pd.DataFrame({"unique_id": "x", "ds": ds, "y": np.arange(29.0)})
    with pytest.raises(InputError, match=r"series 'x' is irregular: timestamp 2024-01-11 00:00:00 is missing"):
        validate_series(df, "t.csv", freq="D")


def test_nan_values_error_or_fill():
    df = table()
    df.loc[10, "y"] = np.nan
    with pytest.raises(InputError, match=r"y is missing \(NaN\) in series 'a' at ds=10 .*fill_missing"):
        validate_series(df, "t.csv")
    out = validate_series(df, "t.csv", fill_missing="interpolate")
    assert out.loc[10, "y"] == pytest.approx((df.loc[9, "y"] + df.loc[11, "y"]) / 2)
    assert validate_series(df, "t.csv", fill_missing="zero").loc[10, "y"] == 0.0


def test_short_series_names_series_and_lengths():
    df = pd.concat([table(40, ("a",)), table(8, ("b",))], ignore_index=True)
    with pytest.raises(InputError, match=r"series 'b' has 8 observation\(s\); at least 12 are needed"):
        validate_series(df, "t.csv", min_length=12)


def test_bad_timestamp_string_names_row():
    df = table().astype({"ds": object})
    df.loc[2, "ds"] = "yesterday"
    with pytest.raises(InputError, match=r"data row 3: ds value 'yesterday' is not a timestamp"):
        validate_series(df, "t.csv")


def test_infinite_y_is_rejected():
    df = table()
    df.loc[1, "y"] = np.inf
    with pytest.raises(InputError, match=r"data row 2: y value inf is infinite"):
        validate_series(df, "t.csv")


def test_data_module_reports_bad_file_before_training(tmp_path):
    path = tmp_path / "bad.csv"
    table().drop(columns="ds").to_csv(path, index=False)
    dm = SeriesDataModule(str(path), n_lags=5, horizon=2)
    with pytest.raises(InputError, match=rf"{path.name}: missing column\(s\) ds"):
        dm.setup("fit")


def test_empty_file_is_named(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(InputError, match=r"empty\.csv: the file is empty"):
        SeriesDataModule(str(path), n_lags=5).setup("fit")
