"""LRCN activity recognition: time-averaged clip scores, strided video averaging, encoders, and learning motion."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch

from tsuite.vision_video import LRCN, MovingShapes, VideoDataModule
from tsuite.vision_video.frame_encoder import FrameEncoder
from tsuite.vision_video.video_data import frames_table

CLASSES = ["left", "right", "up", "down"]


def tiny_model(**kw) -> LRCN:
    torch.manual_seed(0)
    args = dict(classes=CLASSES, clip_frames=4, input_size=16, feature_dim=16, hidden_size=16, channels=4)
    return LRCN(**{**args, **kw}).eval()


def test_clip_probabilities_are_per_step_softmax_averaged_over_time():
    model = tiny_model()
    frames = torch.randint(0, 256, (3, 4, 16, 16, 3), dtype=torch.uint8)
    logits = model(frames)
    assert logits.shape == (3, 4, len(CLASSES))  # (B, T, K)
    manual = torch.stack([logits[:, t].softmax(-1) for t in range(4)]).mean(0)
    torch.testing.assert_close(model.clip_probs(frames), manual, rtol=0, atol=1e-6)


def test_predict_frame_averages_strided_clips_of_a_video():
    model = tiny_model()
    video = np.random.default_rng(0).integers(0, 256, (9, 16, 16, 3), dtype=np.uint8)
    out = model.predict_frame(frames_table(["v"], [video]), clip_stride=2)
    # clips of 4 frames starting at 0, 2, 4 (a start of 6 would run past frame 9)
    clips = torch.from_numpy(np.stack([video[s : s + 4] for s in (0, 2, 4)]))
    expected = model.clip_probs(clips).mean(0).detach().numpy()
    probs = out[[f"prob_{c}" for c in CLASSES]].to_numpy()[0]
    np.testing.assert_allclose(probs, expected, rtol=0, atol=1e-6)
    assert out["label"][0] == CLASSES[int(expected.argmax())] and probs.sum() == pytest.approx(1.0, abs=1e-6)


def test_predict_frame_resizes_frames_and_rejects_short_videos():
    model = tiny_model()
    big = np.zeros((6, 32, 32, 3), dtype=np.uint8)
    assert len(model.predict_frame(frames_table(["a", "b"], [big, big]))) == 2
    from tsuite.tables import InputError

    with pytest.raises(InputError, match="3 frames is shorter than the model's clip length 4"):
        model.predict_frame(frames_table(["s"], [big[:3]]))


def test_resnet18_encoder_and_freezing():
    enc = FrameEncoder(32, feature_dim=8, encoder="resnet18", freeze=True)
    frames = torch.randint(0, 256, (2, 3, 32, 32, 3), dtype=torch.uint8)
    assert enc(frames).shape == (2, 3, 8)  # (B, T, D)
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable == {"cnn.fc.0.weight", "cnn.fc.0.bias"}
    small = FrameEncoder(16, feature_dim=8, freeze=True, channels=4)
    assert not any(p.requires_grad for p in small.cnn.conv.parameters())
    assert all(p.requires_grad for p in small.cnn.fc.parameters())


def test_lrcn_learns_the_direction_of_motion(tmp_path):
    """Shapes moving left or right (either speed): held-out video accuracy beats the majority class by 15 points."""
    root = MovingShapes(size=32, n_frames=6, n_train=640, n_val=0, n_test=100, n_unseen=0, interaction_share=0.0,
                        seed=0).generate(tmp_path / "d", "frames")
    labels = pd.read_csv(root / "labels.csv")
    labels["label"] = labels["label"].str.split("_").str[0]  # left_quickly → left
    labels = labels[labels["label"].isin(["left", "right"])]
    labels.to_csv(root / "labels.csv", index=False)
    pl.seed_everything(0)
    data = VideoDataModule(root=str(root), n_frames=6, frame_size=32, clip_stride=1, batch_size=16)
    model = LRCN(feature_dim=32, hidden_size=32, channels=8, dropout=0.3, lr=3e-3)
    trainer = pl.Trainer(max_steps=150, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(model, data)
    result = trainer.test(model, data, verbose=False)[0]
    assert model.hparams.classes == ["left", "right"]
    test_labels = [data.labels[c] for c in data.splits["test"]]
    majority = max(test_labels.count("left"), test_labels.count("right")) / len(test_labels)
    assert result["test_acc_video"] >= majority + 0.15, (result, majority)
