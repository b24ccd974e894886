"""Training throughput of an S4D backbone: convolution mode against recurrent (fused scan) mode, and the torch.fft peer.

``python -m benchmarks.ssm_throughput OUT.md`` on a CUDA machine: the S4D
backbone of :class:`tsuite.forecasting.ssm_backbone.SSMBackbone` (d_model 256,
6 layers, N = 64, GLU, layer norm) with a mean-pooled 10-class head, one full
training step (forward, backward, AdamW step with the SSM parameter groups) on
random sequences of L = 4096 scalars, in fp32 and under bf16 autocast, for
three ways to run the same layers:

- ``conv``: FFT convolution through ``tsuite.kernels.fftconv`` (Triton + cuFFT);
- ``recurrent``: the fused diagonal scan ``tsuite.kernels.diag_ssm_scan``;
- ``conv (torch.fft)``: the plain ``torch.fft`` convolution (rfft, multiply,
  irfft at 2L), as in the state-spaces/s4 standalone S4D: the peer column.

Before timing, the three are checked to give the same loss and gradients
(fp32, relative error against the peer, in the table); a mode whose error
exceeds ``--tolerance`` is flagged in its row and on stderr. Each step
is timed with ``triton.testing.do_bench`` (median, after warm-up); a batch that
does not fit is halved until it does. Writes the markdown table to OUT.md and
prints it. ``--smoke`` runs tiny sizes on the CPU (no timing claims) to check the
script itself. Only torch, triton and ``tsuite.kernels`` / the SSM layers are
imported: no MLflow.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time

import torch
from torch import nn

from tsuite.forecasting.ssm_backbone import SSMBackbone, ssm_param_groups
from tsuite.tables import write_text_atomic

MODES = {  # name → (SSMLayer.set_mode arguments)
    "conv": ("conv", "auto"),
    "recurrent": ("recurrent", "auto"),
    "conv (torch.fft)": ("conv", "torch"),
}
PEER = "conv (torch.fft)"


class Classifier(nn.Module):
    """S4D backbone, mean pooling and a linear head: x (B, L, 1) → logits (B, n_classes)."""

    def __init__(self, d_model: int, n_layers: int, d_state: int, n_classes: int = 10):
        super().__init__()
        self.backbone = SSMBackbone(1, d_model, n_layers, "s4d", d_state, dropout=0.0, prenorm=True)
        self.head = nn.Linear(d_model, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x).mean(dim=1))  # (B C)


def _inputs(batch: int, length: int, device: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(batch, length, 1, device=device, generator=g)  # (B L 1)
    y = torch.randint(0, 10, (batch,), device=device, generator=g)
    return x, y


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30))


def agreement(args, device: str) -> dict[str, float]:
    """Worst relative error of the loss and every gradient of each mode against the torch.fft peer (fp32)."""
    torch.manual_seed(0)
    model = Classifier(args.d_model, args.n_layers, args.d_state).to(device)
    x, y = _inputs(2, min(args.length, 1024), device, seed=1)
    grads = {}
    for name, (mode, backend) in MODES.items():
        model.backbone.set_mode(mode, backend)
        model.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        grads[name] = [loss.detach()] + [p.grad.detach().clone() for p in model.parameters()]
    return {name: max(_rel(a, b) for a, b in zip(g, grads[PEER])) for name, g in grads.items() if name != PEER}


def _timer(device: str):
    if device == "cuda":
        from triton.testing import do_bench

        return lambda fn: float(do_bench(fn, warmup=100, rep=500, return_mode="median"))

    def cpu_ms(fn, reps: int = 3) -> float:
        fn()  # warm-up
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - start))
        return sorted(times)[len(times) // 2]

    return cpu_ms


def measure(name: str, dtype: str, batch: int, args, device: str) -> dict:
    """ms per training step and peak memory of one mode at one batch size (raises OutOfMemoryError)."""
    mode, backend = MODES[name]
    torch.manual_seed(0)
    model = Classifier(args.d_model, args.n_layers, args.d_state).to(device)
    model.backbone.set_mode(mode, backend)
    opt = torch.optim.AdamW(ssm_param_groups(model, 0.01), lr=1e-3)
    x, y = _inputs(batch, args.length, device)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bf16")

    def step() -> None:
        with autocast:
            loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    ms = _timer(device)(step)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    return {"mode": name, "dtype": dtype, "batch": batch, "ms": ms, "seq/s": batch / (ms * 1e-3), "peak GiB": peak}


def measure_fitting(name: str, dtype: str, args, device: str) -> dict | None:
    """:func:`measure` at ``args.batch``, halving the batch after an out-of-memory error; None if even 1 fails."""
    batch = args.batch
    while batch >= 1:
        try:
            return measure(name, dtype, batch, args, device)
        except torch.cuda.OutOfMemoryError:
            batch //= 2
        finally:
            gc.collect()  # drop the failed attempt's model and activations before the next
            if device == "cuda":
                torch.cuda.empty_cache()
    return None


def table(rows: list[dict], errors: dict[str, float], args, device: str) -> str:
    where = torch.cuda.get_device_name() if device == "cuda" else "CPU (smoke run: sizes too small to mean anything)"
    lines = [
        f"S4D backbone training step (forward + backward + AdamW): d_model {args.d_model}, {args.n_layers} layers, "
        f"N = {args.d_state}, L = {args.length}; {where}, torch {torch.__version__}, "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}. Median of `do_bench` after warm-up (CPU: of 3 steps).",
        "",
        "Agreement with the torch.fft peer (fp32, worst relative error of the loss and every gradient): "
        + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()) + ".",
        "",
        "| mode | dtype | batch | ms/step | sequences/s | peak GiB | x vs torch.fft conv | agrees with peer |",
        "|---|---|---|---|---|---|---|---|",
    ]
    peer = {r["dtype"]: r for r in rows if r["mode"] == PEER}
    for r in rows:
        ref = peer.get(r["dtype"])
        ratio = f"{r['seq/s'] / ref['seq/s']:.2f}" if ref else "n/a"
        err = errors.get(r["mode"], 0.0)
        agrees = "(peer)" if r["mode"] == PEER else ("yes" if err <= args.tolerance else f"NO ({err:.1e})")
        lines.append(f"| {r['mode']} | {r['dtype']} | {r['batch']} | {r['ms']:.1f} | {r['seq/s']:.1f} | "
                     f"{r['peak GiB']:.1f} | {ratio} | {agrees} |")
    return "\n".join(lines) + "\n"




def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ssm_throughput", description=__doc__.split("\n")[0])
    parser.add_argument("output", nargs="?", default="ssm_throughput.md", help="markdown file to write")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: checks the script, not speed")
    parser.add_argument("--batch", type=int, default=32, help="sequences per step (halved on out-of-memory)")
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--d-model", dest="d_model", type=int, default=256)
    parser.add_argument("--n-layers", dest="n_layers", type=int, default=6)
    parser.add_argument("--d-state", dest="d_state", type=int, default=64)
    parser.add_argument("--tolerance", type=float, default=1e-3,
                        help="largest relative error against the peer for a mode to be timed")
    args = parser.parse_args(argv)
    if args.smoke:
        args.batch, args.length, args.d_model, args.n_layers, args.d_state = 2, 256, 16, 2, 8
        device = "cpu"
    elif not torch.cuda.is_available():
        print("ssm_throughput: no CUDA device (use --smoke to check the script on the CPU)", file=sys.stderr)
        return 2
    else:
        device = "cuda"
    errors = agreement(args, device)
    rows = []
    for dtype in ("fp32", "bf16"):
        for name in MODES:
            if name != PEER and errors[name] > args.tolerance:
                print(f"ssm_throughput: {name} disagrees with the peer (relative error {errors[name]:.1e} > "
                      f"{args.tolerance:.0e}); its row is flagged", file=sys.stderr)
            r = measure_fitting(name, dtype, args, device)
            if r is None:
                print(f"ssm_throughput: {name} {dtype} does not fit even one sequence", file=sys.stderr)
                continue
            rows.append(r)
            print(f"{name} {dtype}: batch {r['batch']}, {r['ms']:.1f} ms/step", flush=True)
    text = table(rows, errors, args, device)
    write_text_atomic(text, args.output)
    print(text)
    leaked = sorted(m for m in ("mlflow",) if sys.modules.get(m) is not None)
    if leaked:
        print(f"ssm_throughput: imported {leaked}, which the GPU machine lacks", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
