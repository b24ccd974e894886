"""Moving shapes: a generator of small video clips with action labels and captions.

Each clip shows either one shape moving in a straight line (colour, shape,
direction, speed: "a red square moves left quickly", label ``left_quickly``)
or two shapes interacting along a horizontal or vertical line ("a red square
and a blue circle collide", labels ``approach``, ``collide``, ``pass``):

- approach: both move slowly towards each other and stop short of touching;
- collide: they meet in the middle of the clip and bounce back;
- pass: they move on neighbouring lanes, cross and go on.

In a two-shape caption the first shape named is the one on the left
(horizontal) or at the top (vertical) in the first frame. Every clip has two
reference captions (two phrasings).

Compositional split: for every colour-shape pair one direction is held out
(``held_out_direction``); single-shape clips of those (colour, shape,
direction) triples appear only in the ``test_unseen`` split. The other splits
(``train``, ``val``, ``test``) hold only seen triples and the interactions.

Output folder: ``<clip>.mp4`` (PyAV, H.264 4:4:4) or ``<clip>/000.png ...``
frame folders, plus ``labels.csv`` (clip, label), ``captions.json``
(clip → list of captions) and ``splits.csv`` (clip, split). Everything is
deterministic from the seed. Run as ``python -m tsuite.vision_video.shapes OUT_DIR``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

COLOURS = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (50, 90, 235), "yellow": (230, 210, 40)}
SHAPES = ("square", "circle", "triangle")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}  # (dx, dy), y grows downwards
SPEEDS = {"slowly": 1.0, "quickly": 2.0}  # pixels per frame at 32x32 (scaled with the frame size)
INTERACTIONS = ("approach", "collide", "pass")
ACTIONS = tuple(f"{d}_{s}" for d in DIRECTIONS for s in SPEEDS) + INTERACTIONS
SPLITS = ("train", "val", "test", "test_unseen")
VideoFormat = Literal["mp4", "frames"]


def held_out_direction(colour: str, shape: str) -> str:
    """The direction in which this colour-shape pair is never seen moving during training."""
    c, s = list(COLOURS).index(colour), SHAPES.index(shape)
    return list(DIRECTIONS)[(c + s) % len(DIRECTIONS)]


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> np.ndarray:
    return np.mgrid[0:size, 0:size].astype(np.float32)  # (2, size, size): y, x


def shape_mask(shape: str, cx: float, cy: float, r: float, size: int) -> np.ndarray:
    """Boolean (size, size) mask of a shape of half-width ``r`` centred at (cx, cy)."""
    y, x = _grid(size)
    dx, dy = x - cx, y - cy
    if shape == "square":
        return (np.abs(dx) <= r) & (np.abs(dy) <= r)
    if shape == "circle":
        return dx**2 + dy**2 <= (r + 0.5) ** 2
    if shape == "triangle":  # apex up, base down
        return (dy >= -r) & (dy <= r) & (np.abs(dx) <= (dy + r) / 2 + 0.5)
    raise ValueError(f"unknown shape {shape!r}; expected one of {', '.join(SHAPES)}")


class MovingShapes:
    """Generator of moving-shape clips (see the module docstring).

    Args:
        size: frame height and width in pixels.
        n_frames: frames per clip.
        n_train, n_val, n_test, n_unseen: clips per split (``n_unseen``: held-out combinations).
        interaction_share: share of two-shape clips in train / val / test.
        noise: standard deviation of the Gaussian pixel noise (0-255 scale).
        seed: everything follows from it.
    """

    def __init__(
        self,
        size: int = 32,
        n_frames: int = 12,
        n_train: int = 1200,
        n_val: int = 150,
        n_test: int = 300,
        n_unseen: int = 300,
        interaction_share: float = 0.3,
        noise: float = 6.0,
        seed: int = 0,
    ):
        if size < 16 or n_frames < 6:
            raise ValueError(f"need size ≥ 16 and n_frames ≥ 6, got size={size}, n_frames={n_frames}")
        self.size, self.n_frames, self.noise, self.seed = size, n_frames, noise, seed
        self.counts = {"train": n_train, "val": n_val, "test": n_test, "test_unseen": n_unseen}
        self.interaction_share = interaction_share
        self.scale = size / 32.0
        self.r = 3.0 * self.scale  # half-width of a shape

    def settings(self) -> dict:
        """The arguments that determine the output (the cache key of generated data)."""
        return {"size": self.size, "n_frames": self.n_frames, **{f"n_{k}": v for k, v in self.counts.items()},
                "interaction_share": self.interaction_share, "noise": self.noise, "seed": self.seed}

    # -- one clip --------------------------------------------------------------------------------
    def _render(self, objects: list[tuple[str, str, np.ndarray]], rng: np.random.Generator) -> np.ndarray:
        """Frames (T, S, S, 3) uint8 of objects (colour, shape, centres (T, 2))."""
        S, T = self.size, self.n_frames
        frames = np.zeros((T, S, S, 3), dtype=np.float32)
        for t in range(T):
            for colour, shape, centres in objects:
                frames[t][shape_mask(shape, centres[t, 0], centres[t, 1], self.r, S)] = COLOURS[colour]
        frames += rng.normal(0.0, self.noise, frames.shape)
        return np.clip(frames, 0, 255).astype(np.uint8)

    def single(self, colour: str, shape: str, direction: str, speed: str, rng: np.random.Generator):
        """One shape moving in a straight line: (frames, label, captions)."""
        S, T = self.size, self.n_frames
        v = SPEEDS[speed] * self.scale
        travel = v * (T - 1)
        d = np.array(DIRECTIONS[direction], dtype=np.float32)
        # along the motion the centre stays in [0, S-1] (the shape may be cut at the border); across it, inside
        lo, hi = (0.0, S - 1 - travel) if d.sum() > 0 else (travel, S - 1.0)
        along = rng.uniform(lo, hi)
        across = rng.uniform(self.r, S - 1 - self.r)
        start = np.array([along, across] if d[0] != 0 else [across, along], dtype=np.float32)
        centres = start + np.arange(T, dtype=np.float32)[:, None] * v * d
        captions = [f"a {colour} {shape} moves {direction} {speed}",
                    f"a {colour} {shape} is moving {direction} {speed}"]
        return self._render([(colour, shape, centres)], rng), f"{direction}_{speed}", captions

    def interaction(self, kind: str, a: tuple[str, str], b: tuple[str, str], horizontal: bool,
                    rng: np.random.Generator):
        """Two shapes meeting along a line: (frames, label, captions); ``a`` starts left / at the top."""
        S, T, r = self.size, self.n_frames, self.r
        t = np.arange(T, dtype=np.float32)
        meet = (T - 1) / 2.0
        if kind == "approach":  # slow, and stop before touching
            v = 1.0 * self.scale
            gap = 2 * r + 2 + 2 * v * (T - 1 - t)  # distance between centres
        elif kind == "collide":  # touch at the middle of the clip, then bounce back
            v = 1.5 * self.scale
            gap = 2 * r + 1 + 2 * v * np.abs(meet - t)
        elif kind == "pass":  # cross on neighbouring lanes
            v = 1.5 * self.scale
            gap = 2 * v * (meet - t)
        else:
            raise ValueError(f"unknown interaction {kind!r}; expected one of {', '.join(INTERACTIONS)}")
        half = np.abs(gap).max() / 2
        mid = rng.uniform(min(half, S / 2), max(S - 1 - half, S / 2))
        lane = rng.uniform(2 * r + 1, S - 2 - 2 * r)
        offset = (r + 1) if kind == "pass" else 0.0
        pa = np.stack([mid - gap / 2, np.full(T, lane - offset)], 1)  # (T, 2) along, across
        pb = np.stack([mid + gap / 2, np.full(T, lane + offset)], 1)
        if not horizontal:
            pa, pb = pa[:, ::-1], pb[:, ::-1]
        frames = self._render([(a[0], a[1], pa), (b[0], b[1], pb)], rng)
        x, y = f"a {a[0]} {a[1]}", f"a {b[0]} {b[1]}"
        captions = {
            "approach": [f"{x} and {y} approach each other", f"{x} moves towards {y}"],
            "collide": [f"{x} and {y} collide", f"{x} collides with {y}"],
            "pass": [f"{x} and {y} pass each other", f"{x} passes {y}"],
        }[kind]
        return frames, kind, captions

    def clip(self, split: str, rng: np.random.Generator):
        """A random clip of ``split``: (frames (T, S, S, 3) uint8, label, captions)."""
        colours, directions, speeds = list(COLOURS), list(DIRECTIONS), list(SPEEDS)
        pick = lambda seq: seq[rng.integers(len(seq))]  # noqa: E731
        if split != "test_unseen" and rng.random() < self.interaction_share:
            while True:
                a, b = (pick(colours), pick(SHAPES)), (pick(colours), pick(SHAPES))
                if a != b:
                    break
            return self.interaction(pick(INTERACTIONS), a, b, bool(rng.integers(2)), rng)
        while True:
            colour, shape, direction = pick(colours), pick(SHAPES), pick(directions)
            unseen = direction == held_out_direction(colour, shape)
            if unseen == (split == "test_unseen"):
                return self.single(colour, shape, direction, pick(speeds), rng)

    # -- writing ---------------------------------------------------------------------------------
    def generate(self, out_dir: str | os.PathLike, video_format: VideoFormat = "mp4", overwrite: bool = True) -> Path:
        """Write every split's clips and the labels, captions and splits files into ``out_dir``.

        The folder is built beside ``out_dir`` and renamed into place when complete. With
        ``overwrite=False`` a folder that appeared meanwhile (another process generating the same
        data) is kept and the new copy dropped.
        """
        out = Path(out_dir)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            rows, captions = [], {}
            for k, split in enumerate(SPLITS):
                rng = np.random.default_rng([self.seed, k])
                for i in range(self.counts[split]):
                    name = f"{split}_{i:05d}"
                    frames, label, caps = self.clip(split, rng)
                    write_clip(tmp, name, frames, video_format)
                    rows.append((name, label, split))
                    captions[name] = caps
            table = pd.DataFrame(rows, columns=["clip", "label", "split"])
            table[["clip", "label"]].to_csv(tmp / "labels.csv", index=False)
            table[["clip", "split"]].to_csv(tmp / "splits.csv", index=False)
            (tmp / "captions.json").write_text(json.dumps(captions, indent=0), encoding="utf-8")
            (tmp / "generator.json").write_text(json.dumps({**self.settings(), "format": video_format}))
            if out.exists():
                if not overwrite:
                    return out
                shutil.rmtree(out)
            os.replace(tmp, out)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        return out


def write_clip(folder: Path, name: str, frames: np.ndarray, video_format: VideoFormat, fps: int = 12) -> Path:
    """Write frames (T, H, W, 3) uint8 as ``<name>.mp4`` (H.264, 4:4:4, near lossless) or ``<name>/NNN.png``."""
    if video_format == "frames":
        from PIL import Image

        path = folder / name
        path.mkdir(parents=True, exist_ok=True)
        for t, frame in enumerate(frames):
            Image.fromarray(frame).save(path / f"{t:03d}.png")
        return path
    if video_format != "mp4":
        raise ValueError(f"unknown video format {video_format!r}; expected mp4 or frames")
    import av

    path = folder / f"{name}.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv444p"  # keep full colour resolution on tiny frames
        stream.options = {"crf": "8", "preset": "veryfast", "threads": "1"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tsuite.vision_video.shapes",
                                     description="Render moving-shape clips with action labels and captions.")
    parser.add_argument("out_dir")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--n-train", type=int, default=1200)
    parser.add_argument("--n-val", type=int, default=150)
    parser.add_argument("--n-test", type=int, default=300)
    parser.add_argument("--n-unseen", type=int, default=300)
    parser.add_argument("--interaction-share", type=float, default=0.3)
    parser.add_argument("--noise", type=float, default=6.0)
    parser.add_argument("--format", choices=["mp4", "frames"], default="mp4")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    gen = MovingShapes(args.size, args.frames, args.n_train, args.n_val, args.n_test, args.n_unseen,
                       args.interaction_share, args.noise, args.seed)
    out = gen.generate(args.out_dir, args.format)
    print(f"wrote {sum(gen.counts.values())} clips to {out}")


if __name__ == "__main__":
    main()
