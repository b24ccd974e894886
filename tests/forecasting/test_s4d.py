"""S4D: the paper's initialisations, the Vandermonde kernel, convolution = recurrence (fused diagonal scan) = step()."""

from __future__ import annotations

import math

import pytest
import torch

from tsuite.forecasting import S4DLayer
from tsuite.kernels.diag_ssm_scan_ref import diag_ssm_scan_loop


@pytest.fixture(autouse=True)
def one_thread():
    """Small CPU models run fastest (and steadiest on shared machines) on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def test_initialisations_follow_the_paper():
    torch.manual_seed(0)
    N = 64
    lin, inv = S4DLayer(256, N, init="lin"), S4DLayer(256, N, init="inv")
    _, A, B, C = lin.ssm()
    n = torch.arange(N // 2)
    torch.testing.assert_close(A[0], torch.complex(torch.full((N // 2,), -0.5), math.pi * n.float()))
    _, A_inv, _, _ = inv.ssm()
    torch.testing.assert_close(A_inv[3].imag, N / math.pi * (N / (2 * n.float() + 1) - 1))
    assert torch.equal(B, torch.ones_like(B))
    dt = lin.log_dt.exp()
    assert 0.001 <= dt.min() and dt.max() <= 0.1 and dt.max() / dt.min() > 20  # log-uniform over two decades
    assert C.abs().pow(2).mean().item() == pytest.approx(1.0, abs=0.05)  # C ~ N(0, 1) complex


def test_vandermonde_kernel_is_the_impulse_response_of_the_recurrence():
    torch.manual_seed(1)
    layer = S4DLayer(3, 16)
    L = 50
    impulse = torch.zeros(1, 3, L, dtype=torch.float64)
    impulse[..., 0] = 1.0
    dt, A, B, C = layer.ssm()
    y, _ = diag_ssm_scan_loop(impulse, A, B, C, dt)  # float64 step by step, D = 0
    torch.testing.assert_close(layer.kernel(L).double(), y[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
@pytest.mark.parametrize("init", ["lin", "inv"])
def test_convolution_and_recurrent_views_agree_at_length_4096(disc, init):
    torch.manual_seed(2)
    layer = S4DLayer(8, 64, init=init, disc=disc)
    u = torch.randn(2, 8, 4096)
    with torch.no_grad():
        conv = layer(u)  # FFT convolution with the Vandermonde kernel
        rec, _ = layer.recurrent(u)  # the fused diagonal scan
    assert rel(conv, rec) <= 1e-4


@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
def test_step_with_carried_state_equals_the_full_sequence(disc):
    torch.manual_seed(3)
    layer = S4DLayer(4, 32, disc=disc)
    u = torch.randn(3, 4, 300)
    with torch.no_grad():
        full = layer(u)
        head, state = layer.recurrent(u[..., :200])  # first 200 steps by the scan, then one step at a time
        steps = []
        for t in range(200, 300):
            y, state = layer.step(u[..., t], state)
            steps.append(y)
        chunks = torch.cat([head, torch.stack(steps, dim=-1)], dim=-1)
        second, _ = layer.recurrent(u[..., 200:], layer.recurrent(u[..., :200])[1])  # scan resumed from a state
    assert rel(chunks, full) <= 1e-5
    assert rel(second, full[..., 200:]) <= 1e-5
    assert state.shape == (3, 4, 16)  # O(1) in time


def test_fixed_A_keeps_A_and_B_as_buffers_and_dt_trains():
    layer = S4DLayer(4, 8, learn_A=False, lr=0.002)
    names = dict(layer.named_parameters())
    assert "log_A_real" not in names and "B" not in names and "log_dt" in names
    assert names["log_dt"]._optim == {"weight_decay": 0.0, "lr": 0.002}
    assert not hasattr(names["C"], "_optim")
