"""Benchmark: linear_scan against accelerated-scan (Triton and CUDA) and a torch closed form.

Shapes (B, H, L) = (8, 1536, 4096), (8, 1536, 16384), (1, 512, 131072) in
float32: forward, and forward+backward (gradients for a and b); a
time-invariant gate a of shape (B, H, 1) against the same peers given a full
a; bfloat16 against float32; complex64 as a percentage of copy bandwidth.
Every peer is timed in this process on the same inputs, after its output was
checked against ours. accelerated-scan's CUDA scan takes only power-of-two
lengths 32..65536: other shapes report it as refused.

    python -m benchmarks.kernels_scan          # markdown table
    python -m benchmarks.kernels_scan --sweep  # tile / warps / backward-mode sweep
"""

from __future__ import annotations

import sys

import torch

from benchmarks.common import copy_bandwidth_gbps, row, time_ms
from tsuite.kernels.linear_scan import ScanConfig, _backward, _forward, linear_scan
from tsuite.kernels.linear_scan_ref import linear_scan_ref

SHAPES = ((8, 1536, 4096), (8, 1536, 16384), (1, 512, 131072))
REFUSED = float("nan")  # peer time for a shape the peer does not accept


def _inputs(B, H, L, dtype=torch.float32, time_invariant=False, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    real = torch.float32 if dtype in (torch.bfloat16, torch.complex64) else dtype
    a = 0.9 + 0.1 * torch.rand(B, H, 1 if time_invariant else L, generator=g, device="cuda", dtype=real)
    b = torch.randn(B, H, L, generator=g, device="cuda", dtype=real)
    dh = torch.randn(B, H, L, generator=g, device="cuda", dtype=real)
    if dtype == torch.complex64:
        phase = torch.rand(a.shape, generator=g, device="cuda") * 0.1
        a = torch.polar(a, phase)
        b = torch.complex(b, torch.randn(b.shape, generator=g, device="cuda"))
        dh = torch.complex(dh, torch.randn(dh.shape, generator=g, device="cuda"))
    return a.to(dtype), b.to(dtype), dh.to(dtype)


def _peers():
    """Peer scans taking (a, b) of shape (B, C, T), by name; None where a peer cannot be imported."""
    peers = {}
    try:
        from accelerated_scan.scalar import scan as triton_scan

        peers["accscan_triton"] = triton_scan
    except Exception as e:  # noqa: BLE001  a missing peer is reported, not fatal
        print(f"accelerated_scan.scalar unavailable: {e}")
    try:
        from accelerated_scan.warp import scan as warp_scan

        peers["accscan_warp"] = warp_scan
    except Exception as e:  # noqa: BLE001  (it compiles CUDA on import)
        print(f"accelerated_scan.warp unavailable: {type(e).__name__}: {str(e)[:300]}")
    return peers


def _warp_accepts(L: int) -> bool:
    return 32 <= L <= 65536 and L & (L - 1) == 0


def _closed_form(a, b):
    """h_t = A_t * cumsum(b / A)_t with A = cumprod(a): fast but unsafe (A underflows); forward only."""
    A = torch.cumprod(a, dim=-1)
    return A * torch.cumsum(b / A, dim=-1)


def _check_against_float64(a, b, dh, rows: int = 64) -> float:
    """Largest relative error of our output, da and db vs the float64 reference, on the first rows."""
    a, b, dh = (x.detach().flatten(0, -2)[:rows].clone() for x in (a, b, dh))
    wide = [x.double().requires_grad_() for x in (a, b)]
    want = [linear_scan_ref(*wide)]
    want += torch.autograd.grad(want[0], wide, dh.double())
    a.requires_grad_(), b.requires_grad_()
    got = [_ours(a, b)] + list(_fwd_bwd(_ours, a, b, dh))
    return max(_rel_err(x, y) for x, y in zip(got, want))


def _rel_err(x, ref):
    return ((x.double() - ref.double()).norm() / ref.double().norm()).item()


def _fwd_bwd(fn, a, b, dh):
    h = fn(a, b)
    return torch.autograd.grad(h, (a, b), dh)


def _ours(a, b):
    return linear_scan(a, b, backend="triton")


def rows(ceiling_gbps: float, echo: bool = False) -> list[dict]:
    """Rows per shape: fp32 fwd and fwd+bwd vs peers, time-invariant a, bf16 and complex64.

    Refuses (raises) when our result differs from the float64 reference; a peer
    that disagrees with ours is timed and its error shown. ``echo`` prints each
    row as it is measured.
    """
    peers = _peers()
    out = []
    for B, H, L in SHAPES:
        first = len(out)
        shape = f"B={B} H={H} L={L}"
        n = B * H * L
        a, b, dh = _inputs(B, H, L)
        a.requires_grad_(), b.requires_grad_()
        usable = {k: f for k, f in peers.items() if k != "accscan_warp" or _warp_accepts(L)}

        # ours first, against the float64 reference on 64 rows: no speed-up is reported for a wrong result
        err = _check_against_float64(a, b, dh)
        if not err < 1e-5:
            raise RuntimeError(f"linear_scan differs from the float64 reference by {err:.2e} at {shape}")
        # each peer against ours (output, da, db): reported next to its times, not fatal
        with torch.no_grad():
            ours_h = _ours(a, b)
            peer_err = {name: _rel_err(fn(a, b), ours_h) for name, fn in usable.items()}
            closed_err = _rel_err(_closed_form(a, b), ours_h)
        g_ours = _fwd_bwd(_ours, a, b, dh)
        for name, fn in usable.items():
            peer_err[name] = max([peer_err[name]] + [_rel_err(x, y) for x, y in zip(_fwd_bwd(fn, a, b, dh), g_ours)])
        ours_h = g_ours = None

        def peer_times(fn_of):
            return {k: (time_ms(fn_of(peers[k])) if k in usable else REFUSED) for k in peers}

        with torch.no_grad():
            fwd = time_ms(lambda: _ours(a, b))
            fwd_peers = peer_times(lambda f: (lambda: f(a, b)))
            fwd_peers["torch_closed_form"] = time_ms(lambda: _closed_form(a, b))
        out.append(row("linear_scan fwd", shape, "float32", fwd, 3 * n * 4, ceiling_gbps, fwd_peers))
        out[-1]["closed form rel err"] = f"{closed_err:.1e}"  # nan where cumprod underflowed
        for name, e in peer_err.items():
            out[-1][f"{name} rel err (h, da, db)"] = f"{e:.1e}"
        both = time_ms(lambda: _fwd_bwd(_ours, a, b, dh))
        both_peers = peer_times(lambda f: (lambda: _fwd_bwd(f, a, b, dh)))
        out.append(row("linear_scan fwd+bwd", shape, "float32", both, 8 * n * 4, ceiling_gbps, both_peers))

        # time-invariant gate (B, H, 1) vs the peers given the full a
        a1, _, _ = _inputs(B, H, L, time_invariant=True)
        a1.requires_grad_()
        with torch.no_grad():
            err = _rel_err(_ours(a1, b), _ours(a1.expand_as(b).contiguous(), b))
            if not err < 1e-5:
                raise RuntimeError(f"time-invariant linear_scan differs from the full-gate one by {err:.2e} at {shape}")
            t_fwd = time_ms(lambda: _ours(a1, b))
        out.append(row("linear_scan fwd, a (B,H,1)", shape, "float32", t_fwd, 2 * n * 4, ceiling_gbps, fwd_peers))
        t_both = time_ms(lambda: _fwd_bwd(_ours, a1, b, dh))
        out.append(row("linear_scan fwd+bwd, a (B,H,1)", shape, "float32", t_both, 5 * n * 4, ceiling_gbps, both_peers))

        # bfloat16 vs our float32
        a, b, dh = _inputs(B, H, L, torch.bfloat16)
        a.requires_grad_(), b.requires_grad_()
        with torch.no_grad():
            h_fwd = time_ms(lambda: _ours(a, b))
        out.append(row("linear_scan fwd", shape, "bfloat16", h_fwd, 3 * n * 2, ceiling_gbps, {}))
        out[-1]["x vs ours fp32"] = fwd / h_fwd
        h_both = time_ms(lambda: _fwd_bwd(_ours, a, b, dh))
        out.append(row("linear_scan fwd+bwd", shape, "bfloat16", h_both, 8 * n * 2, ceiling_gbps, {}))
        out[-1]["x vs ours fp32"] = both / h_both

        # complex64: % of copy bandwidth
        a, b, dh = _inputs(B, H, L, torch.complex64)
        a.requires_grad_(), b.requires_grad_()
        with torch.no_grad():
            c_fwd = time_ms(lambda: _ours(a, b))
        out.append(row("linear_scan fwd", shape, "complex64", c_fwd, 3 * n * 8, ceiling_gbps, {}))
        c_both = time_ms(lambda: _fwd_bwd(_ours, a, b, dh))
        out.append(row("linear_scan fwd+bwd", shape, "complex64", c_both, 8 * n * 8, ceiling_gbps, {}))
        torch.cuda.empty_cache()
        if echo:  # partial tables survive a later failure or timeout
            print(markdown(out[first:]), flush=True)
    return out


def sweep() -> list[dict]:
    """Forward and backward kernel times under other tiles, warps, load pipelining and backward-in-time modes."""
    out = []
    # (block_t, warps, stages, also time the reversed-index backward?)
    plans = {
        (torch.float32, False): [(2048, 4, 1, True), (2048, 4, 3, False), (1024, 4, 1, False), (4096, 8, 1, False)],
        (torch.float32, True): [(2048, 4, 1, False), (2048, 4, 3, False)],
        (torch.bfloat16, False): [(4096, 8, 1, False), (2048, 4, 1, False), (4096, 8, 3, False)],
        (torch.complex64, False): [(1024, 4, 1, False), (512, 4, 1, False), (1024, 4, 3, False)],
    }
    for B, H, L in ((1, 512, 131072), (8, 1536, 4096)):
        for (dtype, time_invariant), plan in plans.items():
            a, b, dh = _inputs(B, H, L, dtype, time_invariant)
            h = _forward(a, b, None, False)
            for block_t, warps, stages, try_flip in plan:
                for flip in (False, True) if try_flip else (False,):
                    cfg = ScanConfig(1, block_t, warps, flip, stages)
                    try:
                        f = None if flip else time_ms(lambda: _forward(a, b, None, False, cfg), warmup=5, rep=30)
                        bw = time_ms(lambda: _backward(a, h, None, dh, False, cfg), warmup=5, rep=30)
                    except Exception as e:  # noqa: BLE001  out-of-resources configs are skipped
                        print(f"{dtype} {cfg}: {type(e).__name__} {str(e)[:200]}")
                        continue
                    out.append({"shape": f"{B}x{H}x{L}", "dtype": str(dtype)[6:], "a (B,H,1)": time_invariant,
                                "block_t": block_t, "warps": warps, "stages": stages, "flip": flip,
                                "fwd ms": f, "bwd ms": bw})
                    print(out[-1], flush=True)
    return out


def markdown(table: list[dict]) -> str:
    keys: list[str] = []
    for r in table:
        keys += [k for k in r if k not in keys]

    def fmt(x):
        if isinstance(x, float):
            return "refused" if x != x else f"{x:.4g}"
        return "" if x is None else str(x)

    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r.get(k)) for k in keys) + " |" for r in table]
    return "\n".join(lines)


if __name__ == "__main__":
    print(torch.cuda.get_device_name(0))
    if "--sweep" in sys.argv:
        print(markdown(sweep()))
    else:
        ceiling = copy_bandwidth_gbps()
        print(f"copy ceiling: {ceiling:.0f} GB/s")
        table = rows(ceiling, echo=True)
        print("\nall shapes:")
        print(markdown(table))
