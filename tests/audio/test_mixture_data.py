"""MixtureDataModule: LibriMix layout, on-the-fly mixing, resampling, stereo, splits and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tsuite.audio import corpus
from tsuite.audio.mixture_data import MixtureDataModule, read_audio
from tsuite.tables import InputError


def tone(freq: float, seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(seed).normal(0, 0.01, len(t))
    return (0.3 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


def utterance_folder(root: Path, speakers: int = 4, utts: int = 5, rate: int = 8000) -> Path:
    for s in range(speakers):
        for u in range(utts):
            path = root / f"spk{s}" / f"u{u}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(path), tone(200 + 150 * s, 0.6 + 0.1 * u, rate, seed=10 * s + u), rate)
    return root


def librimix_folder(root: Path, n: int = 6, rate: int = 8000, speakers: int = 2) -> Path:
    for i in range(n):
        srcs = [tone(300 * (k + 1), 0.5, rate, seed=i * 10 + k) for k in range(speakers)]
        for k, s in enumerate(srcs):
            (root / f"s{k + 1}").mkdir(parents=True, exist_ok=True)
            sf.write(str(root / f"s{k + 1}" / f"m{i}.wav"), s, rate, subtype="FLOAT")
        (root / "mix").mkdir(parents=True, exist_ok=True)
        sf.write(str(root / "mix" / f"m{i}.wav"), sum(srcs), rate, subtype="FLOAT")
    return root


def test_librimix_layout_reads_mixtures_with_their_sources(tmp_path):
    dm = MixtureDataModule(str(librimix_folder(tmp_path / "lm")), val_size=1, test_size=1, segment_seconds=0.25)
    dm.setup()
    assert {k: len(v) for k, v in dm.datasets.items()} == {"train": 4, "val": 1, "test": 1}
    item = dm.datasets["test"][0]
    assert item["mix"].shape == (4000,) and item["sources"].shape == (2, 4000)  # whole file at test time
    torch.testing.assert_close(item["sources"].sum(0), item["mix"], atol=1e-6, rtol=0)
    batch = next(iter(dm.train_dataloader()))
    assert batch["mix"].shape == (4, 2000) and batch["sources"].shape == (4, 2, 2000)  # training crops
    torch.testing.assert_close(batch["sources"].sum(1), batch["mix"], atol=1e-6, rtol=0)


def test_librimix_split_folders_are_used_as_splits(tmp_path):
    for split, n in (("train-100", 3), ("dev", 2), ("test", 2)):
        librimix_folder(tmp_path / "min" / split, n=n)
    dm = MixtureDataModule(str(tmp_path / "min"), segment_seconds=0.25)
    dm.setup()
    assert {k: len(v) for k, v in dm.datasets.items()} == {"train": 3, "val": 2, "test": 2}


def test_sixteen_khz_files_are_resampled_to_the_model_rate(tmp_path):
    dm = MixtureDataModule(str(librimix_folder(tmp_path / "lm", rate=16000)), sample_rate=8000, val_size=1,
                           test_size=1)
    dm.setup()
    item = dm.datasets["test"][0]
    assert item["mix"].shape == (4000,)  # 0.5 s at 8 kHz
    spectrum = np.abs(np.fft.rfft(item["sources"][0].numpy()))
    assert np.argmax(spectrum) * 8000 / 4000 == pytest.approx(300, abs=4)  # the 300 Hz tone survives


def test_mismatched_names_and_missing_folders_are_named(tmp_path):
    root = librimix_folder(tmp_path / "lm")
    (root / "s2" / "m3.wav").rename(root / "s2" / "other.wav")
    with pytest.raises(InputError, match=r"s2/m3\.wav: missing .*same file names"):
        MixtureDataModule(str(root)).setup()
    (root / "s2" / "other.wav").unlink()
    for f in (root / "s2").iterdir():
        f.unlink()
    (root / "s2").rmdir()
    with pytest.raises(InputError, match=r"no s2/ folder"):
        MixtureDataModule(str(root)).setup()
    with pytest.raises(InputError, match="no such folder"):
        MixtureDataModule(str(tmp_path / "nowhere")).setup()


def test_length_mismatch_and_three_channel_files_are_refused(tmp_path):
    root = librimix_folder(tmp_path / "lm")
    sf.write(str(root / "s1" / "m2.wav"), tone(300, 0.4, 8000), 8000)
    with pytest.raises(InputError, match=r"m2\.wav: the mixture and its sources differ in length"):
        MixtureDataModule(str(root)).setup()
    sf.write(str(root / "s1" / "m2.wav"), np.zeros((4000, 3), np.float32) + 0.1, 8000)
    with pytest.raises(InputError, match=r"s1/m2\.wav: 3 channels"):
        MixtureDataModule(str(root)).setup()


def test_stereo_is_mixed_down_and_silent_or_empty_files_are_refused(tmp_path):
    left, right = tone(300, 0.2, 8000), tone(500, 0.2, 8000)
    sf.write(str(tmp_path / "st.wav"), np.stack([left, right], 1), 8000, subtype="FLOAT")
    mono, rate = read_audio(tmp_path / "st.wav")
    np.testing.assert_allclose(mono, (left + right) / 2, atol=1e-6)
    sf.write(str(tmp_path / "silent.wav"), np.zeros(800, np.float32), 8000)
    with pytest.raises(InputError, match=r"silent.wav: silent"):
        read_audio(tmp_path / "silent.wav")
    sf.write(str(tmp_path / "empty.wav"), np.zeros(0, np.float32), 8000)
    with pytest.raises(InputError, match=r"empty.wav: no audio samples"):
        read_audio(tmp_path / "empty.wav")


def test_bad_utterance_fails_in_setup_before_training(tmp_path):
    root = utterance_folder(tmp_path / "utts")
    sf.write(str(root / "spk2" / "u1.wav"), np.zeros(4000, np.float32), 8000)
    with pytest.raises(InputError, match=r"spk2/u1\.wav: silent"):
        MixtureDataModule(str(root)).setup()


def test_on_the_fly_mixing_uses_different_speakers_fixed_eval_random_train(tmp_path):
    root = utterance_folder(tmp_path / "utts")
    dm = MixtureDataModule(str(root), segment_seconds=0.5, train_mixtures=16, val_mixtures=4, test_mixtures=4,
                           val_size=0.2, test_size=0.2, gain_db=5.0)
    dm.setup()
    val = dm.datasets["val"]
    for i in range(4):
        item = val[i]
        speakers = [part.split("/")[0] for part in item["name"].split("+")]
        assert len(set(speakers)) == 2
        torch.testing.assert_close(item["sources"].sum(0), item["mix"], atol=1e-6, rtol=0)
        power = item["sources"].pow(2).mean(-1)
        assert abs(10 * torch.log10(power[1] / power[0]).item()) <= 5.0 + 1e-3  # relative gain within ±5 dB
    again = MixtureDataModule(str(root), val_size=0.2, test_size=0.2, val_mixtures=4)
    again.setup()
    torch.testing.assert_close(val[2]["mix"], again.datasets["val"][2]["mix"])  # the same seeded mixture
    train = dm.datasets["train"]
    torch.manual_seed(0)
    first = torch.stack([train[i]["mix"] for i in range(8)])
    second = torch.stack([train[i]["mix"] for i in range(8)])
    assert first.shape == (8, 4000) and not torch.equal(first, second)  # a fresh draw every epoch
    # test utterances are held out from training
    assert set(dm.datasets["test"].pool.by_speaker["spk0"]).isdisjoint(train.pool.by_speaker["spk0"])


def test_three_speaker_mixtures(tmp_path):
    dm = MixtureDataModule(str(utterance_folder(tmp_path / "utts")), num_speakers=3, segment_seconds=0.3,
                           train_mixtures=4, batch_size=2)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch["sources"].shape == (2, 3, 2400)
    with pytest.raises(InputError, match="num_speakers must be 2 or 3"):
        MixtureDataModule(str(tmp_path), num_speakers=4)


def test_input_example_is_a_waveform_table(tmp_path):
    dm = MixtureDataModule(str(utterance_folder(tmp_path / "utts")))
    example = dm.input_example()
    assert list(example.columns) == ["waveform", "sample_rate"] and example["sample_rate"].iloc[0] == 8000
    assert example["waveform"].iloc[0].shape == (2000,) and dm.has_test_split


@pytest.mark.skipif(not corpus.shutil.which("espeak-ng"), reason="espeak-ng is not installed")
def test_espeak_source_generates_the_corpus_on_first_use(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dm = MixtureDataModule("espeak:auto", espeak_speakers=3, espeak_utterances=3, train_mixtures=2,
                           val_mixtures=1, test_mixtures=1)
    dm.setup()
    folder = tmp_path / "outputs/corpora/espeak-3spk-3utt-8000hz-seed0"
    assert corpus.is_complete(folder) and len(list(folder.rglob("*.wav"))) == 9
    assert dm.datasets["train"][0]["sources"].shape == (2, 32000)
    with pytest.raises(InputError, match="no such folder"):
        MixtureDataModule(str(tmp_path / "no/such/LibriMix")).setup()
