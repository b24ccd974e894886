"""Jobs leave no partial output after a crash or Ctrl-C, keep an earlier output intact, never write outside
the output's folder whatever the series are called, and give the same table when sharded through
Lightning's predict loop as in one process."""

from __future__ import annotations

import signal

import numpy as np
import pandas as pd
import pytest
import torch

from tsuite.forecasting import ARNet, ARProcess
from tsuite.forecasting.forecast_job import ChunkWriter, forecast_chunks, forecast_sharded, main, open_series
from tsuite.tracking import save_weights

HOSTILE_IDS = ["../../escape", "/tmp/abs", "..", "a/b\\c", "ß🙂", "con", "x\ny", "*"]


@pytest.fixture
def model() -> ARNet:
    torch.manual_seed(0)
    return ARNet(n_lags=6, horizon=2).eval()


@pytest.fixture
def series(tmp_path) -> str:
    path = tmp_path / "in" / "series.parquet"
    path.parent.mkdir()
    ARProcess(length=40, n_series=9, seed=0).generate().to_parquet(path, row_group_size=50)
    return str(path)


def files(root) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


class CtrlCAfter:
    """A model stand-in whose predict_frame raises KeyboardInterrupt at the n-th chunk (Ctrl-C mid-write)."""

    def __init__(self, model, n: int):
        self.model, self.n, self.calls = model, n, 0

    def predict_frame(self, df, horizon=None):
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt
        return self.model.predict_frame(df, horizon=horizon)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_ctrl_c_mid_write_leaves_no_partial_file_and_the_old_output_intact(model, series, tmp_path, suffix):
    out = tmp_path / "out" / f"fc{suffix}"
    forecast_chunks(model, open_series(series, 2), 3, str(out), progress=False)
    before = out.read_bytes()
    listing = files(tmp_path)
    interrupted = CtrlCAfter(model, 3)  # two chunks already appended to the temporary file
    with pytest.raises(KeyboardInterrupt):
        forecast_chunks(interrupted, open_series(series, 2), 5, str(out), progress=False)
    assert interrupted.calls == 3
    assert out.read_bytes() == before
    assert files(tmp_path) == listing  # no temporary or part file left


def test_interrupted_sharded_run_removes_its_part_files(model, series, tmp_path):
    handler = signal.getsignal(signal.SIGINT)  # Lightning ignores SIGINT after an interrupt; put it back
    out = tmp_path / "out" / "fc.csv"
    try:
        with pytest.raises(SystemExit):  # Lightning turns Ctrl-C into a graceful shutdown and exit code 1
            forecast_sharded(CtrlCAfter(model, 2), open_series(series, 2), 3, str(out), accelerator="cpu",
                             devices=1, progress=False)
    finally:
        signal.signal(signal.SIGINT, handler)
    assert not out.exists()
    assert list((tmp_path / "out").iterdir()) == []


def test_series_ids_are_data_never_paths(model, tmp_path):
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"unique_id": np.repeat(HOSTILE_IDS, 10), "ds": np.tile(np.arange(10), len(HOSTILE_IDS)),
                       "y": rng.normal(size=10 * len(HOSTILE_IDS))})
    data = tmp_path / "data"
    data.mkdir()
    df.to_csv(data / "in.csv", index=False)
    before = files(tmp_path)
    ckpt = save_weights(model, data / "model.pt")
    main(["--model", str(ckpt), "--input", str(data / "in.csv"), "--output", str(tmp_path / "out" / "fc.csv"),
          "--chunk-size", "3", "--no-progress"])
    assert files(tmp_path) - before == {"data/model.pt", "out/fc.csv"}
    fc = pd.read_csv(tmp_path / "out" / "fc.csv", keep_default_na=False)
    assert set(fc["unique_id"]) == set(HOSTILE_IDS) and len(fc) == 2 * len(HOSTILE_IDS)


@pytest.mark.parametrize("chunk_size", [1, 4])
def test_lightning_predict_path_equals_the_single_process_table(model, series, tmp_path, chunk_size):
    one, sharded = tmp_path / "one.parquet", tmp_path / "sharded.parquet"
    forecast_chunks(model, open_series(series, chunk_size), 3, str(one), progress=False)
    rows = forecast_sharded(model, open_series(series, chunk_size), 3, str(sharded), accelerator="cpu", devices=1,
                            progress=False)
    assert rows == 9 * 3
    pd.testing.assert_frame_equal(pd.read_parquet(one), pd.read_parquet(sharded))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "one.parquet", "sharded.parquet"]


def test_merge_puts_the_parts_of_several_ranks_back_in_series_order(model, series, tmp_path):
    """What rank 0 does after a 2-rank run: parts written out of order by two ranks merge in chunk order."""

    class Strategy:
        def barrier(self, name=None):
            pass

    class Trainer:
        is_global_zero = True
        strategy = Strategy()

    chunks = open_series(series, 2)
    writer = ChunkWriter(str(tmp_path / "merged.csv"), len(chunks))
    writer.parts = tmp_path / "parts"
    writer.parts.mkdir()
    rank_of = {i: i % 2 for i in range(len(chunks))}  # DistributedSampler's interleaving over 2 ranks
    for rank in (1, 0):
        for i in [i for i, r in rank_of.items() if r == rank][::-1]:
            writer.write_on_batch_end(None, None, (i, model.predict_frame(chunks[i][1], horizon=3)), None, None, 0, 0)
    writer.on_predict_epoch_end(Trainer(), None)
    forecast_chunks(model, chunks, 3, str(tmp_path / "one.csv"), progress=False)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "merged.csv"), pd.read_csv(tmp_path / "one.csv"))
    assert not writer.parts.exists()
