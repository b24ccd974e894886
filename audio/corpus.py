"""A small multi-voice speech corpus synthesised offline with espeak-ng, for demos and tests.

Each "speaker" is an espeak-ng English voice with a voice variant (``en+m3``,
``en+f2``, ...), a pitch and a speed; utterances are sentences of words drawn
from a fixed word list. Files are written as ``OUT_DIR/<speaker>/<utt>.wav``
(mono, 16-bit PCM, at the requested sample rate, resampled from espeak-ng's
22.05 kHz with torchaudio) together with ``OUT_DIR/corpus.json`` (voices,
sentences, seed), which is written last and marks a complete corpus. The same
seed gives the same corpus (espeak-ng's synthesis is deterministic).

:func:`write_librimix` turns such a corpus into a fixed test set in the
LibriMix layout (``mix/``, ``s1/``, ``s2/`` [``s3/``], same file names).

Command line::

    python -m tsuite.audio.corpus OUT_DIR --speakers 8 --utterances 20 --sample-rate 8000 [--seed 0]
        [--librimix DIR --mixtures 50 --num-speakers 2]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from tsuite.tables import InputError, write_text_atomic

ESPEAK = "espeak-ng"
ESPEAK_RATE = 22050  # espeak-ng's output sample rate
MARKER = "corpus.json"
VARIANTS = ("m1", "f1", "m3", "f2", "m5", "f3", "m7", "f4", "croak", "f5", "m2", "klatt2", "m4", "klatt3", "m6")
WORDS = (
    "apple river garden yellow window morning silver paper orange music table winter purple doctor number "
    "market simple pocket rabbit summer forest basket castle dinner candle letter mountain planet rocket "
    "signal spider ticket tunnel valley wagon yesterday zebra blanket button carpet engine finger hammer "
    "island jacket kitten lemon magnet needle ocean pencil pillow puzzle rainbow saddle shadow spoon "
    "thunder tiger tomato travel umbrella velvet village water whistle wizard anchor bottle bridge circle "
    "cotton desert dragon feather gentle harbor kettle ladder meadow narrow picnic rapid silent stone "
    "sugar sunset tender timber violet walnut wooden quiet seven eleven twenty green blue red black white "
    "slowly quickly bright heavy little happy early"
).split()


class EspeakMissing(InputError):
    """espeak-ng is not installed."""


def espeak_path() -> str:
    path = shutil.which(ESPEAK)
    if path is None:
        raise EspeakMissing(
            "espeak-ng is not installed (not found on PATH); it synthesises the generated speech corpus. "
            "Install it with `sudo apt-get install espeak-ng` (or `make system-deps`), or point the data "
            "at a folder of recordings instead"
        )
    return path


def speaker_voices(n: int, seed: int = 0) -> list[dict]:
    """``n`` distinct espeak-ng voices: a variant (cycling through :data:`VARIANTS`), pitch 20-80, speed 130-190."""
    rng = np.random.default_rng(seed)
    voices = []
    for i in range(n):
        voices.append({
            "name": f"spk{i:02d}",
            "voice": f"en+{VARIANTS[i % len(VARIANTS)]}",
            "pitch": int(rng.integers(20, 81)),
            "speed": int(rng.integers(130, 191)),
        })
    return voices


def synthesize(text: str, voice: str, pitch: int, speed: int, sample_rate: int) -> np.ndarray:
    """One utterance from espeak-ng as float32 mono samples at ``sample_rate``, edge silence trimmed."""
    cmd = [espeak_path(), "-v", voice, "-p", str(pitch), "-s", str(speed), "--stdout", text]
    result = subprocess.run(cmd, capture_output=True, check=False, timeout=60)
    if result.returncode != 0 or not result.stdout:
        raise RuntimeError(f"espeak-ng failed for voice {voice!r}: {result.stderr.decode(errors='replace').strip()}")
    audio, rate = sf.read(io.BytesIO(result.stdout), dtype="float32")
    audio = audio if audio.ndim == 1 else audio.mean(axis=1)
    active = np.flatnonzero(np.abs(audio) > 1e-3)
    if len(active):
        audio = audio[active[0] : active[-1] + 1]
    if rate != sample_rate:
        import torch
        import torchaudio.functional as AF

        audio = AF.resample(torch.from_numpy(np.ascontiguousarray(audio)), rate, sample_rate).numpy()
    return audio.astype(np.float32)


def write_wav_atomic(path: Path, audio: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> Path:
    """Write a WAV file through a temporary file in the same folder, renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp.wav", dir=path.parent)
    os.close(fd)
    try:
        sf.write(tmp, audio, sample_rate, subtype=subtype, format="WAV")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def is_complete(out_dir: str | os.PathLike) -> bool:
    """Whether ``out_dir`` holds a finished corpus (its ``corpus.json`` is written last)."""
    return (Path(out_dir) / MARKER).exists()


def generate_corpus(out_dir: str | os.PathLike, speakers: int = 8, utterances: int = 20, sample_rate: int = 8000,
                    seed: int = 0, words: tuple[int, int] = (4, 8)) -> Path:
    """Synthesise ``speakers`` × ``utterances`` WAV files into ``out_dir/<speaker>/<utt>.wav``; returns ``out_dir``.

    Args:
        out_dir: the corpus folder (created; an existing complete corpus there is regenerated).
        speakers: number of distinct voices (≥ 1).
        utterances: sentences per speaker (≥ 1).
        sample_rate: output sample rate in Hz.
        seed: seeds the voices' pitch/speed and the sentences.
        words: (fewest, most) words per sentence.
    """
    if speakers < 1 or utterances < 1:
        raise InputError(f"speakers and utterances must be ≥ 1, got speakers={speakers}, utterances={utterances}")
    espeak_path()
    out = Path(out_dir)
    voices = speaker_voices(speakers, seed)
    rng = np.random.default_rng([seed, 1])
    meta = {"seed": seed, "sample_rate": sample_rate, "speakers": voices, "utterances": {}}
    for v in voices:
        texts = []
        for u in range(utterances):
            n = int(rng.integers(words[0], words[1] + 1))
            text = " ".join(rng.choice(WORDS, size=n))
            audio = synthesize(text, v["voice"], v["pitch"], v["speed"], sample_rate)
            write_wav_atomic(out / v["name"] / f"utt{u:03d}.wav", audio, sample_rate)
            texts.append(text)
        meta["utterances"][v["name"]] = texts
    write_text_atomic(json.dumps(meta, indent=1), out / MARKER)
    return out


def write_librimix(corpus_dir: str | os.PathLike, out_dir: str | os.PathLike, mixtures: int = 50,
                   num_speakers: int = 2, seed: int = 0, gain_db: float = 5.0) -> Path:
    """Mix utterances of a corpus (``<speaker>/<utt>.wav``) into a LibriMix-layout set in ``out_dir``.

    Each mixture takes one utterance from each of ``num_speakers`` different speakers, truncated to
    the shortest ("min" mode of LibriMix), at random relative gains in ±``gain_db`` dB; files are
    ``mix/mixNNNN.wav``, ``s1/mixNNNN.wav``, ... (float WAV, so sources sum exactly to the mixture).
    """
    from tsuite.audio.mixture_data import UtterancePool, mix_sources

    pool = UtterancePool.from_folder(corpus_dir, sample_rate=None, num_speakers=num_speakers)
    rng = np.random.default_rng([seed, 2])
    out = Path(out_dir)
    for i in range(mixtures):
        keys = pool.draw_speakers(rng, num_speakers)
        sources = [pool.audio(k) for k in keys]
        length = min(len(s) for s in sources)
        sources = [s[:length] for s in sources]
        gains = np.concatenate([[0.0], rng.uniform(-gain_db, gain_db, num_speakers - 1)])
        mix, scaled = mix_sources(sources, gains)
        name = f"mix{i:04d}.wav"
        for s, src in enumerate(scaled):
            write_wav_atomic(out / f"s{s + 1}" / name, src, pool.sample_rate, subtype="FLOAT")
        write_wav_atomic(out / "mix" / name, mix, pool.sample_rate, subtype="FLOAT")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tsuite.audio.corpus",
                                     description="Synthesise a small multi-voice speech corpus with espeak-ng.")
    parser.add_argument("out_dir", help="corpus folder: OUT_DIR/<speaker>/<utt>.wav")
    parser.add_argument("--speakers", type=int, default=8, help="number of voices")
    parser.add_argument("--utterances", type=int, default=20, help="utterances per voice")
    parser.add_argument("--sample-rate", type=int, default=8000, help="sample rate in Hz")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--librimix", default=None, help="also write a LibriMix-layout mixture set to this folder")
    parser.add_argument("--mixtures", type=int, default=50, help="mixtures in the --librimix set")
    parser.add_argument("--num-speakers", type=int, default=2, help="speakers per mixture in the --librimix set")
    args = parser.parse_args(argv)
    try:
        generate_corpus(args.out_dir, args.speakers, args.utterances, args.sample_rate, args.seed)
        print(f"wrote {args.speakers} x {args.utterances} utterances to {args.out_dir}")
        if args.librimix:
            write_librimix(args.out_dir, args.librimix, args.mixtures, args.num_speakers, args.seed)
            print(f"wrote {args.mixtures} {args.num_speakers}-speaker mixtures to {args.librimix}")
    except InputError as err:
        print(f"error: {err}", file=__import__("sys").stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
