"""linear_scan: Triton kernels vs the PyTorch reference, the reference vs float64 ground truths.

Runs on the CPU under TRITON_INTERPRET=1 (tiny float32 shapes; the kernels use
64-step tiles there, so lengths above 64 cross chunk boundaries). Errors are
relative, ||x - ref|| / ||ref||, against a float64 reference; gates have
|a| in [0.6, 1] and inputs are standard normal (never zeros).
"""

from __future__ import annotations

import math

import pytest
import torch

from tsuite.kernels._dispatch import interpreting
from tsuite.kernels.linear_scan import ScanConfig, _LinearScanFunction, _merge_rows, linear_scan
from tsuite.kernels.linear_scan_ref import linear_scan_ref, linear_scan_sequential

if interpreting():
    DEVICE = "cpu"
elif torch.cuda.is_available():
    DEVICE = "cuda"
else:
    DEVICE = None
needs_triton = pytest.mark.skipif(DEVICE is None, reason="needs TRITON_INTERPRET=1 or a CUDA device")

TOL_FP32 = 1e-5  # float32 scan vs float64: measured up to ~4e-6 on these shapes
TOL_FP64 = 1e-12


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    x, ref = x.detach().cpu().to(torch.complex128), ref.detach().cpu().to(torch.complex128)
    return ((x - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def make_inputs(shape, L, *, complex_=False, time_invariant=False, with_h0=False, seed=0, device="cpu"):
    """Gates with |a| in [0.6, 1] (random sign or phase), standard-normal inputs, h0 and an upstream gradient."""
    g = torch.Generator().manual_seed(seed)
    La = 1 if time_invariant else L
    mag = 0.6 + 0.4 * torch.rand(*shape, La, generator=g, dtype=torch.float64)
    if complex_:
        a = torch.polar(mag, 2 * math.pi * torch.rand(*shape, La, generator=g, dtype=torch.float64))
        b = torch.randn(*shape, L, generator=g, dtype=torch.complex128)
        h0 = torch.randn(*shape, generator=g, dtype=torch.complex128)
        dh = torch.randn(*shape, L, generator=g, dtype=torch.complex128)
    else:
        a = mag * (torch.randint(0, 2, mag.shape, generator=g) * 2 - 1)
        b = torch.randn(*shape, L, generator=g, dtype=torch.float64)
        h0 = torch.randn(*shape, generator=g, dtype=torch.float64)
        dh = torch.randn(*shape, L, generator=g, dtype=torch.float64)
    return a.to(device), b.to(device), (h0.to(device) if with_h0 else None), dh.to(device)


def run_with_grads(fn, a, b, h0, dh):
    """fn's output and its gradients for a, b (and h0) given upstream gradient dh."""
    leaves = [x.detach().clone().requires_grad_() for x in (a, b) + ((h0,) if h0 is not None else ())]
    h = fn(*leaves) if h0 is not None else fn(*leaves, None)
    grads = torch.autograd.grad(h, leaves, dh.to(h.dtype), allow_unused=True)
    return [h] + [torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads)]


def single(x):
    return None if x is None else (x.to(torch.complex64) if x.is_complex() else x.float())


def check_triton_against_float64(a, b, h0, dh, reverse, scan=None, tol=TOL_FP32):
    """Triton (float32 / complex64) output and every gradient vs the float64 reference."""
    if scan is None:
        scan = lambda a, b, h0: linear_scan(a, b, h0, reverse=reverse, backend="triton")  # noqa: E731
    got = run_with_grads(scan, single(a), single(b), single(h0), dh)
    want = run_with_grads(lambda a, b, h0: linear_scan_ref(a, b, h0, reverse=reverse), a, b, h0, dh)
    names = ["h", "da", "db", "dh0"]
    errs = {n: rel_err(x, y) for n, x, y in zip(names, got, want)}
    assert got[0].dtype == single(b).dtype
    assert all(e <= tol for e in errs.values()), errs
    return got


# ---------------------------------------------------------------- the reference itself


@pytest.mark.parametrize("L", [1, 7, 100, 257])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("time_invariant", [False, True])
def test_reference_matches_float64_sequential_loop(L, reverse, complex_, time_invariant):
    a, b, h0, _ = make_inputs((2, 3), L, complex_=complex_, time_invariant=time_invariant, with_h0=True)
    for init in (None, h0):
        got = linear_scan_ref(a, b, init, reverse=reverse, chunk=8)  # small chunks: two levels of recursion
        assert rel_err(got, linear_scan_sequential(a, b, init, reverse=reverse)) <= TOL_FP64


@pytest.mark.parametrize("L", [7, 100])
@pytest.mark.parametrize("complex_", [False, True])
def test_reference_gradients_match_autograd_of_sequential_loop(L, complex_):
    a, b, h0, dh = make_inputs((2, 3), L, complex_=complex_, with_h0=True)
    got = run_with_grads(lambda a, b, h0: linear_scan_ref(a, b, h0, chunk=8), a, b, h0, dh)
    want = run_with_grads(linear_scan_sequential, a, b, h0, dh)
    for x, y in zip(got, want):
        assert rel_err(x, y) <= TOL_FP64


@pytest.mark.parametrize("L", [7, 100, 257])
@pytest.mark.parametrize("reverse", [False, True])
def test_reference_matches_accelerated_scan_reference(L, reverse):
    acc_ref = pytest.importorskip("accelerated_scan.ref")
    a, b, _, _ = make_inputs((2, 3), L)
    want = acc_ref.scan(a.contiguous(), b.contiguous(), reverse=reverse)
    assert rel_err(linear_scan_ref(a, b, reverse=reverse), want) <= TOL_FP64


def test_reference_in_float32_stays_exact_where_gate_products_underflow():
    # prod of 0.1 over 200 steps underflows float32; a closed form dividing by it would give inf/nan
    a = torch.full((1, 200), 0.1)
    b = torch.randn(1, 200)
    got = linear_scan_ref(a, b)
    assert torch.isfinite(got).all()
    assert rel_err(got, linear_scan_sequential(a, b)) <= TOL_FP32


# ---------------------------------------------------------------- Triton vs reference


@needs_triton
@pytest.mark.parametrize("L", [1, 7, 100, 257])
@pytest.mark.parametrize("reverse", [False, True])
def test_triton_matches_reference_on_odd_lengths(L, reverse):
    a, b, h0, dh = make_inputs((2, 3), L, with_h0=L % 2 == 1, device=DEVICE)
    check_triton_against_float64(a, b, h0, dh, reverse)


@needs_triton
@pytest.mark.parametrize("L", [7, 257])
@pytest.mark.parametrize("reverse", [False, True])
def test_triton_complex64_matches_reference(L, reverse):
    a, b, h0, dh = make_inputs((2, 3), L, complex_=True, with_h0=True, device=DEVICE)
    check_triton_against_float64(a, b, h0, dh, reverse)


@needs_triton
@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_triton_time_invariant_gate_matches_reference(complex_, reverse):
    a, b, h0, dh = make_inputs((2, 3), 100, complex_=complex_, time_invariant=True, with_h0=True, device=DEVICE)
    got = check_triton_against_float64(a, b, h0, dh, reverse)
    assert got[1].shape == a.shape  # da summed over time


@needs_triton
@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("time_invariant", [False, True])
def test_triton_accepts_channels_last_views_and_keeps_their_layout(complex_, time_invariant):
    B, L, H = 2, 100, 5
    a, b, h0, dh = make_inputs((B, H), L, complex_=complex_, time_invariant=time_invariant, with_h0=True, device=DEVICE)
    cl = lambda x: x.transpose(1, 2).contiguous().transpose(1, 2)  # noqa: E731  (B, H, L) view of a (B, L, H) tensor
    a_cl = a if time_invariant else cl(a)
    got = check_triton_against_float64(a_cl, cl(b), h0, cl(dh), reverse=False)
    assert got[0].transpose(1, 2).is_contiguous()  # output written channels-last, no hidden copy


@needs_triton
def test_triton_broadcasts_shared_gates_and_initial_state_over_batch():
    a, _, h0, _ = make_inputs((3,), 50, with_h0=True, device=DEVICE)  # a (H, L), h0 (H,)
    _, b, _, dh = make_inputs((2, 3), 50, seed=1, device=DEVICE)  # b (B, H, L)
    got = check_triton_against_float64(a, b, h0, dh, reverse=True)
    assert got[1].shape == a.shape and got[3].shape == h0.shape


@needs_triton
def test_triton_handles_leading_dims_that_cannot_be_merged():
    x = make_inputs((4, 3, 2), 30, with_h0=True, device=DEVICE)
    # (2, 3, 4, L) views with row strides (L, 2L, 6L): no two leading dims merge into one
    a, b, h0, dh = (t.permute(2, 1, 0, 3) if t.dim() == 4 else t.permute(2, 1, 0) for t in x)
    assert len(_merge_rows(tuple(b.shape[:-1]), [b.stride()[:-1]])) == 3
    check_triton_against_float64(a, b, h0, dh, reverse=False)


@needs_triton
@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("block", [(1, 16), (4, 8)])
def test_triton_backward_in_time_scan_modes_agree_with_reference(flip, block):
    """Both ways of scanning backward in time (reverse tl.associative_scan, reversed indices) on several tiles."""
    cfg = ScanConfig(block_r=block[0], block_t=block[1], num_warps=1, flip=flip)
    for reverse in (False, True):
        a, b, h0, dh = make_inputs((2, 3), 37, with_h0=True, device=DEVICE)
        scan = lambda a, b, h0: _LinearScanFunction.apply(a, b, h0, reverse, cfg)  # noqa: E731
        check_triton_against_float64(a, b, h0, dh, reverse, scan=scan)


@needs_triton
@pytest.mark.parametrize("reverse", [False, True])
def test_triton_final_state_is_the_last_step_and_carries_gradient(reverse):
    a, b, h0, _ = make_inputs((2, 3), 20, with_h0=True, device=DEVICE)
    a, b, h0 = (single(x).requires_grad_() for x in (a, b, h0))
    h, h_last = linear_scan(a, b, h0, reverse=reverse, return_final_state=True, backend="triton")
    assert torch.equal(h_last, h[..., 0 if reverse else -1])
    (gb,) = torch.autograd.grad(h_last.sum(), [b])
    want_h, want_last = linear_scan_ref(a, b, h0, reverse=reverse, return_final_state=True)
    (want_gb,) = torch.autograd.grad(want_last.sum(), [b])
    assert rel_err(gb, want_gb) <= TOL_FP32


@needs_triton
def test_triton_matches_accelerated_scan_reference():
    acc_ref = pytest.importorskip("accelerated_scan.ref")
    a, b, _, _ = make_inputs((2, 3), 100, device=DEVICE)
    want = acc_ref.scan(a.cpu(), b.cpu())
    assert rel_err(linear_scan(single(a), single(b), backend="triton"), want) <= TOL_FP32


def test_mismatched_lengths_and_dtypes_are_refused_with_a_reason():
    with pytest.raises(ValueError, match="same length as b or length 1"):
        linear_scan(torch.rand(2, 5), torch.rand(2, 7), backend="torch")
    with pytest.raises(TypeError, match="share one dtype"):
        linear_scan(torch.rand(2, 7, dtype=torch.float64), torch.rand(2, 7), backend="torch")


def test_torch_backend_is_the_reference():
    a, b, h0, _ = make_inputs((2, 3), 33, with_h0=True)
    assert torch.equal(linear_scan(a, b, h0, backend="torch"), linear_scan_ref(a, b, h0))
