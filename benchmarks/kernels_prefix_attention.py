"""Benchmark: prefix attention (Aaren) against causal flash attention computing the same outputs.

Aaren's query is one learned token per head, so causal scaled-dot-product
attention with that query repeated at every step gives the same o_t; flash
attention pays O(L^2) for it, the prefix scan O(L). Shape B=4, H=8, L=16384,
d=64, bf16: forward, and forward+backward (gradients for q, k and v), every
peer timed in this process. Peak memory of ours (forward+backward) at
L = 16384, 65536 and 262144 shows memory linear in L.

Bytes: one (B, H, L, d) bf16 tensor is 67 MB; the forward must read k, v and
write o (201 MB, 67 us at 3.0 TB/s). The three-phase kernels move about 274 MB
(k, v in the summaries; v again, the scores, o and lse in the outputs), so
about 90-100 us is their floor; the 20x target over flash is <= 0.18 ms.

    python -m benchmarks.kernels_prefix_attention          # markdown table
    python -m benchmarks.kernels_prefix_attention --sweep  # launch sweep (~1.5 min), then the table
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from benchmarks.common import copy_bandwidth_gbps, row, time_ms
from tsuite.kernels.prefix_attention import _prefix_attention_triton, prefix_attention

B, H, L, D = 4, 8, 16384, 64
DTYPE = torch.bfloat16
MEMORY_LENGTHS = (16384, 65536, 262144)


def _inputs(length: int, requires_grad: bool = False, seed: int = 0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(H, D, device="cuda", generator=g).to(DTYPE)
    k, v, do = (torch.randn(B, H, length, D, device="cuda", generator=g).to(DTYPE) for _ in range(3))
    q, k, v = (x.requires_grad_(requires_grad) for x in (q, k, v))
    return q, k, v, do


def _repeat_query(q: torch.Tensor, length: int) -> torch.Tensor:
    return q[None, :, None, :].expand(B, H, length, D).contiguous()  # (B H L d)


def _flash(q_rep, k, v):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        return F.scaled_dot_product_attention(q_rep, k, v, is_causal=True)


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def _fwd_bwd(fn, q, k, v, do):
    o = fn(q, k, v)
    return torch.autograd.grad(o, (q, k, v), do)


def rows(ceiling_gbps: float) -> list[dict]:
    """Forward and forward+backward rows vs causal flash SDPA, then peak-memory rows; refuses on a wrong result."""
    return speed_rows(ceiling_gbps) + memory_rows(ceiling_gbps)


def speed_rows(ceiling_gbps: float) -> list[dict]:
    """Ours vs causal flash SDPA with the query repeated, after checking both compute the same outputs and gradients."""
    shape = f"B={B} H={H} L={L} d={D}"
    dtype = str(DTYPE).removeprefix("torch.")
    elem = B * H * L * D * DTYPE.itemsize  # bytes of one (B, H, L, d) tensor
    q, k, v, do = _inputs(L, requires_grad=True)

    # Same function first: the flash output with the repeated query must match ours.
    with torch.no_grad():
        q_rep = _repeat_query(q, L)
        ours_o, flash_o = prefix_attention(q, k, v), _flash(q_rep, k, v)
        err = _rel_err(ours_o, flash_o)
    if not err < 2e-2:
        raise RuntimeError(f"prefix_attention differs from causal SDPA by {err:.2e}: no speed-up reported")
    g_ours = _fwd_bwd(prefix_attention, q, k, v, do)
    g_flash = _fwd_bwd(lambda q, k, v: _flash(_repeat_query(q, L), k, v), q, k, v, do)
    for name, a, b in zip(("dq", "dk", "dv"), g_ours, g_flash):
        e = _rel_err(a, b)
        if not e < 5e-2:
            raise RuntimeError(f"prefix_attention {name} differs from causal SDPA by {e:.2e}: no speed-up reported")

    with torch.no_grad():
        fwd_ours = time_ms(lambda: prefix_attention(q, k, v))
        fwd_flash = time_ms(lambda: _flash(q_rep, k, v))
    out = [row("prefix_attention fwd", shape, dtype, fwd_ours, 3 * elem, ceiling_gbps, {"sdpa_flash": fwd_flash})]
    out[-1]["rel err vs sdpa"] = err

    both_ours = time_ms(lambda: _fwd_bwd(prefix_attention, q, k, v, do))
    both_flash = time_ms(lambda: _fwd_bwd(lambda q, k, v: _flash(_repeat_query(q, L), k, v), q, k, v, do))
    # fewest bytes: forward reads k, v and writes o; backward reads k, v, o, dO and writes dk, dv
    out.append(row("prefix_attention fwd+bwd", shape, dtype, both_ours, 9 * elem, ceiling_gbps, {"sdpa_flash": both_flash}))
    return out


def memory_rows(ceiling_gbps: float) -> list[dict]:
    """Peak memory of forward+backward beyond the inputs, per length: linear in L."""
    out = []
    for length in MEMORY_LENGTHS:
        torch.cuda.empty_cache()
        q, k, v, do = _inputs(length, requires_grad=True)
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        _fwd_bwd(prefix_attention, q, k, v, do)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        ms = time_ms(lambda: _fwd_bwd(prefix_attention, q, k, v, do), warmup=5, rep=20)
        elem = B * H * length * D * DTYPE.itemsize
        r = row("prefix_attention fwd+bwd", f"B={B} H={H} L={length} d={D}", "bfloat16", ms, 9 * elem, ceiling_gbps, {})
        r["peak MiB"] = peak / 2**20
        r["peak / (B H L d x 2 B)"] = peak / elem
        out.append(r)
    return out


# (chunk C, chunks per block, warps, pipeline stages) for --sweep: the launches of the three-phase
# kernels worth timing at d = 64 (C = 64 with 4 warps spills in the backward, so it runs with 8
# only); two stages prefetch a block's next chunk, so only blocks of several chunks try them.
SWEEP = (
    [(16, r, w, 1) for w in (2, 4) for r in (1, 2, 4)] + [(16, 4, w, 2) for w in (2, 4)]
    + [(32, r, w, 1) for w in (4, 8) for r in (1, 2, 4)] + [(32, r, w, 2) for w in (4, 8) for r in (2, 4)]
    + [(64, 1, 8, 1), (64, 2, 8, 1), (64, 2, 8, 2)]
)


def sweep() -> list[dict]:
    """Each launch configuration of SWEEP at the benchmark shape: checked against float64, then timed.

    The forward and the backward take their defaults separately (DEFAULT_FWD, DEFAULT_BWD in
    the kernel module): the best of each is printed last. About a minute on an H100, most of
    it compiling.
    """
    from tsuite.kernels.prefix_attention import DEFAULT_BWD, DEFAULT_FWD
    from tsuite.kernels.prefix_attention_ref import prefix_attention_ref

    q, k, v, do = _inputs(L, requires_grad=True)
    leaves64 = [x.detach().double().requires_grad_() for x in (q, k, v)]
    o64 = prefix_attention_ref(*leaves64)
    want = (o64, *torch.autograd.grad(o64, leaves64, do.double()))
    del leaves64, o64
    with torch.no_grad():
        q_rep = _repeat_query(q, L)
        flash_f = time_ms(lambda: _flash(q_rep, k, v), warmup=5, rep=30)
    flash_fn = lambda q, k, v: _flash(_repeat_query(q, L), k, v)  # noqa: E731
    flash_fb = time_ms(lambda: _fwd_bwd(flash_fn, q, k, v, do), warmup=5, rep=30)
    print(f"sdpa flash: fwd {flash_f:.4f} ms, fwd+bwd {flash_fb:.4f} ms", flush=True)
    out = []
    for launch in SWEEP:
        chunk, per_block, warps, stages = launch

        def fn(q, k, v, chunk=chunk, per_block=per_block, warps=warps, stages=stages):
            return _prefix_attention_triton(
                q, k, v, chunk=chunk, segment=chunk * per_block, num_warps=warps, num_stages=stages
            )

        tag = {"chunk": chunk, "chunks/block": per_block, "warps": warps, "stages": stages}
        try:
            leaves = [x.detach().requires_grad_() for x in (q, k, v)]
            o = fn(*leaves)
            got = (o, *torch.autograd.grad(o, leaves, do))
            errs = {name: _rel_err(a.double(), b) for name, a, b in zip(("o", "dq", "dk", "dv"), got, want)}
            with torch.no_grad():
                f = time_ms(lambda: fn(q, k, v), warmup=5, rep=30)
            fb = time_ms(lambda: _fwd_bwd(fn, q, k, v, do), warmup=5, rep=30)
        except Exception as e:  # a configuration out of resources is reported, not fatal
            print(f"{tag}: {type(e).__name__} {str(e)[:200]}", flush=True)
            continue
        ok = errs["o"] < 1e-2 and errs["dv"] < 1e-2 and errs["dq"] < 5e-2 and errs["dk"] < 5e-2
        default = ("fwd " if launch == DEFAULT_FWD else "") + ("bwd" if launch == DEFAULT_BWD else "")
        out.append({**tag, "default": default.strip(),
                    "fwd ms": f, "x fwd vs flash": flash_f / f, "fwd+bwd ms": fb, "x fwd+bwd vs flash": flash_fb / fb,
                    "bwd ms": fb - f, "max err": max(errs.values()), "correct": ok})
        print(out[-1], flush=True)
    good = [r for r in out if r["correct"]]
    if good:
        bf = min(good, key=lambda r: r["fwd ms"])
        bb = min(good, key=lambda r: r["bwd ms"])
        for name, r, key in (("DEFAULT_FWD", bf, "fwd ms"), ("DEFAULT_BWD", bb, "bwd ms")):
            print(f"best: {name} = ({r['chunk']}, {r['chunks/block']}, {r['warps']}, {r['stages']}): {r[key]:.4f} ms")
    return out


def markdown(table: list[dict]) -> str:
    keys: list[str] = []
    for r in table:
        keys += [k for k in r if k not in keys]

    def fmt(x):
        if isinstance(x, float):
            return f"{x:.4g}"
        return "" if x is None else str(x)

    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r.get(k)) for k in keys) + " |" for r in table]
    return "\n".join(lines)


if __name__ == "__main__":
    print(torch.cuda.get_device_name(0))
    if "--sweep" in sys.argv:
        print(markdown(sweep()))
        print("\ndefault launch (rows of BENCHMARKS.md):")
    ceiling = copy_bandwidth_gbps()
    print(f"copy ceiling: {ceiling:.0f} GB/s")
    print(markdown(rows(ceiling)))
