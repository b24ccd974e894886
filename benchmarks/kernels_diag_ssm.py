"""Benchmark: the fused diagonal SSM scan (S4D recurrent mode) against S4D's FFT convolution.

Shape (B, H, L, N) = (4, 256, 16384, 64), float32. The peer is the convolution
mode with a precomputed kernel k of shape (H, L): irfft(rfft(u, 2L) * rfft(k, 2L))[..., :L],
forward, and forward+backward (gradients for u and k). Ours: diag_ssm_scan
with D, forward without autograd, and forward+backward (gradients for u, A,
B, C, dt, D), under torch's default float32 matmul precision ("highest":
3xTF32 products) and under "high" (one TF32 pass). Both run in this process
on the same u; k is our SSM's own kernel, so the outputs are compared first
(column "rel err vs fft").

    python -m benchmarks.kernels_diag_ssm           # markdown table
    python -m benchmarks.kernels_diag_ssm --sweep   # chunk / block / warps sweep (TF32)
    python -m benchmarks.kernels_diag_ssm --warmup [i]  # compile the variants above use (or the i-th), time nothing
"""

from __future__ import annotations

import sys

import torch

from benchmarks.common import copy_bandwidth_gbps, row, time_ms
from tsuite.kernels.diag_ssm_scan import _config, _diag_ssm_scan_triton, diag_ssm_scan
from tsuite.kernels.diag_ssm_scan_ref import zoh

SHAPE = (4, 256, 16384, 64)  # B, H, L, N
SWEEP = (  # T, R, forward warps, forward register cap, backward warps; the first is the default
    (32, 16, 4, 128, 8),
    (64, 16, 4, 128, 8),
    (64, 16, 8, 128, 8),
    (64, 16, 4, None, 8),
    (32, 32, 8, 128, 8),
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
        for precision, label in (("highest", "fp32 (3xTF32)"), ("high", "fp32 (TF32)")):
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


def sweep() -> list[dict]:
    Bsz, H, L, N = SHAPE
    u, A, B, C, dt, D, dy = _inputs(Bsz, H, L, N)
    out = []
    for T, R, fw, nreg, bw in SWEEP:
        cfg = dict(_config(u, N), T=T, R=R, fwd_warps=fw, maxnreg=nreg, bwd_warps=bw, PREC="tf32")
        try:
            fwd, both = _time_pair(u, A, B, C, dt, D, dy, cfg)
            out.append({"T": T, "R": R, "fwd warps": fw, "maxnreg": nreg, "bwd warps": bw, "fwd ms": fwd, "fwd+bwd ms": both})
        except Exception as e:  # noqa: BLE001 - a config that does not compile is reported
            out.append({"T": T, "R": R, "fwd warps": fw, "maxnreg": nreg, "bwd warps": bw, "error": f"{type(e).__name__}: {str(e)[:120]}"})
    return out


def warmup(part: int | None = None) -> None:
    """Compile the variants `rows` and `sweep` launch, on a short sequence (lengths are not specialised).

    part i compiles only the i-th of them, so several processes can compile side by side.
    """
    _, H, _, N = SHAPE
    u, A, B, C, dt, D, dy = _inputs(1, H, 2048, N)
    jobs = [("highest", None), ("high", None)]
    jobs += [("high", dict(_config(u, N), T=T, R=R, fwd_warps=fw, maxnreg=nreg, bwd_warps=bw, PREC="tf32")) for T, R, fw, nreg, bw in SWEEP]
    for i, (precision, cfg) in enumerate(jobs):
        if part is not None and i != part:
            continue
        torch.set_float32_matmul_precision(precision)
        try:
            with torch.no_grad():
                _ours(u, A, B, C, dt, D, cfg)
            leaves = [x.detach().clone().requires_grad_(True) for x in (u, A, B, C, dt, D)]
            _ours(*leaves, cfg).backward(dy)
        except Exception as e:  # noqa: BLE001
            print(f"warmup {cfg}: {type(e).__name__}: {str(e)[:200]}")
    torch.set_float32_matmul_precision("highest")
    torch.cuda.synchronize()


if __name__ == "__main__":
    from benchmarks.kernels import table

    if "--warmup" in sys.argv:
        rest = sys.argv[sys.argv.index("--warmup") + 1 :]
        warmup(int(rest[0]) if rest else None)
    elif "--sweep" in sys.argv:
        print(f"{torch.cuda.get_device_name()}, {SHAPE}\n")
        print(table(sweep()))
    else:
        ceiling = copy_bandwidth_gbps()
        print(f"{torch.cuda.get_device_name()}; copy ceiling {ceiling:.0f} GB/s\n")
        print(table(rows(ceiling)))
