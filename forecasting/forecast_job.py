"""``tsuite forecast``: the next H steps of every series of a table, from any saved forecasting model.

Series are forecast in chunks (``--chunk-size`` series at a time) and each
chunk's rows are appended to a temporary file that is renamed onto
``--output`` once every series is done, so a failed run leaves any earlier
output untouched.
"""

from __future__ import annotations

import argparse

import numpy as np
from tqdm.auto import tqdm

from tsuite.forecasting.sources import load_series
from tsuite.tables import AtomicTableWriter, InputError
from tsuite.tracking import load_model


def forecast_table(model, df, horizon: int | None, output: str, chunk_size: int = 1024, progress: bool = True) -> int:
    """Forecast every series of ``df`` with ``model.predict_frame`` in chunks; write ``output``. Returns rows written."""
    if "unique_id" not in df.columns:
        raise InputError("input table: missing column unique_id; expected columns unique_id, ds, y")
    codes, uniques = df["unique_id"].astype(str).factorize()
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
    rows = 0
    with AtomicTableWriter(output) as writer:
        bar = tqdm(total=len(uniques), unit="series", desc="forecast", disable=not progress)
        for lo in range(0, len(uniques), chunk_size):
            hi = min(lo + chunk_size, len(uniques))
            chunk = df.iloc[order[bounds[lo] : bounds[hi]]]
            out = model.predict_frame(chunk, horizon=horizon)
            writer.write(out)
            rows += len(out)
            bar.update(hi - lo)
        bar.close()
    return rows


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
    args = parser.parse_args(argv)
    if args.horizon is not None and args.horizon < 1:
        parser.error(f"--horizon must be ≥ 1, got {args.horizon}")
    df, _ = load_series(args.input)
    model = load_model(args.model)
    rows = forecast_table(model, df, args.horizon, args.output, args.chunk_size, progress=not args.no_progress)
    print(f"wrote {rows} forecasts of {df['unique_id'].nunique()} series to {args.output}")
