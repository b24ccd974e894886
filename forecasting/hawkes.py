"""Multivariate Hawkes processes with exponential kernels: exact simulation and the exact likelihood.

The intensity of mark k is

    λ_k(t) = μ_k + Σ_{t_j < t} α[k, m_j] β[k, m_j] exp(−β[k, m_j] (t − t_j)),

so ``α[k, m]`` is the branching ratio (the expected number of mark-k events
that one mark-m event triggers) and ``β[k, m]`` the decay rate. The process is
stationary when the spectral radius of α is below 1.

Simulation is Ogata's thinning (Ogata 1981, "On Lewis' simulation method for
point processes"), exact because with α ≥ 0 the total intensity only decays
between events: propose the next time from Exp(Σ_k λ_k(t⁺)), accept with
probability Σ_k λ_k(t) / Σ_k λ_k(t⁺), then draw the mark ∝ λ_k(t).

Likelihood convention (shared with the neural event model, see
``tsuite.forecasting.event_model``): every sequence starts empty at time 0, so
the first inter-event time is τ_1 = t_1 − 0; a sequence of n events is scored
by the density of those n events,

    log p = Σ_i log p(τ_i, m_i | history_{i−1}) = Σ_i log λ_{m_i}(t_i) − ∫_0^{t_n} Σ_k λ_k(t) dt,

with no survival term after the last event (the generator stops after a fixed
number of events chosen independently of the process, so this is the exact
likelihood of what was generated). ``log_likelihood(..., t_end=T)`` adds the
survival term −∫_{t_n}^T Σ_k λ_k for a window [0, T].
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tsuite.tables import InputError


def _default_mu() -> list[float]:
    return [0.2, 0.1, 0.15]


def _default_alpha() -> list[list[float]]:
    return [[0.3, 0.1, 0.0], [0.4, 0.3, 0.1], [0.0, 0.2, 0.5]]


def _default_beta() -> list[list[float]]:
    return [[1.0, 2.0, 1.0], [1.0, 1.0, 2.0], [1.0, 3.0, 1.0]]


@dataclass
class HawkesProcess:
    """A multivariate Hawkes process with exponential kernels and its exact sampler and likelihood.

    Args:
        mu: base rates μ_k (M,), positive.
        alpha: branching ratios α[k][m] ≥ 0 (M × M): mark m excites mark k; spectral radius < 1.
        beta: decay rates β[k][m] > 0 (M × M), or one number for all pairs.
        n_sequences: number of sequences :meth:`generate` draws.
        n_events: events per sequence (the sequence stops at its n-th event).
        min_events: if set, each sequence's length is drawn uniformly from [min_events, n_events],
            independently of the process (so the likelihood convention stays exact).
        seed: random seed of :meth:`generate`.
    """

    mu: list[float] = field(default_factory=_default_mu)
    alpha: list[list[float]] = field(default_factory=_default_alpha)
    beta: list[list[float]] | float = field(default_factory=_default_beta)
    n_sequences: int = 1000
    n_events: int = 64
    min_events: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        mu = np.asarray(self.mu, dtype=np.float64)
        if mu.ndim != 1 or len(mu) == 0 or not np.all(np.isfinite(mu)) or np.any(mu <= 0):
            raise InputError(f"hawkes.mu {self.mu}: expected a list of M > 0 positive base rates")
        m = len(mu)
        alpha = np.asarray(self.alpha, dtype=np.float64)
        if alpha.shape != (m, m) or np.any(alpha < 0) or not np.all(np.isfinite(alpha)):
            raise InputError(
                f"hawkes.alpha: expected an {m} x {m} matrix (one row per mark, like mu) of non-negative "
                f"branching ratios, got shape {alpha.shape}"
            )
        beta = np.broadcast_to(np.asarray(self.beta, dtype=np.float64), (m, m)).copy() if np.ndim(
            self.beta) == 0 else np.asarray(self.beta, dtype=np.float64)
        if beta.shape != (m, m) or np.any(beta <= 0) or not np.all(np.isfinite(beta)):
            raise InputError(f"hawkes.beta: expected one positive number or an {m} x {m} matrix of positive decays")
        radius = float(np.max(np.abs(np.linalg.eigvals(alpha))))
        if radius >= 1.0:
            raise InputError(
                f"hawkes.alpha: spectral radius {radius:.3f} ≥ 1, so the process explodes; expected branching "
                "ratios whose matrix has spectral radius below 1"
            )
        if self.n_sequences < 1 or self.n_events < 1:
            raise InputError(f"hawkes: n_sequences and n_events must be ≥ 1, got {self.n_sequences}, {self.n_events}")
        if self.min_events is not None and not 1 <= self.min_events <= self.n_events:
            raise InputError(
                f"hawkes.min_events={self.min_events}: expected 1 ≤ min_events ≤ n_events={self.n_events}"
            )
        self._mu, self._alpha, self._beta = mu, alpha, beta
        self._jump = alpha * beta  # (k m): jump of λ_k right after a mark-m event

    @property
    def n_marks(self) -> int:
        return len(self._mu)

    @property
    def spectral_radius(self) -> float:
        return float(np.max(np.abs(np.linalg.eigvals(self._alpha))))

    def stationary_rates(self) -> np.ndarray:
        """Long-run event rates per mark, (I − α)⁻¹ μ (M,)."""
        return np.linalg.solve(np.eye(self.n_marks) - self._alpha, self._mu)

    # -- simulation ------------------------------------------------------------------------------
    def sample(self, n_sequences: int, n_events: int | np.ndarray, rng: np.random.Generator) -> list[tuple]:
        """Draw sequences by Ogata thinning, all sequences at once: a list of (times (n,), marks (n,))."""
        lengths = np.broadcast_to(np.asarray(n_events), (n_sequences,)).astype(np.int64)
        m = self.n_marks
        total = int(lengths.max())
        times = np.zeros((n_sequences, total))
        marks = np.zeros((n_sequences, total), dtype=np.int64)
        count = np.zeros(n_sequences, dtype=np.int64)
        t = np.zeros(n_sequences)
        exc = np.zeros((n_sequences, m, m))  # (S k m): excitation of λ_k by past mark-m events at time t
        active = np.flatnonzero(count < lengths)
        while len(active):
            e = exc[active]
            bound = self._mu.sum() + e.sum(axis=(1, 2))  # total intensity just after t: an upper bound
            wait = rng.exponential(1.0 / bound)
            e = e * np.exp(-self._beta[None] * wait[:, None, None])
            lam = self._mu[None] + e.sum(axis=2)  # (S k)
            accept = rng.uniform(size=len(active)) * bound <= lam.sum(axis=1)
            t[active] += wait
            cdf = np.cumsum(lam, axis=1)
            mark = (rng.uniform(size=len(active))[:, None] * cdf[:, -1:] > cdf).sum(axis=1)
            mark = np.minimum(mark, m - 1)
            rows = active[accept]
            times[rows, count[rows]] = t[rows]
            marks[rows, count[rows]] = mark[accept]
            count[rows] += 1
            e[accept] += self._jump_columns(mark[accept])
            exc[active] = e
            active = np.flatnonzero(count < lengths)
        return [(times[i, : lengths[i]].copy(), marks[i, : lengths[i]].copy()) for i in range(n_sequences)]

    def _jump_columns(self, marks: np.ndarray) -> np.ndarray:
        """Excitation added by events of the given marks: (S, k, m) with column m_s set to α β[:, m_s]."""
        out = np.zeros((len(marks), self.n_marks, self.n_marks))
        out[np.arange(len(marks)), :, marks] = self._jump[:, marks].T
        return out

    def generate(self) -> pd.DataFrame:
        """``n_sequences`` seeded sequences as an event table with columns seq_id, time, mark."""
        rng = np.random.default_rng(self.seed)
        if self.min_events is None:
            lengths = np.full(self.n_sequences, self.n_events)
        else:
            lengths = rng.integers(self.min_events, self.n_events + 1, size=self.n_sequences)
        seqs = self.sample(self.n_sequences, lengths, rng)
        width = len(str(self.n_sequences - 1))
        return pd.DataFrame({
            "seq_id": np.concatenate([[f"h{i:0{width}d}"] * len(s[0]) for i, s in enumerate(seqs)]),
            "time": np.concatenate([s[0] for s in seqs]),
            "mark": np.concatenate([s[1] for s in seqs]).astype(np.int64),
        })

    # -- likelihood ------------------------------------------------------------------------------
    def _states(self, times: np.ndarray, marks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Excitation just after each event (n, k, m) and the inter-event times τ (n,), t_0 = 0."""
        times = np.asarray(times, dtype=np.float64)
        marks = np.asarray(marks, dtype=np.int64)
        tau = np.diff(times, prepend=0.0)
        after = np.zeros((len(times), self.n_marks, self.n_marks))
        exc = np.zeros((self.n_marks, self.n_marks))
        for i in range(len(times)):
            exc = exc * np.exp(-self._beta * tau[i])
            exc[:, marks[i]] += self._jump[:, marks[i]]
            after[i] = exc
        return after, tau

    def event_log_likelihoods(self, times: np.ndarray, marks: np.ndarray) -> np.ndarray:
        """log p(τ_i, m_i | history) for each event of one sequence (n,), in closed form."""
        after, tau = self._states(times, marks)
        before = np.concatenate([np.zeros((1, self.n_marks, self.n_marks)), after[:-1]])  # (n k m) after event i−1
        decay = np.exp(-self._beta[None] * tau[:, None, None])  # (n k m)
        lam = self._mu[marks] + (before * decay)[np.arange(len(tau)), marks].sum(-1)  # λ_{m_i}(t_i)
        compensator = self._mu.sum() * tau + (before * (1.0 - decay) / self._beta[None]).sum(axis=(1, 2))
        return np.log(lam) - compensator

    def log_likelihood(self, times: np.ndarray, marks: np.ndarray, t_end: float | None = None) -> float:
        """Σ log λ_{m_i}(t_i) − ∫_0^T Σ_k λ_k dt, with T = t_end or the last event's time (no survival term)."""
        ll = float(self.event_log_likelihoods(times, marks).sum())
        if t_end is not None:
            after, _ = self._states(times, marks)
            last = float(times[-1]) if len(times) else 0.0
            if t_end < last:
                raise ValueError(f"t_end={t_end} is before the last event at {last}")
            s = t_end - last
            exc = after[-1] if len(times) else np.zeros((self.n_marks, self.n_marks))
            ll -= self._mu.sum() * s + float((exc * (1.0 - np.exp(-self._beta * s)) / self._beta).sum())
        return ll

    def intensity(self, t: np.ndarray, times: np.ndarray, marks: np.ndarray) -> np.ndarray:
        """λ_k(t) at query times t (G,), left-continuous (events at exactly t do not count): (G, M)."""
        t = np.asarray(t, dtype=np.float64)[:, None, None]  # (G 1 1)
        lam = np.broadcast_to(self._mu, (t.shape[0], self.n_marks)).copy()
        for tj, mj in zip(np.asarray(times, dtype=np.float64), np.asarray(marks, dtype=np.int64)):
            dt = t[:, 0, 0] - tj
            on = dt > 0
            lam[on] += self._jump[:, mj][None] * np.exp(-self._beta[:, mj][None] * dt[on, None])
        return lam

    # -- next-event predictions ------------------------------------------------------------------
    def next_event(self, times: np.ndarray, marks: np.ndarray, grid: int = 4000) -> tuple[np.ndarray, np.ndarray]:
        """The true predictive distribution of each event given the events before it.

        For i = 1..n (history: events 1..i−1, from time t_{i−1}; t_0 = 0) returns
        the expected inter-event time E[τ_i] (n,) and the mark probabilities
        p(m_i = k) (n, M), by quadrature of the survival function on a geometric grid.
        """
        after, _ = self._states(times, marks)
        before = np.concatenate([np.zeros((1, self.n_marks, self.n_marks)), after[:-1]])  # (n k m)
        mu_tot = self._mu.sum()
        s_max = 50.0 / mu_tot
        s0 = 1e-3 / max(float(self._beta.max()), mu_tot)
        s = np.concatenate([[0.0], s0 * np.geomspace(1.0, s_max / s0, grid - 1)])  # (G)
        decay = np.exp(-self._beta[None] * s[:, None, None])  # (G k m)
        lam = self._mu[None, None] + np.einsum("nkm,gkm->ngk", before, decay)  # (n G k)
        cum = np.einsum("nkm,gkm->ng", before, (1.0 - decay) / self._beta[None])  # ∫ excitation
        surv = np.exp(-(mu_tot * s[None] + cum))  # (n G)
        expected = np.trapezoid(surv, s, axis=1)
        probs = np.trapezoid(lam * surv[..., None], s, axis=1)
        return expected, probs / probs.sum(axis=1, keepdims=True)
