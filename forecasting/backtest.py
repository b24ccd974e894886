"""Rolling-origin backtest of the window forecasters and their baselines on real series; writes a markdown table.

For each series and each of ``n_cutoffs`` forecast origins (the last
origins spaced ``horizon`` steps apart, so the test windows tile the end of the
series), every method sees only the history before the origin, forecasts the
next ``horizon`` values, and is scored by

- MASE: mean |ŷ − y| divided by the in-sample MAE of the seasonal naive
  forecast on that history (season ``m`` of the series; m = 1: the random walk);
- sMAPE: 200 · mean |ŷ − y| / (|ŷ| + |y|), in percent.

Methods: S4, S4D, LSSL (:class:`~tsuite.forecasting.ssm_models.SSMForecaster`),
AR-Net, least-squares AR (statsmodels ``AutoReg``), seasonal naive and the
peers a user would pick instead, neuralforecast's NHITS and PatchTST (the
optional ``peers`` extra; imported only here, and skipped, with a note in the
report, when it is not installed). The neural models are refitted at every
origin (``refit="each"``) or fitted once on the history before the first
origin and then only fed the new observations (``refit="first"``: rolling
origin without re-estimation); each fit is seeded and lasts 400 optimiser
steps on batches of 32 windows or 50 epochs, whichever is fewer. The peers get
the same windows (input_size = n_lags, h = horizon), the same number of
optimiser steps on 32 windows each, the same scaling (the history's mean and
standard deviation: neuralforecast's ``local_scaler_type="standard"``), and a
fixed seed, on the CPU with their logging silenced.

    python -m tsuite.forecasting.backtest --output docs/backtest.md
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, TensorDataset

from tsuite.forecasting.arnet import ARNet
from tsuite.forecasting.base import WindowForecaster
from tsuite.forecasting.baselines import least_squares_forecast, seasonal_naive
from tsuite.forecasting.series_data import make_windows
from tsuite.forecasting.sources import load_series
from tsuite.forecasting.ssm_models import SSMForecaster
from tsuite.forecasting.validation import validate_series
from tsuite.tables import write_text_atomic


@dataclass
class SeriesSpec:
    """One backtest series: where it comes from, the window and horizon, and its season."""

    name: str
    source: str
    n_lags: int
    horizon: int
    season: int = 1
    fill_missing: str = "error"


@dataclass
class ModelSpec:
    """A neural window forecaster of the backtest: how to build it and how long to train it."""

    name: str
    build: Callable[[int, int], WindowForecaster]
    steps: int = 400
    max_epochs: int = 50
    batch_size: int = 32


SERIES = [
    SeriesSpec("sunspots", "statsmodels:sunspots", n_lags=33, horizon=6, season=11),
    SeriesSpec("nile", "statsmodels:nile", n_lags=10, horizon=3, season=1),
    SeriesSpec("co2", "statsmodels:co2", n_lags=104, horizon=13, season=52, fill_missing="interpolate"),
    SeriesSpec("elnino", "statsmodels:elnino", n_lags=36, horizon=12, season=12),
    SeriesSpec("unemp", "statsmodels:macrodata:unemp", n_lags=16, horizon=4, season=4),
    SeriesSpec("infl", "statsmodels:macrodata:infl", n_lags=16, horizon=4, season=4),
]


def _ssm(layer: str, **kw) -> Callable[[int, int], WindowForecaster]:
    def build(n_lags: int, horizon: int) -> WindowForecaster:
        return SSMForecaster(n_lags, horizon, layer=layer, **kw)

    return build


MODELS = [
    ModelSpec("S4", _ssm("s4", d_model=32, n_layers=2, d_state=64, dropout=0.1)),
    ModelSpec("S4D", _ssm("s4d", d_model=32, n_layers=2, d_state=64, dropout=0.1)),
    ModelSpec("LSSL", _ssm("lssl", d_model=32, n_layers=2, d_state=32, dropout=0.1)),
    ModelSpec("AR-Net", lambda n_lags, horizon: ARNet(n_lags, horizon, sparsity=0.5, reg_strength=0.05)),
]
BASELINES = ("least-squares AR", "seasonal naive")


@dataclass
class PeerSpec:
    """A neuralforecast model run beside ours: its class name and options beyond the shared training set-up."""

    name: str
    options: Callable[[int, int], dict]
    steps: int = 400
    max_epochs: int = 50
    batch_size: int = 32


def _patchtst_options(n_lags: int, horizon: int) -> dict:
    # The library's patches (16 long, stride 8) do not fit the short windows of nile (10) or the macro series (16).
    patch_len = min(16, n_lags)
    return {"patch_len": patch_len, "stride": max(1, patch_len // 2)}


# Library defaults otherwise (NHITS: 3 stacks of 512-unit MLPs; PatchTST: 3 encoder layers of width 128, RevIN;
# both trained on MAE). PatchTST's default learning rate (1e-4) is meant for 5000 steps: with ≤ 400 it gets
# NHITS's 1e-3.
PEERS = [
    PeerSpec("NHITS", lambda n_lags, horizon: {"learning_rate": 1e-3}),
    PeerSpec("PatchTST", lambda n_lags, horizon: {"learning_rate": 1e-3, **_patchtst_options(n_lags, horizon)}),
]
PEERS_MISSING = ("neuralforecast is not installed (`pip install tsuite[peers]`): the peers NHITS and PatchTST "
                 "were not run.")


def neuralforecast_missing() -> str | None:
    """None when neuralforecast imports, else the reason it does not."""
    try:
        import neuralforecast  # noqa: F401
    except ImportError as err:
        return str(err)
    return None


def cutoffs(n: int, horizon: int, n_cutoffs: int, min_history: int) -> list[int]:
    """Forecast origins: the last ``n_cutoffs`` of n − h, n − 2h, … (h = horizon), each ≥ ``min_history``."""
    out = [n - k * horizon for k in range(n_cutoffs, 0, -1)]
    if out[0] < min_history:
        raise ValueError(f"a series of {n} steps is too short for {n_cutoffs} origins {horizon} steps apart with "
                         f"{min_history} steps of history before the first")
    return out


def mase(pred: np.ndarray, truth: np.ndarray, history: np.ndarray, season: int) -> float:
    """MASE of one forecast, scaled by the in-sample seasonal naive MAE of ``history``."""
    scale = np.abs(history[season:] - history[:-season]).mean()
    return float(np.abs(pred - truth).mean() / (scale if scale > 1e-12 else 1.0))


def smape(pred: np.ndarray, truth: np.ndarray) -> float:
    """sMAPE in percent (0 to 200); terms with ŷ = y = 0 count as 0."""
    denom = np.abs(pred) + np.abs(truth)
    return float(200.0 * np.mean(np.where(denom > 0, np.abs(pred - truth) / np.where(denom > 0, denom, 1.0), 0.0)))


def training_epochs(n_windows: int, steps: int, batch_size: int, max_epochs: int | None) -> tuple[int, int]:
    """(epochs, optimiser steps) of a fit on ``n_windows`` windows: about ``steps`` steps, at most ``max_epochs``."""
    batches = max(1, math.ceil(n_windows / batch_size))
    epochs = max(1, min(round(steps / batches), max_epochs or steps))
    return epochs, epochs * batches


def fit_window_model(build: Callable[[], WindowForecaster], history: np.ndarray, steps: int, batch_size: int,
                     seed: int = 0, max_epochs: int | None = None) -> WindowForecaster:
    """Build (after seeding) and train a model on every window of ``history``.

    Training lasts about ``steps`` optimiser steps, but at most ``max_epochs``
    passes over the windows (short series would otherwise be overfitted). The
    history is scaled by its own mean and standard deviation, as ``predict_frame`` does.
    """
    pl.seed_everything(seed, verbose=False)
    model = build()
    loc, scale = history.mean(), history.std()
    z = (history - loc) / (scale if scale > 1e-12 else 1.0)
    x, y = make_windows(z, model.n_lags, model.horizon, 0, len(z))
    data = TensorDataset(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32))
    loader = DataLoader(data, batch_size=batch_size, shuffle=True)
    epochs, _ = training_epochs(len(data), steps, batch_size, max_epochs)
    pl.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, num_sanity_val_steps=0).fit(model, loader)
    return model.eval()


def _frame(values: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"unique_id": "s", "ds": np.arange(len(values)), "y": values})


def _quiet_lightning() -> None:
    # Importing pytorch_lightning (neuralforecast's) reroutes Lightning's rank-zero messages through its logger.
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric", "neuralforecast"):
        logging.getLogger(name).setLevel(logging.ERROR)


def fit_peer(peer: PeerSpec, history: np.ndarray, n_lags: int, horizon: int, seed: int = 0):
    """A fitted ``neuralforecast.NeuralForecast`` holding ``peer`` trained on ``history``.

    Same windows as our models (input_size = n_lags, h = horizon), the same
    number of optimiser steps on batches of ``peer.batch_size`` windows as
    :func:`fit_window_model` would take, the history scaled by its own mean and
    standard deviation, seeded, on the CPU, silent.
    """
    import neuralforecast.models
    from neuralforecast import NeuralForecast

    _quiet_lightning()
    n_windows = len(history) - n_lags - horizon + 1
    _, max_steps = training_epochs(n_windows, peer.steps, peer.batch_size, peer.max_epochs)
    model = getattr(neuralforecast.models, peer.name)(
        h=horizon, input_size=n_lags, max_steps=max_steps, batch_size=1, windows_batch_size=peer.batch_size,
        val_check_steps=max_steps + 1, random_seed=seed, scaler_type="identity", accelerator="cpu", devices=1,
        logger=False, enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
        **peer.options(n_lags, horizon))
    nf = NeuralForecast(models=[model], freq=1, local_scaler_type="standard")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nf.fit(_frame(history), val_size=0)
    return nf


def peer_forecast(nf, peer: PeerSpec, history: np.ndarray) -> np.ndarray:
    """The next h values after ``history`` from a fitted peer (no refit: the new observations are only read)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return nf.predict(df=_frame(history))[peer.name].to_numpy(np.float64)


def backtest_series(spec: SeriesSpec, models: list[ModelSpec], n_cutoffs: int = 5, refit: str = "each",
                    seed: int = 0, peers: list[PeerSpec] | None = None) -> pd.DataFrame:
    """Errors of every method at every origin of one series: columns series, method, cutoff, MASE, sMAPE, fit_s.

    ``peers`` (neuralforecast models) need neuralforecast; pass none or an empty list without it.
    """
    raw, name = load_series(spec.source)
    y = validate_series(raw, name, spec.n_lags + spec.horizon, fill_missing=spec.fill_missing)["y"].to_numpy(float)
    origins = cutoffs(len(y), spec.horizon, n_cutoffs, min_history=3 * (spec.n_lags + spec.horizon))
    rows = []

    def record(method: str, cutoff: int, pred: np.ndarray, fit_s: float = 0.0) -> None:
        truth, history = y[cutoff : cutoff + spec.horizon], y[:cutoff]
        rows.append({"series": spec.name, "method": method, "cutoff": cutoff, "fit_s": fit_s,
                     "MASE": mase(pred, truth, history, spec.season), "sMAPE": smape(pred, truth)})

    for m in models:
        model, fit_s = None, 0.0
        for cutoff in origins:
            if model is None or refit == "each":
                start = time.perf_counter()
                build = lambda: m.build(spec.n_lags, spec.horizon)  # noqa: E731
                model = fit_window_model(build, y[:cutoff], m.steps, m.batch_size, seed, m.max_epochs)
                fit_s = time.perf_counter() - start
            pred = model.predict_frame(_frame(y[:cutoff]), horizon=spec.horizon).iloc[:, -1].to_numpy()
            record(m.name, cutoff, pred, fit_s)
            fit_s = 0.0
    for cutoff in origins:
        history = y[:cutoff]
        train = y[: origins[0]] if refit == "first" else history
        record("least-squares AR", cutoff, least_squares_forecast(train, spec.n_lags, history, spec.horizon))
        record("seasonal naive", cutoff, seasonal_naive(history, spec.horizon, spec.season))
    for peer in peers or []:
        nf, fit_s = None, 0.0
        for cutoff in origins:
            if nf is None or refit == "each":
                start = time.perf_counter()
                nf = fit_peer(peer, y[:cutoff], spec.n_lags, spec.horizon, seed)
                fit_s = time.perf_counter() - start
            record(peer.name, cutoff, peer_forecast(nf, peer, y[:cutoff]), fit_s)
            fit_s = 0.0
    return pd.DataFrame(rows)


def run_backtest(series: list[SeriesSpec] | None = None, models: list[ModelSpec] | None = None, n_cutoffs: int = 5,
                 refit: str = "each", seed: int = 0, progress: bool = True,
                 peers: list[PeerSpec] | None = None) -> pd.DataFrame:
    """:func:`backtest_series` over every series; one row per series, method and origin."""
    frames = []
    for spec in series or SERIES:
        start = time.perf_counter()
        frames.append(backtest_series(spec, models if models is not None else MODELS, n_cutoffs, refit, seed,
                                      peers))
        if progress:
            print(f"backtest: {spec.name} done in {time.perf_counter() - start:.0f} s", flush=True)
    return pd.concat(frames, ignore_index=True)


def _series_job(name: str, models: list[str], peers: list[str], steps: int | None, n_cutoffs: int, refit: str,
                seed: int, threads: int) -> pd.DataFrame:
    """One series in a worker process of ``main --jobs``: the specs are looked up by name (lambdas do not pickle)."""
    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore")
    _quiet_lightning()
    spec = next(s for s in SERIES if s.name == name)
    chosen = [replace(m, steps=steps or m.steps) for m in MODELS if m.name in models]
    rivals = [replace(p, steps=steps or p.steps) for p in PEERS if p.name in peers]
    start = time.perf_counter()
    errors = backtest_series(spec, chosen, n_cutoffs, refit, seed, rivals)
    print(f"backtest: {name} done in {time.perf_counter() - start:.0f} s", flush=True)
    return errors


def run_parallel(series: list[SeriesSpec], models: list[ModelSpec], peers: list[PeerSpec], steps: int | None,
                 n_cutoffs: int, refit: str, seed: int, threads: int, jobs: int) -> pd.DataFrame:
    """:func:`run_backtest` with the series spread over ``jobs`` processes (same seeded fits: same errors)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    names, rivals = [m.name for m in models], [p.name for p in peers]
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_series_job, s.name, names, rivals, steps, n_cutoffs, refit, seed, threads)
                   for s in series]
        return pd.concat([f.result() for f in futures], ignore_index=True)


def summarize(errors: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Mean MASE and sMAPE per series (rows) and method (columns), with a mean row."""
    order = list(dict.fromkeys(errors["method"]))
    out = {}
    for metric in ("MASE", "sMAPE"):
        table = errors.pivot_table(index="series", columns="method", values=metric, aggfunc="mean", sort=False)
        table = table[order]
        table.loc["mean"] = table.mean()
        out[metric] = table
    return out


def markdown(errors: pd.DataFrame, n_cutoffs: int, refit: str, series: list[SeriesSpec],
             peers_note: str | None = None, steps: int = 400, threads: int = 1) -> str:
    """The backtest report: set-up, MASE and sMAPE tables (best per series in bold) and the S4 check.

    ``peers_note`` is a sentence about the peers (e.g. that neuralforecast is missing) put under the set-up.
    """
    tables = summarize(errors)
    peers = [p.name for p in PEERS if p.name in set(errors["method"])]
    lines = [
        "# Forecasting backtest",
        "",
        f"Rolling origin: {n_cutoffs} forecast origins per series, spaced one horizon apart over the end of the "
        f"series; neural models {'refitted at every origin' if refit == 'each' else 'fitted before the first origin'} "
        f"(seeded; {steps} optimiser steps on batches of 32 windows or 50 epochs, whichever is fewer; CPU, "
        f"{threads} thread{'s' if threads > 1 else ''}). MASE is scaled by the in-sample seasonal naive MAE of the "
        "history before each origin; sMAPE is "
        "in percent. Written by `python -m tsuite.forecasting.backtest`.",
        "",
    ]
    if peers:
        lines += [
            f"Peers: neuralforecast's {' and '.join(peers)} on the same windows and origins: input_size = n_lags, "
            "h = horizon, the same number of optimiser steps on 32 windows each (`max_steps`, "
            "`windows_batch_size=32`), the history scaled by its mean and standard deviation "
            "(`local_scaler_type=\"standard\"`, no per-window scaler), `random_seed` fixed, learning rate 1e-3, "
            "otherwise the library's defaults (MAE loss; PatchTST with RevIN and patches of min(16, n_lags), "
            "stride half a patch).",
            "",
        ]
    if peers_note:
        lines += [peers_note, ""]
    lines += [
        "| series | source | n_lags | horizon | season |",
        "|---|---|---|---|---|",
        *[f"| {s.name} | `{s.source}` | {s.n_lags} | {s.horizon} | {s.season} |" for s in series],
    ]
    for metric, table in tables.items():
        lines += ["", f"## {metric}", "", "| series | " + " | ".join(table.columns) + " |",
                  "|---" * (len(table.columns) + 1) + "|"]
        for name, row in table.iterrows():
            best = row.min()
            cells = [f"**{v:.3f}**" if v == best and name != "mean" else f"{v:.3f}" for v in row]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if {"S4", "seasonal naive"} <= set(errors["method"]):
        mase_table = tables["MASE"].drop(index="mean")
        wins = (mase_table["S4"] < mase_table["seasonal naive"]).sum()
        lines += ["", f"S4 has a lower MASE than seasonal naive on {wins} of {len(mase_table)} series."]
        ours = [m for m in ("S4", "S4D", "LSSL") if m in mase_table]
        for peer in peers:
            beats = [f"{name} ({row[peer]:.3f} against {row[ours].min():.3f})"
                     for name, row in mase_table.iterrows() if row[peer] < row[ours].min()]
            lines.append(f"{peer} has a lower MASE than every SSM ({', '.join(ours)}) on {len(beats)} of "
                         f"{len(mase_table)} series" + (f": {', '.join(beats)}." if beats else "."))
    fit = errors[errors["fit_s"] > 0].groupby("method", sort=False)["fit_s"].mean()
    if len(fit):
        lines += ["", "Mean wall-clock fit time per origin (CPU): "
                  + ", ".join(f"{k} {v:.1f} s" for k, v in fit.items()) + "."]
    return "\n".join(lines) + "\n"


DISCUSSION = "## Discussion"


def kept_discussion(path: str | os.PathLike) -> str:
    """The hand-written ``## Discussion`` section (to the end) of an existing report, kept when it is rewritten."""
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    at = text.find("\n" + DISCUSSION + "\n")
    return "" if at < 0 else text[at:]




def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tsuite.forecasting.backtest", description=__doc__.split("\n")[0])
    parser.add_argument("--output", default="docs/backtest.md", help="markdown file to write")
    parser.add_argument("--cutoffs", type=int, default=5, help="forecast origins per series")
    parser.add_argument("--refit", choices=("each", "first"), default="each",
                        help="refit the neural models at every origin, or once before the first")
    parser.add_argument("--series", nargs="*", default=None, help=f"subset of {[s.name for s in SERIES]}")
    parser.add_argument("--models", nargs="*", default=None, help=f"subset of {[m.name for m in MODELS + PEERS]}")
    parser.add_argument("--steps", type=int, default=None, help="training steps of every neural model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="series run in parallel worker processes")
    parser.add_argument("--errors", default=None, help="also write the per-origin errors to this CSV")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (the models are small: one thread is fastest on a busy machine)")
    args = parser.parse_args(argv)
    series = [s for s in SERIES if args.series is None or s.name in args.series]
    models = [m for m in MODELS if args.models is None or m.name in args.models]
    peers = [p for p in PEERS if args.models is None or p.name in args.models]
    peers_note = None
    if peers and neuralforecast_missing() is not None:
        peers, peers_note = [], PEERS_MISSING
        print(f"backtest: {PEERS_MISSING}", flush=True)
    if args.steps:  # copies: the module's specs keep their budgets
        models = [replace(m, steps=args.steps) for m in models]
        peers = [replace(p, steps=args.steps) for p in peers]
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    _quiet_lightning()
    if args.jobs > 1:
        errors = run_parallel(series, models, peers, args.steps, args.cutoffs, args.refit, args.seed, args.threads,
                              args.jobs)
    else:
        errors = run_backtest(series, models, args.cutoffs, args.refit, args.seed, peers=peers)
    if args.errors:
        write_text_atomic(errors.to_csv(index=False), args.errors)
    text = markdown(errors, args.cutoffs, args.refit, series, peers_note, args.steps or 400, args.threads)
    text += kept_discussion(args.output)
    write_text_atomic(text, args.output)
    print(text)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
