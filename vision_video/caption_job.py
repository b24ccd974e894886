"""``tsuite caption``: captions for video clips from a saved LRCN captioning model.

``--input`` is one video file, one folder of frame images, or a folder of
clips (video files and/or frame folders). Captions are printed as
``clip<TAB>caption`` lines, or written to ``--output`` (``.csv`` with columns
clip, caption, or ``.jsonl`` with one ``{"clip": ..., "caption": ...}`` per
line) through a temporary file renamed into place once every clip is done,
so a failed run leaves an earlier output untouched.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from tsuite.tables import InputError, write_table_atomic, write_text_atomic
from tsuite.tracking import load_model
from tsuite.vision_video.video_data import IMAGE_SUFFIXES, find_clips, frames_table, read_video

OUTPUT_SUFFIXES = (".csv", ".jsonl")


def input_clips(source: str | os.PathLike) -> dict[str, Path]:
    """Clip name → path for a video file, a frame folder, or a folder of clips."""
    path = Path(source)
    if not path.exists():
        raise InputError(f"{path}: no such video file or folder; expected a video, a folder of frame images or a "
                         "folder of clips")
    if path.is_file():
        return {path.stem: path}
    if any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir() if p.is_file()):
        return {path.name: path}  # a single clip stored as frames
    return find_clips(path)


def write_captions(df: pd.DataFrame, output: str | os.PathLike) -> Path:
    """Write (clip, caption) rows to ``.csv`` or ``.jsonl`` atomically (temporary file, then rename)."""
    out = Path(output)
    suffix = out.suffix.lower()
    if suffix == ".csv":
        return write_table_atomic(df, out)
    if suffix != ".jsonl":
        raise InputError(f"{out}: unknown output format {suffix!r}; expected one of {', '.join(OUTPUT_SUFFIXES)}")
    lines = [json.dumps({"clip": clip, "caption": caption}) + "\n" for clip, caption in zip(df["clip"], df["caption"])]
    write_text_atomic("".join(lines), out)
    return out


def caption_clips(model, clips: dict[str, Path], decode: str = "greedy", beam_size: int = 3,
                  temperature: float = 1.0, seed: int = 0, batch_size: int = 16, progress: bool = True) -> pd.DataFrame:
    """Caption every clip with ``model.predict_frame`` in batches; returns the (clip, caption) table."""
    size = int(model.hparams.input_size)
    names = list(clips)
    parts = []
    bar = tqdm(total=len(names), unit="clip", desc="caption", disable=not progress)
    for lo in range(0, len(names), batch_size):
        chunk = names[lo : lo + batch_size]
        videos = [read_video(clips[n], size=size) for n in chunk]
        parts.append(model.predict_frame(frames_table(chunk, videos), decode=decode, beam_size=beam_size,
                                         temperature=temperature, seed=seed + lo))
        bar.update(len(chunk))
    bar.close()
    return pd.concat(parts, ignore_index=True)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="tsuite caption", description="Caption video clips with an LRCN model.")
    parser.add_argument("--model", required=True,
                        help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/model, a model folder or a .ckpt")
    parser.add_argument("--input", required=True, help="a video file, a folder of frame images or a folder of clips")
    parser.add_argument("--output", default=None, help="write captions to this .csv or .jsonl (default: print)")
    parser.add_argument("--decode", choices=["greedy", "beam", "sample"], default="greedy")
    parser.add_argument("--beam-size", type=int, default=3, help="hypotheses kept by beam search")
    parser.add_argument("--temperature", type=float, default=1.0, help="softmax temperature for --decode sample")
    parser.add_argument("--seed", type=int, default=0, help="seed of --decode sample")
    parser.add_argument("--batch-size", type=int, default=16, help="clips captioned at once")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    if args.beam_size < 1:
        parser.error(f"--beam-size must be ≥ 1, got {args.beam_size}")
    if not args.temperature > 0:
        parser.error(f"--temperature must be > 0, got {args.temperature}")
    if args.output and Path(args.output).suffix.lower() not in OUTPUT_SUFFIXES:
        raise InputError(f"{args.output}: unknown output format; expected one of {', '.join(OUTPUT_SUFFIXES)}")
    clips = input_clips(args.input)
    model = load_model(args.model)
    if not hasattr(model, "generate") or "vocab" not in model.hparams:
        raise InputError(f"{args.model}: a {type(model).__name__}, not a captioning model; expected an "
                         "LRCNCaptioner")
    df = caption_clips(model, clips, args.decode, args.beam_size, args.temperature, args.seed, args.batch_size,
                       progress=not args.no_progress)
    if args.output:
        write_captions(df, args.output)
        print(f"wrote {len(df)} captions to {args.output}")
    else:
        for clip, caption in zip(df["clip"], df["caption"]):
            print(f"{clip}\t{caption}")
