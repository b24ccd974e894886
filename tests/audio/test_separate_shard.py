"""``tsuite separate`` sharded through Lightning's predict loop: the same bytes as the single-process run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.audio.test_separate_job import NETWORK, RATE, sources
from tsuite.audio.separate_job import separate_paths, separate_sharded
from tsuite.audio.separation import SpeechSeparation
from tsuite.cli import main
from tsuite.tables import InputError
from tsuite.tracking import save_weights


@pytest.fixture
def model() -> SpeechSeparation:
    return SpeechSeparation(network=NETWORK, sample_rate=RATE, chunk_seconds=1.0, overlap_seconds=0.25).eval()


@pytest.fixture
def inputs(tmp_path) -> Path:
    """Five short files: two rates, mono and stereo, one in a subfolder with a unicode name."""
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    for i, (name, rate, seconds) in enumerate([("a.wav", RATE, 1.7), ("b.flac", 16000, 2.2), ("c.wav", RATE, 0.6),
                                              ("sub/dé 🎵.wav", 11025, 1.3), ("sub/e.wav", RATE, 2.9)]):
        low, high = sources(seconds, rate)
        mix = (1 + 0.1 * i) * low + high
        sf.write(str(folder / name), np.stack([mix, 0.5 * mix], 1) if i == 1 else mix, rate)
    return folder


def without_peak_time(data: bytes) -> bytes:
    """A float WAV's bytes with the time stamp of its PEAK chunk (libsndfile writes the wall clock) zeroed."""
    at = data.find(b"PEAK", 0, 128)
    return data if at < 0 else data[: at + 12] + bytes(4) + data[at + 16 :]  # id, size, version, then the time


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): without_peak_time(p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


EXPECTED = sorted(f"{name}_s{k}.wav" for name in ("a", "b", "c", "sub/dé 🎵", "sub/e") for k in (1, 2))


def test_predict_loop_with_one_process_writes_the_same_bytes(model, inputs, tmp_path):
    one = separate_paths(model, inputs, tmp_path / "one", progress=False)
    sharded = separate_sharded(model, inputs, tmp_path / "sharded", accelerator="cpu", devices=1, progress=False)
    assert [p.relative_to((tmp_path / "one").resolve()) for p in one] == \
        [p.relative_to((tmp_path / "sharded").resolve()) for p in sharded]
    a, b = tree(tmp_path / "one"), tree(tmp_path / "sharded")
    assert sorted(a) == sorted(b) == EXPECTED  # no temporary file left
    assert a == b
    s1, _ = sf.read(str(tmp_path / "sharded" / "sub" / "e_s1.wav"))
    assert len(s1) == round(2.9 * RATE) and np.abs(s1).max() > 0.1  # the separated low tone, full length


def test_sharded_run_refuses_to_overwrite_and_names_a_failed_file(model, inputs, tmp_path):
    out = tmp_path / "out"
    separate_sharded(model, inputs, out, accelerator="cpu", devices=1, progress=False)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    with pytest.raises(InputError, match="a_s1.wav: already exists; pass --overwrite"):
        separate_sharded(model, inputs, out, accelerator="cpu", devices=1, progress=False)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before

    sf.write(str(inputs / "silent.wav"), np.zeros(4000, np.float32), RATE)
    other = tmp_path / "other"
    with pytest.raises(InputError, match=r"1 input file\(s\) failed \(.*silent\.wav: silent.*\); 10 output file"):
        separate_sharded(model, inputs, other, accelerator="cpu", devices=1, progress=False)
    assert sorted(tree(other)) == EXPECTED  # the other files are done; nothing partial of the silent one


def test_two_processes_write_the_same_bytes_as_one(model, inputs, tmp_path, capfd):
    """`--devices 2 --strategy ddp_spawn --accelerator cpu` through the command line: each file written once."""
    weights = save_weights(model, tmp_path / "model.pt")
    common = ["separate", "--model", str(weights), "--input", str(inputs), "--no-progress"]
    assert main([*common, "--output", str(tmp_path / "one")]) == 0
    assert main([*common, "--output", str(tmp_path / "two"), "--devices", "2", "--strategy", "ddp_spawn",
                 "--accelerator", "cpu"]) == 0
    assert f"wrote 10 file(s) to {tmp_path / 'two'}" in capfd.readouterr().out  # 5 files, each once: 3 + 2
    a, b = tree(tmp_path / "one"), tree(tmp_path / "two")
    assert sorted(a) == sorted(b) == EXPECTED
    assert a == b
