"""LSSL: generalised bilinear transform, Krylov kernel, convolution = recurrence = step(), LSSL vs LSSL-fixed."""

from __future__ import annotations

import pytest
import torch

from tsuite.forecasting import LSSLLayer
from tsuite.forecasting.hippo import transition
from tsuite.forecasting.ssm_layer import krylov


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_generalised_bilinear_transform(alpha):
    layer = LSSLLayer(3, 8, alpha=alpha)
    dA, dB = layer.discretize()
    A, B = transition("legs", 8)
    eye = torch.eye(8, dtype=torch.float64)
    dt = layer.log_dt.exp().double()[1]
    expected = {
        0.0: (eye + dt * A, dt * B),  # forward Euler
        0.5: (torch.linalg.solve(eye - dt / 2 * A, eye + dt / 2 * A), torch.linalg.solve(eye - dt / 2 * A, dt * B)),
        1.0: (torch.linalg.inv(eye - dt * A), torch.linalg.solve(eye - dt * A, dt * B)),  # backward Euler
    }[alpha]
    torch.testing.assert_close(dA[1], expected[0], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(dB[1], expected[1], rtol=1e-6, atol=1e-7)


def test_krylov_matrix_holds_the_powers():
    torch.manual_seed(0)
    A, b = torch.randn(2, 5, 5, dtype=torch.float64) / 3, torch.randn(2, 5, dtype=torch.float64)
    K = krylov(13, A, b)
    assert K.shape == (2, 5, 13)
    for l in (0, 1, 9, 12):
        torch.testing.assert_close(K[..., l], (torch.linalg.matrix_power(A, l) @ b.unsqueeze(-1)).squeeze(-1))


@pytest.mark.parametrize("measure", ["legs", "legt", "lagt"])
def test_convolution_and_recurrent_views_agree_at_length_4096(measure):
    torch.manual_seed(1)
    layer = LSSLLayer(4, 16, measure=measure)
    u = torch.randn(2, 4, 4096)
    with torch.no_grad():
        conv = layer(u)  # Krylov kernel + FFT convolution
        rec, _ = layer.recurrent(u)  # x_t = Ā x_{t-1} + B̄ u_t, step by step
    assert rel(conv, rec) <= 1e-4


def test_step_with_carried_state_equals_the_full_sequence():
    torch.manual_seed(2)
    layer = LSSLLayer(4, 32)
    u = torch.randn(3, 4, 200)
    with torch.no_grad():
        full = layer(u)
        head, state = layer.recurrent(u[..., :120])
        ys = []
        for t in range(120, 200):
            y, state = layer.step(u[..., t], state)
            ys.append(y)
    assert rel(torch.cat([head, torch.stack(ys, dim=-1)], dim=-1), full) <= 1e-5
    assert state.shape == (3, 4, 32)


def test_lssl_trains_A_and_dt_and_lssl_fixed_keeps_them():
    torch.manual_seed(3)
    learned, fixed = LSSLLayer(2, 8, lr=0.003), LSSLLayer(2, 8, learn_A=False, learn_dt=False)
    learned(torch.randn(1, 2, 40)).sum().backward()
    params = dict(learned.named_parameters())
    for name in ("A", "B", "log_dt"):
        assert params[name].grad.abs().sum() > 0 and params[name]._optim == {"weight_decay": 0.0, "lr": 0.003}
    assert set(dict(fixed.named_parameters())) == {"C", "D"}
    assert {"A", "B", "log_dt"} <= set(dict(fixed.named_buffers()))
    torch.testing.assert_close(fixed.A.double(), transition("legs", 8)[0], rtol=1e-6, atol=1e-6)
