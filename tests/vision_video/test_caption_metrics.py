"""BLEU and CIDEr-D against values computed by hand on tiny corpora."""

from __future__ import annotations

import math

import pytest

from tsuite.vision_video.caption_metrics import bleu, caption_scores, cider_d


def test_cider_d_of_an_exact_match_counts_only_the_n_gram_orders_present():
    # 2 clips, so log|I| = log 2; every n-gram occurs in one clip's references: weight log 2 each.
    # Clip 1: candidate = reference "a b": unigram and bigram cosines are 1, no 3- or 4-grams → (1 + 1 + 0 + 0)/4 · 10.
    score, per_clip = cider_d(["a b", "c d"], [["a b"], ["c d"]])
    assert per_clip == pytest.approx([5.0, 5.0], abs=1e-12)
    assert score == pytest.approx(5.0, abs=1e-12)


def test_cider_d_clips_repeated_words_and_applies_the_length_penalty():
    # Candidate "a b a" for reference "a b" (the other clip's reference "c d" only sets the IDF); l = log 2.
    # unigrams: hyp (a: 2l, b: l), ref (a: l, b: l): Σ min(h, r)·r = 2l², norms √5·l and √2·l → 2/√10.
    # bigrams: hyp (ab: l, ba: l; df(ba) = 0 → weight log 2 - log 1), ref (ab: l) → l² / (√2·l · l) = 1/√2.
    # trigrams: the reference has none → 0. Lengths in bigrams: 2 and 1 → penalty exp(-1/72).
    expected = 10 * math.exp(-1 / 72) * (2 / math.sqrt(10) + 1 / math.sqrt(2)) / 4
    _, per_clip = cider_d(["a b a", "c d"], [["a b"], ["c d"]])
    assert per_clip[0] == pytest.approx(expected, rel=1e-12)


def test_cider_d_averages_over_references_and_ignores_n_grams_found_in_every_clip():
    # "x" appears in the references of both clips: idf = log 2 - log 2 = 0, so it adds nothing.
    # Clip 1, candidate "x a", references "x a" (exact: unigram cosine 1, bigram cosine 1) and "x b"
    # (unigram vectors (a: l) vs (b: l) → 0; bigrams "x a" vs "x b" → 0), equal lengths.
    # → 10 · ((1 + 1)/4 + 0) / 2 references = 2.5
    _, per_clip = cider_d(["x a", "x c"], [["x a", "x b"], ["x c"]])
    assert per_clip[0] == pytest.approx(2.5, abs=1e-12)


def test_cider_d_is_case_and_punctuation_insensitive():
    assert cider_d(["A b."], [["a B"]])[0] == cider_d(["a b"], [["a b"]])[0]


def test_bleu_matches_hand_computed_precisions():
    # "a b c d" vs "a b c e": p1 = 3/4, p2 = 2/3, p3 = 1/2, p4 = 0, same length (no brevity penalty).
    scores = bleu(["a b c d"], [["a b c e"]])
    assert scores["bleu1"] == pytest.approx(0.75, abs=1e-6)
    assert scores["bleu2"] == pytest.approx(math.sqrt(0.75 * 2 / 3), abs=1e-6)
    assert scores["bleu3"] == pytest.approx((0.75 * 2 / 3 * 0.5) ** (1 / 3), abs=1e-6)
    assert scores["bleu4"] == pytest.approx(0.0, abs=1e-6)


def test_bleu_brevity_penalty_and_multiple_references():
    # 2 words against a closest reference of 4: BP = exp(1 - 4/2); unigram precision 1.
    assert bleu(["a b"], [["a b c d"]])["bleu1"] == pytest.approx(math.exp(-1.0), abs=1e-6)
    # the second reference matches exactly: every precision is 1
    assert bleu(["the red square moves left"], [["a cat", "the red square moves left"]])["bleu4"] == pytest.approx(1.0)


def test_caption_scores_has_all_metrics():
    scores = caption_scores(["a red square moves left"], [["a red square moves left"]])
    assert set(scores) == {"bleu1", "bleu2", "bleu3", "bleu4", "cider_d"}
    assert scores["bleu4"] == pytest.approx(1.0)
    assert scores["cider_d"] == pytest.approx(0.0)  # one clip: log|I| = 0, every TF-IDF weight is 0
