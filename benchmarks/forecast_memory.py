"""Peak memory of ``tsuite forecast`` as the number of series grows (bounded-memory check).

Writes N AR(2) series of length 100 to a Parquet file (in blocks, so this
script itself stays small), then runs in a fresh subprocess each:

- ``stream``: the ``tsuite forecast`` command (Parquet read by row groups, chunk by chunk);
- ``whole``: the same forecasts from the whole table read into one DataFrame
  (what the job did before it streamed), for comparison.

and reports each child's peak resident memory (``os.wait4`` rusage, Linux
``ru_maxrss`` in KiB) and wall time, beside the size of the input table in a
DataFrame. Usage::

    python benchmarks/forecast_memory.py [--sizes 10000 30000 100000] [--out docs/forecast_memory.md]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

LENGTH = 100
PHI = (0.5, -0.3)  # AR(2) coefficients (stationary)
WHOLE = """
import sys
import pandas as pd
from tsuite.forecasting.forecast_job import forecast_table
from tsuite.tracking import load_model
df = pd.read_parquet(sys.argv[1])
forecast_table(load_model(sys.argv[2]), df, None, sys.argv[3], progress=False)
"""


def write_series(path: Path, n_series: int, block: int = 10_000, seed: int = 0) -> None:
    """N AR(2) series of LENGTH steps, written block by block (one row group per block)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    writer = None
    for lo in range(0, n_series, block):
        n = min(block, n_series - lo)
        y = np.zeros((n, LENGTH + 100))
        eps = rng.normal(size=y.shape)
        for t in range(2, y.shape[1]):
            y[:, t] = PHI[0] * y[:, t - 1] + PHI[1] * y[:, t - 2] + eps[:, t]
        ids = np.repeat([f"s{i:07d}" for i in range(lo, lo + n)], LENGTH)
        table = pa.table({"unique_id": ids, "ds": np.tile(np.arange(LENGTH, dtype=np.int64), n),
                          "y": y[:, 100:].reshape(-1)})
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    writer.close()


def run(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd``; return (peak RSS of the child in MiB, wall seconds)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr.read().decode()[-2000:]}")
    return usage.ru_maxrss / 1024, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    parser.add_argument("--modes", nargs="+", default=["stream", "whole"], choices=["stream", "whole"])
    parser.add_argument("--out", default=None, help="also write the markdown table here")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    import torch

    from tsuite.forecasting import ARNet
    from tsuite.tracking import save_weights

    tmp = Path(tempfile.mkdtemp(prefix="forecast_memory-"))
    tsuite = str(Path(sys.executable).with_name("tsuite"))
    rows = ["| series | rows | input as DataFrame (MiB) | mode | peak RSS (MiB) | time (s) |",
            "|---|---|---|---|---|---|"]
    try:
        torch.manual_seed(0)
        model = save_weights(ARNet(n_lags=24, horizon=6), tmp / "arnet.pt")
        for n in args.sizes:
            table = tmp / f"series_{n}.parquet"
            write_series(table, n)
            frame_mib = pd.read_parquet(table).memory_usage(deep=True).sum() / 2**20
            for mode in args.modes:
                out = tmp / f"fc_{n}_{mode}.parquet"
                if mode == "stream":
                    cmd = [tsuite, "forecast", "--model", str(model), "--input", str(table), "--output", str(out),
                           "--no-progress"]
                else:
                    cmd = [sys.executable, "-c", WHOLE, str(table), str(model), str(out)]
                rss, wall = run(cmd)
                assert len(pd.read_parquet(out, columns=["unique_id"])) == 6 * n
                row = f"| {n:,} | {n * LENGTH:,} | {frame_mib:,.0f} | {mode} | {rss:,.0f} | {wall:,.1f} |"
                rows.append(row)
                print(row, flush=True)
            table.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text = "\n".join(rows) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
