"""All kernel benchmarks in one process on one card: ``python -m benchmarks.kernels [OUT.md]``.

Measures the device-to-device copy ceiling once, then runs each operation's
``rows(ceiling_gbps)`` (linear scans, prefix attention, the fused diagonal
state-space scan) and prints one markdown table per operation, headed by the
card's name and the date, ready for BENCHMARKS.md.
"""

from __future__ import annotations

import datetime
import importlib
import sys
import traceback

import torch

from benchmarks.common import copy_bandwidth_gbps

MODULES = ("benchmarks.kernels_scan", "benchmarks.kernels_prefix_attention", "benchmarks.kernels_diag_ssm", "benchmarks.kernels_conv")


def table(rows: list[dict]) -> str:
    if not rows:
        return "(no rows)\n"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    card = torch.cuda.get_device_name()
    ceiling = copy_bandwidth_gbps()
    out = [f"Card: {card}; date: {datetime.date.today()}; torch {torch.__version__}; "
           f"copy ceiling {ceiling:.0f} GB/s (2 GiB device-to-device copy, bytes read + written)\n"]
    failed = 0
    for name in MODULES:
        out.append(f"\n### {name.split('.')[-1]}\n")
        try:
            out.append(table(importlib.import_module(name).rows(ceiling)))
        except Exception:  # noqa: BLE001 - report and go on with the other operations
            failed += 1
            out.append("```\n" + traceback.format_exc() + "```\n")
    text = "".join(out)
    print(text)
    if argv:
        with open(argv[0], "w") as f:
            f.write(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
