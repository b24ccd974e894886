"""The espeak-ng corpus generator: layout, determinism, distinct voices, LibriMix export, missing espeak-ng."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from tsuite.audio import corpus
from tsuite.audio.corpus import EspeakMissing, generate_corpus, write_librimix

pytestmark = pytest.mark.skipif(not corpus.shutil.which("espeak-ng"), reason="espeak-ng is not installed")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return generate_corpus(tmp_path_factory.mktemp("corpus") / "c", speakers=3, utterances=2, sample_rate=8000, seed=0)


def test_corpus_layout_rate_and_marker(tiny):
    files = sorted(p.relative_to(tiny).as_posix() for p in tiny.rglob("*.wav"))
    assert files == [f"spk0{s}/utt00{u}.wav" for s in range(3) for u in range(2)]
    for f in tiny.rglob("*.wav"):
        info = sf.info(str(f))
        assert info.samplerate == 8000 and info.channels == 1
        assert 0.5 < info.duration < 8.0  # 4-8 words of speech
    assert corpus.is_complete(tiny)


def test_same_seed_same_corpus_other_seed_other_sentences(tiny, tmp_path):
    again = generate_corpus(tmp_path / "again", speakers=3, utterances=2, sample_rate=8000, seed=0)
    for f in tiny.rglob("*.wav"):
        np.testing.assert_array_equal(sf.read(str(f))[0], sf.read(str(again / f.relative_to(tiny)))[0])
    other = generate_corpus(tmp_path / "other", speakers=1, utterances=1, sample_rate=8000, seed=1)
    assert sf.info(str(other / "spk00/utt000.wav")).frames != sf.info(str(tiny / "spk00/utt000.wav")).frames


def test_speakers_are_distinct_voices():
    voices = corpus.speaker_voices(15, seed=0)
    assert len({(v["voice"], v["pitch"], v["speed"]) for v in voices}) == 15
    assert len({v["voice"] for v in voices}) == 15  # 15 different espeak-ng variants
    text = "seven green apples"
    a = corpus.synthesize(text, voices[0]["voice"], voices[0]["pitch"], voices[0]["speed"], 8000)
    b = corpus.synthesize(text, voices[1]["voice"], voices[1]["pitch"], voices[1]["speed"], 8000)
    n = min(len(a), len(b))
    assert abs(np.corrcoef(a[:n], b[:n])[0, 1]) < 0.5  # the same words, clearly different waveforms


def test_librimix_export_sums_and_matches_names(tiny, tmp_path):
    out = write_librimix(tiny, tmp_path / "mix", mixtures=3, num_speakers=2, seed=0)
    names = sorted(p.name for p in (out / "mix").iterdir())
    assert names == ["mix0000.wav", "mix0001.wav", "mix0002.wav"]
    for n in names:
        mix, rate = sf.read(str(out / "mix" / n))
        s1, s2 = sf.read(str(out / "s1" / n))[0], sf.read(str(out / "s2" / n))[0]
        assert rate == 8000 and len(mix) == len(s1) == len(s2)
        np.testing.assert_allclose(mix, s1 + s2, atol=1e-6)
        assert np.abs(mix).max() <= 0.9 + 1e-6


def test_cli_writes_a_corpus(tmp_path):
    assert corpus.main([str(tmp_path / "c"), "--speakers", "2", "--utterances", "1", "--sample-rate", "16000"]) == 0
    assert sf.info(str(tmp_path / "c/spk01/utt000.wav")).samplerate == 16000


def test_missing_espeak_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(corpus.shutil, "which", lambda name: None)
    with pytest.raises(EspeakMissing, match="apt-get install espeak-ng"):
        generate_corpus(tmp_path / "c", speakers=1, utterances=1)
    assert corpus.main([str(tmp_path / "c")]) == 2
    assert "espeak-ng is not installed" in capsys.readouterr().err
