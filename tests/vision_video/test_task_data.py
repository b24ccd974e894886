"""Task sequences and their readers: digits splits and permutations, MNIST IDX files, CIFAR-10 pickles."""

from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsuite.tables import InputError
from tsuite.vision_video.task_data import (
    ContinualDataModule,
    build_tasks,
    read_cifar_batch,
    read_cifar10,
    read_idx,
    read_mnist,
)


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(folder, n_train=40, n_test=20, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": np.arange(n_test) % 10,
    }
    for name, a in arrays.items():
        data = idx_bytes(a)
        (folder / (name + (".gz" if gz else ""))).write_bytes(gzip.compress(data) if gz else data)
    return arrays


def write_cifar(folder, n=20, seed=0):
    rng = np.random.default_rng(seed)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(np.arange(n) % 10),
                 b"batch_label": name.encode()}
        (folder / name).write_bytes(pickle.dumps(batch))


# -- digits ----------------------------------------------------------------------------------------
def test_split_digits_has_five_disjoint_two_class_tasks():
    tasks = build_tasks("split_digits", val_size=0.1, test_size=0.3, seed=0)
    assert [t.classes for t in tasks] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    total = sum(len(t.y_train) + len(t.y_val) + len(t.y_test) for t in tasks)
    assert total == 1797  # every digit image used once
    for t in tasks:
        assert set(t.y_train.tolist()) == {0, 1} and set(t.y_test.tolist()) == {0, 1}
        assert t.x_train.shape[1:] == (1, 8, 8) and 0 <= t.x_train.min() and t.x_train.max() <= 1
        assert abs(len(t.y_test) / (len(t.y_train) + len(t.y_val) + len(t.y_test)) - 0.3) < 0.02


def test_permuted_digits_permute_pixels_of_the_same_images():
    tasks = build_tasks("permuted_digits", n_tasks=10, seed=0)
    assert len(tasks) == 10 and all(t.classes == list(range(10)) for t in tasks)
    base = tasks[0].x_test.flatten(1)
    for t in tasks[1:]:
        x = t.x_test.flatten(1)
        assert torch.equal(t.y_test, tasks[0].y_test)
        assert torch.equal(x.sort(-1).values, base.sort(-1).values)  # same pixel values per image
        assert not torch.equal(x, base)
    assert not torch.equal(tasks[1].x_test, tasks[2].x_test)


def test_data_module_input_example_and_loaders():
    dm = ContinualDataModule("split_digits", n_tasks=3, batch_size=16)
    ex = dm.input_example()
    assert list(ex.columns) == [f"pixel_{i}" for i in range(64)] + ["task_id"]
    assert ex["task_id"].tolist() == [0, 0, -1, -1]
    assert dm.n_tasks == 3 and dm.input_shape == [1, 8, 8] and dm.task_classes == [[0, 1], [2, 3], [4, 5]]
    assert len(dm.test_dataloader()) == 3
    x, y = next(iter(dm.train_dataloader()))  # no trainer: task 0
    assert x.shape == (16, 1, 8, 8) and set(y.tolist()) <= {0, 1}


def test_unknown_benchmark_and_missing_path_are_input_errors():
    with pytest.raises(InputError, match="unknown benchmark 'split_fashion'"):
        build_tasks("split_fashion")
    with pytest.raises(InputError, match="needs path"):
        build_tasks("split_mnist")
    with pytest.raises(InputError, match="n_tasks=7, but split_digits has 5 tasks"):
        build_tasks("split_digits", n_tasks=7)


# -- MNIST IDX -------------------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_mnist_idx_files_read_back_exactly(tmp_path, gz):
    arrays = write_mnist(tmp_path, gz=gz)
    xtr, ytr, xte, yte = read_mnist(tmp_path)
    np.testing.assert_array_equal(xtr, arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(yte, arrays["t10k-labels-idx1-ubyte"])
    tasks = build_tasks("split_mnist", path=str(tmp_path), val_size=0.25)
    assert [t.classes for t in tasks] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert tasks[0].x_train.shape[1:] == (1, 28, 28) and float(tasks[0].x_train.max()) <= 1.0
    perm = build_tasks("permuted_mnist", path=str(tmp_path), n_tasks=3)
    assert len(perm) == 3 and len(perm[0].y_test) == 20


def test_idx_errors_name_the_file_and_the_problem(tmp_path):
    good = idx_bytes(np.zeros((3, 4, 4)))
    cases = {
        "short": (good[:3], "truncated: 3 byte"),
        "magic": (b"\x01\x02" + good[2:], "wrong magic number 0x0102"),
        "dtype": (good[:2] + b"\x0d" + good[3:], "wrong magic number 0x00000d03"),
        "dims": (bytes([0, 0, 8, 2]) + good[4:], "declares 2 dimension"),
        "header": (good[:10], "truncated header"),
        "data": (good[:-5], "truncated: 43 data bytes"),
        "extra": (good + b"\x00", "has trailing bytes"),
        "gzip": (b"\x1f\x8b" + b"junk", "damaged gzip"),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(InputError, match=message) as err:
            read_idx(path, 3)
        assert str(path) in str(err.value)
    with pytest.raises(InputError, match="no such file"):
        read_idx(tmp_path / "nope", 1)


def test_mnist_label_problems(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.arange(39) % 10))
    with pytest.raises(InputError, match="39 labels for 40 images"):
        read_mnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.r_[np.arange(39) % 10, 12]))
    with pytest.raises(InputError, match="label 12 of item 40 is outside 0..9"):
        read_mnist(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(InputError, match="no file t10k-images-idx3-ubyte"):
        read_mnist(tmp_path)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, 60), flip=st.tuples(st.integers(0, 59), st.integers(0, 255)))
def test_idx_reader_gives_the_array_or_an_input_error(tmp_path, cut, flip):
    """Any truncation or corrupted byte of a valid file: the exact array back, or InputError (nothing else)."""
    array = np.arange(48).reshape(3, 4, 4)
    data = bytearray(idx_bytes(array))
    i, value = flip
    data[i % len(data)] = value
    data = bytes(data[: len(data) - cut])
    path = tmp_path / "f.idx"
    path.write_bytes(data)
    try:
        out = read_idx(path, 3)
    except InputError as err:
        assert str(path) in str(err)
        return
    assert out.size == len(data) - 16 and out.ndim == 3  # it parsed consistently with its own header


# -- CIFAR-10 --------------------------------------------------------------------------------------
def test_cifar_batches_read_back_and_split(tmp_path):
    write_cifar(tmp_path)
    xtr, ytr, xte, yte = read_cifar10(tmp_path)
    assert xtr.shape == (100, 3, 32, 32) and xte.shape == (20, 3, 32, 32)
    tasks = build_tasks("split_cifar10", path=str(tmp_path), val_size=0.2)
    assert len(tasks) == 5 and tasks[0].x_test.shape[1:] == (3, 32, 32)


def test_cifar_errors_name_the_file_and_field(tmp_path):
    path = tmp_path / "batch"
    cases = [
        ({b"labels": [1]}, "missing key 'data'"),
        ({b"data": np.zeros((2, 3072), np.uint8)}, "missing key 'labels'"),
        ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, r"field 'data' has shape \(2, 100\)"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "1 entries for 2 images"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, "label 10 of item 2"),
        ([1, 2], "holds a list"),
    ]
    for obj, message in cases:
        path.write_bytes(pickle.dumps(obj))
        with pytest.raises(InputError, match=message) as err:
            read_cifar_batch(path)
        assert str(path) in str(err.value)
    path.write_bytes(b"not a pickle")
    with pytest.raises(InputError, match="cannot be read as a pickle"):
        read_cifar_batch(path)
    path.write_bytes(pickle.dumps(print))  # any object other than arrays and containers is refused
    with pytest.raises(InputError, match="refusing to load builtins.print"):
        read_cifar_batch(path)
    with pytest.raises(InputError, match="no such folder"):
        read_cifar10(tmp_path / "missing")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(keys=st.lists(st.sampled_from([b"data", b"labels", b"batch_label", "data", "labels"]), max_size=4, unique=True),
       n=st.integers(0, 3), width=st.sampled_from([3072, 3071, 10]), label=st.integers(-2, 12))
def test_cifar_reader_gives_a_valid_batch_or_an_input_error(tmp_path, keys, n, width, label):
    obj = {}
    for k in keys:
        name = k.decode() if isinstance(k, bytes) else k
        obj[k] = np.zeros((n, width), np.uint8) if name == "data" else [label] * n if name == "labels" else b"x"
    path = tmp_path / "b"
    path.write_bytes(pickle.dumps(obj))
    try:
        x, y = read_cifar_batch(path)
    except InputError as err:
        assert str(path) in str(err)
        return
    assert x.shape == (n, 3, 32, 32) and len(y) == n and (n == 0 or 0 <= label <= 9)
