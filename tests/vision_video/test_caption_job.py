"""`tsuite caption`: captions printed or written atomically (.csv/.jsonl) from a checkpoint or the MLflow registry,
and the MLflow pyfunc models of both LRCN models answering a frames table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tsuite.cli import main
from tsuite.tracking import save_weights
from tsuite.vision_video import LRCN, LRCNCaptioner, MovingShapes, Vocab
from tsuite.vision_video.shapes import write_clip
from tsuite.vision_video.video_data import frames_table, read_video

REPO = Path(__file__).resolve().parents[2]
VOCAB = Vocab.build(["a red square moves left quickly", "a blue circle and a green triangle collide"]).words


@pytest.fixture
def captioner() -> LRCNCaptioner:
    torch.manual_seed(0)
    return LRCNCaptioner(vocab=VOCAB, clip_frames=4, input_size=16, feature_dim=16, channels=4, video_hidden=16,
                         embed_dim=8, hidden_size=16, max_len=6).eval()


@pytest.fixture
def clips_dir(tmp_path) -> Path:
    gen, rng = MovingShapes(size=32, n_frames=12), np.random.default_rng(0)
    folder = tmp_path / "clips"
    folder.mkdir()
    write_clip(folder, "one", gen.single("red", "square", "left", "quickly", rng)[0], "mp4")
    write_clip(folder, "two", gen.single("blue", "circle", "up", "slowly", rng)[0], "mp4")
    write_clip(folder, "three", gen.interaction("pass", ("red", "circle"), ("blue", "square"), False, rng)[0], "frames")
    return folder


def expected_captions(model: LRCNCaptioner, folder: Path, **params) -> pd.DataFrame:
    names = ["one", "three", "two"]  # find_clips order: sorted file names
    paths = [folder / "one.mp4", folder / "three", folder / "two.mp4"]
    return model.predict_frame(frames_table(names, [read_video(p, size=16) for p in paths]), **params)


def test_caption_job_writes_csv_and_jsonl_matching_the_model(tmp_path, captioner, clips_dir):
    weights = save_weights(captioner, tmp_path / "cap.pt")
    out = tmp_path / "out" / "captions.csv"
    assert main(["caption", "--model", str(weights), "--input", str(clips_dir), "--output", str(out),
                 "--no-progress"]) == 0
    got = pd.read_csv(out, keep_default_na=False)
    want = expected_captions(captioner, clips_dir)
    assert list(got.columns) == ["clip", "caption"] and got["clip"].tolist() == ["one", "three", "two"]
    assert got["caption"].tolist() == want["caption"].tolist()

    jsonl = tmp_path / "captions.jsonl"
    assert main(["caption", "--model", str(weights), "--input", str(clips_dir), "--output", str(jsonl),
                 "--decode", "beam", "--beam-size", "3", "--no-progress"]) == 0
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    beam = expected_captions(captioner, clips_dir, decode="beam", beam_size=3)
    assert [r["caption"] for r in rows] == beam["caption"].tolist() and len(rows) == 3


def test_caption_job_prints_one_line_per_clip_for_a_single_video(tmp_path, captioner, clips_dir, capsys):
    weights = save_weights(captioner, tmp_path / "cap.pt")
    assert main(["caption", "--model", str(weights), "--input", str(clips_dir / "one.mp4"), "--decode", "sample",
                 "--temperature", "0.5", "--no-progress"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("one\t")


def test_a_failed_run_keeps_the_earlier_output(tmp_path, captioner, clips_dir, capsys):
    weights = save_weights(captioner, tmp_path / "cap.pt")
    out = tmp_path / "captions.csv"
    out.write_text("clip,caption\nold,kept\n")
    (clips_dir / "four.mp4").write_bytes(b"\x00\x01 broken")
    assert main(["caption", "--model", str(weights), "--input", str(clips_dir), "--output", str(out),
                 "--no-progress"]) == 2
    assert "four.mp4: cannot be decoded as a video" in capsys.readouterr().err
    assert out.read_text() == "clip,caption\nold,kept\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".captions")) == []


def test_an_activity_model_is_refused(tmp_path, clips_dir, capsys):
    model = LRCN(classes=["a", "b"], clip_frames=4, input_size=16, feature_dim=8, hidden_size=8, channels=4)
    weights = save_weights(model, tmp_path / "act.pt")
    assert main(["caption", "--model", str(weights), "--input", str(clips_dir), "--no-progress"]) == 2
    assert "not a captioning model" in capsys.readouterr().err


def test_activity_pyfunc_model_answers_a_frames_table(mlflow_home, clips_dir):
    import mlflow

    from tsuite.tracking import log_model

    video = read_video(clips_dir / "one.mp4", size=16)
    df = frames_table(["one", "short"], [video, video[:5]])
    activity = LRCN(classes=["left", "right", "up"], clip_frames=4, input_size=16, feature_dim=8, hidden_size=8,
                    channels=4).eval()
    with mlflow.start_run() as run:
        pass
    log_model(activity, df, run.info.run_id, register_as="act", alias="champion")
    probs = mlflow.pyfunc.load_model("models:/act@champion").predict(df, params={"clip_stride": 1})
    cols = ["prob_left", "prob_right", "prob_up"]
    np.testing.assert_allclose(probs[cols].to_numpy(), activity.predict_frame(df, clip_stride=1)[cols].to_numpy(),
                               rtol=1e-6)
    assert probs["label"].tolist() == activity.predict_frame(df, clip_stride=1)["label"].tolist()


def test_fit_registers_a_captioner_that_the_caption_job_loads(mlflow_home, clips_dir):
    config = REPO / "configs/vision_video/lrcn_shapes_caption_single.yaml"
    small = ["--data.init_args.shapes.n_train", "40", "--data.init_args.shapes.n_val", "8",
             "--data.init_args.shapes.n_test", "8", "--data.init_args.shapes.n_unseen", "8",
             "--data.init_args.cache_dir", str(mlflow_home / "cache")]
    assert main(["fit", "--config", str(config), "--trainer.enable_progress_bar", "false", "--trainer.max_steps", "2",
                 "--trainer.max_epochs", "1", *small, "--register", "cap", "--alias", "champion"]) == 0
    import mlflow

    run = mlflow.search_runs(experiment_names=["tsuite"]).iloc[0]
    for split in ("test", "test_unseen"):
        for metric in ("bleu1", "bleu4", "cider_d"):
            assert np.isfinite(run[f"metrics.{split}_{metric}"]), (split, metric)
    out = mlflow_home / "caps.csv"
    assert main(["caption", "--model", "models:/cap@champion", "--input", str(clips_dir), "--output", str(out),
                 "--no-progress"]) == 0
    got = pd.read_csv(out, keep_default_na=False)
    assert got["clip"].tolist() == ["one", "three", "two"]
    # the registered pyfunc model answers the same frames table with the same captions
    assert mlflow.models.get_model_info("models:/cap@champion").signature is not None
    df = frames_table(["one"], [read_video(clips_dir / "one.mp4")])  # the config's 32x32 frames
    pyfunc = mlflow.pyfunc.load_model("models:/cap@champion")
    assert pyfunc.predict(df)["caption"].tolist() == got["caption"].tolist()[:1]
    beam = pyfunc.predict(df, params={"decode": "beam", "beam_size": 2})["caption"].tolist()
    assert len(beam) == 1 and isinstance(beam[0], str)
