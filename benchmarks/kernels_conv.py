"""Benchmark: depthwise dilated convolution against cuDNN, FFT long convolution against the plain torch.fft form.

dwconv1d at the MossFormer2 FSMN shapes (B, C, L, K, d) = (4, 512, 16000, 39, 1)
and (2, 1024, 8000, 39, 2), centred, and the TCN shapes (8, 256, 32768, 3, 64)
and (4, 512, 16000, 3, 8), causal; float32 and bfloat16; forward, and
forward+backward (gradients for x, weight and bias). The peer is cuDNN through
F.conv1d(groups=C) (padding=P for the centred case, an explicit left F.pad for
the causal one), in the same dtype. fftconv at (B, H, L) = (16, 256, 4096) and
(4, 256, 16384), float32, against y = irfft(rfft(u, 2L) rfft(k, 2L))[:L] + D u
with autograd. Every peer is timed in this process on the same inputs, after
its output (and gradients) were checked against ours. Bytes are the fewest the
operation must move: forward reads x and writes y; forward+backward also reads
x and grad_y again and writes grad_x (5 tensors).

    python -m benchmarks.kernels_conv          # markdown table
    python -m benchmarks.kernels_conv --sweep  # dwconv1d launch-choice sweep (path, row width, warps)
    python -m benchmarks.kernels_conv --channels-last  # MossFormer2's (B, L, C) shapes: now vs earlier vs cuDNN
    python -m benchmarks.kernels_conv --sweep-channels-last  # the sweep that chose the channels-last tiles
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from benchmarks.common import copy_bandwidth_gbps, row, time_ms
from tsuite.kernels.dwconv1d import _dwconv1d_triton, choose_path, dwconv1d
from tsuite.kernels.dwconv1d_ref import left_padding
from tsuite.kernels.fftconv import fftconv
from tsuite.kernels.fftconv_ref import fftconv_ref

DW_SHAPES = [  # (name, B, C, L, K, d, causal)
    ("FSMN", 4, 512, 16000, 39, 1, False),
    ("FSMN", 2, 1024, 8000, 39, 2, False),
    ("TCN", 8, 256, 32768, 3, 64, True),
    ("TCN", 4, 512, 16000, 3, 8, True),
]
DW_DTYPES = (torch.float32, torch.bfloat16)
FFT_SHAPES = [(16, 256, 4096), (4, 256, 16384)]


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def _cudnn_dwconv(x, w, b, d, causal):
    """The usual PyTorch depthwise convolution: cuDNN, with an explicit left pad when causal."""
    K = w.shape[1]
    P = left_padding(K, d, causal)
    if causal:
        return F.conv1d(F.pad(x, (P, 0)), w[:, None, :], b, dilation=d, groups=x.shape[1])
    if (K - 1) * d % 2 == 0:
        return F.conv1d(x, w[:, None, :], b, padding=P, dilation=d, groups=x.shape[1])
    return F.conv1d(x, w[:, None, :], b, padding="same", dilation=d, groups=x.shape[1])


def _dw_inputs(B, C, L, K, dtype, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(B, C, L, device="cuda", generator=g).to(dtype)
    w = (torch.randn(C, K, device="cuda", generator=g) / K**0.5).to(dtype)
    b = torch.randn(C, device="cuda", generator=g).to(dtype)
    gy = torch.randn(B, C, L, device="cuda", generator=g).to(dtype)
    return x, w, b, gy


def _fwd_bwd(fn, x, w, b, gy):
    leaves = [t.detach().requires_grad_() for t in (x, w, b)]
    y = fn(*leaves)
    return (y, *torch.autograd.grad(y, leaves, gy))


def dwconv_rows(ceiling_gbps: float) -> list[dict]:
    """Ours vs cuDNN at the FSMN and TCN shapes, after checking outputs and gradients agree."""
    out = []
    for name, B, C, L, K, d, causal in DW_SHAPES:
        for dtype in DW_DTYPES:
            x, w, b, gy = _dw_inputs(B, C, L, K, dtype)
            shape = f"{name} B={B} C={C} L={L} K={K} d={d} {'causal' if causal else 'centred'}"
            dt = str(dtype).removeprefix("torch.")
            ours = lambda x, w, b: dwconv1d(x, w, b, d, causal)  # noqa: E731
            peer = lambda x, w, b: _cudnn_dwconv(x, w, b, d, causal)  # noqa: E731
            # Same function first (16-bit: both round once; the float64 check is tests/gpu).
            tol = 2e-3 if dtype == torch.float32 else 2e-2  # cuDNN may use TF32 for float32 (PyTorch default)
            got, want = _fwd_bwd(ours, x, w, b, gy), _fwd_bwd(peer, x, w, b, gy)
            for what, a, r in zip(("y", "grad_x", "grad_w", "grad_b"), got, want):
                e = _rel_err(a, r)
                if not e < tol:
                    raise RuntimeError(
                        f"dwconv1d {shape} {dt}: {what} differs from cuDNN by {e:.2e}: no speed-up reported"
                    )
            elem = B * C * L * dtype.itemsize
            with torch.no_grad():
                f_ours, f_peer = time_ms(lambda: ours(x, w, b)), time_ms(lambda: peer(x, w, b))
            r = row("dwconv1d fwd", shape, dt, f_ours, 2 * elem, ceiling_gbps, {"cudnn": f_peer})
            r["path"] = choose_path(K, d, left_padding(K, d, causal), 1, dtype.itemsize)
            out.append(r)
            fb_ours = time_ms(lambda: _fwd_bwd(ours, x, w, b, gy))
            fb_peer = time_ms(lambda: _fwd_bwd(peer, x, w, b, gy))
            out.append(row("dwconv1d fwd+bwd", shape, dt, fb_ours, 5 * elem, ceiling_gbps, {"cudnn": fb_peer}))
    return out


def _fft_inputs(B, H, L, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    u = torch.randn(B, H, L, device="cuda", generator=g)
    k = torch.randn(H, L, device="cuda", generator=g) * torch.exp(-torch.arange(L, device="cuda") / (0.1 * L))
    D = torch.randn(H, device="cuda", generator=g)
    gy = torch.randn(B, H, L, device="cuda", generator=g)
    return u, k, D, gy


def fftconv_rows(ceiling_gbps: float) -> list[dict]:
    """Ours (fused spectrum kernels, packed half-length inverse) vs the plain rfft/irfft formulation."""
    out = []
    for B, H, L in FFT_SHAPES:
        u, k, D, gy = _fft_inputs(B, H, L)
        shape = f"B={B} H={H} L={L}"
        got, want = _fwd_bwd(fftconv, u, k, D, gy), _fwd_bwd(fftconv_ref, u, k, D, gy)
        for what, a, r in zip(("y", "grad_u", "grad_k", "grad_D"), got, want):
            e = _rel_err(a, r)
            if not e < 1e-4:
                raise RuntimeError(f"fftconv {shape}: {what} differs from the plain formulation by {e:.2e}")
        elem = B * H * L * 4
        with torch.no_grad():
            f_ours, f_peer = time_ms(lambda: fftconv(u, k, D)), time_ms(lambda: fftconv_ref(u, k, D))
        out.append(row("fftconv fwd", shape, "float32", f_ours, 2 * elem, ceiling_gbps, {"torch_fft": f_peer}))
        fb_ours = time_ms(lambda: _fwd_bwd(fftconv, u, k, D, gy))
        fb_peer = time_ms(lambda: _fwd_bwd(fftconv_ref, u, k, D, gy))
        out.append(row("fftconv fwd+bwd", shape, "float32", fb_ours, 5 * elem, ceiling_gbps, {"torch_fft": fb_peer}))
    return out


def rows(ceiling_gbps: float) -> list[dict]:
    """dwconv1d rows (forward, forward+backward vs cuDNN), then fftconv rows (vs plain torch.fft)."""
    return dwconv_rows(ceiling_gbps) + fftconv_rows(ceiling_gbps)


def sweep() -> list[dict]:
    """dwconv1d times at the benchmark shapes under other launch choices (forward; forward+backward)."""
    out = []
    variants = [dict(path="direct"), dict(path="dense"), dict(path="dense", v=16), dict(path="dense", v=32),
                dict(path="dense", v=64), dict(path="dense", num_warps=4), dict(path="dense", num_warps=8),
                dict(path="dense", num_stages=3), dict(path="direct", block_c=2, block_t=1024),
                dict(path="direct", block_c=8, block_t=256), dict(path="direct", num_warps=8)]
    for name, B, C, L, K, d, causal in DW_SHAPES:
        for dtype in DW_DTYPES:
            x, w, b, gy = _dw_inputs(B, C, L, K, dtype)
            elem = B * C * L * dtype.itemsize
            for ov in variants:
                if K < 8 and ov["path"] == "dense":
                    continue
                fn = lambda x, w, b: _dwconv1d_triton(x, w, b, d, causal, **ov)  # noqa: E731
                try:
                    with torch.no_grad():
                        f = time_ms(lambda: fn(x, w, b), warmup=5, rep=30)
                    fb = time_ms(lambda: _fwd_bwd(fn, x, w, b, gy), warmup=5, rep=30)
                except Exception as e:  # a configuration out of resources is reported, not fatal
                    print(f"{name} K={K} d={d} {dtype} {ov}: {type(e).__name__} {str(e)[:200]}")
                    continue
                out.append({"shape": f"{name} K={K} d={d}", "dtype": str(dtype).removeprefix("torch."),
                            "config": " ".join(f"{k}={v}" for k, v in ov.items()),
                            "fwd ms": f, "fwd GB/s": 2 * elem / f / 1e6, "fwd+bwd ms": fb})
    return out


MOSSFORMER_SHAPES = [  # (name, C, K, d): the seven depthwise convolutions of one MossFormer2 layer pair
    ("attn v,u", 2048, 17, 1), ("attn qk", 128, 17, 1), ("attn out", 512, 17, 1), ("fsmn gate", 256, 17, 1),
    ("fsmn mem 1", 256, 39, 1), ("fsmn mem 2", 512, 39, 2),
]


def _channels_last_inputs(B, L, C, K, dtype, seed=0):
    """x and grad_y as (B, C, L) views of channels-last (B, L, C) tensors, and taps (C, K)."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(B, L, C, device="cuda", generator=g).to(dtype).transpose(1, 2)
    gy = torch.randn(B, L, C, device="cuda", generator=g).to(dtype).transpose(1, 2)
    w = (torch.randn(C, K, device="cuda", generator=g) / K**0.5).to(dtype)
    return x, w, gy


def sweep_channels_last(batches=((1, 10000), (4, 4000)), dtype=torch.bfloat16) -> list[dict]:
    """The direct path on MossFormer2's channels-last (B, L, C) shapes under launch choices: forward, grad_x and
    grad_w kernels timed on their own, with the bytes each must move (GB/s), and cuDNN's forward."""
    from tsuite.kernels.dwconv1d import ConvConfig, _conv, _weight_grad

    out = []
    tiles = [(bc, bt, nw) for bc in (32, 64, 128) for bt in (8, 16, 32, 64) for nw in (4, 8) if bc * bt <= 8192]
    for B, L in batches:
        for name, C, K, d in MOSSFORMER_SHAPES:
            x, w, gy = _channels_last_inputs(B, L, C, K, dtype)
            pad = left_padding(K, d, False)
            ref = _cudnn_dwconv(x.float(), w.float(), None, d, False)
            elem = B * C * L * dtype.itemsize
            with torch.no_grad():
                peer = time_ms(lambda: _cudnn_dwconv(x, w, None, d, False), warmup=5, rep=30)
            for bc, bt, nw in tiles:
                for unroll in ((16, 64) if K > 16 else (16,)):
                    cfg = ConvConfig(path="direct", block_c=bc, block_t=bt, num_warps=nw, unroll=unroll)
                    y = torch.empty_like(x)
                    try:
                        _conv(x, w, None, d, pad, False, cfg, y)
                        err = _rel_err(y, ref)
                        f = time_ms(lambda: _conv(x, w, None, d, pad, False, cfg, y), warmup=3, rep=20)
                        gx = time_ms(lambda: _conv(gy, w, None, d, (K - 1) * d - pad, True, cfg, y), warmup=3, rep=20)
                        gw = time_ms(lambda: _weight_grad(x, gy, K, d, pad, cfg), warmup=3, rep=20)
                    except Exception as e:  # out of resources: reported, not fatal
                        print(f"{name} B={B} {bc}x{bt} w{nw} u{unroll}: {type(e).__name__} {str(e)[:120]}")
                        continue
                    r = {"shape": f"{name} B={B} L={L} C={C} K={K} d={d}", "config": f"{bc}x{bt} w{nw} u{unroll}",
                         "err": err, "fwd ms": f, "fwd GB/s": 2 * elem / f / 1e6, "grad_x ms": gx,
                         "grad_w ms": gw, "grad_w GB/s": 2 * elem / gw / 1e6, "cudnn fwd ms": peer}
                    out.append(r)
                    print(r, flush=True)
    return out


def channels_last_rows(batches=((1, 10000), (4, 4000)), dtype=torch.bfloat16) -> list[dict]:
    """MossFormer2's channels-last shapes: the launch choices dwconv1d makes now against the earlier ones
    (64 x 16 tiles, tap loop unrolled up to 16 taps, tile-wise weight gradient) and against cuDNN, forward
    and forward+backward (grad_x, grad_w), after checking every output against cuDNN in float32."""
    from tsuite.kernels.dwconv1d import ConvConfig, _backward, _conv, make_config

    earlier = ConvConfig(path="direct", block_c=64, block_t=16, unroll=16, wgrad="tile")
    out = []
    for B, L in batches:
        for name, C, K, d in MOSSFORMER_SHAPES:
            x, w, gy = _channels_last_inputs(B, L, C, K, dtype)
            pad = left_padding(K, d, False)
            now = make_config(x.stride(), C, K, d, pad, dtype.itemsize)
            xr, wr = x.float().requires_grad_(), w.float().requires_grad_()
            yr = _cudnn_dwconv(xr, wr, None, d, False)
            gxr, gwr = torch.autograd.grad(yr, (xr, wr), gy.float())
            r = {"shape": f"{name} B={B} L={L} C={C} K={K} d={d}", "config now": f"{now.block_c}x{now.block_t}"}
            for label, cfg in (("now", now), ("earlier", earlier)):
                overrides = {f: getattr(cfg, f) for f in ("block_c", "block_t", "unroll", "wgrad")}
                y = _conv(x, w, None, d, pad, False, cfg, torch.empty_like(x))
                gx, gw, _ = _backward(gy, x, w, None, d, False, (True, True, False), "direct", overrides)
                r[f"err {label}"] = max(_rel_err(y, yr), _rel_err(gx, gxr), _rel_err(gw, gwr))
                r[f"fwd ms {label}"] = time_ms(lambda: _conv(x, w, None, d, pad, False, cfg, y), warmup=5, rep=30)
                r[f"bwd ms {label}"] = time_ms(
                    lambda: _backward(gy, x, w, None, d, False, (True, True, False), "direct", overrides),
                    warmup=5, rep=30)
            with torch.no_grad():
                r["fwd ms cudnn"] = time_ms(lambda: _cudnn_dwconv(x, w, None, d, False), warmup=5, rep=30)
            xl, wl = x.detach().requires_grad_(), w.detach().requires_grad_()
            r["fwd+bwd ms cudnn"] = time_ms(
                lambda: torch.autograd.grad(_cudnn_dwconv(xl, wl, None, d, False), (xl, wl), gy), warmup=5, rep=30)
            r["fwd+bwd speed-up vs earlier"] = (r["fwd ms earlier"] + r["bwd ms earlier"]) / (r["fwd ms now"]
                                                                                          + r["bwd ms now"])
            r["fwd+bwd speed-up vs cudnn"] = r["fwd+bwd ms cudnn"] / (r["fwd ms now"] + r["bwd ms now"])
            out.append(r)
            print(r, flush=True)
    return out


def main(argv: list[str]) -> int:
    from benchmarks.kernels import table

    if "--channels-last" in argv:
        print(torch.cuda.get_device_name())
        print(table(channels_last_rows()))
        return 0

    if "--sweep-channels-last" in argv:
        print(table(sweep_channels_last()))
        return 0
    if "--sweep" in argv:
        print(table(sweep()))
        return 0
    ceiling = copy_bandwidth_gbps()
    print(f"{torch.cuda.get_device_name()}; copy ceiling {ceiling:.0f} GB/s\n")
    print(table(rows(ceiling)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
