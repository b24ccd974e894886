"""EasyTPP's THP and NHP on the Hawkes sequences of ``benchmarks.aaren_events`` (optional peers).

EasyTPP (PyPI ``easy-tpp``) is not a tsuite dependency. Install it beside tsuite's environment
without touching it, e.g. ``pip install --no-deps --target DIR easy-tpp==0.3.0 omegaconf
antlr4-python3-runtime==4.9.3`` (its runner's ``datasets`` / ``tensorboard`` are not used here), and run
with ``PYTHONPATH=DIR``:

    python -m benchmarks.easytpp_events [--epochs 30] [--seeds 1]

(or ``python -m benchmarks.aaren_events --easytpp`` for the whole table)
to train its Transformer Hawkes Process (Zuo et al. 2020) and Neural Hawkes Process (Mei & Eisner
2017) models directly (its model classes and their ``loglike_loss``, with our own data loop) on the
same training sequences, and to evaluate them on the same test events with the same convention as
the table in docs/aaren_results.md: every sequence starts at time 0 (a start-of-sequence event at
time 0 is prepended as input, so event 1 is scored as well) and the NLL per event is
−[log λ_{m_i}(t_i) − ∫_{t_{i−1}}^{t_i} Σ_k λ_k dt], with the integral evaluated on 512 points per
interval at test time (training uses EasyTPP's default 20-point trapezoid). E[τ] and the mark
probabilities come from the model's intensity by quadrature of its survival function.
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import numpy as np
import torch

from benchmarks.aaren_events import data_module, load

BOS, PAD = 3, 4  # type ids beyond the 3 marks


def easytpp_model(kind: str, n_marks: int, hidden: int, layers: int, heads: int):
    from easy_tpp.model.nhp import NHP
    from easy_tpp.model.thp import THP

    config = SimpleNamespace(
        loss_integral_num_sample_per_step=20, hidden_size=hidden, num_event_types=n_marks,
        num_event_types_pad=n_marks + 2, pad_token_id=PAD, thinning=None, gpu=-1, use_mc_samples=False,
        time_emb_size=hidden, use_ln=False, num_layers=layers, num_heads=heads, dropout_rate=0.0,
        model_specs={},
    )
    return (THP if kind == "THP" else NHP)(config)


def batch_of(seqs) -> dict[str, torch.Tensor]:
    n = max(len(t) for _, t, _ in seqs) + 1
    B = len(seqs)
    times, dts = torch.zeros(B, n), torch.zeros(B, n)
    types = torch.full((B, n), PAD, dtype=torch.long)
    real = torch.zeros(B, n, dtype=torch.bool)
    for i, (_, t, m) in enumerate(seqs):
        k = len(t) + 1
        times[i, 1:k] = torch.from_numpy(t)
        dts[i, 1:k] = torch.from_numpy(np.diff(t, prepend=0.0))
        types[i, 0], types[i, 1:k] = BOS, torch.from_numpy(m)
        real[i, :k] = True
    causal = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)[None]
    return {"time_seqs": times, "time_delta_seqs": dts, "type_seqs": types, "seq_non_pad_mask": real,
            "attention_mask": causal | ~real[:, None, :]}


def intensity_fn(model, kind: str, batch: dict[str, torch.Tensor]):
    """λ(s) (B, N−1, G, M) at times s (B, N−1, G) after each of the N−1 input events."""
    if kind == "THP":
        h = model.forward(batch["time_seqs"][:, :-1], batch["type_seqs"][:, :-1], batch["attention_mask"][:, :-1, :-1])
        return lambda s: model.softplus(model.compute_states_at_sample_times(h, s))
    _, right = model.forward((batch["time_seqs"], batch["time_delta_seqs"], batch["type_seqs"], None, None))
    right = right[..., :-1, :]
    return lambda s: model.layer_intensity(model.get_states(right, s))


@torch.no_grad()
def evaluate(model, kind: str, test, scale: float, chunk: int = 32) -> dict[str, float]:
    model.eval()
    nll, sq, hits, n = 0.0, 0.0, 0, 0
    grid = torch.cat([torch.zeros(1), torch.logspace(-4, np.log10(40.0), 511)]) * scale  # for E[τ], p(m)
    frac = torch.linspace(0, 1, 512)
    for lo in range(0, len(test), chunk):
        batch = batch_of(test[lo:lo + chunk])
        lam = intensity_fn(model, kind, batch)
        tau = batch["time_delta_seqs"][:, 1:]  # (B, N−1)
        mask = batch["seq_non_pad_mask"][:, 1:]
        marks = batch["type_seqs"][:, 1:].clamp(max=BOS - 1)
        s = tau[..., None] * frac  # (B, N−1, 512) from the last event to the next
        lam_s = lam(s) + 1e-12
        integral = torch.trapezoid(lam_s.sum(-1), s, dim=-1)
        at_event = lam_s[..., -1, :].gather(-1, marks[..., None])[..., 0]
        nll += float(((integral - torch.log(at_event)) * mask).sum())
        g = grid.expand(*tau.shape, -1)
        lam_g = lam(g)  # (B, N−1, G, M)
        total = lam_g.sum(-1)
        cum = torch.cat([torch.zeros_like(total[..., :1]),
                         torch.cumulative_trapezoid(total, g, dim=-1)], dim=-1)
        surv = torch.exp(-cum)
        mean = torch.trapezoid(surv, g, dim=-1)
        probs = torch.trapezoid(lam_g * surv[..., None], g[..., None].expand_as(lam_g), dim=-2)
        sq += float((((mean - tau) ** 2) * mask).sum())
        hits += int(((probs.argmax(-1) == marks) & mask).sum())
        n += int(mask.sum())
    return {"NLL": nll / n, "RMSE": (sq / n) ** 0.5, "accuracy": hits / n}


def fit_and_evaluate(kind: str, model_args: dict, data, epochs: int, seed: int) -> dict[str, float]:
    """Train EasyTPP's ``kind`` (THP or NHP) with the encoder sizes of ``model_args``; test metrics and fit time."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    train = data.splits["train"]
    model = easytpp_model(kind, data.n_marks, model_args["d_model"], model_args["n_layers"], model_args["n_heads"])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        order = rng.permutation(len(train))
        for lo in range(0, len(train), 32):
            loss, count = model.loglike_loss(**batch_of([train[i] for i in order[lo:lo + 32]]))
            opt.zero_grad()
            (loss / count).backward()
            opt.step()
    seconds = time.perf_counter() - start
    return {**evaluate(model, kind, data.splits["test"], data.stats["time_scale"]), "fit s": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--models", default="THP,NHP")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model_args, data_args, _ = load()
    data = data_module(data_args)
    for kind in args.models.split(","):
        for seed in range(args.seeds):
            print(kind, seed, fit_and_evaluate(kind, model_args, data, args.epochs, seed), flush=True)


if __name__ == "__main__":
    main()
