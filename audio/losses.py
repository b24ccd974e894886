"""SI-SNR, permutation-invariant training (PIT) and the separation metrics SI-SNRi / SDRi.

Everything here wraps torchmetrics: :func:`si_snr` is
``scale_invariant_signal_noise_ratio`` (zero-mean, in dB) and the PIT search is
``permutation_invariant_training`` in ``speaker-wise`` mode, which computes the
S × S matrix of pairwise SI-SNRs once and then tries every permutation (S! = 2
or 6 for 2 or 3 speakers, so the exhaustive search costs nothing next to the
S² metric evaluations).

- :func:`pit_si_snr_loss`: negative SI-SNR of the best permutation, averaged over
  sources and utterances (utterance-level PIT, Kolbæk et al. 2017, arXiv 1703.06284;
  the loss of Conv-TasNet, arXiv 1809.07454, and MossFormer2, arXiv 2312.11825).
- :func:`separation_scores`: per-utterance SI-SNR, SI-SNRi, SDR and SDRi, with the
  permutation chosen by SI-SNR; improvement = metric(estimate, reference) −
  metric(mixture, reference).
"""

from __future__ import annotations

import torch
from torchmetrics.functional.audio import (
    permutation_invariant_training,
    pit_permutate,
    scale_invariant_signal_noise_ratio,
    signal_distortion_ratio,
)


def si_snr(estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Scale-invariant SNR in dB over the last axis: (..., T), (..., T) -> (...)."""
    return scale_invariant_signal_noise_ratio(estimate, reference)


def pit_si_snr(estimate: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Best-permutation mean SI-SNR per utterance and that permutation.

    Args:
        estimate: (B, S, T) separated sources.
        reference: (B, S, T) true sources.
    Returns:
        (B,) mean SI-SNR over the S sources in dB, and (B, S) the permutation:
        ``estimate[b, perm[b, s]]`` is matched to ``reference[b, s]``.
    """
    if estimate.shape != reference.shape or estimate.dim() != 3:
        raise ValueError(f"expected estimate and reference of one shape (B, S, T), got {tuple(estimate.shape)} "
                         f"and {tuple(reference.shape)}")
    return permutation_invariant_training(estimate, reference, si_snr, mode="speaker-wise", eval_func="max")


def pit_si_snr_loss(estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Negative SI-SNR (dB) of the best permutation, averaged over the batch: the training loss."""
    best, _ = pit_si_snr(estimate, reference)
    return -best.mean()


def separation_scores(estimate: torch.Tensor, reference: torch.Tensor, mixture: torch.Tensor,
                      sdr: bool = True) -> dict[str, torch.Tensor]:
    """Per-utterance separation metrics with the SI-SNR-best permutation.

    Args:
        estimate: (B, S, T) separated sources.
        reference: (B, S, T) true sources.
        mixture: (B, T) the input mixture.
        sdr: also compute SDR / SDRi (torchmetrics' BSS-eval style SDR with a 512-tap distortion filter;
            slower than SI-SNR).
    Returns:
        dict of (B,) tensors in dB, each averaged over sources: ``si_snr``, ``si_snri`` and, with
        ``sdr``, ``sdr``, ``sdri``.
    """
    _, perm = pit_si_snr(estimate, reference)
    matched = pit_permutate(estimate, perm)  # (B, S, T)
    mix = mixture.unsqueeze(1).expand_as(reference)  # (B, S, T)
    out = {"si_snr": si_snr(matched, reference).mean(-1)}
    out["si_snri"] = out["si_snr"] - si_snr(mix, reference).mean(-1)
    if sdr:
        out["sdr"] = _sdr(matched, reference).mean(-1)
        out["sdri"] = out["sdr"] - _sdr(mix, reference).mean(-1)
    return out


def _sdr(estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """torchmetrics' SDR of (..., T) signals, one signal at a time.

    Its batched Toeplitz solve goes through LAPACK's batched LU, which oneMKL gets wrong on some CPUs
    once ``torch.set_num_threads`` has been called (``DLASWP`` parameter error, then "Pivots given to
    lu_solve must all be greater or equal to 1"); unbatched solves are not affected.
    """
    flat_est, flat_ref = estimate.reshape(-1, estimate.shape[-1]), reference.reshape(-1, reference.shape[-1])
    values = [signal_distortion_ratio(e, r) for e, r in zip(flat_est, flat_ref)]
    return torch.stack(values).reshape(estimate.shape[:-1])
