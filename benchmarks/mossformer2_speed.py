"""Benchmark: MossFormer2 (tsuite.audio) against the authors' released MossFormer, same process, same card.

Both networks at full size (55.7M parameters), random weights; the authors' model is imported from the
installed ClearerVoice-Studio package (clearvoice 0.1.2, models/mossformer2_ss) without its package
__init__ (which needs its training stack), and it needs einops, rotary_embedding_torch and torchinfo.
Before timing, ours is loaded with the authors' weights (from_release_state_dict) and both outputs are
compared, so the rows time the same function.

GPU sections (--sections, CUDA-event medians after warm-up):
  - separate: 4 s and 10 s of 8 kHz audio (B = 1): the release eager fp32 and under bf16 autocast;
    ours eager, and replayed as one CUDA graph (MossFormer2.graphed) in fp32 and bf16 (10 s also with
    the K = 17 convolutions on cuDNN);
  - train: a training step at batch 4 x 4 s: forward, PIT SI-SNR loss, backward, Adam step, with
    torch.cuda.max_memory_allocated; the release in fp32 and bf16, ours in fp32 and bf16, with and
    without per-layer activation checkpointing;
  - long: one separation of a 10-minute file (B = 1), time and peak memory, where it fits;
  - profile: the CUDA kernels of one eager bf16 separation of 10 s, by total time;
  - profile_train: the CUDA kernels of one bf16 training step of ours (batch 4 x 4 s), by total time;
  - compile: MossFormer2.compile_layers() under the bf16 CUDA graph (4 s, 10 s) and in the bf16
    training step (with and without checkpointing), with compile times.
CPU mode (--cpu): separation of 4 s at 8 kHz with torch.set_num_threads(--threads), best and median of
--repeats runs, ours fp32 and bf16 autocast, the release fp32; the real-time factor is time / 4 s.

    python -m benchmarks.mossformer2_speed --sections profile,separate,train,compile --out results.json  # GPU
    python -m benchmarks.mossformer2_speed --cpu --threads 2 --repeats 3
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import itertools
import json
import os
import statistics
import sys
import time
import traceback
import types

import torch

from tsuite.audio.mossformer2 import MossFormer2, _layer_pair, from_release_state_dict

SR = 8000


def load_release_class():
    """The authors' MossFormer class from the installed clearvoice package, skipping clearvoice/__init__."""
    spec = importlib.util.find_spec("clearvoice")
    if spec is None or spec.origin is None:
        raise ImportError("clearvoice is not installed (pip install --no-deps clearvoice==0.1.2)")
    pkg = types.ModuleType("_release_mossformer2")
    pkg.__path__ = [os.path.join(os.path.dirname(spec.origin), "models", "mossformer2_ss")]
    sys.modules["_release_mossformer2"] = pkg
    return importlib.import_module("_release_mossformer2.mossformer2").MossFormer


class Release(torch.nn.Module):
    """The release's forward returns a list of (B, T) tensors; stack them to (B, S, T)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        return torch.stack(self.model(mix), dim=1)


def si_snr(est: torch.Tensor, ref: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale-invariant SNR in dB over the last axis."""
    est = est - est.mean(-1, keepdim=True)
    ref = ref - ref.mean(-1, keepdim=True)
    proj = (est * ref).sum(-1, keepdim=True) / (ref.square().sum(-1, keepdim=True) + eps) * ref
    return 10 * torch.log10(proj.square().sum(-1) / ((est - proj).square().sum(-1) + eps) + eps)


def pit_loss(est: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Negative SI-SNR under the best speaker permutation, averaged over the batch. est, ref (B, S, T)."""
    S = est.shape[1]
    scores = torch.stack([si_snr(est[:, list(p)], ref).mean(1) for p in itertools.permutations(range(S))], 1)
    return -scores.max(1).values.mean()


def build(device: str, seed: int = 0) -> tuple[torch.nn.Module, MossFormer2]:
    torch.manual_seed(seed)
    release = Release(load_release_class()(num_spks=2)).to(device)
    ours = MossFormer2(num_speakers=2).to(device)
    ours.load_state_dict(from_release_state_dict(release.model.state_dict()))
    return release, ours


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


# ------------------------------------------------------------------ GPU


def gpu_ms(fn, warmup: int = 5, rep: int = 20) -> float:
    """Median of rep timed calls (CUDA events) after warm-up calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(rep):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def gpu_separation(release, ours, results: dict) -> None:
    release.eval()
    ours.eval()
    bf16 = lambda: torch.autocast("cuda", dtype=torch.bfloat16)  # noqa: E731
    for seconds in (4, 10):
        x = torch.randn(1, seconds * SR, device="cuda")
        with torch.inference_mode():
            ref = release(x)
            out = ours(x)
            with bf16():
                out_bf16 = ours(x)
        graph32 = ours.graphed(1, x.shape[1])
        graph16 = ours.graphed(1, x.shape[1], autocast_dtype=torch.bfloat16)
        g32, g16 = graph32(x), graph16(x)
        rows = {}
        with torch.inference_mode():
            rows["release fp32"] = gpu_ms(lambda: release(x))
            with bf16():
                rows["release bf16 autocast"] = gpu_ms(lambda: release(x))
            rows["ours eager fp32"] = gpu_ms(lambda: ours(x))
            with bf16():
                rows["ours eager bf16"] = gpu_ms(lambda: ours(x))
        rows["ours CUDA graph fp32"] = gpu_ms(lambda: graph32(x))
        rows["ours CUDA graph bf16"] = gpu_ms(lambda: graph16(x))
        if seconds == 10:  # the attention's K=17 convolutions on cuDNN instead of dwconv1d, for comparison
            with cudnn_convffn():
                alt16 = ours.graphed(1, x.shape[1], autocast_dtype=torch.bfloat16)
                rows["ours CUDA graph bf16, cuDNN K=17 convs"] = gpu_ms(lambda: alt16(x))
                alt32 = ours.graphed(1, x.shape[1])
                rows["ours CUDA graph fp32, cuDNN K=17 convs"] = gpu_ms(lambda: alt32(x))
                cudnn_err = rel_err(alt32(x), out)
            del alt16, alt32
        results[f"separate_{seconds}s"] = {
            "ms": rows,
            "speedup_vs_release_fp32": {k: rows["release fp32"] / v for k, v in rows.items()},
            "rel_err_ours_vs_release_fp32": rel_err(out, ref),
            "rel_err_graph_fp32_vs_eager": rel_err(g32, out),
            **({"rel_err_cudnn_k17_graph_fp32_vs_eager": cudnn_err} if seconds == 10 else {}),
            "si_snr_db_bf16_eager_vs_fp32": float(si_snr(out_bf16.float(), out).mean()),
            "si_snr_db_bf16_graph_vs_fp32": float(si_snr(g16, out).mean()),
        }
        del graph32, graph16
        torch.cuda.empty_cache()
        print(json.dumps({f"separate_{seconds}s": results[f"separate_{seconds}s"]}, indent=1), flush=True)


class cudnn_convffn:
    """Context: route the K=17 depthwise convolutions through cuDNN (conv2d on the channels-last image)."""

    def __enter__(self):
        import tsuite.audio.fsmn as fsmn

        self.fsmn, self.original = fsmn, fsmn.depthwise_conv_time

        def conv(x, weight, dilation=1):
            if weight.shape[-1] != 17:
                return self.original(x, weight, dilation)
            C, K = weight.shape[0], weight.shape[-1]
            img = x.contiguous().transpose(1, 2)[:, :, None, :]  # (B, C, 1, L) channels-last
            y = torch.nn.functional.conv2d(img, weight.reshape(C, 1, 1, K).to(x.dtype), padding=(0, K // 2), groups=C)
            return y[:, :, 0, :].transpose(1, 2)

        fsmn.depthwise_conv_time = conv
        return self

    def __exit__(self, *exc):
        self.fsmn.depthwise_conv_time = self.original


def train_step_fn(model, opt, x, ref, autocast_dtype=None):
    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            loss = pit_loss(model(x), ref)
        loss.backward()
        opt.step()
        return loss

    return step


def gpu_training(release, ours, results: dict, steps: int = 6) -> None:
    torch.manual_seed(1)
    x = torch.randn(4, 4 * SR, device="cuda")
    ref = torch.randn(4, 2, 4 * SR, device="cuda")
    configs = [
        ("release fp32", release, None, False),
        ("release bf16 autocast", release, torch.bfloat16, False),
        ("ours fp32", ours, None, False),
        ("ours bf16", ours, torch.bfloat16, False),
        ("ours bf16 + checkpointing", ours, torch.bfloat16, True),
        ("ours fp32 + checkpointing", ours, None, True),
    ]
    rows = {}
    for name, model, dtype, ckpt in configs:
        model.train()
        if model is ours:
            ours.checkpoint_layers = ckpt
        opt = torch.optim.Adam(model.parameters(), lr=1e-5)
        step = train_step_fn(model, opt, x, ref, dtype)
        try:
            step()  # creates the optimizer state, compiles kernels
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            ms = gpu_ms(step, warmup=1, rep=steps)
            rows[name] = {"ms": ms, "peak_GiB": torch.cuda.max_memory_allocated() / 2**30}
        except torch.OutOfMemoryError:
            rows[name] = {"ms": None, "peak_GiB": "OOM"}
        del opt, step
        model.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
        print(name, rows[name], flush=True)
    ours.checkpoint_layers = False
    # same gradients with and without checkpointing (fp32, dropout off)
    ours.eval()
    grads = []
    for ckpt in (False, True):
        ours.checkpoint_layers = ckpt
        ours.zero_grad(set_to_none=True)
        with torch.enable_grad():
            pit_loss(ours(x[:1]), ref[:1]).backward()
        grads.append(torch.cat([p.grad.flatten() for p in ours.parameters()]))
    ours.checkpoint_layers = False
    ours.zero_grad(set_to_none=True)
    base = rows["release fp32"]
    results["train_step_4x4s"] = {
        "rows": rows,
        "grad_rel_err_checkpoint_vs_plain": rel_err(grads[1], grads[0]),
        "speedup_vs_release_fp32": {k: base["ms"] / v["ms"] for k, v in rows.items() if v["ms"]},
        "memory_ratio_vs_release_fp32": {
            k: v["peak_GiB"] / base["peak_GiB"] for k, v in rows.items() if isinstance(v["peak_GiB"], float)
        },
    }


def gpu_long_file(release, ours, results: dict, minutes: int = 10) -> None:
    release.eval()
    ours.eval()
    x = torch.randn(1, minutes * 60 * SR, device="cuda")
    rows = {}
    for name, model, dtype in [("ours bf16", ours, torch.bfloat16), ("ours fp32", ours, None),
                               ("release fp32", release, None)]:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        try:
            with torch.inference_mode(), torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
                model(x)
                torch.cuda.synchronize()
                t = time.perf_counter()
                model(x)
                torch.cuda.synchronize()
            rows[name] = {"s": time.perf_counter() - t, "peak_GiB": torch.cuda.max_memory_allocated() / 2**30}
        except torch.OutOfMemoryError:
            rows[name] = {"s": None, "peak_GiB": "OOM"}
        print(name, rows[name], flush=True)
    results[f"separate_{minutes}min"] = rows


def gpu_profile(release, ours, results: dict, seconds: int = 10, top: int = 15) -> None:
    """The CUDA kernels of one eager bf16 separation of `seconds` s, by total time (where the time goes)."""
    from torch.profiler import ProfilerActivity, profile

    ours.eval()
    x = torch.randn(1, seconds * SR, device="cuda")
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        ours(x)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            ours(x)
            torch.cuda.synchronize()
    events = sorted(prof.key_averages(), key=lambda e: e.device_time_total, reverse=True)
    total = sum(e.device_time_total for e in events)
    results[f"profile_bf16_{seconds}s"] = {
        "gpu_busy_ms": total / 1e3,
        "kernels": [(e.key[:90], e.count, round(e.device_time_total / 1e3, 3)) for e in events[:top]],
    }
    print(json.dumps(results[f"profile_bf16_{seconds}s"], indent=1), flush=True)


def gpu_profile_train(release, ours, results: dict, top: int = 30) -> None:
    """The CUDA kernels of one bf16 training step (batch 4 x 4 s) of ours, by total time."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(1)
    x = torch.randn(4, 4 * SR, device="cuda")
    ref = torch.randn(4, 2, 4 * SR, device="cuda")
    ours.train()
    opt = torch.optim.Adam(ours.parameters(), lr=1e-5)
    step = train_step_fn(ours, opt, x, ref, torch.bfloat16)
    step()
    step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    events = sorted(prof.key_averages(), key=lambda e: e.device_time_total, reverse=True)
    total = sum(e.device_time_total for e in events)
    results["profile_train_bf16_4x4s"] = {
        "gpu_busy_ms": total / 1e3,
        "kernels": [(e.key[:90], e.count, round(e.device_time_total / 1e3, 3)) for e in events[:top]],
    }
    del opt, step
    ours.zero_grad(set_to_none=True)
    torch.cuda.empty_cache()
    print(json.dumps(results["profile_train_bf16_4x4s"], indent=1), flush=True)


def gpu_compiled(release, ours, results: dict) -> None:
    """torch.compile'd layer pairs: separation (CUDA graph, bf16) and the bf16 training step."""
    import torch._dynamo

    torch._dynamo.config.cache_size_limit = 32
    out = {}
    t0 = time.perf_counter()
    ours.eval().compile_layers()
    for seconds in (4, 10):
        x = torch.randn(1, seconds * SR, device="cuda")
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            t = time.perf_counter()
            y = ours(x)
            torch.cuda.synchronize()
            out[f"compile_s_{seconds}s_bf16"] = time.perf_counter() - t
        ours._layer_fn, compiled = _layer_pair, ours._layer_fn
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            eager = ours(x)
        ours._layer_fn = compiled
        graph = ours.graphed(1, x.shape[1], autocast_dtype=torch.bfloat16)
        out[f"separate_{seconds}s_compiled_graph_bf16_ms"] = gpu_ms(lambda: graph(x))
        out[f"separate_{seconds}s_si_snr_db_compiled_vs_eager_bf16"] = float(si_snr(y.float(), eager.float()).mean())
        del graph
        print(out, flush=True)
    torch.manual_seed(1)
    xb = torch.randn(4, 4 * SR, device="cuda")
    ref = torch.randn(4, 2, 4 * SR, device="cuda")
    for name, ckpt in [("train_bf16_compiled_checkpointing", True), ("train_bf16_compiled", False)]:
        ours.train()
        ours.checkpoint_layers = ckpt
        opt = torch.optim.Adam(ours.parameters(), lr=1e-5)
        step = train_step_fn(ours, opt, xb, ref, torch.bfloat16)
        try:
            t = time.perf_counter()
            step()
            torch.cuda.synchronize()
            out[f"{name}_compile_s"] = time.perf_counter() - t
            torch.cuda.reset_peak_memory_stats()
            out[f"{name}_ms"] = gpu_ms(step, warmup=1, rep=6)
            out[f"{name}_peak_GiB"] = torch.cuda.max_memory_allocated() / 2**30
        except torch.OutOfMemoryError:
            out[f"{name}_ms"] = "OOM"
        del opt, step
        ours.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
        print(out, flush=True)
    ours.checkpoint_layers = False
    ours._layer_fn = _layer_pair
    out["total_s"] = time.perf_counter() - t0
    results["compiled"] = out
    print(out, flush=True)


# ------------------------------------------------------------------ CPU


def cpu_rows(threads: int, repeats: int, which: list[str]) -> dict:
    torch.set_num_threads(threads)
    release, ours = build("cpu")
    release.eval()
    ours.eval()
    x = torch.randn(1, 4 * SR)
    out = {"threads": threads, "load_before": os.getloadavg()}
    with torch.inference_mode():
        y32 = ours(x)  # also the warm-up
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ours(x)
        for name in which:
            model, dtype = {"ours fp32": (ours, None), "ours bf16": (ours, torch.bfloat16),
                            "release fp32": (release, None)}[name]
            times, cpu_times, loads = [], [], []
            for _ in range(repeats if name.startswith("ours") else max(1, repeats - 1)):
                loads.append(os.getloadavg()[0])
                t, c = time.perf_counter(), time.process_time()
                with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                    y = model(x)
                times.append(time.perf_counter() - t)
                cpu_times.append(time.process_time() - c)
            out[name] = {"best_s": min(times), "median_s": statistics.median(times), "all_s": times,
                         "process_cpu_s": cpu_times, "load_1min": loads,
                         "rtf_best": min(times) / 4, "rtf_median": statistics.median(times) / 4,
                         "si_snr_db_vs_ours_fp32": float(si_snr(y.float(), y32).mean())}
            print(name, out[name], flush=True)
    out["load_after"] = os.getloadavg()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", action="store_true", help="CPU mode: 4 s separation, real-time factor")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", default="ours bf16,ours fp32,release fp32", help="CPU rows, comma-separated")
    ap.add_argument("--sections", default="separate,train,long,profile,compile", help="GPU sections, comma-separated")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    if args.cpu:
        results = {"device": "cpu", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                   **cpu_rows(args.threads, args.repeats, args.models.split(","))}
    else:
        results = {"device": torch.cuda.get_device_name(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                   "torch": torch.__version__}
        release, ours = build("cuda")
        runners = {"separate": gpu_separation, "train": gpu_training, "long": gpu_long_file,
                   "profile": gpu_profile, "profile_train": gpu_profile_train, "compile": gpu_compiled}
        for section in args.sections.split(","):
            try:  # one failing section must not lose the others' numbers
                runners[section](release, ours, results)
            except Exception as exc:  # noqa: BLE001
                results[f"{section}_error"] = traceback.format_exc()
                print(f"section {section} failed: {exc!r}", flush=True)
            write_json(results, args.out)
    print(json.dumps(results, indent=1))
    write_json(results, args.out)


def write_json(results: dict, path: str | None) -> None:
    """Write results to path atomically (temporary file, then rename)."""
    if path:
        with open(path + ".tmp", "w") as f:
            json.dump(results, f, indent=1)
        os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
