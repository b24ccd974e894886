"""LRCN captioning: where the video enters in each variant, decoding (greedy, beam, sampling), and learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tsuite.vision_video import LRCNCaptioner, MovingShapes, Vocab
from tsuite.vision_video.caption_metrics import bleu

CAPTIONS = ["a red square moves left quickly", "a blue circle moves up slowly", "a green triangle moves down quickly",
            "a yellow square and a blue circle collide"]
VOCAB = Vocab.build(CAPTIONS).words


def tiny(variant: str = "factored", **kw) -> LRCNCaptioner:
    torch.manual_seed(0)
    args = dict(vocab=VOCAB, clip_frames=4, input_size=16, variant=variant, feature_dim=16, channels=4,
                video_hidden=16, embed_dim=8, hidden_size=16, dropout=0.0, max_len=8)
    return LRCNCaptioner(**{**args, **kw}).eval()


def seq_logprob(model: LRCNCaptioner, frames: torch.Tensor, caption: str) -> float:
    """Sum of log-probabilities of the caption's words and <eos> under teacher forcing."""
    tokens = torch.tensor([model.vocab.encode(caption)])
    with torch.no_grad():
        logp = model(frames, tokens).log_softmax(-1)[0]  # (L-1, V)
    return float(logp.gather(1, tokens[0, 1:, None]).sum())


@pytest.mark.parametrize("variant, first_layer_sees_video", [("single", True), ("unfactored", True),
                                                            ("factored", False)])
def test_where_the_video_enters_the_language_lstms(variant, first_layer_sees_video):
    model = tiny(variant)
    assert len(model.language) == (1 if variant == "single" else 2)
    words = torch.tensor([[1, 4, 5, 6]])
    v1, v2 = torch.randn(1, 16), torch.randn(1, 16)
    _, s1 = model.language_model(words, v1)
    _, s2 = model.language_model(words, v2)
    first_differs = not torch.allclose(s1[0][0], s2[0][0])
    assert first_differs == first_layer_sees_video
    if variant != "single":
        assert not torch.allclose(s1[1][0], s2[1][0])  # the top layer always depends on the video


def test_beam_of_one_is_greedy_and_wider_beams_score_at_least_as_high():
    model = tiny("unfactored")
    frames = torch.randint(0, 256, (3, 4, 16, 16, 3), dtype=torch.uint8)
    greedy = model.generate(frames, "greedy")
    assert model.generate(frames, "beam", beam_size=1) == greedy
    wide = model.generate(frames, "beam", beam_size=5)
    for i in range(3):
        clip = frames[i : i + 1]
        if len(greedy[i].split()) < model.hparams.max_len and len(wide[i].split()) < model.hparams.max_len:
            assert seq_logprob(model, clip, wide[i]) >= seq_logprob(model, clip, greedy[i]) - 1e-5


def test_sampling_is_seeded_and_a_cold_temperature_is_greedy():
    model = tiny("single")
    frames = torch.randint(0, 256, (4, 4, 16, 16, 3), dtype=torch.uint8)
    hot = [model.generate(frames, "sample", temperature=5.0, seed=s) for s in (1, 1, 2)]
    assert hot[0] == hot[1] and hot[0] != hot[2]
    assert model.generate(frames, "sample", temperature=1e-4, seed=3) == model.generate(frames, "greedy")


def test_captioner_learns_to_tell_clips_apart_by_teacher_forcing():
    """Four clips with four captions: after training, greedy captions match (BLEU-4 1.0); one caption for all scores < 0.5."""
    gen, rng = MovingShapes(size=16, n_frames=6), np.random.default_rng(0)
    clips = [gen.single("red", "square", "left", "quickly", rng)[0], gen.single("blue", "circle", "up", "slowly", rng)[0],
             gen.single("green", "triangle", "down", "quickly", rng)[0],
             gen.interaction("collide", ("yellow", "square"), ("blue", "circle"), True, rng)[0]]
    frames = torch.from_numpy(np.stack([c[:4] for c in clips]))
    tokens = torch.nn.utils.rnn.pad_sequence([torch.tensor(Vocab(VOCAB).encode(c)) for c in CAPTIONS],
                                             batch_first=True)
    model = tiny("factored", lr=1e-2).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(120):
        opt.zero_grad()
        model.loss(frames, tokens).backward()
        opt.step()
    out = model.eval().generate(frames)
    refs = [[c] for c in CAPTIONS]
    assert bleu(out, refs)["bleu4"] == pytest.approx(1.0), out
    assert bleu([CAPTIONS[0]] * 4, refs)["bleu4"] < 0.5
