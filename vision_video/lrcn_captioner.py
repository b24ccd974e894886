"""LRCN video captioning: CNN + LSTM video encoder, LSTM language model, greedy / beam / sampled decoding.

Donahue et al., "Long-term Recurrent Convolutional Networks for Visual
Recognition and Description", arXiv 1411.4389, sections 5 (image description)
and 6 (video description).

Video: per-frame CNN features φ(x_1..T) are read by an encoder LSTM; its last
hidden state v (B, Dv) is the clip's representation. Language: at step t the
word w_{t-1} is embedded and an LSTM stack predicts w_t; v is fed at *every*
step, as in the paper's description models, in one of its three variants:

- ``single``: one LSTM whose input is [embed(w); v];
- ``unfactored``: two LSTMs, v enters the first ([embed(w); v] → LSTM1 → LSTM2);
- ``factored``: two LSTMs, the first sees only words (embed(w) → LSTM1) and v
  enters the second ([h1; v] → LSTM2), so the bottom layer is a pure language model.

Training is by teacher forcing (cross-entropy of every next word given the
true previous words). Decoding: greedy, beam search (beam_size hypotheses
ranked by the sum of word log-probabilities; a hypothesis that has emitted
``<eos>`` keeps its score) and sampling from softmax(logits / temperature).

Differences from the paper: the paper's video model (TACoS) reads the output
of a CRF over predicted subject/verb/object tuples (either its max or its
probabilities, optionally through an LSTM encoder); here the visual input is
learned end to end from pixels by the CNN + LSTM encoder above (the closest
of its variants is the encoder-decoder one, with the CRF replaced by this
encoder). The paper's image model used 1000-unit LSTMs and 1000-d word
embeddings on an ImageNet CNN; here the sizes are arguments (small in our
configs), the CNN is trained from scratch and Adam replaces SGD.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from tsuite.module import TsuiteModule
from tsuite.tables import InputError
from tsuite.vision_video.caption_metrics import bleu, caption_scores
from tsuite.vision_video.frame_encoder import EncoderName, FrameEncoder
from tsuite.vision_video.video_data import resize_frames, table_frames
from tsuite.vision_video.vocab import Vocab

Variant = Literal["single", "unfactored", "factored"]
Decode = Literal["greedy", "beam", "sample"]
State = list[tuple[torch.Tensor, torch.Tensor]]  # per LSTM: (h, c), each (1, N, H)


class LRCNCaptioner(TsuiteModule):
    """LRCN captioning model (see the module docstring).

    Args:
        vocab: the word list (None: the data module's vocabulary, built from the training captions).
        clip_frames, input_size: clip length T and frame side (None: the data module's n_frames and frame_size).
        variant: ``single``, ``unfactored`` or ``factored``.
        encoder, feature_dim, freeze_encoder, channels: the per-frame CNN (:class:`FrameEncoder`).
        video_hidden: units of the video encoder LSTM (Dv).
        embed_dim: word embedding size.
        hidden_size: units of each language LSTM.
        dropout: dropout on the embeddings, the visual input and the LSTM outputs.
        max_len: the longest caption decoded (words).
        decode, beam_size, temperature: default decoding of :meth:`predict_frame`.
        lr, weight_decay: Adam.
    """

    def __init__(
        self,
        vocab: list[str] | None = None,
        clip_frames: int | None = None,
        input_size: int | None = None,
        variant: Variant = "factored",
        encoder: EncoderName = "small",
        feature_dim: int = 256,
        freeze_encoder: bool = False,
        channels: int = 16,
        video_hidden: int = 256,
        embed_dim: int = 128,
        hidden_size: int = 256,
        dropout: float = 0.3,
        max_len: int = 20,
        decode: Decode = "greedy",
        beam_size: int = 3,
        temperature: float = 1.0,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
    ):
        super().__init__()
        if variant not in ("single", "unfactored", "factored"):
            raise ValueError(f"variant must be single, unfactored or factored, got {variant!r}")
        self.save_hyperparameters()
        self.built = False
        if vocab is not None and clip_frames is not None and input_size is not None:
            self._build()

    def _build(self) -> None:
        hp = self.hparams
        self.vocab = Vocab(list(hp.vocab))
        V, E, H, Dv = len(self.vocab), hp.embed_dim, hp.hidden_size, hp.video_hidden
        self.frame_encoder = FrameEncoder(hp.input_size, hp.feature_dim, hp.encoder, hp.freeze_encoder, hp.channels)
        self.video_lstm = nn.LSTM(hp.feature_dim, Dv, batch_first=True)
        self.embed = nn.Embedding(V, E, padding_idx=self.vocab.pad)
        first_in = E if hp.variant == "factored" else E + Dv
        layers = [nn.LSTM(first_in, H, batch_first=True)]
        if hp.variant != "single":
            layers.append(nn.LSTM(H + Dv if hp.variant == "factored" else H, H, batch_first=True))
        self.language = nn.ModuleList(layers)
        self.drop = nn.Dropout(hp.dropout)
        self.head = nn.Linear(H, V)
        self.built = True
        self._eval: dict[str, tuple[list[str], list[list[str]]]] = {}

    def setup(self, stage: str) -> None:
        data = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if data is None or not hasattr(data, "vocab"):
            if not self.built:
                raise InputError("LRCNCaptioner needs vocab, clip_frames and input_size, or a VideoDataModule with "
                                 "task: caption to take them from")
            return
        data.setup(stage)
        if data.vocab is None:
            raise InputError("LRCNCaptioner needs caption data: set data.init_args.task: caption")
        found = {"vocab": list(data.vocab.words), "clip_frames": data.n_frames, "input_size": data.frame_size}
        if self.built:
            for key, value in found.items():
                if self.hparams[key] != value:
                    raise InputError(f"model.{key} differs from the data's {key}; set the same value in the config")
            return
        self.hparams.update(found)
        self._build()

    # -- model -----------------------------------------------------------------------------------
    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames (B, T, H, W, 3) uint8 → clip representation v (B, Dv): the encoder LSTM's last state."""
        feats = self.drop(self.frame_encoder(frames))  # (B, T, D)
        _, (h, _) = self.video_lstm(feats)  # h (1, B, Dv)
        return h[0]

    def language_model(self, words: torch.Tensor, v: torch.Tensor,
                       state: State | None = None) -> tuple[torch.Tensor, State]:
        """Word ids (B, L) and v (B, Dv) → next-word scores (B, L, V) and the LSTM states."""
        x = self.drop(self.embed(words))  # (B, L, E)
        vis = self.drop(v)[:, None].expand(-1, words.shape[1], -1)  # (B, L, Dv): v at every step
        factored = self.hparams.variant == "factored"
        new_state: State = []
        for i, lstm in enumerate(self.language):
            if (i == 0 and not factored) or (i == 1 and factored):
                x = torch.cat([x, vis], -1)
            x, s = lstm(x, None if state is None else state[i])
            new_state.append(s)
            x = self.drop(x)  # (B, L, H)
        return self.head(x), new_state

    def forward(self, frames: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: scores (B, L-1, V) of tokens[:, 1:] given tokens[:, :-1] (B, L)."""
        return self.language_model(tokens[:, :-1], self.encode_video(frames))[0]

    def loss(self, frames: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        logits = self(frames, tokens)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1),
                               ignore_index=self.vocab.pad)

    # -- decoding --------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, frames: torch.Tensor, decode: Decode = "greedy", beam_size: int = 3,
                 temperature: float = 1.0, max_len: int | None = None, seed: int | None = None) -> list[str]:
        """Captions of clips (B, T, H, W, 3) uint8 by greedy search, beam search or temperature sampling."""
        max_len = int(max_len or self.hparams.max_len)
        v = self.encode_video(frames)  # (B, Dv)
        if decode == "beam":
            ids = self._beam(v, int(beam_size), max_len)
        elif decode in ("greedy", "sample"):
            if decode == "sample" and not temperature > 0:
                raise InputError(f"temperature must be > 0 for sampling, got {temperature}")
            gen = None
            if decode == "sample" and seed is not None:
                gen = torch.Generator(device=v.device).manual_seed(int(seed))
            ids = self._left_to_right(v, max_len, decode == "sample", float(temperature), gen)
        else:
            raise InputError(f"decode {decode!r} is unknown; expected greedy, beam or sample")
        return [self.vocab.decode(row) for row in ids]

    def _left_to_right(self, v: torch.Tensor, max_len: int, sample: bool, temperature: float,
                       gen: torch.Generator | None) -> list[list[int]]:
        B = v.shape[0]
        word = torch.full((B, 1), self.vocab.bos, dtype=torch.long, device=v.device)
        state, out = None, []
        done = torch.zeros(B, dtype=torch.bool, device=v.device)
        for _ in range(max_len + 1):
            logits, state = self.language_model(word, v, state)  # (B, 1, V)
            logits = logits[:, 0]
            if sample:
                word = torch.multinomial((logits / temperature).softmax(-1), 1, generator=gen)  # (B, 1)
            else:
                word = logits.argmax(-1, keepdim=True)
            word = word.masked_fill(done[:, None], self.vocab.pad)
            out.append(word)
            done |= word[:, 0] == self.vocab.eos
            if done.all():
                break
        return torch.cat(out, 1).tolist()

    def _beam(self, v: torch.Tensor, K: int, max_len: int) -> list[list[int]]:
        if K < 1:
            raise InputError(f"beam_size must be ≥ 1, got {K}")
        B, V = v.shape[0], len(self.vocab)
        vk = v.repeat_interleave(K, 0)  # (B*K, Dv)
        scores = torch.full((B, K), float("-inf"), device=v.device)
        scores[:, 0] = 0.0  # one live hypothesis at the start
        seqs = torch.empty(B, K, 0, dtype=torch.long, device=v.device)
        finished = torch.zeros(B, K, dtype=torch.bool, device=v.device)
        word = torch.full((B * K, 1), self.vocab.bos, dtype=torch.long, device=v.device)
        state = None
        for _ in range(max_len + 1):
            logits, state = self.language_model(word, vk, state)
            logp = logits[:, 0].log_softmax(-1).view(B, K, V)
            # a finished hypothesis extends only with <pad> at no cost
            ended = torch.full_like(logp, float("-inf"))
            ended[..., self.vocab.pad] = 0.0
            logp = torch.where(finished[..., None], ended, logp)
            top, idx = (scores[..., None] + logp).view(B, K * V).topk(K, -1)  # (B, K)
            beam, token = idx // V, idx % V
            scores = top
            seqs = torch.cat([seqs.gather(1, beam[..., None].expand(-1, -1, seqs.shape[2])), token[..., None]], 2)
            finished = finished.gather(1, beam) | (token == self.vocab.eos)
            rows = (beam + torch.arange(B, device=v.device)[:, None] * K).view(-1)  # (B*K,)
            state = [(h[:, rows], c[:, rows]) for h, c in state]
            word = token.view(B * K, 1)
            if finished.all():
                break
        best = scores.argmax(1)  # (B,)
        return seqs[torch.arange(B), best].tolist()

    # -- training and evaluation -----------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch["frames"], batch["tokens"])
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch["tokens"]))
        return loss

    def _eval_step(self, batch: dict, split: str) -> None:
        self.log(f"{split}_loss", self.loss(batch["frames"], batch["tokens"]), batch_size=len(batch["tokens"]),
                 add_dataloader_idx=False)
        hyps, refs = self._eval.setdefault(split, ([], []))
        hyps.extend(self.generate(batch["frames"]))
        refs.extend(batch["refs"])

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        for split, (hyps, refs) in self._eval.items():
            self.log(f"{split}_bleu4", bleu(hyps, refs)["bleu4"])
        self._eval = {}

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        names = getattr(self.trainer.datamodule, "test_split_names", ["test"])
        self._eval_step(batch, names[dataloader_idx])

    def on_test_epoch_end(self) -> None:
        for split, (hyps, refs) in self._eval.items():
            for name, value in caption_scores(hyps, refs).items():
                self.log(f"{split}_{name}", value, add_dataloader_idx=False)
        self._eval = {}

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> list[str]:
        """Captions of a batch with the model's default decoding (the predict loop of ``tsuite predict``)."""
        hp = self.hparams
        return self.generate(batch["frames"], hp.decode, hp.beam_size, hp.temperature)

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.Adam(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    # -- tables ----------------------------------------------------------------------------------
    def predict_params(self) -> dict[str, Any]:
        hp = self.hparams
        return {"decode": str(hp.decode), "beam_size": int(hp.beam_size), "temperature": float(hp.temperature),
                "seed": 0}

    def centre_clip(self, video: np.ndarray) -> np.ndarray:
        """The centre window of T frames of a video (N, H, W, 3), resized to the model's frame size."""
        T = self.hparams.clip_frames
        if len(video) < T:
            raise InputError(f"a video of {len(video)} frames is shorter than the model's clip length {T}")
        start = (len(video) - T) // 2
        return resize_frames(video[start : start + T], self.hparams.input_size)

    def predict_frame(self, df: pd.DataFrame, decode: Decode | None = None, beam_size: int | None = None,
                      temperature: float | None = None, seed: int | None = 0) -> pd.DataFrame:
        """Captions of the clips of a frames table (clip, frames, shape): columns ``clip``, ``caption``."""
        hp = self.hparams
        rows = table_frames(df)
        self.eval()
        captions: list[str] = []
        if rows:
            clips = torch.from_numpy(np.stack([self.centre_clip(v) for _, v in rows])).to(self.device)
            captions = self.generate(clips, decode or hp.decode, beam_size or hp.beam_size,
                                     hp.temperature if temperature is None else temperature, seed=seed)
        return pd.DataFrame({"clip": [name for name, _ in rows], "caption": captions})
