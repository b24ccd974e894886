"""Moving-shapes generator, video readers and VideoDataModule: determinism, splits, batches and input errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsuite.tables import InputError
from tsuite.vision_video.shapes import COLOURS, SHAPES, MovingShapes, held_out_direction, write_clip
from tsuite.vision_video.video_data import VideoDataModule, read_captions, read_labels, read_video

SMALL = dict(size=32, n_frames=8, n_train=48, n_val=6, n_test=6, n_unseen=6)


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory) -> Path:
    return MovingShapes(**SMALL, seed=3).generate(tmp_path_factory.mktemp("shapes") / "data", "frames")


def copy_dataset(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_generator_is_deterministic_from_the_seed(tmp_path, shapes_dir):
    again = MovingShapes(**SMALL, seed=3).generate(tmp_path / "again", "frames")
    other = MovingShapes(**SMALL, seed=4).generate(tmp_path / "other", "frames")
    assert (again / "labels.csv").read_text() == (shapes_dir / "labels.csv").read_text()
    assert (again / "captions.json").read_text() == (shapes_dir / "captions.json").read_text()
    np.testing.assert_array_equal(read_video(again / "train_00005"), read_video(shapes_dir / "train_00005"))
    assert (other / "captions.json").read_text() != (shapes_dir / "captions.json").read_text()


def test_unseen_split_holds_exactly_the_held_out_combinations(tmp_path):
    out = MovingShapes(size=32, n_frames=8, n_train=120, n_val=0, n_test=0, n_unseen=30, seed=0).generate(
        tmp_path / "d", "frames")
    captions = json.loads((out / "captions.json").read_text())
    splits = pd.read_csv(out / "splits.csv").set_index("clip")["split"]
    held = {(c, s, held_out_direction(c, s)) for c in COLOURS for s in SHAPES}
    assert len(held) == 12 and {d for _, _, d in held} == {"left", "right", "up", "down"}
    seen_single = 0
    for clip, caps in captions.items():
        words = caps[0].split()
        if " and " in caps[0] or "towards" in caps[0] or "collides" in caps[0] or "passes" in caps[0]:
            assert splits[clip] == "train"  # interactions are never in the unseen split
            continue
        triple = (words[1], words[2], words[4])  # "a red square moves left quickly"
        assert (triple in held) == (splits[clip] == "test_unseen"), caps[0]
        seen_single += splits[clip] == "train"
    assert seen_single > 60


def test_mp4_round_trip_keeps_colours(tmp_path):
    gen = MovingShapes(**SMALL, seed=1)
    frames, label, caps = gen.single("red", "square", "left", "quickly", np.random.default_rng(0))
    path = write_clip(tmp_path, "clip", frames, "mp4")
    back = read_video(path)
    assert back.shape == frames.shape == (8, 32, 32, 3)
    assert np.abs(back.astype(int) - frames.astype(int)).mean() < 3.0  # near lossless H.264 4:4:4
    assert label == "left_quickly" and caps[0] == "a red square moves left quickly"
    assert read_video(path, size=16, frame_step=2).shape == (4, 16, 16, 3)


def test_activity_batches_and_strided_evaluation_windows(shapes_dir):
    data = VideoDataModule(root=str(shapes_dir), task="activity", n_frames=4, frame_size=16, clip_stride=2,
                           batch_size=5)
    data.setup("fit")
    assert set(data.splits) == {"train", "val", "test", "test_unseen"}
    assert len(data.splits["train"]) == 48 and data.test_split_names == ["test", "test_unseen"]
    batch = next(iter(data.train_dataloader()))
    assert batch["frames"].shape == (5, 4, 16, 16, 3) and batch["frames"].dtype.__str__() == "torch.uint8"
    assert batch["label"].max() < len(data.classes)
    # 8-frame videos, windows of 4 at stride 2: starts 0, 2, 4 → 3 windows per video
    test = data.test_dataloader()[0]
    assert len(test.dataset) == 3 * 6
    example = data.input_example()
    assert list(example.columns) == ["clip", "frames", "shape"] and list(example["shape"][0]) == [4, 16, 16, 3]


def test_caption_vocabulary_comes_from_training_captions_only(tmp_path, shapes_dir):
    root = copy_dataset(shapes_dir, tmp_path / "d")
    captions = json.loads((root / "captions.json").read_text())
    captions["test_00000"] = ["a purple hexagon wobbles"]
    captions["train_00000"].append("a rare word")
    (root / "captions.json").write_text(json.dumps(captions))
    data = VideoDataModule(root=str(root), task="caption", n_frames=8, frame_size=32, min_count=2)
    data.setup("fit")
    words = set(data.vocab.words)
    assert {"purple", "hexagon", "wobbles"}.isdisjoint(words)  # test captions never reach the vocabulary
    assert "rare" not in words and "square" in words or "circle" in words  # below min_count → <unk>
    assert data.vocab.encode("a rare word")[2] == data.vocab.unk
    batch = next(iter(data.train_dataloader()))
    assert batch["tokens"][:, 0].eq(data.vocab.bos).all() and len(batch["refs"]) == len(batch["tokens"])


def test_shapes_auto_generates_into_the_cache_once(tmp_path):
    kwargs = dict(root="shapes:auto", shapes=MovingShapes(**SMALL, seed=7), cache_dir=str(tmp_path), n_frames=4)
    first = VideoDataModule(**kwargs)
    first.setup()
    folder = first.folder
    stamp = (folder / "labels.csv").stat().st_mtime_ns
    second = VideoDataModule(**kwargs)
    second.setup()
    assert second.folder == folder and (folder / "labels.csv").stat().st_mtime_ns == stamp
    assert folder.parent == tmp_path / "shapes" and len(second.videos) == 66


@pytest.mark.parametrize("case", ["unreadable", "short", "missing_clip", "empty_caption", "unknown_column",
                                  "caption_for_missing_clip"])
def test_bad_input_names_the_file_and_what_was_expected(tmp_path, shapes_dir, case):
    root = copy_dataset(shapes_dir, tmp_path / "d")
    task = "caption" if "caption" in case else "activity"
    if case == "unreadable":
        (root / "train_00001.mp4").write_bytes(b"not a video at all")
        shutil.rmtree(root / "train_00001")
        match = r"train_00001\.mp4: cannot be decoded as a video"
    elif case == "short":
        for p in sorted((root / "train_00002").iterdir())[3:]:
            p.unlink()
        match = r"train_00002: 3 frames after sampling .* n_frames=4"
    elif case == "missing_clip":
        shutil.rmtree(root / "train_00003")
        match = r"labels.csv row 4: clip 'train_00003' has no video"
    elif case == "empty_caption":
        caps = json.loads((root / "captions.json").read_text())
        caps["train_00004"] = ["a red square", "  ..  "]
        (root / "captions.json").write_text(json.dumps(caps))
        match = r"captions.json: clip 'train_00004' caption 2 .* is empty"
    elif case == "unknown_column":
        df = pd.read_csv(root / "labels.csv")
        df["colour"] = "red"
        df.to_csv(root / "labels.csv", index=False)
        match = r"labels.csv: unknown column\(s\) colour; expected exactly the columns clip, label"
    else:
        caps = json.loads((root / "captions.json").read_text())
        caps["nowhere"] = ["a red square"]
        (root / "captions.json").write_text(json.dumps(caps))
        match = r"captions.json: clip 'nowhere' has no video"
    data = VideoDataModule(root=str(root), task=task, n_frames=4, frame_size=16)
    with pytest.raises(InputError, match=match):
        data.setup("fit")


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                      max_size=3), max_leaves=8)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.one_of(st.binary(max_size=40), json_values.map(lambda v: json.dumps(v).encode())))
def test_caption_reader_accepts_valid_files_and_rejects_the_rest_with_input_error(tmp_path_factory, content):
    folder = tmp_path_factory.mktemp("fuzz")
    clips = {"c1": folder / "c1.mp4", "c2": folder / "c2.mp4"}
    path = folder / "captions.json"
    path.write_bytes(content)
    try:
        caps = read_captions(path, clips)
    except InputError as err:
        assert str(path) in str(err)
        return
    assert caps and set(caps) <= set(clips)
    assert all(isinstance(c, str) and c.strip() for v in caps.values() for c in v)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(st.sampled_from(["c1", "c2", "c3.mp4", "zz", "", " "]),
                               st.sampled_from(["left", "", "x"])), max_size=5),
       extra=st.sampled_from([None, "split", "label2"]))
def test_labels_reader_accepts_valid_tables_and_rejects_the_rest_with_input_error(tmp_path_factory, rows, extra):
    folder = tmp_path_factory.mktemp("fuzz")
    clips = {"c1": folder / "c1", "c2": folder / "c2", "c3": folder / "c3.mp4"}
    df = pd.DataFrame(rows, columns=["clip", "label"])
    if extra:
        df[extra] = "x"
    path = folder / "labels.csv"
    df.to_csv(path, index=False)
    try:
        labels = read_labels(path, clips)
    except InputError as err:
        assert str(path) in str(err)
        return
    assert extra is None and set(labels) <= set(clips) and len(labels) == len(rows)
    assert all(v.strip() for v in labels.values())


@pytest.fixture(scope="module")
def mp4_bytes(tmp_path_factory) -> bytes:
    """A real 8-frame 32×32 mp4, to cut and corrupt."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, size=(8, 32, 32, 3), dtype=np.uint8)
    return write_clip(tmp_path_factory.mktemp("mp4"), "clip", frames, "mp4").read_bytes()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.floats(0.0, 1.0), flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 255)), max_size=6),
       noise=st.binary(max_size=64), name=st.sampled_from(["clip.mp4", "clïp é.mp4", "视频.mkv", "x.avi"]))
def test_video_reader_decodes_or_raises_input_error_on_truncated_and_corrupt_files(
        tmp_path_factory, mp4_bytes, cut, flips, noise, name):
    data = bytearray(mp4_bytes[: int(cut * len(mp4_bytes))] if cut < 1.0 else mp4_bytes)
    for where, value in flips:  # corrupt a few bytes of what is left
        if data:
            data[min(int(where * len(data)), len(data) - 1)] = value
    path = tmp_path_factory.mktemp("fuzz") / name
    path.write_bytes(bytes(data) + (noise if cut < 0.05 else b""))
    try:
        video = read_video(path, size=16)
    except InputError as err:
        assert str(path) in str(err)
        return
    # a correct parse: some frames of the right geometry and type
    assert video.dtype == np.uint8 and video.ndim == 4 and video.shape[1:] == (16, 16, 3) and len(video) >= 1


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(contents=st.lists(st.one_of(st.binary(max_size=32), st.just(b"PNG")), min_size=1, max_size=3))
def test_frame_folder_reader_rejects_unreadable_images_with_input_error(tmp_path_factory, contents):
    folder = tmp_path_factory.mktemp("frames") / "clip"
    folder.mkdir()
    for i, content in enumerate(contents):
        (folder / f"{i:03d}.png").write_bytes(content)
    with pytest.raises(InputError, match="cannot be read as an image"):
        read_video(folder)
