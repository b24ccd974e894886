"""Benchmark: the fused diagonal SSM scan (S4D recurrent mode) against S4D's FFT convolution.

Shape (B, H, L, N) = (4, 256, 16384, 64), float32. The peer is the convolution
mode with a precomputed kernel k of shape (H, L): irfft(rfft(u, 2L) * rfft(k, 2L))[..., :L],
forward, and forward+backward (gradients for u and k). Ours: diag_ssm_scan
with D, forward without autograd, and forward+backward (gradients for u, A,
B, C, dt, D), under torch's default float32 matmul precision ("highest":
bf16x3 products, float32 accuracy) and under "high" (one TF32 pass). Both run
in this process on the same u; k is our SSM's own kernel, so the outputs are
compared first (column "rel err vs fft").

    python -m benchmarks.kernels_diag_ssm           # markdown table
    python -m benchmarks.kernels_diag_ssm --sweep   # launch configurations (blocks, programs, warps, precision)
    python -m benchmarks.kernels_diag_ssm --warmup [i]  # compile the variants above use (or the i-th), time nothing

The sweep compiles its configurations in parallel subprocesses first (Triton's
cache keeps the kernels; at most COMPILE_BUDGET_S), then times them one by one
within SWEEP_BUDGET_S; each row also gives the relative error of y and du against
float64 on a small problem, so a fast but wrong configuration shows.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import torch

from benchmarks.common import copy_bandwidth_gbps, row, time_ms
from tsuite.kernels.diag_ssm_scan import _config, _diag_ssm_scan_triton, diag_ssm_scan
from tsuite.kernels.diag_ssm_scan_ref import diag_ssm_scan_ref, zoh

SHAPE = (4, 256, 16384, 64)  # B, H, L, N
SWEEP_BUDGET_S = 60.0  # timing
COMPILE_BUDGET_S = 180.0  # parallel compilation before it
SWEEP = (  # name, overrides of the default configuration (`_config`); the first is the default
    ("default", {}),
    ("tf32x3 products", {"PREC": "tf32x3"}),
    ("TF32 (one pass)", {"PREC": "tf32"}),
    ("out 4 blocks/prog", {"G_out": 4}),
    ("out 1 stage", {"out_stages": 1}),
    ("out 168 regs", {"out_stages": 1, "out_maxnreg": 168}),
    ("out R32", {"R": 32, "G_out": 4}),
    ("out R16", {"R": 16, "G_out": 8}),
    ("ends RE16", {"RE": 16, "G_ends": 8, "G_bends": 8}),
    ("ends 4 tiles/prog", {"G_ends": 4, "G_bends": 4}),
    ("bwd 8 warps", {"bwd_warps": 8}),
    ("bwd 4 blocks/prog", {"G_bwd": 4}),
    ("bwd 2 stages", {"bwd_stages": 2}),
    ("RB32", {"RB": 32, "G_ends": 4, "G_bends": 4, "G_bwd": 2, "bwd_warps": 8}),
    ("T64", {"T": 64, "R": 64, "RB": 16, "G_out": 1, "G_ends": 4, "G_bends": 4, "G_bwd": 2, "bwd_warps": 8}),
)


def _inputs(B, H, L, N, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    kw = dict(generator=g, device="cuda")
    A = torch.complex(-0.5 * torch.ones(H, N, device="cuda"), torch.pi * torch.arange(N, device="cuda").float().expand(H, N))
    A = A + torch.complex(-0.1 * torch.rand(H, N, **kw), 0.1 * torch.randn(H, N, **kw))  # S4D-Lin, perturbed
    B_ = torch.randn(H, N, dtype=torch.complex64, **kw)
    C = torch.randn(H, N, dtype=torch.complex64, **kw) / N**0.5
    dt = torch.exp(torch.log(torch.tensor(1e-3)) + torch.rand(H, **kw) * torch.log(torch.tensor(100.0)))
    D = torch.randn(H, **kw)
    u = torch.randn(B, H, L, **kw)
    dy = torch.randn(B, H, L, **kw)
    return u, A, B_, C, dt, D, dy


def _ssm_kernel(A, B, C, dt, L):
    """The SSM's convolution kernel K_l = 2 Re(sum_n C B̄ Ā^l), (H, L) float32."""
    dtA, Bbar = zoh(A, B, dt)
    steps = torch.arange(L, device=A.device, dtype=torch.float32)
    return 2 * torch.einsum("hn,hnl->hl", C * Bbar, torch.exp(dtA.unsqueeze(-1) * steps)).real


def fftconv(u, k):
    L = u.shape[-1]
    return torch.fft.irfft(torch.fft.rfft(u, n=2 * L) * torch.fft.rfft(k, n=2 * L), n=2 * L)[..., :L]


def _rel(x, ref):
    return ((x.double() - ref.double()).norm() / ref.double().norm()).item()


def _ours(u, A, B, C, dt, D, cfg=None):
    if cfg is None:
        return diag_ssm_scan(u, A, B, C, dt, D)
    return _diag_ssm_scan_triton(u, A, B, C, dt, D, None, False, cfg)


def _time_pair(u, A, B, C, dt, D, dy, cfg=None):
    """(forward ms without autograd, forward+backward ms) of ours."""
    with torch.no_grad():
        fwd = time_ms(lambda: _ours(u, A, B, C, dt, D, cfg))
    leaves = [x.detach().clone().requires_grad_(True) for x in (u, A, B, C, dt, D)]

    def fwd_bwd():
        for x in leaves:
            x.grad = None
        _ours(*leaves, cfg).backward(dy)

    return fwd, time_ms(fwd_bwd)


def rows(ceiling_gbps: float) -> list[dict]:
    Bsz, H, L, N = SHAPE
    u, A, B, C, dt, D, dy = _inputs(Bsz, H, L, N)
    k = _ssm_kernel(A, B, C, dt, L)
    shape = f"B{Bsz} H{H} L{L} N{N}"
    with torch.no_grad():
        y_fft = fftconv(u, k) + D.unsqueeze(-1) * u
        fft_fwd = time_ms(lambda: fftconv(u, k))
    uk = [u.detach().clone().requires_grad_(True), k.detach().clone().requires_grad_(True)]

    def fft_fwd_bwd():
        uk[0].grad = uk[1].grad = None
        fftconv(*uk).backward(dy)

    fft_both = time_ms(fft_fwd_bwd)
    out = []
    elem = Bsz * H * L * 4
    before = torch.get_float32_matmul_precision()
    try:
        for precision, label in (("highest", "fp32 (bf16x3, fp32 accuracy)"), ("high", "fp32 (TF32)")):
            torch.set_float32_matmul_precision(precision)
            with torch.no_grad():
                err = _rel(diag_ssm_scan(u, A, B, C, dt, D), y_fft)
            fwd, both = _time_pair(u, A, B, C, dt, D, dy)
            for op, ms, peer, n_bytes in (("diag_ssm_scan fwd", fwd, fft_fwd, 2 * elem), ("diag_ssm_scan fwd+bwd", both, fft_both, 5 * elem)):
                r = row(op, shape, label, ms, n_bytes, ceiling_gbps, {"fftconv": peer})
                r["rel err vs fft"] = err
                out.append(r)
    finally:
        torch.set_float32_matmul_precision(before)
    return out


def _sweep_cfg(i: int, u: torch.Tensor) -> dict:
    return dict(_config(u, SHAPE[3]), **SWEEP[i][1])


def _accuracy(cfg: dict) -> tuple[float, float]:
    """Relative errors of y and du against the float64 reference, on a small problem (B1 H8 L4099)."""
    u, A, B, C, dt, D, dy = _inputs(1, 8, 4099, SHAPE[3], seed=1)
    leaves = [x.detach().clone().requires_grad_(True) for x in (u, A, B, C, dt, D)]
    y = _ours(*leaves, cfg)
    y.backward(dy)
    wide = [(x.to(torch.complex128) if x.is_complex() else x.double()).detach().requires_grad_(True) for x in (u, A, B, C, dt, D)]
    y_ref = diag_ssm_scan_ref(*wide)
    y_ref.backward(dy.double())
    return _rel(y, y_ref), _rel(leaves[0].grad, wide[0].grad)


def sweep() -> list[dict]:
    """Compile every configuration in parallel subprocesses, then time them within SWEEP_BUDGET_S."""
    t0 = time.time()
    jobs = max(1, min(len(SWEEP), (os.cpu_count() or 2) - 2))
    pending = list(range(len(SWEEP)))
    running: list[subprocess.Popen] = []
    while pending or running:
        while pending and len(running) < jobs:
            running.append(subprocess.Popen([sys.executable, "-m", "benchmarks.kernels_diag_ssm", "--warmup", str(pending.pop(0))]))
        time.sleep(0.5)
        running = [p for p in running if p.poll() is None]
        if time.time() - t0 > COMPILE_BUDGET_S:  # what has not compiled by now compiles when timed (or is skipped)
            for p in running:
                p.kill()
            break
    compile_s = time.time() - t0
    Bsz, H, L, N = SHAPE
    u, A, B, C, dt, D, dy = _inputs(Bsz, H, L, N)
    k = _ssm_kernel(A, B, C, dt, L)
    with torch.no_grad():
        fft_fwd = time_ms(lambda: fftconv(u, k))
    uk = [u.detach().clone().requires_grad_(True), k.detach().clone().requires_grad_(True)]

    def fft_fwd_bwd():
        uk[0].grad = uk[1].grad = None
        fftconv(*uk).backward(dy)

    fft_both = time_ms(fft_fwd_bwd)
    out = []
    t1 = time.time()
    for i, (name, over) in enumerate(SWEEP):
        r = {"config": name, "overrides": " ".join(f"{key}={val}" for key, val in over.items()) or "-"}
        if time.time() - t1 > SWEEP_BUDGET_S:
            out.append(r | {"error": "skipped (time budget)"})
            continue
        cfg = _sweep_cfg(i, u)
        try:
            err_y, err_du = _accuracy(cfg)
            fwd, both = _time_pair(u, A, B, C, dt, D, dy, cfg)
            out.append(r | {"fwd ms": fwd, "x fft fwd": fft_fwd / fwd, "fwd+bwd ms": both, "x fft fwd+bwd": fft_both / both,
                            "err y": err_y, "err du": err_du})
        except Exception as e:  # noqa: BLE001 - a config that does not compile or run is reported
            out.append(r | {"error": f"{type(e).__name__}: {str(e)[:160]}"})
    print(f"compile {compile_s:.0f} s, timing {time.time() - t1:.0f} s; fftconv fwd {fft_fwd:.3f} ms, fwd+bwd {fft_both:.3f} ms\n")
    return out


def warmup(part: int | None = None) -> None:
    """Compile the variants `rows` (part None) or the `part`-th sweep configuration launch, timing nothing.

    Runs at the benchmark's L and N (launch constants such as the carry's tile depend on them) with B1 H8.
    """
    _, _, L, N = SHAPE
    u, A, B, C, dt, D, dy = _inputs(1, 8, L, N)
    if part is None:
        jobs = [("highest", None), ("high", None)]
    else:
        jobs = [("highest", _sweep_cfg(part, u))]
    for precision, cfg in jobs:
        torch.set_float32_matmul_precision(precision)
        try:
            with torch.no_grad():
                _ours(u, A, B, C, dt, D, cfg)
            leaves = [x.detach().clone().requires_grad_(True) for x in (u, A, B, C, dt, D)]
            _ours(*leaves, cfg).backward(dy)
        except Exception as e:  # noqa: BLE001
            print(f"warmup {cfg}: {type(e).__name__}: {str(e)[:300]}")
    torch.set_float32_matmul_precision("highest")
    torch.cuda.synchronize()


if __name__ == "__main__":
    from benchmarks.kernels import table

    if "--warmup" in sys.argv:
        rest = sys.argv[sys.argv.index("--warmup") + 1 :]
        warmup(int(rest[0]) if rest else None)
    elif "--sweep" in sys.argv:
        print(f"{torch.cuda.get_device_name()}, {SHAPE}, float32 (precision: the config's PREC)\n")
        print(table(sweep()))
    else:
        ceiling = copy_bandwidth_gbps()
        print(f"{torch.cuda.get_device_name()}; copy ceiling {ceiling:.0f} GB/s\n")
        print(table(rows(ceiling)))
