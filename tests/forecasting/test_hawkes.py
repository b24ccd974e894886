"""The Hawkes generator is exact and its closed-form likelihood is the integral of its intensity."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats

from tsuite.forecasting import HawkesProcess
from tsuite.tables import InputError


@pytest.fixture(scope="module")
def process() -> HawkesProcess:
    return HawkesProcess()  # the 3-dimensional process of configs/events/*.yaml


def numeric_log_likelihood(p: HawkesProcess, times: np.ndarray, marks: np.ndarray, t_end: float) -> float:
    """Σ log λ_{m_i}(t_i) − ∫_0^T Σ_k λ_k dt, the integral by adaptive quadrature between events."""
    at_events = p.intensity(times, times, marks)[np.arange(len(times)), marks]
    edges = np.r_[0.0, times, t_end]
    total = 0.0
    for a, b in zip(edges[:-1], edges[1:]):
        if b > a:
            total += integrate.quad(lambda s: p.intensity(np.array([s]), times, marks).sum(), a, b,
                                    epsabs=1e-12, epsrel=1e-12)[0]
    return float(np.log(at_events).sum() - total)


def test_log_likelihood_matches_numerical_integration_of_the_intensity(process):
    rng = np.random.default_rng(3)
    for times, marks in process.sample(3, 40, rng):
        closed = process.log_likelihood(times, marks)
        numeric = numeric_log_likelihood(process, times, marks, times[-1])
        assert abs(closed - numeric) <= 1e-8 * abs(numeric), (closed, numeric)
        t_end = times[-1] + 2.5  # with the survival term of a window [0, T]
        closed_w = process.log_likelihood(times, marks, t_end=t_end)
        numeric_w = numeric_log_likelihood(process, times, marks, t_end)
        assert abs(closed_w - numeric_w) <= 1e-8 * abs(numeric_w)
        assert closed_w < closed


def test_event_terms_are_conditional_densities_that_sum_to_the_log_likelihood(process):
    times, marks = process.sample(1, 30, np.random.default_rng(0))[0]
    terms = process.event_log_likelihoods(times, marks)
    assert terms.shape == (30,)
    np.testing.assert_allclose(terms.sum(), process.log_likelihood(times, marks), rtol=1e-12)
    # Each term is a density over (τ, m): integrating the next event's density over τ and summing
    # over marks gives 1, for the history of every event.
    for i in (0, 5, 29):
        hist_t, hist_m = times[:i], marks[:i]
        start = hist_t[-1] if i else 0.0

        def density(tau: float, k: int) -> float:
            t = np.r_[hist_t, start + tau]
            return float(np.exp(process.event_log_likelihoods(t, np.r_[hist_m, k])[-1]))

        mass = sum(integrate.quad(density, 0, np.inf, args=(k,), limit=200)[0] for k in range(3))
        assert mass == pytest.approx(1.0, abs=1e-6)


def test_poisson_special_case_has_the_textbook_likelihood_and_predictions():
    mu = [0.5, 1.5]
    p = HawkesProcess(mu=mu, alpha=[[0.0, 0.0], [0.0, 0.0]], beta=1.0)
    times, marks = np.array([0.3, 1.0, 1.7]), np.array([1, 0, 1])
    expected = np.log(np.array(mu)[marks]).sum() - 2.0 * 1.7
    assert p.log_likelihood(times, marks) == pytest.approx(expected, rel=1e-12)
    mean, probs = p.next_event(times, marks)
    np.testing.assert_allclose(mean, 1 / 2.0, rtol=1e-4)
    np.testing.assert_allclose(probs, np.tile([0.25, 0.75], (3, 1)), rtol=1e-6)


def test_next_event_predictions_match_quadrature(process):
    times, marks = process.sample(1, 12, np.random.default_rng(5))[0]
    mean, probs = process.next_event(times, marks)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-9)
    i = 7  # the prediction of event 8 from events 1..7
    start = times[i - 1]

    def survival(s: float) -> float:
        grid = np.linspace(start, start + s, 2001)
        lam = process.intensity(grid, times[:i], marks[:i]).sum(1)
        return float(np.exp(-np.trapezoid(lam, grid)))

    expected = integrate.quad(survival, 0, 200, limit=400)[0]
    assert mean[i] == pytest.approx(expected, rel=1e-3)


def test_thinning_is_exact_by_the_time_rescaling_theorem(process):
    """Compensator increments between events of a correctly simulated process are i.i.d. Exp(1)."""
    seqs = process.sample(300, 60, np.random.default_rng(11))
    increments, shares, counts = [], np.zeros(3), np.zeros(3)
    for times, marks in seqs:
        # −log p(τ_i, m_i) = Λ_i − log λ_{m_i}(t_i); recover Λ_i from the closed form pieces
        after, tau = process._states(times, marks)
        before = np.concatenate([np.zeros((1, 3, 3)), after[:-1]])
        decay = np.exp(-process._beta[None] * tau[:, None, None])
        lam_total = process._mu.sum() * tau + (before * (1 - decay) / process._beta[None]).sum(axis=(1, 2))
        increments.append(lam_total)
        lam = process.intensity(times, times, marks)
        shares += (lam / lam.sum(1, keepdims=True)).sum(0)
        counts += np.bincount(marks, minlength=3)
    inc = np.concatenate(increments)
    assert abs(inc.mean() - 1.0) < 0.03
    assert stats.kstest(inc, "expon").pvalue > 0.01
    # marks are drawn ∝ λ_k(t): each mark's count equals the sum of its intensity shares at the events
    np.testing.assert_allclose(counts, shares, rtol=0.03)


def test_long_run_rates_match_the_stationary_solution(process):
    counts, span = np.zeros(3), 0.0
    for times, marks in process.sample(40, 3000, np.random.default_rng(2)):
        late = times > times[-1] / 2  # skip the start-up from an empty history
        counts += np.bincount(marks[late], minlength=3)
        span += times[-1] / 2
    np.testing.assert_allclose(counts / span, process.stationary_rates(), rtol=0.05)


def test_generate_is_seeded_and_has_the_requested_lengths():
    a = HawkesProcess(n_sequences=20, n_events=15, min_events=5, seed=4).generate()
    b = HawkesProcess(n_sequences=20, n_events=15, min_events=5, seed=4).generate()
    assert a.equals(b)
    assert list(a.columns) == ["seq_id", "time", "mark"]
    lengths = a.groupby("seq_id").size()
    assert len(lengths) == 20 and lengths.min() >= 5 and lengths.max() <= 15 and lengths.nunique() > 1
    assert (a.groupby("seq_id")["time"].diff().dropna() >= 0).all()
    assert set(a["mark"]) <= {0, 1, 2}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"alpha": [[0.9, 0.5, 0.0], [0.5, 0.9, 0.0], [0.0, 0.0, 0.1]]}, "spectral radius 1.400 ≥ 1"),
        ({"alpha": [[0.1, 0.1], [0.1, 0.1]]}, "expected an 3 x 3 matrix"),
        ({"mu": [0.1, -0.2, 0.1]}, "positive base rates"),
        ({"beta": 0.0}, "positive"),
        ({"n_events": 0}, "must be ≥ 1"),
    ],
)
def test_bad_parameters_are_rejected_with_the_reason(kwargs, message):
    with pytest.raises(InputError, match=message):
        HawkesProcess(**kwargs)
