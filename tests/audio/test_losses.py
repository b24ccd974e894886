"""SI-SNR and PIT: hand-computed values, scale invariance, permutation recovery, improvement metrics."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from tsuite.audio.losses import pit_si_snr, pit_si_snr_loss, separation_scores, si_snr


def test_si_snr_matches_a_hand_computed_value():
    ref = torch.tensor([1.0, -1.0, 1.0, -1.0])  # zero mean
    noise = torch.tensor([0.5, 0.5, -0.5, -0.5])  # zero mean, orthogonal to ref
    est = 2 * ref + noise
    # projection of est on ref is 2 ref (|2 ref|^2 = 16); the residual is noise (|noise|^2 = 1)
    assert si_snr(est, ref).item() == pytest.approx(10 * math.log10(16 / 1), abs=1e-4)


def test_si_snr_ignores_scale_and_offset_and_is_large_for_a_copy():
    torch.manual_seed(0)
    ref = torch.randn(3, 1000)
    assert (si_snr(0.1 * ref + 3.0, ref) > 60).all()  # float32 rounding limits a copy to ~80 dB; offset removed
    noisy = ref + 0.1 * torch.randn(3, 1000)
    torch.testing.assert_close(si_snr(5 * noisy, ref), si_snr(noisy, ref), rtol=1e-4, atol=1e-4)
    assert si_snr(noisy, ref).mean().item() == pytest.approx(20.0, abs=0.5)  # noise 20 dB below


def test_pit_recovers_swapped_sources():
    torch.manual_seed(1)
    ref = torch.randn(4, 2, 800)
    est = ref + 0.05 * torch.randn_like(ref)
    swapped = est.flip(1)
    best, perm = pit_si_snr(swapped, ref)
    assert perm.tolist() == [[1, 0]] * 4
    torch.testing.assert_close(pit_si_snr_loss(swapped, ref), pit_si_snr_loss(est, ref))
    assert pit_si_snr_loss(est, ref).item() == pytest.approx(-26.0, abs=0.5)  # 0.05 noise: about 26 dB


def test_pit_matches_an_exhaustive_search_for_three_speakers():
    torch.manual_seed(2)
    ref = torch.randn(5, 3, 300)
    est = torch.randn(5, 3, 300) + 0.5 * ref[:, [2, 0, 1]]
    best, perm = pit_si_snr(est, ref)
    for b in range(5):
        scores = {p: si_snr(est[b, list(p)], ref[b]).mean().item() for p in itertools.permutations(range(3))}
        top = max(scores, key=scores.get)
        assert tuple(perm[b].tolist()) == top
        assert best[b].item() == pytest.approx(scores[top], abs=1e-4)


def test_pit_loss_has_gradients_and_rejects_bad_shapes():
    est = torch.randn(2, 2, 100, requires_grad=True)
    pit_si_snr_loss(est, torch.randn(2, 2, 100)).backward()
    assert torch.isfinite(est.grad).all() and est.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"\(B, S, T\)"):
        pit_si_snr_loss(torch.randn(2, 100), torch.randn(2, 100))


def test_improvements_are_zero_for_the_mixture_and_large_for_the_truth():
    torch.manual_seed(3)
    ref = torch.randn(2, 2, 4000)
    mix = ref.sum(1)
    perfect = separation_scores(ref.flip(1) + 1e-4 * torch.randn_like(ref), ref, mix)
    assert (perfect["si_snri"] > 60).all() and (perfect["sdri"] > 40).all()
    unchanged = separation_scores(mix[:, None].expand_as(ref).clone(), ref, mix)
    torch.testing.assert_close(unchanged["si_snri"], torch.zeros(2), atol=1e-3, rtol=0)
    torch.testing.assert_close(unchanged["sdri"], torch.zeros(2), atol=1e-2, rtol=0)
    # the mixture of two equal-power independent sources is about 0 dB SI-SNR against each
    assert unchanged["si_snr"].abs().max() < 0.5
