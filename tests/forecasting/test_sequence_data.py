"""Sequence data: sequential and permuted digits, the adding problem, UCR/UEA .ts/.tsv/.csv archives, long tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tsuite.forecasting import AddingProblem, SequentialDigits, UCRSequences
from tsuite.forecasting.sequence_data import frame_to_sequences, sequences_to_frame
from tsuite.tables import InputError


def test_sequential_digits_are_the_pixels_in_reading_order_with_stratified_splits():
    from sklearn.datasets import load_digits

    data = SequentialDigits(val_size=0.1, test_size=0.2, seed=0)
    data.setup()
    sizes = {s: len(data.arrays[s][1]) for s in ("train", "val", "test")}
    assert sizes == {"train": 1258, "val": 180, "test": 359}  # fractions of all 1797 images
    x, y = data.arrays["train"]
    assert x.shape[1:] == (64, 1) and data.d_input == 1 and data.d_output == 10 and data.seq_len == 64
    digits = load_digits()
    row = np.flatnonzero((digits.data == x[0, :, 0]).all(axis=1))[0]
    assert digits.target[row] == y[0]
    for split in ("val", "test"):  # every class in every split, in about the same proportion
        counts = np.bincount(data.arrays[split][1], minlength=10)
        assert counts.min() >= 0.8 * counts.mean()
    all_rows = np.concatenate([data.arrays[s][0][:, :, 0] for s in ("train", "val", "test")])
    assert len(np.unique(all_rows, axis=0)) == len(np.unique(digits.data, axis=0))  # disjoint cover


def test_permuted_digits_use_one_fixed_permutation_of_the_pixels():
    plain, perm = SequentialDigits(seed=3), SequentialDigits(permuted=True, permutation_seed=7, seed=3)
    again = SequentialDigits(permuted=True, permutation_seed=7, seed=3)
    plain.setup(), perm.setup(), again.setup()
    assert sorted(perm.permutation) == list(range(64)) and not np.array_equal(perm.permutation, np.arange(64))
    np.testing.assert_array_equal(perm.permutation, again.permutation)
    np.testing.assert_array_equal(perm.arrays["test"][0][:, :, 0], plain.arrays["test"][0][:, perm.permutation, 0])
    np.testing.assert_array_equal(perm.arrays["test"][1], plain.arrays["test"][1])


def test_adding_problem_targets_and_the_constant_predictor_baseline():
    data = AddingProblem(length=100, n_train=20000, n_val=10, n_test=10, seed=1)
    data.setup()
    x, y = data.arrays["train"]
    assert x.shape == (20000, 100, 2) and data.task == "regression" and data.d_input == 2 and data.d_output == 1
    markers = x[:, :, 1]
    assert (markers.sum(1) == 2).all() and (markers[:, :50].sum(1) == 1).all()  # one marker in each half
    np.testing.assert_allclose(y, (x[:, :, 0] * markers).sum(1), rtol=1e-6)
    assert np.mean((y - y.mean()) ** 2) == pytest.approx(1 / 6, abs=0.005)  # MSE of the best constant
    assert not np.array_equal(data.arrays["val"][0], data.arrays["test"][0])


def write_ts(path, rows, header="@problemName toy\n@univariate true\n@classLabel true a b c\n@data\n"):
    path.write_text(header + "\n".join(rows) + "\n")
    return path


def test_ucr_ts_pair_is_read_with_class_names_and_its_test_file(tmp_path):
    rng = np.random.default_rng(0)

    def lines(n: int) -> list[str]:
        return [",".join(f"{v:.3f}" for v in rng.normal(size=12)) + f":{'abc'[i % 3]}" for i in range(n)]

    write_ts(tmp_path / "Toy_TRAIN.ts", lines(30))
    write_ts(tmp_path / "Toy_TEST.ts", lines(9))
    data = UCRSequences(str(tmp_path), val_size=6)
    data.setup()
    assert data.class_names == ["a", "b", "c"] and data.task == "classification"
    assert {s: len(a[1]) for s, a in data.arrays.items()} == {"train": 24, "val": 6, "test": 9}
    assert data.arrays["test"][1].tolist() == [0, 1, 2] * 3
    assert data.input_example().columns.tolist() == ["unique_id", "ds", "y"]
    single = UCRSequences(str(tmp_path / "Toy_TRAIN.ts"), val_size=0)
    single.setup()
    assert len(single.arrays["test"][1]) == 9  # the _TEST twin is found beside a _TRAIN file


def test_ucr_multivariate_ts_and_regression_targets(tmp_path):
    rows = ["1,2,3:4,5,6:0.5", "2,3,4:5,6,7:1.5", "0,0,1:1,0,0:-2", "3,3,3:1,1,1:0.0"]
    header = "@problemName reg\n@univariate false\n@targetLabel true\n@data\n"
    data = UCRSequences(str(write_ts(tmp_path / "reg.ts", rows, header)), val_size=0, test_size=1)
    data.setup()
    assert data.task == "regression" and data.input_columns == ["dim_0", "dim_1"] and data.d_output == 1
    x = np.concatenate([data.arrays["train"][0], data.arrays["test"][0]])
    assert x.shape == (4, 3, 2) and sorted(np.concatenate([data.arrays["train"][1], data.arrays["test"][1]])) == [
        -2, 0, 0.5, 1.5]


def test_ucr_tsv_and_csv_rows_have_the_label_first(tmp_path):
    table = pd.DataFrame(np.c_[np.repeat([1, 2], 5), np.arange(50).reshape(10, 5)])
    table.to_csv(tmp_path / "Two_TRAIN.tsv", sep="\t", header=False, index=False)
    table.to_csv(tmp_path / "Two_TEST.tsv", sep="\t", header=False, index=False)
    data = UCRSequences(str(tmp_path / "Two_TRAIN.tsv"), val_size=0)
    data.setup()
    assert data.class_names == ["1", "2"] and data.arrays["test"][0].shape == (10, 5, 1)
    np.testing.assert_array_equal(data.arrays["test"][0][3, :, 0], [15, 16, 17, 18, 19])
    csv = tmp_path / "one.csv"
    table.to_csv(csv, header=["label", *[f"t{i}" for i in range(5)]], index=False)  # a header row is skipped
    data = UCRSequences(str(csv), val_size=0, test_size=0.2)
    data.setup()
    assert sum(len(a[1]) for a in data.arrays.values()) == 10


@pytest.mark.parametrize(
    "rows, message",
    [
        (["1,2,3:a", "1,2:b"], "line 6: dimensions of lengths [2]; expected 1 dimension(s) of length 3"),
        (["1,?,3:a", "1,2,3:b"], "line 5: missing values ('?')"),
        (["1,x,3:a"], "line 5: a value is not a number"),
    ],
)
def test_bad_ts_files_name_the_line(tmp_path, rows, message):
    path = write_ts(tmp_path / "bad.ts", rows)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]").replace("?", r"\?")):
        UCRSequences(str(path)).setup()


def test_missing_archive_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no NAME_TRAIN"):
        UCRSequences(str(tmp_path)).setup()
    with pytest.raises(InputError, match="no such file or folder"):
        UCRSequences(str(tmp_path / "nope_TRAIN.ts")).setup()


def test_long_table_round_trip_and_errors():
    x = np.random.default_rng(0).normal(size=(3, 7, 2))
    frame = sequences_to_frame(x, ["a", "b"]).sample(frac=1.0, random_state=0)  # any row order
    ids, seqs = frame_to_sequences(frame, ["a", "b"], "t")
    assert ids == ["seq0", "seq1", "seq2"]
    np.testing.assert_allclose(np.stack(seqs), x)
    with pytest.raises(InputError, match="missing column"):
        frame_to_sequences(frame.drop(columns="b"), ["a", "b"], "t")
    bad = frame.reset_index(drop=True).astype({"a": object})
    bad.loc[4, "a"] = "oops"
    with pytest.raises(InputError, match="t data row 5: a value 'oops' is missing or not a number"):
        frame_to_sequences(bad, ["a", "b"], "t")
