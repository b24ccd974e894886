"""EventDataModule: readers (CSV, Parquet, JSON lines, Hawkes), clear errors, splits by sequence, padding, masks."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from tsuite.cli import main
from tsuite.forecasting import EventDataModule, HawkesProcess, validate_events
from tsuite.forecasting.event_data import collate_events, sequence_arrays
from tsuite.tables import InputError

EVENTS = pd.DataFrame({
    "seq_id": ["a", "a", "b", "a", "b", "c"],
    "time": [0.5, 1.0, 0.2, 2.5, 0.9, 3.0],
    "mark": [0, 2, 1, 1, 1, 0],
})


def write_jsonl(path, sequences) -> None:
    path.write_text("".join(json.dumps(s) + "\n" for s in sequences))


def test_csv_parquet_and_json_lines_give_the_same_sequences(tmp_path):
    EVENTS.to_csv(tmp_path / "e.csv", index=False)
    EVENTS.to_parquet(tmp_path / "e.parquet")
    write_jsonl(tmp_path / "e.jsonl", [
        {"seq_id": "a", "time": [0.5, 1.0, 2.5], "mark": [0, 2, 1]},
        {"seq_id": "b", "time": [0.2, 0.9], "mark": [1, 1]},
        {"seq_id": "c", "time": [3.0], "mark": [0]},
    ])
    loaded = []
    for name in ("e.csv", "e.parquet", "e.jsonl"):
        dm = EventDataModule(str(tmp_path / name), n_marks=3, val_size=0, test_size=0)
        dm.setup("fit")
        loaded.append(dm.sequences)
    for seqs in loaded:
        assert [s for s, _, _ in seqs] == ["a", "b", "c"]  # order of first appearance; rows grouped by sequence
        np.testing.assert_array_equal(seqs[0][1], [0.5, 1.0, 2.5])
        np.testing.assert_array_equal(seqs[0][2], [0, 2, 1])
        assert seqs[0][2].dtype == np.int64


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.assign(time=[0.5, 1.0, 0.2, 0.7, 0.9, 3.0]),
         "e.csv data row 4: time 0.7 is earlier than the previous event 1 in sequence 'a'; times must be "
         "non-decreasing within a sequence"),
        (lambda d: d.assign(mark=[0, 3, 1, 1, 1, 0]),
         r"e.csv data row 2: mark 3 is outside the declared range 0..2 \(n_marks=3\)"),
        (lambda d: d.assign(mark=[0, -1, 1, 1, 1, 0]), "data row 2: mark -1 is outside the declared range"),
        (lambda d: d.assign(mark=[0, 1.5, 1, 1, 1, 0]), "data row 2: mark 1.5 is not an integer"),
        (lambda d: d.assign(mark=["x", 1, 1, 1, 1, 0]), "data row 1: mark value 'x' is not a number"),
        (lambda d: d.assign(time=[0.5, "soon", 0.2, 2.5, 0.9, 3.0]), "data row 2: time value 'soon' is not a number"),
        (lambda d: d.assign(time=[0.5, None, 0.2, 2.5, 0.9, 3.0]), "data row 2: time is missing"),
        (lambda d: d.assign(time=[0.5, 1.0, -0.2, 2.5, 0.9, 3.0]), "data row 3: time -0.2 is before the start"),
        (lambda d: d.drop(columns="mark"), "missing column\\(s\\) mark; expected an event table with columns seq_id"),
        (lambda d: d.iloc[:0], "the table has no rows"),
    ],
)
def test_bad_tables_fail_with_file_row_and_field(tmp_path, change, message):
    path = tmp_path / "e.csv"
    change(EVENTS.copy()).to_csv(path, index=False)
    with pytest.raises(InputError, match=message):
        EventDataModule(str(path), n_marks=3).setup("fit")


@pytest.mark.parametrize(
    "lines, message",
    [
        ([{"seq_id": "a", "time": [], "mark": []}], "e.jsonl line 1: sequence 'a' is empty"),
        ([{"seq_id": "a", "time": [1.0], "mark": [0]}, {"seq_id": "a", "time": [2.0], "mark": [0]}],
         "line 2: seq_id 'a' appears on an earlier line"),
        ([{"time": [1.0, 2.0], "mark": [0]}], '"time" and "mark" must be lists of the same length'),
        ([{"time": [1.0, 0.5], "mark": [0, 1]}], "line 1, event 2: time 0.5 is earlier than the previous event 1"),
        ([{"time": [1.0, "x"], "mark": [0, 1]}], "line 1, event 2: time value 'x' is not a number"),
        ([{"time": [1.0], "mark": [7]}], "line 1, event 1: mark 7 is outside the declared range 0..2"),
        ([{"time": [1.0]}], 'expected an object with lists "time" and "mark"'),
    ],
)
def test_bad_json_lines_fail_with_line_and_event(tmp_path, lines, message):
    path = tmp_path / "e.jsonl"
    write_jsonl(path, lines)
    with pytest.raises(InputError, match=message):
        EventDataModule(str(path), n_marks=3).setup("fit")


def test_invalid_json_names_the_line(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text('{"time": [1.0], "mark": [0]}\n{"time": [1.0], \n')
    with pytest.raises(InputError, match="e.jsonl line 2: not valid JSON"):
        EventDataModule(str(path), n_marks=3).setup("fit")


def test_first_event_origin_needs_two_events_and_scores_from_the_second():
    with pytest.raises(InputError, match="sequence 'c' has 1 event; with time_origin='first_event'"):
        validate_events(EVENTS, "events", 3, "first_event")
    times = np.array([10.0, 10.5, 12.0])
    rel, tau, scored = sequence_arrays(times, "first_event")
    np.testing.assert_allclose(rel, [0.0, 0.5, 2.0])
    np.testing.assert_allclose(tau, [0.0, 0.5, 1.5])
    assert scored.tolist() == [False, True, True]
    rel, tau, scored = sequence_arrays(times, "zero")
    np.testing.assert_allclose(tau, [10.0, 0.5, 1.5])
    assert scored.all()


def test_splits_are_by_sequence_disjoint_seeded_and_scales_come_from_training_only():
    hawkes = HawkesProcess(n_sequences=100, n_events=20, seed=0)
    dm = EventDataModule("hawkes", hawkes=hawkes, val_size=0.1, test_size=0.2, split_seed=3)
    dm.setup("fit")
    ids = {k: {s for s, _, _ in v} for k, v in dm.splits.items()}
    assert [len(ids[k]) for k in ("train", "val", "test")] == [70, 10, 20]
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    again = EventDataModule("hawkes", hawkes=hawkes, val_size=0.1, test_size=0.2, split_seed=3)
    again.setup("fit")
    assert {s for s, _, _ in again.splits["test"]} == ids["test"]
    taus = np.concatenate([np.diff(t, prepend=0.0) for _, t, _ in dm.splits["train"]])
    assert dm.stats["time_scale"] == pytest.approx(taus.mean())
    assert dm.stats["log_tau_mean"] == pytest.approx(np.log(taus).mean())
    assert dm.n_marks == 3 and dm.has_test_split


def test_batches_are_right_padded_with_a_mask():
    dm = EventDataModule("hawkes", hawkes=HawkesProcess(n_sequences=10, n_events=12, min_events=3, seed=1),
                         val_size=0, test_size=0.5, batch_size=10)
    dm.setup("fit")
    batch = next(iter(dm.test_dataloader()))  # in split order (the training loader shuffles)
    lengths = [len(t) for _, t, _ in dm.splits["test"]]
    assert batch["time"].shape == (5, max(lengths)) and len(set(lengths)) > 1
    assert batch["mask"].sum(1).tolist() == lengths
    for i, (_, times, marks) in enumerate(dm.splits["test"]):
        n = len(times)
        np.testing.assert_allclose(batch["time"][i, :n].numpy(), times, rtol=1e-6)
        np.testing.assert_allclose(batch["tau"][i, :n].numpy(), np.diff(times, prepend=0.0), rtol=1e-5, atol=1e-6)
        assert torch.equal(batch["mark"][i, :n], torch.from_numpy(marks))
        assert not batch["mask"][i, n:].any() and (batch["tau"][i, n:] == 0).all()


def test_collate_keeps_the_unscored_first_event_of_first_event_origin():
    rel, tau, scored = sequence_arrays(np.array([3.0, 4.0]), "first_event")
    batch = collate_events([(rel, tau, np.array([1, 0]), scored)])
    assert batch["mask"].tolist() == [[False, True]]


def test_hawkes_dimension_sets_n_marks_and_a_mismatch_is_an_error():
    assert EventDataModule("hawkes").n_marks == 3
    with pytest.raises(InputError, match="n_marks=4 but the Hawkes process has 3 marks"):
        EventDataModule("hawkes", n_marks=4)


def test_too_few_sequences_for_the_splits():
    with pytest.raises(InputError, match="leave none for training"):
        EventDataModule("hawkes", hawkes=HawkesProcess(n_sequences=2, n_events=5), val_size=1, test_size=1).setup()


def test_cli_stops_on_bad_events_before_training(mlflow_home, capsys):
    from pathlib import Path

    bad = mlflow_home / "events.csv"
    EVENTS.assign(time=[0.5, 4.0, 0.2, 3.2, 0.9, 3.0]).to_csv(bad, index=False)
    config = Path(__file__).resolve().parents[2] / "configs/events/aaren_hawkes.yaml"
    code = main(["fit", "--config", str(config), "--trainer.enable_progress_bar", "false",
                 "--data.init_args.source", str(bad), "--data.init_args.hawkes", "null"])
    assert code == 2
    assert ("events.csv data row 4: time 3.2 is earlier than the previous event 4 in sequence 'a'"
            in capsys.readouterr().err)
    assert not list(Path("outputs").rglob("*.ckpt"))
