"""Training throughput and peak memory of the Aaren event model against its Transformer baseline.

``python -m benchmarks.aaren_throughput`` on a CUDA machine: the event model of
``configs/events/aaren_hawkes.yaml`` (3 marks) with an Aaren or a causal-softmax
Transformer encoder, one optimiser step per batch on random event sequences of
1k, 4k and 16k events (65,536 events per batch), fp32, in the same process.
Prints a markdown table: sequences/s, events/s, peak GPU memory.
"""

from __future__ import annotations

import sys

import torch

from tsuite.forecasting import EventForecaster

LENGTHS = (1024, 4096, 16384)
EVENTS_PER_BATCH = 65536


def batch(length: int, size: int, n_marks: int = 3, device: str = "cuda") -> dict[str, torch.Tensor]:
    g = torch.Generator(device=device).manual_seed(0)
    tau = torch.empty(size, length, device=device).exponential_(1.0, generator=g)
    return {
        "tau": tau,
        "time": tau.cumsum(-1),
        "mark": torch.randint(0, n_marks, (size, length), device=device, generator=g),
        "mask": torch.ones(size, length, dtype=torch.bool, device=device),
    }


def measure(encoder: str, length: int, steps: int = 10) -> dict:
    torch.manual_seed(0)
    model = EventForecaster(n_marks=3, encoder=encoder, d_model=64, n_heads=4, n_layers=2, d_ff=128).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    size = max(1, EVENTS_PER_BATCH // length)
    data = batch(length, size)

    def step() -> None:
        lp_tau, lp_mark, _ = model.event_log_likelihood(data)
        loss = -(lp_tau + lp_mark).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(steps):
        step()
    end.record()
    torch.cuda.synchronize()
    seconds = start.elapsed_time(end) / 1e3 / steps
    return {"encoder": encoder, "L": length, "batch": size, "ms/step": 1e3 * seconds,
            "sequences/s": size / seconds, "events/s": size * length / seconds,
            "peak GiB": torch.cuda.max_memory_allocated() / 2**30}


def main() -> int:
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, fp32, {EVENTS_PER_BATCH} events per batch")
    print("| encoder | L | batch | ms/step | sequences/s | events/s | peak GiB |")
    print("|---|---|---|---|---|---|---|")
    for length in LENGTHS:
        for encoder in ("aaren", "transformer"):
            try:
                r = measure(encoder, length)
                print(f"| {r['encoder']} | {r['L']} | {r['batch']} | {r['ms/step']:.2f} | {r['sequences/s']:.1f} | "
                      f"{r['events/s']:.3g} | {r['peak GiB']:.2f} |", flush=True)
            except torch.cuda.OutOfMemoryError:
                print(f"| {encoder} | {length} | | out of memory | | | |", flush=True)
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
