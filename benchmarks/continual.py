"""Continual learning: every method of configs/continual/ on its task sequence, one table.

Runs on the CPU: ``python -m benchmarks.continual [--output outputs/continual.md] [--only NAME ...]``.
Each run uses its config's settings exactly (model, data, trainer epochs), without MLflow, and
reports the final average accuracy over the tasks, backward transfer, forgetting (all in
percentage points, task-incremental: task given), the class-incremental average accuracy with
task inference by the lowest predictive entropy, the number of trainable parameters and the
fit time. ``hnet_hypnettorch_split_digits`` is ``hnet_mlp_split_digits`` with the hypernetwork
taken from the authors' package hypnettorch (``HMLP``), when it is installed.
The table is written as markdown and CSV (each to a temporary file, then renamed).
"""

from __future__ import annotations

import argparse
import copy
import importlib
import os
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import pandas as pd
import torch
import yaml

from tsuite.tables import write_table_atomic

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "continual"


def _build(spec: dict):
    module, _, name = spec["class_path"].rpartition(".")
    return getattr(importlib.import_module(module), name)(**spec.get("init_args", {}))


def runs() -> dict[str, dict]:
    """Run name → config (the YAML files, plus the hypnettorch variant of the MLP hypernetwork)."""
    out = {p.stem: yaml.safe_load(p.read_text()) for p in sorted(CONFIGS.glob("*.yaml"))}
    if "hnet_mlp_split_digits" in out and importlib.util.find_spec("hypnettorch") is not None:
        cfg = copy.deepcopy(out["hnet_mlp_split_digits"])
        cfg["model"]["init_args"]["hypernetwork"] = "hypnettorch_mlp"
        out["hnet_hypnettorch_split_digits"] = cfg
    return out


def run(name: str, cfg: dict) -> dict:
    pl.seed_everything(cfg.get("seed_everything", 0), verbose=False)
    model, data = _build(cfg["model"]), _build(cfg["data"])
    trainer_args = {k: v for k, v in cfg.get("trainer", {}).items() if k != "logger"}
    trainer = pl.Trainer(**trainer_args, logger=False, enable_progress_bar=False, limit_val_batches=0)
    start = time.perf_counter()
    trainer.fit(model, data)
    seconds = time.perf_counter() - start
    res = model.results()
    margs = cfg["model"]["init_args"]
    method = margs.get("hypernetwork", margs.get("method"))
    return {
        "run": name, "benchmark": cfg["data"]["init_args"]["benchmark"], "method": method,
        "tasks": res["tasks"], "params": model.count_parameters(),
        "avg_acc": res["avg_acc"], "bwt": res["bwt"], "forgetting": res["forgetting"],
        "cil_avg_acc": res["cil_avg_acc"], "fit_s": seconds,
        "R": res["R"],
    }


def markdown(rows: list[dict]) -> str:
    lines = ["| run | benchmark | method | tasks | trainable params | avg acc (%) | BWT (pt) | forgetting (pt) "
             "| class-incr. avg acc (%) | fit (s) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['benchmark']} | {r['method']} | {r['tasks']} | {r['params']:,} | "
                     f"{r['avg_acc']:.1f} | {r['bwt']:+.1f} | {r['forgetting']:.1f} | {r['cil_avg_acc']:.1f} | "
                     f"{r['fit_s']:.0f} |")
    return "\n".join(lines) + "\n"


def _write_text_atomic(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="outputs/continual.md", help="markdown table (a .csv is written beside)")
    parser.add_argument("--only", nargs="*", default=None, help="run names to run (default: all)")
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    rows = []
    for name, cfg in runs().items():
        if args.only and name not in args.only:
            continue
        row = run(name, cfg)
        rows.append(row)
        print(markdown([row]).splitlines()[-1], flush=True)
        print("R (rows: after task i; columns: task j):\n" + pd.DataFrame(row["R"]).round(1).to_string(), flush=True)
    out = Path(args.output)
    text = markdown(rows)
    _write_text_atomic(text, out)
    write_table_atomic(pd.DataFrame([{k: v for k, v in r.items() if k != "R"} for r in rows]), out.with_suffix(".csv"))
    print(text)


if __name__ == "__main__":
    main()
