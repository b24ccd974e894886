"""``tsuite separate``: chunked = unchunked, speakers kept across chunk boundaries, files, errors, registry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from torch import nn

from tsuite.audio import separate_job
from tsuite.audio.losses import si_snr
from tsuite.audio.separate_job import ChunkedSeparator, output_paths
from tsuite.audio.separation import SpeechSeparation
from tsuite.cli import main
from tsuite.tables import InputError
from tsuite.tracking import save_weights

RATE = 8000


class BandSplit(nn.Module):
    """A known separator for tone mixtures: a 101-tap windowed-sinc low-pass below ``cutoff_hz`` (s1), the rest (s2)."""

    def __init__(self, num_speakers: int = 2, cutoff_hz: float = 1000.0, sample_rate: int = RATE, taps: int = 101):
        super().__init__()
        n = torch.arange(taps) - taps // 2
        fc = cutoff_hz / sample_rate
        h = 2 * fc * torch.sinc(2 * fc * n) * torch.hamming_window(taps, periodic=False)
        self.register_buffer("h", (h / h.sum())[None, None])  # (1, 1, taps), symmetric
        self.gain = nn.Parameter(torch.ones(()))

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        low = F.conv1d(mix[:, None], self.h, padding=self.h.shape[-1] // 2)[:, 0]  # (B, T)
        return torch.stack([low, mix - low], 1) * self.gain  # (B, 2, T)


NETWORK = f"{__name__}.BandSplit"


def sources(seconds: float, rate: int = RATE) -> tuple[np.ndarray, np.ndarray]:
    """A low tone whose loudness rises and falls (300 Hz) and a steady high tone (2200 Hz)."""
    t = np.arange(int(seconds * rate)) / rate
    low = (0.2 + 0.15 * np.sin(2 * np.pi * 0.3 * t)) * np.sin(2 * np.pi * 300 * t)
    high = 0.1 * np.sin(2 * np.pi * 2200 * t + 0.5)
    return low.astype(np.float32), high.astype(np.float32)


def db(est: np.ndarray, ref: np.ndarray) -> float:
    return float(si_snr(torch.from_numpy(np.ascontiguousarray(est)), torch.from_numpy(np.ascontiguousarray(ref))))


@pytest.fixture
def model() -> SpeechSeparation:
    return SpeechSeparation(network=NETWORK, sample_rate=RATE, chunk_seconds=2.0, overlap_seconds=0.5).eval()


class Shuffling:
    """Wraps a model's ``separate`` to return its outputs in a random order on every call."""

    def __init__(self, model: SpeechSeparation, seed: int = 0):
        self.model, self.sample_rate, self.num_speakers = model, model.sample_rate, model.num_speakers
        self.rng, self.flips, self.longest = np.random.default_rng(seed), 0, 0

    def separate(self, mix: torch.Tensor) -> torch.Tensor:
        self.longest = max(self.longest, mix.shape[-1])
        out = self.model.separate(mix)
        if self.rng.random() < 0.5:
            self.flips += 1
            return out.flip(0)
        return out


def test_chunked_separation_equals_unchunked(model):
    low, high = sources(12.0)
    mix = low + high
    whole = ChunkedSeparator(model, RATE, 60.0, 0.0).run_array(mix)  # one chunk
    direct = model.separate(torch.from_numpy(mix)).numpy()
    np.testing.assert_allclose(whole, direct, atol=1e-6)
    chunked = ChunkedSeparator(model, RATE, 1.0, 0.25).run_array(mix)  # 16 chunks
    assert chunked.shape == whole.shape == (2, len(mix))
    assert np.abs(chunked - whole).max() < 0.01 * np.abs(whole).max()
    assert min(db(chunked[k], whole[k]) for k in range(2)) > 35
    assert db(chunked[0], low) > 25 and db(chunked[1], high) > 25


@pytest.mark.parametrize("align", [True, False])
def test_speaker_order_is_kept_across_chunk_boundaries(model, monkeypatch, align):
    low, high = sources(21.0)
    shuffled = Shuffling(model)
    engine = ChunkedSeparator(shuffled, RATE, 2.0, 0.5)  # 14 chunks, 13 boundaries
    if not align:  # control: without the alignment the speakers swap mid-file
        monkeypatch.setattr(separate_job, "best_permutation", lambda prev, cur: tuple(range(len(cur))))
    out = engine.run_array(low + high)
    assert shuffled.flips >= 4 and shuffled.longest <= 2 * RATE
    second = RATE
    low_is = [int(db(out[1, i : i + second], low[i : i + second]) > db(out[0, i : i + second], low[i : i + second]))
              for i in range(0, len(low) - second + 1, second)]
    if align:
        assert len(set(low_is)) == 1, low_is  # the low tone stays in one output file throughout
        k = low_is[0]
        assert db(out[k], low) > 20 and db(out[1 - k], high) > 20
        assert engine.swaps >= 4
    else:
        assert len(set(low_is)) == 2


def write_inputs(folder: Path) -> dict[str, tuple[int, int]]:
    low, high = sources(5.0, 16000)
    stereo = np.stack([low + high, 0.5 * (low + high)], 1)
    sf.write(str(folder / "talk.wav"), stereo, 16000, subtype="PCM_16")
    (folder / "sub").mkdir()
    low8, high8 = sources(3.3, RATE)
    sf.write(str(folder / "sub" / "nuovo é 🎵.flac"), low8 + high8, RATE)
    return {"talk": (16000, len(low)), "sub/nuovo é 🎵": (RATE, len(low8))}


def test_separate_job_writes_each_speaker_at_the_input_rate_and_length(model, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    expected = write_inputs(inputs)
    weights = save_weights(model, tmp_path / "model.pt")
    out = tmp_path / "out"
    args = ["separate", "--model", str(weights), "--input", str(inputs), "--output", str(out), "--chunk-seconds",
            "1.0", "--overlap-seconds", "0.2", "--no-progress", "--device", "cpu"]
    assert main(args) == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == sorted(f"{name}_s{k}.wav" for name in expected for k in (1, 2))
    low, high = sources(5.0, 16000)
    for name, (rate, frames) in expected.items():
        for k in (1, 2):
            info = sf.info(str(out / f"{name}_s{k}.wav"))
            assert (info.samplerate, info.frames, info.channels) == (rate, frames, 1)
    s1, rate = sf.read(str(out / "talk_s1.wav"))
    s2, _ = sf.read(str(out / "talk_s2.wav"))
    assert db(s1.astype(np.float32), low) > 20 and db(s2.astype(np.float32), high) > 20
    # stereo was mixed down (mean of 1.0 and 0.5 times the mixture) and the sources keep the mixture's scale
    np.testing.assert_allclose(np.abs(s1).max(), 0.75 * np.abs(low).max(), rtol=0.05)

    stamp = (out / "talk_s1.wav").stat().st_mtime_ns
    assert main(args) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert (out / "talk_s1.wav").stat().st_mtime_ns == stamp
    assert main([*args, "--overwrite"]) == 0


def test_bad_inputs_exit_2_naming_the_file_and_leave_nothing(model, tmp_path, capsys):
    weights = save_weights(model, tmp_path / "model.pt")
    sf.write(str(tmp_path / "silent.wav"), np.zeros(4000, np.float32), RATE)
    sf.write(str(tmp_path / "empty.wav"), np.zeros(0, np.float32), RATE)
    (tmp_path / "garbage.wav").write_bytes(b"RIFF\x00\x00not really a wave file")
    for name, message in (("silent.wav", "silent"), ("empty.wav", "no audio samples"),
                          ("garbage.wav", "cannot be read as audio"), ("missing.wav", "no such file")):
        out = tmp_path / f"out_{name}"
        code = main(["separate", "--model", str(weights), "--input", str(tmp_path / name), "--output", str(out),
                     "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2 and name in err and message in err, err
        assert not out.exists() or not any(out.iterdir())  # no partial or temporary files left


def test_two_inputs_with_one_output_name_are_refused(model, tmp_path):
    low, high = sources(0.5)
    sf.write(str(tmp_path / "a.wav"), low + high, RATE)
    sf.write(str(tmp_path / "a.flac"), low + high, RATE)
    with pytest.raises(InputError, match=r"a\.(flac|wav) and .*a\.(flac|wav) would both be written to .*a_s1\.wav"):
        separate_job.separate_paths(model, tmp_path, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_output_names_cannot_escape_the_output_folder(tmp_path):
    assert output_paths(Path("a/b.wav"), tmp_path, 2) == [tmp_path.resolve() / "a" / f"b_s{k}.wav" for k in (1, 2)]
    with pytest.raises(InputError, match="outside the output folder"):
        output_paths(Path("../../etc/x.wav"), tmp_path / "out", 2)
    with pytest.raises(InputError, match="at most half the chunk"):
        ChunkedSeparator(Shuffling(SpeechSeparation(network=NETWORK)), RATE, 1.0, 0.6)


def test_registered_model_separates_a_waveform_through_pyfunc_and_the_job(model, mlflow_home):
    import mlflow

    from tsuite.tracking import log_model

    low, high = sources(4.0, 16000)
    example = pd.DataFrame({"waveform": [(low + high)[:2000].astype(np.float64)], "sample_rate": [16000]})
    run = mlflow.start_run()
    mlflow.end_run()
    log_model(model, example, run.info.run_id, register_as="tones", alias="champion")
    pyfunc = mlflow.pyfunc.load_model("models:/tones@champion")
    table = pd.DataFrame({"waveform": [(low + high).astype(np.float64)], "sample_rate": [16000]})
    result = pyfunc.predict(table)
    assert list(result.columns) == ["s1", "s2"]
    s1, s2 = np.asarray(result["s1"].iloc[0]), np.asarray(result["s2"].iloc[0])
    assert s1.shape == s2.shape == low.shape
    assert db(s1.astype(np.float32), low) > 20 and db(s2.astype(np.float32), high) > 20
    sf.write(str(mlflow_home / "mix.wav"), low + high, 16000)
    assert main(["separate", "--model", "models:/tones@champion", "--input", str(mlflow_home / "mix.wav"),
                 "--output", str(mlflow_home / "sep"), "--no-progress"]) == 0
    from_job, _ = sf.read(str(mlflow_home / "sep" / "mix_s1.wav"), dtype="float32")
    np.testing.assert_allclose(from_job, s1, atol=1e-4)  # same chunking defaults: the same answer
