"""Property tests of the audio readers: any file gives a correct parse or a clear InputError, never a traceback."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsuite.audio.mixture_data import LibriMixFolder, read_audio
from tsuite.audio.separate_job import separate_file
from tsuite.tables import InputError

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
names = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\\x00"), min_size=1,
                max_size=20).filter(lambda s: s not in (".", ".."))


def wav_bytes(audio: np.ndarray, rate: int = 8000, fmt: str = "WAV", subtype: str = "FLOAT") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


class Identity:
    """A stand-in model for the job: returns the mixture and silence."""

    sample_rate, num_speakers = 8000, 2

    def separate(self, mix: torch.Tensor) -> torch.Tensor:
        return torch.stack([mix, torch.zeros_like(mix)])


def read_or_error(path: Path) -> np.ndarray | None:
    try:
        audio, _ = read_audio(path, 8000)
    except InputError as err:
        assert str(path) in str(err)  # the message names the file
        return None
    assert audio.ndim == 1 and audio.size > 0 and np.isfinite(audio).all() and np.abs(audio).max() >= 1e-5
    return audio


@SETTINGS
@given(name=names, data=st.binary(max_size=300), suffix=st.sampled_from([".wav", ".flac", ".ogg"]))
def test_random_bytes_under_any_name_are_a_clear_error(name, data, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}{suffix}"
        path.write_bytes(data)
        assert read_or_error(path) is None
        out = Path(tmp) / "out"
        out.mkdir()
        try:
            separate_file(Identity(), path, [out / "a_s1.wav", out / "a_s2.wav"], 1.0, 0.25)
            raise AssertionError("random bytes were accepted as audio")
        except InputError as err:
            assert str(path) in str(err)
        assert not any(out.iterdir())  # no output or temporary file left behind


@SETTINGS
@given(samples=st.integers(1, 3000), cut=st.floats(0.0, 1.0), fmt=st.sampled_from([("WAV", "PCM_16"), ("FLAC", "PCM_16"),
                                                                                   ("WAV", "FLOAT")]))
def test_truncated_files_parse_to_a_prefix_or_fail_clearly(samples, cut, fmt):
    audio = (0.5 * np.sin(np.arange(samples) * 0.3)).astype(np.float32)
    data = wav_bytes(audio, fmt=fmt[0], subtype=fmt[1])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("x.wav" if fmt[0] == "WAV" else "x.flac")
        path.write_bytes(data[: int(cut * len(data))])
        parsed = read_or_error(path)
        if parsed is not None:  # whatever parses is a prefix of the original samples
            tol = 1e-4 if fmt[1] == "FLOAT" else 1 / 2**14
            np.testing.assert_allclose(parsed, audio[: len(parsed)], atol=tol)


@SETTINGS
@given(
    frames=st.integers(0, 400),
    channels=st.integers(1, 4),
    kind=st.sampled_from(["speech", "silent", "nan", "inf"]),
)
def test_sample_content_and_channels_are_checked(frames, channels, kind):
    rng = np.random.default_rng(frames)
    audio = rng.uniform(-0.5, 0.5, (frames, channels)).astype(np.float32)
    if kind == "silent":
        audio[:] = 0
    elif kind in ("nan", "inf") and frames:
        audio[frames // 2, 0] = np.nan if kind == "nan" else np.inf
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "é x.wav"
        sf.write(str(path), audio, 8000, subtype="FLOAT")
        try:
            mono, _ = read_audio(path)
        except InputError as err:
            message = str(err)
            assert str(path) in message
            mono_silent = frames == 0 or np.abs(audio.mean(1)).max() < 1e-5
            if frames == 0:
                assert "no audio samples" in message
            elif channels > 2:
                assert f"{channels} channels" in message
            elif kind in ("nan", "inf"):
                assert "not a finite number" in message
            else:
                assert mono_silent and "silent" in message
            return
        assert frames > 0 and channels <= 2 and kind == "speech"
        np.testing.assert_allclose(mono, audio.mean(1), atol=1e-6)


@SETTINGS
@given(mix_name=names, data=st.binary(min_size=0, max_size=100))
def test_librimix_folder_with_a_broken_mixture_is_a_clear_error(mix_name, data):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for folder in ("mix", "s1", "s2"):
            (root / folder).mkdir()
        good = wav_bytes(np.full(100, 0.1, np.float32))
        (root / "s1" / f"{mix_name}.wav").write_bytes(good)
        (root / "s2" / f"{mix_name}.wav").write_bytes(good)
        (root / "mix" / f"{mix_name}.wav").write_bytes(data)
        try:
            LibriMixFolder(root, 2, 8000)
            raise AssertionError("a broken mixture was accepted")
        except InputError as err:
            assert mix_name in str(err)
