"""Caption vocabulary: tokenisation, word ↔ index maps with ``<pad>``, ``<bos>``, ``<eos>``, ``<unk>``.

Built from the training captions only; words seen fewer than ``min_count``
times map to ``<unk>``. The word list is a plain ``list[str]`` so that it can
be stored among a model's hyperparameters.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)  # indices 0, 1, 2, 3


def tokenize(text: str) -> list[str]:
    """Lower-case words: punctuation dropped, apostrophes kept inside words."""
    return re.findall(r"[a-z0-9]+(?:'[a-z0-9]+)*", text.lower())


class Vocab:
    """Word ↔ index maps; index 0 is ``<pad>``, 1 ``<bos>``, 2 ``<eos>``, 3 ``<unk>``."""

    def __init__(self, words: list[str]):
        if list(words[: len(SPECIALS)]) != list(SPECIALS):
            raise ValueError(f"a vocabulary starts with {SPECIALS}, got {words[:4]}")
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1) -> "Vocab":
        """Vocabulary of the words seen at least ``min_count`` times, most frequent first (ties alphabetical)."""
        counts = Counter(w for c in captions for w in tokenize(c))
        kept = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        return cls([*SPECIALS, *kept])

    def __len__(self) -> int:
        return len(self.words)

    @property
    def pad(self) -> int:
        return 0

    @property
    def bos(self) -> int:
        return 1

    @property
    def eos(self) -> int:
        return 2

    @property
    def unk(self) -> int:
        return 3

    def encode(self, text: str, max_len: int | None = None) -> list[int]:
        """``<bos>`` word ids ``<eos>`` (words cut to ``max_len``)."""
        ids = [self.index.get(w, self.unk) for w in tokenize(text)]
        if max_len is not None:
            ids = ids[:max_len]
        return [self.bos, *ids, self.eos]

    def decode(self, ids: Iterable[int]) -> str:
        """Words up to the first ``<eos>``; ``<bos>`` and ``<pad>`` are skipped."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos:
                break
            if i in (self.pad, self.bos):
                continue
            out.append(self.words[i])
        return " ".join(out)
