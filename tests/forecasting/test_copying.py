"""The copying memory and delay tasks (per-step targets) and SSMSequenceModel's per-step outputs (pool='none')."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from tsuite.forecasting import CopyingMemory, DelayTask, SSMSequenceModel
from tsuite.forecasting.sequence_data import IGNORE_INDEX
from tsuite.tables import InputError


def test_copying_layout_symbols_gap_delimiter_and_targets_only_at_the_last_k_steps():
    data = CopyingMemory(length=50, alphabet=6, n_symbols=7, n_train=40, n_val=5, n_test=5, seed=3)
    data.setup()
    x, y = data.arrays["train"]
    K, L = 7, 2 * 7 + 50 + 1
    assert x.shape == (40, L, 8) and y.shape == (40, L) and y.dtype == np.int64
    assert data.seq_len == L == data.total_length and data.d_input == 8 and data.d_output == 6
    assert data.input_columns[:2] == ["blank", "delimiter"]
    np.testing.assert_array_equal(x.sum(-1), 1.0)  # one-hot at every step
    code = x.argmax(-1)  # 0 blank, 1 delimiter, 2 + symbol
    symbols = code[:, :K] - 2
    assert (symbols >= 0).all() and (symbols < 6).all()
    assert (code[:, K : K + 50] == 0).all()  # the gap
    assert (code[:, K + 50] == 1).all()  # the delimiter
    assert (code[:, K + 51 :] == 0).all()  # blanks while recalling
    np.testing.assert_array_equal(y[:, L - K :], symbols)  # recall the symbols in order
    assert (y[:, : L - K] == IGNORE_INDEX).all()
    assert len(np.unique(symbols)) == 6  # the whole alphabet is used
    np.testing.assert_array_equal(data.input_stats()[0], 0.0)  # one-hot fed as is
    other = CopyingMemory(length=50, alphabet=6, n_symbols=7, n_train=40, n_val=5, n_test=5, seed=3)
    other.setup()
    np.testing.assert_array_equal(other.arrays["train"][1], y)  # reproducible from the seed
    assert not np.array_equal(data.arrays["val"][1], y[:5])  # splits drawn independently
    assert CopyingMemory().total_length == 1024  # the default is the long-range setting
    with pytest.raises(InputError, match="alphabet"):
        CopyingMemory(alphabet=1)


def test_delay_task_targets_are_the_input_delay_steps_earlier():
    data = DelayTask(length=30, delay=12, alphabet=3, n_train=8, n_val=2, n_test=2, seed=0)
    data.setup()
    x, y = data.arrays["train"]
    assert x.shape == (8, 30, 3) and y.shape == (8, 30)
    np.testing.assert_array_equal(y[:, 12:], x.argmax(-1)[:, :18])
    assert (y[:, :12] == IGNORE_INDEX).all()
    with pytest.raises(InputError, match="delay"):
        DelayTask(length=10, delay=10)


def test_per_step_model_is_causal_and_rejects_a_bidirectional_backbone():
    with pytest.raises(ValueError, match="causal"):
        SSMSequenceModel(d_input=6, d_output=4, pool="none", bidirectional=True)
    torch.manual_seed(0)
    model = SSMSequenceModel(d_input=6, d_output=4, d_model=16, n_layers=2, d_state=16, pool="none").eval()
    x = torch.nn.functional.one_hot(torch.randint(0, 6, (2, 40)), 6).float()
    later = x.clone()
    later[:, 25:] = later[:, 25:].flip(-1)
    with torch.no_grad():
        a, b = model(x), model(later)
    assert a.shape == (2, 40, 4)
    torch.testing.assert_close(a[:, :25], b[:, :25], atol=1e-5, rtol=1e-5)  # the future does not leak back
    assert (a[:, 25:] - b[:, 25:]).abs().max() > 1e-3


def test_s4d_learns_a_short_copying_task_far_above_chance():
    """Length 64 gap, alphabet 4, 5 symbols (L = 75): 200 Adam steps reach ~1.0 on the copied steps (seeds 0-2
    were checked); chance is 1/4 and we ask for > 0.6."""
    pl.seed_everything(0, verbose=False)
    data = CopyingMemory(length=64, alphabet=4, n_symbols=5, n_train=200 * 32, n_val=0, n_test=500, seed=0,
                         batch_size=32)
    model = SSMSequenceModel(d_input=data.d_input, d_output=4, layer="s4d", d_model=64, n_layers=2, d_state=64,
                             dropout=0.0, pool="none", lr=0.01, lr_ssm=0.002, weight_decay=0.0)
    trainer = pl.Trainer(max_epochs=1, enable_progress_bar=False, logger=False, enable_checkpointing=False,
                         enable_model_summary=False)
    trainer.fit(model, datamodule=data)
    acc = trainer.test(model, datamodule=data, verbose=False)[0]["test_acc"]
    assert acc > 0.6, f"accuracy on the copied steps {acc:.3f}; chance 0.25"

    frame = data.frame("test").query("unique_id in ['seq0', 'seq1']")
    pred = model.predict_frame(frame)
    assert len(pred) == 2 * 75 and list(pred.columns[:3]) == ["unique_id", "ds", "label"]
    probs = pred[[f"prob_s{i}" for i in range(4)]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    y = data.arrays["test"][1][:2]
    last = pred.groupby("unique_id").tail(5)["label"].str[1:].astype(int).to_numpy()
    assert (last == y[:, -5:].reshape(-1)).mean() > 0.6
