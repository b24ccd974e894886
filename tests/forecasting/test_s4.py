"""S4: HiPPO and its NPLR form, the Cauchy kernel against the dense SSM, convolution = recurrence = step()."""

from __future__ import annotations

import pytest
import torch

from tsuite.forecasting import S4Layer
from tsuite.forecasting.hippo import dense_from_nplr, nplr, transition
from tsuite.forecasting.ssm_layer import krylov, matrix_power


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def test_legs_matrix_matches_its_definition():
    A, B = transition("legs", 4)
    r = torch.sqrt(2 * torch.arange(4, dtype=torch.float64) + 1)
    assert A[2, 2] == -3 and A[0, 3] == 0 and A[3, 1] == pytest.approx(-(r[3] * r[1]).item())
    torch.testing.assert_close(B, r)
    assert torch.linalg.eigvals(A).real.sort().values.tolist() == pytest.approx([-4, -3, -2, -1])


@pytest.mark.parametrize("measure", ["legs", "legt", "lagt"])
@pytest.mark.parametrize("N", [8, 64])
def test_nplr_form_is_unitarily_equivalent_to_hippo(measure, N):
    A, B = transition(measure, N)
    Lambda, P, Bv, V = nplr(measure, N)
    Vf = torch.cat([V, V.conj()], dim=-1)  # (N N) unitary
    torch.testing.assert_close(Vf.conj().T @ Vf, torch.eye(N, dtype=torch.complex128), atol=1e-10, rtol=0)
    recon = Vf @ dense_from_nplr(Lambda, P) @ Vf.conj().T
    assert (recon - A).abs().max() < 1e-10 * A.abs().max()
    assert (Vf @ torch.cat([Bv, Bv.conj()]) - B).abs().max() < 1e-10
    assert P.shape[0] == (2 if measure == "legt" else 1)


@pytest.mark.parametrize("disc", ["bilinear", "zoh"])
def test_kernel_equals_the_dense_ssm_impulse_response(disc):
    """The Cauchy (bilinear) or Krylov (zoh) kernel is C Ā^l B̄ with C = C̃ (I − Ā^L)^{-1}, computed densely."""
    torch.manual_seed(0)
    layer = S4Layer(3, 16, disc=disc, l_max=64)
    dA, dB, C_tilde = layer.dense()
    eye = torch.eye(16, dtype=dA.dtype)
    C = torch.linalg.solve((eye - matrix_power(dA, 64)).transpose(-1, -2), C_tilde)
    dense = torch.einsum("hn,hnl->hl", C, krylov(64, dA, dB)).real
    torch.testing.assert_close(layer.kernel(64).double(), dense, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(layer.kernel(40).double(), dense[:, :40], rtol=1e-5, atol=1e-6)  # truncation


@pytest.mark.parametrize("disc", ["bilinear", "zoh"])
def test_convolution_and_recurrent_views_agree_at_length_4096(disc):
    torch.manual_seed(1)
    layer = S4Layer(4, 32, disc=disc)
    u = torch.randn(2, 4, 4096)
    with torch.no_grad():
        conv = layer(u)  # fixes l_kernel = 4096 and convolves with the Cauchy kernel
        rec, _ = layer.recurrent(u)  # dense N × N recurrence with C recovered from C̃
    assert int(layer.l_kernel) == 4096
    assert rel(conv, rec) <= 1e-4


@pytest.mark.parametrize("measure", ["legt", "lagt"])
def test_other_measures_agree_too(measure):
    torch.manual_seed(2)
    layer = S4Layer(4, 16, measure=measure)
    u = torch.randn(1, 4, 1024)
    with torch.no_grad():
        assert rel(layer(u), layer.recurrent(u)[0]) <= 1e-4


def test_kernel_longer_than_its_tied_length_matches_the_recurrence():
    torch.manual_seed(3)
    layer = S4Layer(4, 16, l_max=128)
    u = torch.randn(2, 4, 1000)
    with torch.no_grad():
        assert rel(layer(u), layer.recurrent(u)[0]) <= 1e-4
    assert int(layer.l_kernel) == 128  # unchanged: C̃ is rescaled, not overwritten


def test_step_with_carried_state_equals_the_full_sequence():
    torch.manual_seed(4)
    layer = S4Layer(4, 32, l_max=256)
    u = torch.randn(3, 4, 256)
    with torch.no_grad():
        full = layer(u)
        head, state = layer.recurrent(u[..., :100])
        ys = []
        for t in range(100, 256):
            y, state = layer.step(u[..., t], state)
            ys.append(y)
    assert rel(torch.cat([head, torch.stack(ys, dim=-1)], dim=-1), full) <= 1e-5
    assert state.shape == (3, 4, 32)


def test_gradients_reach_every_ssm_parameter_and_ssm_parameters_have_their_own_lr():
    torch.manual_seed(5)
    layer = S4Layer(2, 8, lr=0.004)
    layer(torch.randn(2, 2, 30)).square().mean().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
        if name in ("log_dt", "log_A_real", "A_imag", "P", "B"):
            assert p._optim == {"weight_decay": 0.0, "lr": 0.004}
