"""Caption metrics: corpus BLEU-1…4 (torchmetrics) and CIDEr-D.

CIDEr-D (Vedantam, Zitnick, Parikh, "CIDEr: Consensus-based Image Description
Evaluation", arXiv 1411.5726), as defined by the coco-caption evaluation code:

- captions are lower-cased word lists (:func:`~tsuite.vision_video.vocab.tokenize`);
- for n = 1…4 every caption becomes a vector g_n of n-gram counts weighted by
  TF-IDF: count · (log |I| − log max(1, df)), where |I| is the number of
  clips in the evaluated corpus and df the number of clips whose reference
  set contains the n-gram (the IDF comes from the references only);
- the candidate c of a clip is scored against each of its m references s_j:

      CIDEr-D_n(c, S) = 10/m Σ_j exp(−(l_c − l_s_j)² / (2σ²)) ·
                        Σ_g min(g_n(c), g_n(s_j)) · g_n(s_j) / (‖g_n(c)‖ ‖g_n(s_j)‖)

  with σ = 6, the candidate's TF-IDF values clipped at the reference's (so
  repeating a word does not pay) and l the length (as in coco-caption, the
  number of bigrams of the caption, i.e. words − 1); a term with a zero norm
  counts 0;
- CIDEr-D of a clip is the mean of CIDEr-D_n over n = 1…4, and the corpus
  score the mean over clips.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from torchmetrics.text import BLEUScore

from tsuite.vision_video.vocab import tokenize

SIGMA = 6.0
MAX_N = 4


def _ngrams(words: list[str], max_n: int = MAX_N) -> Counter:
    return Counter(tuple(words[i : i + n]) for n in range(1, max_n + 1) for i in range(len(words) - n + 1))


def _vector(counts: Counter, df: Counter, log_n_docs: float, max_n: int) -> tuple[list[dict], list[float], int]:
    """TF-IDF vectors per n, their norms, and the caption length (number of bigrams)."""
    vec: list[dict] = [{} for _ in range(max_n)]
    for gram, tf in counts.items():
        vec[len(gram) - 1][gram] = tf * (log_n_docs - math.log(max(1.0, df[gram])))
    norms = [math.sqrt(sum(v * v for v in d.values())) for d in vec]
    length = sum(tf for gram, tf in counts.items() if len(gram) == 2)
    return vec, norms, length


def cider_d(candidates: Sequence[str], references: Sequence[Sequence[str]], sigma: float = SIGMA,
            max_n: int = MAX_N) -> tuple[float, list[float]]:
    """Corpus CIDEr-D and the score of every clip; ``references[i]`` are the reference captions of clip i."""
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} reference sets")
    if not candidates:
        raise ValueError("CIDEr-D needs at least one candidate")
    ref_counts = [[_ngrams(tokenize(r), max_n) for r in refs] for refs in references]
    df: Counter = Counter()
    for counts in ref_counts:
        df.update(set().union(*[set(c) for c in counts]) if counts else set())
    log_n = math.log(float(len(candidates)))
    scores = []
    for cand, counts in zip(candidates, ref_counts):
        vc, nc, lc = _vector(_ngrams(tokenize(cand), max_n), df, log_n, max_n)
        total = 0.0
        for ref in counts:
            vr, nr, lr = _vector(ref, df, log_n, max_n)
            penalty = math.exp(-((lc - lr) ** 2) / (2 * sigma**2))
            for n in range(max_n):
                if nc[n] == 0 or nr[n] == 0:
                    continue
                dot = sum(min(v, vr[n].get(g, 0.0)) * vr[n].get(g, 0.0) for g, v in vc[n].items())
                total += penalty * dot / (nc[n] * nr[n])
        scores.append(10.0 * total / max_n / max(len(counts), 1))
    return sum(scores) / len(scores), scores


def bleu(candidates: Sequence[str], references: Sequence[Sequence[str]], max_n: int = MAX_N) -> dict[str, float]:
    """Corpus BLEU-1…``max_n`` (uniform n-gram weights, brevity penalty) with torchmetrics, on tokenised text."""
    cands = [" ".join(tokenize(c)) for c in candidates]
    refs = [[" ".join(tokenize(r)) for r in rs] for rs in references]
    return {f"bleu{n}": float(BLEUScore(n_gram=n)(cands, refs)) for n in range(1, max_n + 1)}


def caption_scores(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """BLEU-1…4 and CIDEr-D of a corpus of candidate captions."""
    return {**bleu(candidates, references), "cider_d": cider_d(candidates, references)[0]}
