"""The event model: an exact next-event likelihood, streaming inference equal to the parallel model in constant
memory, table predictions, and MLflow logging end to end."""

from __future__ import annotations

import gc
import math
import tracemalloc
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import integrate

from tsuite.cli import main
from tsuite.forecasting import EventDataModule, EventForecaster, HawkesProcess
from tsuite.forecasting.event_decoder import EventDecoder
from tsuite.tables import InputError

REPO = Path(__file__).resolve().parents[2]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def random_model(encoder: str = "aaren", **kw) -> EventForecaster:
    torch.manual_seed(0)
    model = EventForecaster(3, encoder=encoder, time_decay=True, sink=True, joint_marks=True, **kw)
    with torch.no_grad():  # data scales as if fitted, away from the defaults
        model.time_scale.fill_(0.8)
        model.log_tau_mean.fill_(-0.7)
        model.log_tau_std.fill_(1.3)
    return model.eval()


def hawkes_history(n_events: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return HawkesProcess().sample(1, n_events, np.random.default_rng(seed))[0]


# -- the next-event distribution ---------------------------------------------------------------------
@pytest.mark.parametrize("joint", [False, True])
def test_mixture_is_a_normalised_density_with_closed_form_mean_quantiles_and_marks(joint):
    torch.manual_seed(1)
    dec = EventDecoder(8, n_marks=3, n_components=4, joint=joint).double().requires_grad_(False)
    dist = dec(torch.randn(8, dtype=torch.float64), torch.tensor(-0.5, dtype=torch.float64),
               torch.tensor(0.8, dtype=torch.float64))

    def density(tau: float, mark: int) -> float:
        lp_tau, lp_mark = dist.log_prob(torch.tensor(tau, dtype=torch.float64), torch.tensor(mark))
        return math.exp(float(lp_tau + lp_mark))

    masses = [integrate.quad(density, 0, np.inf, args=(k,), limit=200)[0] for k in range(3)]
    assert sum(masses) == pytest.approx(1.0, abs=1e-7)
    np.testing.assert_allclose(masses, dist.mark_probs().numpy(), rtol=1e-6)  # p(m) = ∫ p(τ, m) dτ
    mean = sum(integrate.quad(lambda t, k=k: t * density(t, k), 0, np.inf, limit=200)[0] for k in range(3))
    assert float(dist.mean()) == pytest.approx(mean, rel=1e-6)
    for p in (0.1, 0.5, 0.9):
        q = dist.quantile(p)
        assert float(dist.cdf(q)) == pytest.approx(p, abs=1e-9)
        below = integrate.quad(lambda t: sum(density(t, k) for k in range(3)), 0, float(q))[0]
        assert below == pytest.approx(p, abs=1e-6)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\(\)`")
def test_training_loss_is_the_negative_log_likelihood_per_scored_event():
    model = random_model()
    seqs = HawkesProcess().sample(4, 9, np.random.default_rng(0))
    from tsuite.forecasting.event_data import collate_events, sequence_arrays

    items = [(*sequence_arrays(t, "zero")[:2], m, sequence_arrays(t, "zero")[2]) for t, m in seqs]
    batch = collate_events(items)
    batch["mask"][1, 5:] = False  # a shorter sequence
    loss = model.training_step(batch, 0)
    manual = []
    for i, (times, marks) in enumerate(seqs):
        n = 9 if i != 1 else 5
        state = model.stream_start()
        for j in range(n):
            dist = model.stream_predict(state)
            tau = torch.tensor([times[j] - (times[j - 1] if j else 0.0)])
            lp_tau, lp_mark = dist.log_prob(tau, torch.tensor([marks[j]]))
            manual.append(-(lp_tau + lp_mark).item())
            state = model.stream_update(state, times[j:j + 1], marks[j:j + 1])
    assert float(loss) == pytest.approx(np.mean(manual), rel=1e-5)


# -- streaming ---------------------------------------------------------------------------------------
def test_streaming_predictions_equal_the_parallel_model():
    model = random_model()
    times, marks = hawkes_history(300, seed=1)
    batch_t = torch.tensor(times, dtype=torch.float32)[None]
    with torch.no_grad():
        parallel = model(batch_t, torch.tensor(np.diff(times, prepend=0.0), dtype=torch.float32)[None],
                         torch.tensor(marks)[None])
    state = model.stream_start()
    for i in range(300):
        dist = model.stream_predict(state)  # the prediction of event i from events before it
        for name in ("log_w", "mu", "log_sigma", "mark_logits"):
            torch.testing.assert_close(getattr(dist, name)[0], getattr(parallel, name)[0, i], rtol=1e-5, atol=1e-5)
        state = model.stream_update(state, times[i:i + 1], marks[i:i + 1])


def _state_tensors(state) -> list[torch.Tensor]:
    return [x for layer in state.layers for x in layer] + [state.h, state.last_time]


@pytest.mark.slow
def test_streaming_memory_does_not_grow_over_10000_events_and_matches_the_parallel_model():
    model = random_model(chunk_size=3000)
    times, marks = hawkes_history(10_000, seed=2)
    state = model.stream_start()
    shapes = [tuple(x.shape) for x in _state_tensors(state)]
    tracemalloc.start()
    for i in range(10_000):
        state = model.stream_update(state, times[i:i + 1], marks[i:i + 1])
        if i == 999:
            gc.collect()
            python_bytes = tracemalloc.get_traced_memory()[0]
            live_tensors = sum(torch.is_tensor(o) for o in gc.get_objects())
    gc.collect()
    growth = tracemalloc.get_traced_memory()[0] - python_bytes
    tracemalloc.stop()
    assert [tuple(x.shape) for x in _state_tensors(state)] == shapes  # the state's size is constant
    assert all(x.grad_fn is None and not x.requires_grad for x in _state_tensors(state))  # no graph kept
    assert sum(torch.is_tensor(o) for o in gc.get_objects()) == live_tensors
    assert growth < 64 * 1024, f"Python memory grew by {growth} bytes over 9000 events"
    # the 10,000-event prediction equals the parallel model's (three chunks that carry the state)
    frame = model.predict_frame(pd.DataFrame({"seq_id": "s", "time": times, "mark": marks}))
    streamed = model.stream_predict(state)
    np.testing.assert_allclose(frame[[f"prob_mark_{k}" for k in range(3)]].to_numpy()[0],
                               streamed.mark_probs()[0].numpy(), rtol=1e-4)
    assert frame["expected_interval"].iloc[0] == pytest.approx(float(streamed.mean()), rel=1e-4)


def test_transformer_baseline_has_no_stream_but_answers_tables():
    model = random_model("transformer")
    with pytest.raises(TypeError, match="Aaren encoder"):
        model.stream_start()
    times, marks = hawkes_history(40, seed=3)
    out = model.predict_frame(pd.DataFrame({"seq_id": "s", "time": times, "mark": marks}))
    full_t = np.r_[times, times[-1] + 1.0]  # any next event: its prediction comes from the first 40
    with torch.no_grad():
        dist = model(torch.tensor(full_t, dtype=torch.float32)[None],
                     torch.tensor(np.diff(full_t, prepend=0.0), dtype=torch.float32)[None],
                     torch.tensor(np.r_[marks, 0])[None])
    assert out["expected_interval"].iloc[0] == pytest.approx(float(dist.mean()[0, -1]), rel=1e-5)


# -- tables ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("encoder", ["aaren", "transformer"])
def test_predict_frame_gives_each_sequence_its_next_event(encoder):
    model = random_model(encoder)
    seqs = HawkesProcess().sample(3, 25, np.random.default_rng(4))
    seqs[1] = (seqs[1][0][:7], seqs[1][1][:7])  # unequal lengths share a left-padded batch
    df = pd.concat([pd.DataFrame({"seq_id": f"s{i}", "time": t, "mark": m}) for i, (t, m) in enumerate(seqs)])
    out = model.predict_frame(df, quantiles=[0.05, 0.5, 0.95])
    assert list(out.columns) == ["seq_id", "last_time", "expected_interval", "expected_time", "time_q5", "time_q50",
                                 "time_q95", "prob_mark_0", "prob_mark_1", "prob_mark_2", "predicted_mark"]
    assert out["seq_id"].tolist() == ["s0", "s1", "s2"]
    probs = out[["prob_mark_0", "prob_mark_1", "prob_mark_2"]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-6)
    assert (out["predicted_mark"] == probs.argmax(1)).all()
    assert (out["last_time"] < out["time_q5"]).all() and (out["time_q5"] < out["time_q50"]).all()
    assert (out["time_q50"] < out["time_q95"]).all()
    np.testing.assert_allclose(out["expected_time"], out["last_time"] + out["expected_interval"])
    for i in range(3):  # the same as each sequence alone
        alone = model.predict_frame(df[df["seq_id"] == f"s{i}"])
        assert alone["expected_interval"].iloc[0] == pytest.approx(out["expected_interval"].iloc[i], rel=1e-5)
    with pytest.raises(InputError, match="mark 5 is outside the declared range 0..2"):
        model.predict_frame(df.assign(mark=5))


def test_first_event_origin_is_used_by_tables_and_streams():
    model = random_model()
    model.origin_first_event.fill_(True)
    times, marks = hawkes_history(20, seed=5)
    times = times + 1000.0  # absolute times: the origin is the first event
    out = model.predict_frame(pd.DataFrame({"seq_id": "s", "time": times, "mark": marks}))
    state = model.stream_start(origin=times[0])
    for i in range(20):
        state = model.stream_update(state, times[i:i + 1], marks[i:i + 1])
    assert out["expected_interval"].iloc[0] == pytest.approx(float(model.stream_predict(state).mean()), rel=1e-5)


def test_model_and_data_must_agree_on_the_number_of_marks():
    data = EventDataModule("hawkes", hawkes=HawkesProcess(n_sequences=20, n_events=5))
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    with pytest.raises(InputError, match="model.n_marks=4 but data.n_marks=3"):
        trainer.fit(EventForecaster(n_marks=4), data)


# -- end to end --------------------------------------------------------------------------------------
def test_fit_logs_registers_and_serves_the_event_model(mlflow_home):
    import mlflow

    config = str(REPO / "configs/events/aaren_hawkes.yaml")
    args = ["fit", "--config", config, "--trainer.enable_progress_bar", "false", "--trainer.max_epochs", "2",
            "--data.init_args.hawkes.n_sequences", "200", "--register", "hawkes_events"]
    assert main(args) == 0
    run = mlflow.search_runs(experiment_names=["tsuite"]).iloc[0]
    for name in ("train_loss", "val_nll", "val_rmse", "val_accuracy", "test_nll", "test_rmse", "test_accuracy"):
        assert np.isfinite(run[f"metrics.{name}"]), name
    assert run["params.encoder"] == "aaren" and run["params.n_marks"] == "3"
    pyfunc = mlflow.pyfunc.load_model("models:/hawkes_events@champion")
    history = pd.DataFrame({"seq_id": ["a", "a", "a", "b"], "time": [0.5, 1.0, 1.2, 3.0], "mark": [0, 1, 2, 1]})
    served = pyfunc.predict(history, params={"quantiles": [0.25, 0.75]})
    direct = pyfunc.unwrap_python_model().model.predict_frame(history, quantiles=[0.25, 0.75])
    pd.testing.assert_frame_equal(served, direct)
    assert list(served["seq_id"]) == ["a", "b"] and {"time_q25", "time_q75"} <= set(served.columns)
    assert served["time_q25"].gt(served["last_time"]).all()
    info = mlflow.models.get_model_info("models:/hawkes_events@champion")
    assert "quantiles" in str(info.signature.params)
