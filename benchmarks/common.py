"""Timing helpers shared by the benchmarks: median time by triton.testing.do_bench and the copy ceiling."""

from __future__ import annotations

import torch
from triton.testing import do_bench


def time_ms(fn, warmup: int = 25, rep: int = 100) -> float:
    """Median wall time of ``fn()`` on the current CUDA device, in milliseconds."""
    return float(do_bench(fn, warmup=warmup, rep=rep, return_mode="median"))


def copy_bandwidth_gbps(n_bytes: int = 2 * 1024**3) -> float:
    """Device-to-device copy bandwidth (bytes read + written per second, GB/s): the ceiling."""
    src = torch.empty(n_bytes // 4, dtype=torch.float32, device="cuda").uniform_()
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src))
    del src, dst
    torch.cuda.empty_cache()
    return 2 * n_bytes / (ms * 1e-3) / 1e9


def row(op: str, shape: str, dtype: str, ms: float, n_bytes: int, ceiling_gbps: float, peers: dict[str, float]) -> dict:
    """One benchmark table row: time, effective bandwidth, % of copy ceiling and speed-up over each peer."""
    gbps = n_bytes / (ms * 1e-3) / 1e9
    out = {"op": op, "shape": shape, "dtype": dtype, "ms": ms, "GB/s": gbps, "% copy": 100.0 * gbps / ceiling_gbps}
    for name, peer_ms in peers.items():
        out[f"{name} ms"] = peer_ms
        out[f"x vs {name}"] = peer_ms / ms
    return out
