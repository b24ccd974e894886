"""The next-event distribution of the event model: a log-normal mixture for the time, a categorical for the mark.

Shchur, Biloš, Günnemann. "Intensity-Free Learning of Temporal Point
Processes", ICLR 2020 (arXiv 1909.12127).

The inter-event time τ is modelled through its standardised logarithm
y = (log τ − a) / b (a, b: mean and standard deviation of log τ on the
training data) as a mixture of K Gaussians, so τ itself is a mixture of
log-normals with closed-form density, mean and CDF:

    p(τ) = Σ_k w_k N(y; μ_k, σ_k) / (b τ),   E[τ] = Σ_k w_k exp(a + b μ_k + b² σ_k² / 2).

Marks are categorical. ``joint=False`` is the paper's model, marks independent
of τ given the history: p(τ, m) = p(τ) p(m). ``joint=True`` (an extension)
gives each mixture component its own mark distribution,
p(τ, m) = Σ_k w_k LogNormal_k(τ) π_k(m), so the mark may depend on how long
the wait was (as in a Hawkes process, where the mix of intensities changes as
excitation decays); the marginals stay closed-form: p(m) = Σ_k w_k π_k(m).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

LOG_SIGMA_RANGE = (-6.0, 1.0)  # clamp of log σ_k (standardised units): keeps E[τ] and the gradients finite


class NextEventDistribution(NamedTuple):
    """Parameters of p(τ, m | history) for a batch of histories (any leading shape ``...``).

    log_w, mu, log_sigma: (..., K); mark_logits: (..., M) (independent) or (..., K, M) (joint);
    a, b: the log-τ standardisation (0-dim tensors).
    """

    log_w: torch.Tensor
    mu: torch.Tensor
    log_sigma: torch.Tensor
    mark_logits: torch.Tensor
    a: torch.Tensor
    b: torch.Tensor

    @property
    def joint(self) -> bool:
        return self.mark_logits.dim() == self.log_w.dim() + 1

    def _component_log_density(self, tau: torch.Tensor) -> torch.Tensor:
        """log w_k + log N(y; μ_k, σ_k) − log(b τ) per component (..., K)."""
        y = (torch.log(tau) - self.a) / self.b
        z = (y[..., None] - self.mu) * torch.exp(-self.log_sigma)
        log_n = -0.5 * z**2 - self.log_sigma - 0.5 * math.log(2 * math.pi)
        return self.log_w + log_n - torch.log(self.b * tau)[..., None]

    def log_prob(self, tau: torch.Tensor, mark: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log p(τ), log p(m | τ)) for τ (...) > 0 and marks (...): their sum is log p(τ, m)."""
        comp = self._component_log_density(tau)  # (..., K)
        log_p_tau = torch.logsumexp(comp, dim=-1)
        log_pi = torch.log_softmax(self.mark_logits, dim=-1)
        if self.joint:
            pick = log_pi.gather(-1, mark[..., None, None].expand(*mark.shape, log_pi.shape[-2], 1))[..., 0]
            log_p_mark = torch.logsumexp(comp + pick, dim=-1) - log_p_tau  # (...)
        else:
            log_p_mark = log_pi.gather(-1, mark[..., None])[..., 0]
        return log_p_tau, log_p_mark

    def mark_probs(self) -> torch.Tensor:
        """p(m | history) (..., M), marginal over τ."""
        pi = torch.softmax(self.mark_logits, dim=-1)
        if self.joint:
            return (torch.softmax(self.log_w, dim=-1)[..., None] * pi).sum(-2)
        return pi

    def mean(self) -> torch.Tensor:
        """E[τ | history] (...)."""
        sigma = torch.exp(self.log_sigma)
        return torch.exp(torch.logsumexp(self.log_w + self.a + self.b * self.mu + 0.5 * (self.b * sigma) ** 2, dim=-1))

    def cdf(self, tau: torch.Tensor) -> torch.Tensor:
        """P(τ' ≤ τ | history) (...)."""
        y = (torch.log(tau) - self.a) / self.b
        return self._cdf_y(y)

    def _cdf_y(self, y: torch.Tensor) -> torch.Tensor:
        z = (y[..., None] - self.mu) * torch.exp(-self.log_sigma)
        return (torch.softmax(self.log_w, dim=-1) * 0.5 * torch.erfc(-z / math.sqrt(2.0))).sum(-1)

    def quantile(self, p: float, iters: int = 80) -> torch.Tensor:
        """The p-quantile of τ (...) by bisection of the mixture CDF in standardised log-time."""
        sigma = torch.exp(self.log_sigma)
        lo = (self.mu - 10 * sigma).min(-1).values
        hi = (self.mu + 10 * sigma).max(-1).values
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            below = self._cdf_y(mid) < p
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        return torch.exp(self.a + self.b * 0.5 * (lo + hi))


class EventDecoder(nn.Module):
    """Context (..., D) → :class:`NextEventDistribution` with K log-normal components and M marks."""

    def __init__(self, d_model: int, n_marks: int, n_components: int = 8, joint: bool = False):
        super().__init__()
        self.n_marks, self.n_components, self.joint = n_marks, n_components, joint
        n_mark_out = n_components * n_marks if joint else n_marks
        self.proj = nn.Linear(d_model, 3 * n_components + n_mark_out)

    def forward(self, h: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> NextEventDistribution:
        K = self.n_components
        out = self.proj(h)  # (..., 3K + M or K M)
        log_w = torch.log_softmax(out[..., :K], dim=-1)
        mu = out[..., K:2 * K]
        log_sigma = out[..., 2 * K:3 * K].clamp(*LOG_SIGMA_RANGE)
        marks = out[..., 3 * K:]
        if self.joint:
            marks = marks.reshape(*marks.shape[:-1], K, self.n_marks)
        return NextEventDistribution(log_w, mu, log_sigma, marks, a, b)
