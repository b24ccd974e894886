"""MossFormer2 against Conv-TasNet under the same training budget, and the memory of ``tsuite separate``.

Both networks train for the same wall-clock seconds on the same generated espeak-ng corpus at 8 kHz
(same on-the-fly two-speaker mixtures, same batch size and crop length, Adam, gradient clipping at
5, fp32 with TF32 matmuls), one after the other in this process on the same card; then each is
scored on the same held-out test mixtures (utterances never used in training; SI-SNRi and SDRi,
the permutation chosen by SI-SNR). Finally ``tsuite separate``'s code path
(:func:`tsuite.audio.separate_job.separate_paths`) separates a 10-minute 8 kHz file with each model,
and the peak GPU memory (``torch.cuda.max_memory_allocated``) and wall time are recorded.

    python -m benchmarks.separation_training --corpus CORPUS_DIR --out OUT_DIR [--budget 120]

Writes ``separation_training.json`` and ``separation_training.md`` (a table) to OUT_DIR.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from tsuite.audio.losses import pit_si_snr_loss, separation_scores
from tsuite.audio.mixture_data import MixtureDataModule
from tsuite.audio.separate_job import separate_paths
from tsuite.audio.separation import SpeechSeparation

# The reduced MossFormer2 (the paper's is 24 layers of width 512) and a Conv-TasNet of the paper's
# best size (N=512, L=16, B=128, H=512, P=3, X=8, R=3).
NETWORKS = {
    "mossformer2": {"enc_channels": 256, "model_dim": 256, "num_layers": 6, "group_size": 256,
                    "query_key_dim": 64, "fsmn_channels": 128, "dropout": 0.0},
    "convtasnet": {"enc_kernel_size": 16, "enc_channels": 512, "bottleneck_channels": 128, "hidden_channels": 512,
                   "kernel_size": 3, "num_layers": 8, "num_stacks": 3},
}
TINY = {
    "mossformer2": {"enc_channels": 32, "model_dim": 32, "num_layers": 1, "group_size": 64, "query_key_dim": 16,
                    "fsmn_channels": 16, "dropout": 0.0},
    "convtasnet": {"enc_kernel_size": 16, "enc_channels": 32, "bottleneck_channels": 16, "hidden_channels": 32,
                   "kernel_size": 3, "num_layers": 2, "num_stacks": 1},
}


def train_for(model: SpeechSeparation, loader, seconds: float, device: torch.device, lr: float) -> dict:
    """Train until ``seconds`` of wall-clock time have passed (data loading included); returns counts."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    steps, losses = 0, []
    start = time.perf_counter()
    while True:
        for batch in loader:
            mix = batch["mix"].to(device, non_blocking=True)  # (B, T)
            ref = batch["sources"].to(device, non_blocking=True)  # (B, S, T)
            loss = pit_si_snr_loss(model(mix)[..., : ref.shape[-1]], ref)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            steps += 1
            losses.append(loss.item())  # synchronises: the clock below sees finished work
            if time.perf_counter() - start >= seconds:
                return {"steps": steps, "seconds": time.perf_counter() - start,
                        "final_train_loss": float(np.mean(losses[-20:]))}


@torch.no_grad()
def evaluate(model: SpeechSeparation, dataset, device: torch.device) -> dict:
    model.eval()
    rows = []
    for i in range(len(dataset)):
        item = dataset[i]
        mix = item["mix"][None].to(device)
        ref = item["sources"][None].to(device)
        rows.append({k: float(v) for k, v in separation_scores(model(mix), ref, mix).items()})
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} | {"mixtures": len(rows)}


def long_file(dataset, seconds: float, rate: int, path: Path) -> Path:
    """Concatenate test mixtures into one file of ``seconds`` seconds."""
    parts, total, i = [], 0, 0
    while total < seconds * rate:
        mix = dataset[i % len(dataset)]["mix"].numpy()
        parts.append(mix)
        total += len(mix)
        i += 1
    sf.write(str(path), np.concatenate(parts)[: int(seconds * rate)], rate, subtype="FLOAT")
    return path


def separate_memory(model: SpeechSeparation, wav: Path, device: torch.device, chunk: float, overlap: float) -> dict:
    model.eval()
    with tempfile.TemporaryDirectory() as out:
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() if device.type == "cuda" else 0
        start = time.perf_counter()
        separate_paths(model, wav, Path(out), chunk_seconds=chunk, overlap_seconds=overlap, progress=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else 0
    return {"seconds": elapsed, "peak_gib": peak / 2**30, "weights_gib": base / 2**30}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", required=True, help="an espeak corpus folder (<speaker>/<utt>.wav)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--budget", type=float, default=120.0, help="training seconds per network")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--segment-seconds", type=float, default=2.0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--test-mixtures", type=int, default=100)
    parser.add_argument("--long-seconds", type=float, default=600.0, help="length of the file for tsuite separate")
    parser.add_argument("--workers", type=int, default=6)
    parser.add_argument("--tiny", action="store_true", help="tiny networks (a CPU check of the script)")
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = MixtureDataModule(args.corpus, sample_rate=8000, segment_seconds=args.segment_seconds,
                             eval_segment_seconds=4.0, train_mixtures=10**6, val_mixtures=0,
                             test_mixtures=args.test_mixtures, val_size=0.0, test_size=0.15,
                             batch_size=args.batch_size, num_workers=args.workers)
    data.setup()
    card = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    results = {"card": card, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "budget_s": args.budget,
               "batch_size": args.batch_size, "segment_seconds": args.segment_seconds, "lr": args.lr,
               "corpus_speakers": len(data.datasets["train"].pool.speakers), "models": {}}
    wav = long_file(data.datasets["test"], args.long_seconds, 8000, Path(tempfile.mkdtemp()) / "long.wav")
    for name in args.networks:
        kwargs = (TINY if args.tiny else NETWORKS)[name]
        loader = data.train_dataloader()
        # Warm-up outside the budget on a throwaway copy: Triton/cuDNN compile and tune for these shapes once.
        warm = SpeechSeparation(network=name, network_kwargs=kwargs, sample_rate=8000).to(device)
        train_for(warm, loader, 0.0, device, args.lr)
        train_for(warm, loader, 0.0, device, args.lr)
        del warm
        torch.manual_seed(0)
        model = SpeechSeparation(network=name, network_kwargs=kwargs, sample_rate=8000).to(device)
        params = sum(p.numel() for p in model.parameters())
        trained = train_for(model, loader, args.budget, device, args.lr)
        scores = evaluate(model, data.datasets["test"], device)
        memory = separate_memory(model, wav, device, chunk=10.0, overlap=1.0)
        results["models"][name] = {"params": params, "kwargs": kwargs, **trained, "test": scores,
                                   "separate_10min": memory}
        print(name, json.dumps(results["models"][name]), flush=True)
        (out / "separation_training.json").write_text(json.dumps(results, indent=1))  # after each network
    lines = [f"Card: {card}, {results['date']}; {args.budget:.0f} s of training each, batch {args.batch_size} x "
             f"{args.segment_seconds:.0f} s crops at 8 kHz, Adam lr {args.lr:g}.", "",
             "| network | parameters | steps | test SI-SNRi (dB) | test SDRi (dB) | separate 10 min: peak GPU memory (GiB) "
             "| separate 10 min: seconds |", "|---|---|---|---|---|---|---|"]
    for name, r in results["models"].items():
        lines.append(f"| {name} | {r['params'] / 1e6:.2f}M | {r['steps']} | {r['test']['si_snri']:.2f} | "
                     f"{r['test']['sdri']:.2f} | {r['separate_10min']['peak_gib']:.3f} | "
                     f"{r['separate_10min']['seconds']:.1f} |")
    (out / "separation_training.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
