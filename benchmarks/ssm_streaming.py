"""Streaming forecast latency of the SSM forecasters on the CPU: one recurrent step against a full window forecast.

``python -m benchmarks.ssm_streaming [OUT.md]``: for S4, S4D and LSSL built
from ``configs/forecasting/{s4,s4d,lssl}_sunspots.yaml`` (the same sizes:
window 33, horizon 6, 2 blocks of 32 channels, N = 64 for S4/S4D and 32 for
LSSL), the time to turn one new observation of the yearly sunspot series into
a new 6-year forecast, two ways:

- ``stream``: :meth:`SSMForecaster.stream` ``update``: one recurrent step of
  every block from the carried state (O(1) in the history);
- ``window``: the naive way, the model's window forecast re-run on the last
  33 values (convolution view: the SSM kernels are rebuilt and the window is
  convolved at every step), under ``torch.no_grad``.

Median and 95th percentile in microseconds per observation over ``--steps``
timed observations (after warm-up), with torch on 1 and 2 threads. The weights
are the configs' seeded initialisation (latency does not depend on training).
The stream's forecast is checked against the window forecast after a window of
updates from the zero state. Writes the markdown table to OUT.md and prints it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from tsuite.forecasting.sources import load_series
from tsuite.forecasting.ssm_models import SSMForecaster
from tsuite.tables import write_text_atomic

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"S4": "s4", "S4D": "s4d", "LSSL": "lssl"}


def build(layer: str, seed: int = 0) -> SSMForecaster:
    """The forecaster of ``configs/forecasting/<layer>_sunspots.yaml``, seeded, in eval mode."""
    config = yaml.safe_load((ROOT / "configs" / "forecasting" / f"{layer}_sunspots.yaml").read_text())
    torch.manual_seed(seed)
    return SSMForecaster(**config["model"]["init_args"]).eval()


def percentiles(times_ns: list[int]) -> tuple[float, float]:
    us = np.asarray(times_ns, dtype=np.float64) / 1e3
    return float(np.median(us)), float(np.percentile(us, 95))


def time_stream(model: SSMForecaster, y: np.ndarray, steps: int, warmup: int) -> list[int]:
    stream = model.stream(loc=y.mean(), scale=y.std())
    times = []
    for i in range(warmup + steps):
        value = y[i % len(y)]
        start = time.perf_counter_ns()
        stream.update(value)
        if i >= warmup:
            times.append(time.perf_counter_ns() - start)
    return times


def time_window(model: SSMForecaster, y: np.ndarray, steps: int, warmup: int) -> list[int]:
    z = torch.tensor((y - y.mean()) / y.std(), dtype=torch.float32)
    n_lags, times = model.n_lags, []
    with torch.no_grad():
        for i in range(warmup + steps):
            t = n_lags + i % (len(z) - n_lags)
            start = time.perf_counter_ns()
            model(z[t - n_lags : t].unsqueeze(0))  # (1 horizon)
            if i >= warmup:
                times.append(time.perf_counter_ns() - start)
    return times


def stream_matches_window(model: SSMForecaster, y: np.ndarray) -> float:
    """Largest |stream − window| forecast difference after n_lags updates from the zero state (scaled units)."""
    stream = model.stream()
    z = (y - y.mean()) / y.std()
    for value in z[: model.n_lags]:
        out = stream.update(value)
    with torch.no_grad():
        ref = model(torch.tensor(z[: model.n_lags], dtype=torch.float32).unsqueeze(0)).numpy()
    return float(np.abs(out - ref).max())




def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ssm_streaming", description=__doc__.split("\n")[0])
    parser.add_argument("output", nargs="?", default="ssm_streaming.md", help="markdown file to write")
    parser.add_argument("--steps", type=int, default=2000, help="timed observations per measurement")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    args = parser.parse_args(argv)
    raw, _ = load_series("statsmodels:sunspots")
    y = raw["y"].to_numpy(np.float64)
    rows, checks = [], {}
    for name, layer in LAYERS.items():
        model = build(layer)
        checks[name] = stream_matches_window(model, y)
        state = model.stream().state_size()
        for threads in args.threads:
            torch.set_num_threads(threads)
            s_med, s_p95 = percentiles(time_stream(model, y, args.steps, args.warmup))
            w_med, w_p95 = percentiles(time_window(model, y, args.steps, args.warmup))
            rows.append((name, threads, state, s_med, s_p95, w_med, w_p95))
            print(f"{name}, {threads} thread(s): stream {s_med:.0f} us, window {w_med:.0f} us", flush=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"Latency per new observation, sunspots config sizes (window 33, horizon 6, 2 blocks × 32 channels); "
        f"CPU ({os.cpu_count()} cores, load average {load:.1f} during the run), torch {torch.__version__}, "
        f"{args.steps} timed observations after {args.warmup} of warm-up, "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}. `stream`: one recurrent step from the carried state; "
        "`window`: the window forecast re-run on the last 33 values.",
        "",
        "| model | threads | state (numbers) | stream median µs | stream p95 µs | window median µs | window p95 µs "
        "| window / stream (median) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, threads, state, s_med, s_p95, w_med, w_p95 in rows:
        lines.append(f"| {name} | {threads} | {state} | {s_med:.0f} | {s_p95:.0f} | {w_med:.0f} | {w_p95:.0f} | "
                     f"{w_med / s_med:.1f} |")
    lines += ["", "Stream forecast after one window of updates against the window forecast (max |difference|, "
              "scaled units): " + ", ".join(f"{k} {v:.1e}" for k, v in checks.items()) + "."]
    text = "\n".join(lines) + "\n"
    write_text_atomic(text, args.output)
    print(text)
    return 0 if max(checks.values()) < 1e-3 else 1


if __name__ == "__main__":
    sys.exit(main())
