"""Event forecasting (marked temporal point processes) with an Aaren or a Transformer encoder.

Each event i (inter-event time τ_i, mark m_i) becomes a token: an embedding of
the mark plus a linear embedding of (standardised log τ_i, τ_i / mean τ). A
learned start token at the sequence's origin comes first, so the encoder's
output after events 1..i is the history that predicts event i+1 through
:class:`~tsuite.forecasting.event_decoder.EventDecoder` (a log-normal mixture
for τ, Shchur et al. 2020, and a categorical for the mark). Feng et al. 2024
("Attention as an RNN", arXiv 2405.13956) evaluate Aaren in this setting
against the same model with a Transformer encoder; ``encoder`` picks one.

Loss: the exact negative log-likelihood per event, −[log p(τ_i | H) + log p(m_i | τ_i, H)],
averaged over scored events, with the convention of
:mod:`tsuite.forecasting.hawkes` (sequences start at time 0, no survival term
after the last event), so it is comparable with a Hawkes process's true NLL.
Metrics: NLL per event (and its time and mark parts), RMSE of E[τ | H] against
τ (squared errors summed over all events, then the root), accuracy of the most
probable mark.

Streaming: with the Aaren encoder, :meth:`EventForecaster.stream_start` and
:meth:`~EventForecaster.stream_update` absorb one event at a time in O(1)
memory; :meth:`~EventForecaster.stream_predict` gives the next event's
distribution, equal to the parallel model's. :meth:`~EventForecaster.predict_frame`
(the MLflow pyfunc model) answers a history table with the expected next time,
its quantiles and the mark probabilities of every sequence.

The Transformer baseline has no constant-size state: its ``predict_frame``
reads each whole history at once (memory quadratic in its length).

The data's scales (mean τ, mean and standard deviation of log τ on the
training split) and its time origin are copied from the data module when
fitting starts, into buffers saved with the weights, so a logged model needs
nothing else. Inter-event times of 0 (ties) are clamped to 1e-6 mean
inter-event times before taking logarithms.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics import MeanMetric, MeanSquaredError
from torchmetrics.classification import MulticlassAccuracy

from tsuite.forecasting.aaren import AarenEncoder, TransformerEncoder
from tsuite.forecasting.event_data import validate_events
from tsuite.forecasting.event_decoder import EventDecoder, NextEventDistribution
from tsuite.kernels import PrefixAttentionState
from tsuite.module import TsuiteModule
from tsuite.tables import InputError

MIN_TAU = 1e-6  # in units of the mean inter-event time


def warmup_cosine(opt: torch.optim.Optimizer, total_steps: int, warmup: float = 0.1) -> LambdaLR:
    """Linear warm-up over the first ``warmup`` share of the steps, then a cosine decay to 0 (any step count)."""
    n_warm = max(1, int(warmup * total_steps))

    def factor(step: int) -> float:
        return min(1.0, (step + 1) / n_warm) * 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))

    return LambdaLR(opt, factor)


class EventStreamState(NamedTuple):
    """What streaming inference keeps per sequence, constant in size: the encoder's per-layer
    (m, u, w) states, the last output h (B, D), and the last event's time (B,) float64."""

    layers: list[PrefixAttentionState]
    h: torch.Tensor
    last_time: torch.Tensor


class EventForecaster(TsuiteModule):
    """Next-event model of marked event sequences: embeddings → Aaren / Transformer → log-normal mixture + marks.

    Args:
        n_marks: number of marks M (the data's n_marks).
        encoder: ``aaren`` or ``transformer`` (the baseline: causal softmax attention, same blocks).
        d_model, n_heads, n_layers, d_ff, dropout: encoder sizes.
        time_decay, sink: options of the attention layers (see :mod:`tsuite.forecasting.aaren`; off in the paper).
        n_components: K, components of the log-normal mixture.
        joint_marks: marks depend on the component (p(m | τ) varies with τ) instead of being independent of τ.
        lr, weight_decay: AdamW, linear warm-up then cosine decay of the learning rate.
        quantiles: default quantile levels of the next event time in :meth:`predict_frame`.
        chunk_size: events processed at once by :meth:`predict_frame` (Aaren carries its state across chunks).
    """

    def __init__(
        self,
        n_marks: int,
        encoder: Literal["aaren", "transformer"] = "aaren",
        d_model: int = 32,
        n_heads: int = 4,
        n_layers: int = 2,
        d_ff: int = 64,
        dropout: float = 0.0,
        time_decay: bool = False,
        sink: bool = False,
        n_components: int = 8,
        joint_marks: bool = False,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        quantiles: list[float] | None = None,
        chunk_size: int = 4096,
    ):
        super().__init__()
        if n_marks < 1:
            raise ValueError(f"n_marks must be ≥ 1, got {n_marks}")
        quantiles = [0.1, 0.5, 0.9] if quantiles is None else list(quantiles)
        if not all(0 < p < 1 for p in quantiles):
            raise ValueError(f"quantiles must lie in (0, 1), got {quantiles}")
        self.save_hyperparameters()
        self.n_marks, self.quantiles = n_marks, quantiles
        self.mark_embedding = nn.Embedding(n_marks + 1, d_model)  # index n_marks: the start token
        self.time_embedding = nn.Linear(2, d_model)
        if encoder == "aaren":
            self.encoder = AarenEncoder(d_model, n_heads, n_layers, d_ff, dropout, time_decay, sink)
        elif encoder == "transformer":
            self.encoder = TransformerEncoder(d_model, n_heads, n_layers, d_ff, dropout, time_decay, sink)
        else:
            raise ValueError(f"encoder must be 'aaren' or 'transformer', got {encoder!r}")
        self.decoder = EventDecoder(d_model, n_marks, n_components, joint_marks)
        # Time scales from the training data (set in setup; saved with the weights).
        self.register_buffer("time_scale", torch.tensor(1.0))
        self.register_buffer("log_tau_mean", torch.tensor(0.0))
        self.register_buffer("log_tau_std", torch.tensor(1.0))
        self.register_buffer("origin_first_event", torch.tensor(False))
        self.register_buffer("scales_fitted", torch.tensor(False))
        self.metrics = nn.ModuleDict({
            split: nn.ModuleDict({
                "nll": MeanMetric(), "nll_time": MeanMetric(), "nll_mark": MeanMetric(),
                "rmse": MeanSquaredError(squared=False),
                **({"accuracy": MulticlassAccuracy(num_classes=n_marks, average="micro")} if n_marks > 1 else {}),
            })
            for split in ("val", "test")
        })

    # -- data scales -----------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        data = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if data is None or not hasattr(data, "stats"):
            return
        if getattr(data, "n_marks", self.n_marks) != self.n_marks:
            raise InputError(f"model.n_marks={self.n_marks} but data.n_marks={data.n_marks}; set the same value for "
                             "both in the config")
        if not bool(self.scales_fitted) and data.stats:
            self.time_scale.fill_(data.stats["time_scale"])
            self.log_tau_mean.fill_(data.stats["log_tau_mean"])
            self.log_tau_std.fill_(data.stats["log_tau_std"])
            self.origin_first_event.fill_(data.time_origin == "first_event")
            self.scales_fitted.fill_(True)

    # -- model -----------------------------------------------------------------------------------
    def embed(self, tau: torch.Tensor, mark: torch.Tensor) -> torch.Tensor:
        """Event tokens (..., D) from inter-event times (...) and marks (...)."""
        tau = tau.float().clamp_min(MIN_TAU * self.time_scale)
        y = ((torch.log(tau) - self.log_tau_mean) / self.log_tau_std).clamp(-10.0, 10.0)
        feats = torch.stack([y, tau / self.time_scale], dim=-1)  # (..., 2)
        return self.mark_embedding(mark) + self.time_embedding(feats)

    def start_token(self, batch: int) -> torch.Tensor:
        return self.mark_embedding.weight[self.n_marks].expand(batch, -1)  # (B, D)

    def tokens(self, time: torch.Tensor, tau: torch.Tensor, mark: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs [start, e_1 .. e_{N-1}] (B, N, D) and their times / mean τ (B, N) for targets e_1 .. e_N."""
        B = time.shape[0]
        x = torch.cat([self.start_token(B)[:, None], self.embed(tau[:, :-1], mark[:, :-1])], dim=1)
        t = torch.cat([time.new_zeros(B, 1), time[:, :-1]], dim=1) / self.time_scale
        return x, t.float()

    def distribution(self, h: torch.Tensor) -> NextEventDistribution:
        return self.decoder(h, self.log_tau_mean, self.log_tau_std)

    def forward(self, time: torch.Tensor, tau: torch.Tensor, mark: torch.Tensor) -> NextEventDistribution:
        """Predicted distribution of every event given the ones before it, for padded batches (B, N)."""
        x, t = self.tokens(time, tau, mark)
        h, _ = self.encoder(x, t)
        return self.distribution(h)

    def event_log_likelihood(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor,
                                                                           NextEventDistribution]:
        """(log p(τ_i | H), log p(m_i | τ_i, H)) per event (B, N), 0 where not scored, and the distribution."""
        dist = self(batch["time"], batch["tau"], batch["mark"])
        tau = batch["tau"].float().clamp_min(MIN_TAU * self.time_scale)
        lp_tau, lp_mark = dist.log_prob(tau, batch["mark"])
        mask = batch["mask"]
        return torch.where(mask, lp_tau, 0.0), torch.where(mask, lp_mark, 0.0), dist

    # -- training --------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        lp_tau, lp_mark, _ = self.event_log_likelihood(batch)
        count = batch["mask"].sum().clamp_min(1)
        loss = -(lp_tau + lp_mark).sum() / count
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=int(count))
        return loss

    def _evaluate(self, batch: dict[str, torch.Tensor], split: str) -> None:
        lp_tau, lp_mark, dist = self.event_log_likelihood(batch)
        mask = batch["mask"]
        count = int(mask.sum())
        if count == 0:
            return
        m = self.metrics[split]
        m["nll"].update(-(lp_tau + lp_mark).sum() / count, weight=count)
        m["nll_time"].update(-lp_tau.sum() / count, weight=count)
        m["nll_mark"].update(-lp_mark.sum() / count, weight=count)
        m["rmse"].update(dist.mean()[mask], batch["tau"][mask].float())
        if "accuracy" in m:
            m["accuracy"].update(dist.mark_probs().argmax(-1)[mask], batch["mark"][mask])
        for name, metric in m.items():
            self.log(f"{split}_{name}", metric, on_step=False, on_epoch=True, prog_bar=name == "nll",
                     batch_size=count)
        self.log(f"{split}_loss", m["nll"], on_step=False, on_epoch=True, batch_size=count)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> NextEventDistribution:
        return self(batch["time"], batch["tau"], batch["mark"])

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        sched = warmup_cosine(opt, max(int(self.trainer.estimated_stepping_batches), 1))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- streaming (Aaren) -----------------------------------------------------------------------
    def _require_stream(self) -> None:
        if not isinstance(self.encoder, AarenEncoder):
            raise TypeError("streaming needs the Aaren encoder: the Transformer baseline has no "
                                      "constant-size state (use predict_frame, which reads whole histories)")

    @torch.no_grad()
    def stream_start(self, batch_size: int = 1, origin: torch.Tensor | float = 0.0) -> EventStreamState:
        """The state before any event: the start token at time ``origin`` (float or (B,))."""
        self._require_stream()
        h, layers = self.encoder.step(self.start_token(batch_size), None, None)
        last = torch.as_tensor(origin, dtype=torch.float64, device=h.device).expand(batch_size).clone()
        return EventStreamState(layers, h, last)

    @torch.no_grad()
    def stream_update(self, state: EventStreamState, time: torch.Tensor, mark: torch.Tensor) -> EventStreamState:
        """Absorb one event per sequence: absolute times (B,) (float64 keeps long streams exact), marks (B,)."""
        self._require_stream()
        time = torch.as_tensor(time, dtype=torch.float64, device=state.h.device).reshape(-1)
        tau = time - state.last_time
        if (tau < 0).any():
            raise InputError("stream_update: an event time is earlier than the previous event; times must be "
                             "non-decreasing")
        mark = torch.as_tensor(mark, dtype=torch.long, device=state.h.device).reshape(-1)
        if ((mark < 0) | (mark >= self.n_marks)).any():
            raise InputError(f"stream_update: a mark is outside 0..{self.n_marks - 1}")
        x = self.embed(tau.float(), mark)
        h, layers = self.encoder.step(x, (tau / self.time_scale.double()).float(), state.layers)
        return EventStreamState(layers, h, time)

    @torch.no_grad()
    def stream_predict(self, state: EventStreamState) -> NextEventDistribution:
        """The distribution of the next event after the events absorbed so far."""
        return self.distribution(state.h)

    # -- tables ----------------------------------------------------------------------------------
    def predict_params(self) -> dict:
        return {"quantiles": [float(p) for p in self.quantiles]}

    @torch.no_grad()
    def history_context(self, sequences: list[tuple[np.ndarray, np.ndarray]], batch_size: int = 256) -> torch.Tensor:
        """The encoder's output after the last event of each history (S, D); histories of (times, marks)."""
        self.eval()
        first = bool(self.origin_first_event)
        out = torch.empty(len(sequences), self.hparams.d_model, device=self.device)
        order = np.argsort([len(t) for t, _ in sequences], kind="stable")
        for lo in range(0, len(order), batch_size):
            idx = order[lo:lo + batch_size]
            out[torch.as_tensor(idx, device=self.device)] = self._context_batch([sequences[i] for i in idx], first)
        return out

    def _context_batch(self, seqs: list[tuple[np.ndarray, np.ndarray]], first: bool) -> torch.Tensor:
        """Left-padded batch [pad.., start, e_1 .. e_n] through the encoder; Aaren in chunks carrying its state."""
        B, n = len(seqs), max(len(t) for t, _ in seqs) + 1
        times = np.zeros((B, n))
        tau = np.ones((B, n))
        marks = np.zeros((B, n), dtype=np.int64)
        real = np.zeros((B, n), dtype=bool)
        for i, (t, m) in enumerate(seqs):
            origin = t[0] if first else 0.0
            k = len(t)
            times[i, n - k - 1:] = np.r_[origin, t]  # the start token sits at the origin
            times[i, : n - k - 1] = origin
            tau[i, n - k:] = np.diff(np.r_[origin, t])
            marks[i, n - k:] = m
            real[i, n - k - 1:] = True
        dev = self.device
        x = self.embed(torch.as_tensor(tau, device=dev), torch.as_tensor(marks, device=dev))  # (B, n, D)
        start_pos = torch.as_tensor(np.argmax(real, axis=1), device=dev)
        x[torch.arange(B, device=dev), start_pos] = self.start_token(B)
        key_mask = torch.as_tensor(real, device=dev)
        scale = float(self.time_scale)
        if isinstance(self.encoder, TransformerEncoder):
            rel = torch.as_tensor((times - times[:, :1]) / scale, dtype=torch.float32, device=dev)
            h, _ = self.encoder(x, rel, key_mask)
            return h[:, -1]
        state, ref = None, times[:, :1]
        chunk = int(self.hparams.chunk_size)
        for c0 in range(0, n, chunk):
            sl = slice(c0, min(c0 + chunk, n))
            rel = torch.as_tensor((times[:, sl] - ref) / scale, dtype=torch.float32, device=dev)  # float64 difference
            h, state = self.encoder(x[:, sl], rel, key_mask[:, sl], state)
            ref = times[:, sl.stop - 1: sl.stop]
        return h[:, -1]

    def predict_frame(self, df: pd.DataFrame, quantiles: list[float] | None = None) -> pd.DataFrame:
        """Next-event forecasts of every sequence of a history table (seq_id, time, mark).

        Returns one row per sequence: ``seq_id``, ``last_time``, ``expected_interval`` (E[τ]),
        ``expected_time`` (last_time + E[τ]), ``time_q<100p>`` (the p-quantile of the next
        event's time, for each level p), ``prob_mark_<k>`` for each mark and ``predicted_mark``.
        """
        levels = [float(p) for p in (self.quantiles if quantiles is None else quantiles)]
        if not all(0 < p < 1 for p in levels):
            raise InputError(f"quantiles must lie in (0, 1), got {levels}")
        origin = "first_event" if bool(self.origin_first_event) else "zero"
        seqs = validate_events(df, "input table", self.n_marks, origin)
        h = self.history_context([(t, m) for _, t, m in seqs])
        with torch.no_grad():
            dist = self.distribution(h)
            mean = dist.mean().double().cpu().numpy()
            probs = dist.mark_probs().double().cpu().numpy()
            qs = [dist.quantile(p).double().cpu().numpy() for p in levels]
        last = np.array([t[-1] for _, t, _ in seqs])
        out = {"seq_id": [s for s, _, _ in seqs], "last_time": last, "expected_interval": mean,
               "expected_time": last + mean}
        for p, q in zip(levels, qs):
            out[f"time_q{100 * p:g}"] = last + q
        for k in range(self.n_marks):
            out[f"prob_mark_{k}"] = probs[:, k]
        out["predicted_mark"] = probs.argmax(1).astype(np.int64)
        return pd.DataFrame(out)
