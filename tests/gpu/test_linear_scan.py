"""linear_scan on the GPU: the full matrix (lengths up to 2^20, half precision, complex, layouts).

Every check compares the Triton kernels with the float64 reference (computed on
the GPU from the same, already rounded, inputs) by relative error
||x - ref|| / ||ref||, forward and every gradient. Skipped without CUDA.

Conditioning: a constant gate near 1 keeps ~1/(1 - |a|) steps of memory, and
any float32 evaluation then loses accuracy (|a| = 0.9995 over 4099 steps: the
float32 sequential loop is off by 3.6e-6, the float32 reference by 7.5e-6, and
da = sum_t g_t h_{t-1} reaches ~2e6, past float16's range). Fixed-tolerance
checks on time-invariant gates therefore draw |a| from [0.6, 0.99];
``test_time_invariant_long_memory_is_as_accurate_as_float32_reference`` covers
gates up to 1 against the float32 reference's own error.
"""

from __future__ import annotations

import math

import pytest
import torch

from tsuite.kernels._dispatch import interpreting
from tsuite.kernels.linear_scan import ScanConfig, _LinearScanFunction, default_config, linear_scan
from tsuite.kernels.linear_scan_ref import linear_scan_ref

pytestmark = pytest.mark.skipif(
    interpreting() or not torch.cuda.is_available(), reason="needs a CUDA device (and no TRITON_INTERPRET)"
)

TOL_FP32 = 1e-5
TOL_C64 = 2e-5  # a complex multiply-add is four real ones
UNIT_ROUNDOFF = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    x, ref = x.detach().to(torch.complex128), ref.detach().to(torch.complex128)
    return ((x - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def make_inputs(shape, L, dtype, *, time_invariant=False, with_h0=True, gate=(0.6, 1.0), seed=0):
    """Inputs already in ``dtype`` (never zero): |a| in ``gate`` with random sign/phase, normal b, h0, dL/dh."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    La = 1 if time_invariant else L
    mag = gate[0] + (gate[1] - gate[0]) * torch.rand(*shape, La, generator=g, device="cuda", dtype=torch.float64)
    if dtype.is_complex:
        phase = 2 * math.pi * torch.rand(mag.shape, generator=g, device="cuda", dtype=torch.float64)
        a = torch.polar(mag, phase)
        b, h0, dh = (torch.randn(*s, generator=g, device="cuda", dtype=torch.complex128) for s in ((*shape, L), shape, (*shape, L)))
    else:
        a = mag * (torch.randint(0, 2, mag.shape, generator=g, device="cuda") * 2 - 1) if gate[0] < 0.9 else mag
        b, h0, dh = (torch.randn(*s, generator=g, device="cuda", dtype=torch.float64) for s in ((*shape, L), shape, (*shape, L)))
    return a.to(dtype), b.to(dtype), (h0.to(dtype) if with_h0 else None), dh.to(dtype)


def with_grads(fn, a, b, h0, dh, backward=True):
    leaves = [x.detach().clone().requires_grad_(backward) for x in (a, b) + ((h0,) if h0 is not None else ())]
    h = fn(*leaves) if h0 is not None else fn(*leaves, None)
    if not backward:
        return [h]
    grads = torch.autograd.grad(h, leaves, dh.to(h.dtype), allow_unused=True)
    return [h] + [torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads)]


def wide(x):
    return None if x is None else x.to(torch.complex128 if x.is_complex() else torch.float64)


def errors_vs_float64(a, b, h0, dh, reverse=False, backward=True, scan=None):
    """Relative errors of the Triton output and gradients vs the float64 reference on the same inputs."""
    scan = scan or (lambda a, b, h0: linear_scan(a, b, h0, reverse=reverse, backend="triton"))
    got = with_grads(scan, a, b, h0, dh, backward)
    want = with_grads(lambda a, b, h0: linear_scan_ref(a, b, h0, reverse=reverse), wide(a), wide(b), wide(h0), wide(dh), backward)
    assert got[0].dtype == b.dtype and got[0].shape == want[0].shape
    return {n: rel_err(x, y) for n, x, y in zip(["h", "da", "db", "dh0"], got, want)}


@pytest.mark.parametrize("L", [1, 7, 1000, 4099, 131072])
@pytest.mark.parametrize("reverse", [False, True])
def test_fp32_matches_float64_reference_at_every_length(L, reverse):
    shape = (2, 3) if L < 100_000 else (2, 2)
    errs = errors_vs_float64(*make_inputs(shape, L, torch.float32, with_h0=not reverse), reverse=reverse)
    assert max(errs.values()) <= TOL_FP32, errs


@pytest.mark.parametrize("L", [1000, 131072])
@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64])
def test_both_backward_in_time_scan_modes_match_on_gpu_tiles(L, dtype):
    """Reverse tl.associative_scan and reversed-index tiles, with the tile the GPU uses by default."""
    base = default_config(6, L, L, 1, dtype.itemsize)
    for flip in (False, True):
        cfg = ScanConfig(base.block_r, base.block_t, base.num_warps, flip, base.num_stages)
        for reverse in (False, True):
            scan = lambda a, b, h0: _LinearScanFunction.apply(a, b, h0, reverse, cfg)  # noqa: E731
            errs = errors_vs_float64(*make_inputs((2, 3), L, dtype), reverse=reverse, scan=scan)
            assert max(errs.values()) <= (TOL_C64 if dtype.is_complex else TOL_FP32), (flip, reverse, errs)


def test_fp32_forward_runs_2_pow_20_steps():
    errs = errors_vs_float64(*make_inputs((2, 2), 2**20, torch.float32), backward=False)
    assert errs["h"] <= TOL_FP32, errs


@pytest.mark.parametrize("reverse", [False, True])
def test_fp32_long_memory_gates_stay_within_1e_5_over_131072_steps(reverse):
    """|a| in [0.99, 1]: errors accumulate over ~100+ steps of memory, the hard case for float32."""
    errs = errors_vs_float64(*make_inputs((4, 2), 131072, torch.float32, gate=(0.99, 1.0)), reverse=reverse)
    assert max(errs.values()) <= TOL_FP32, errs


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("time_invariant", [False, True])
def test_half_precision_output_is_within_one_rounding_of_float32(dtype, time_invariant):
    a, b, h0, dh = make_inputs((4, 8), 4099, dtype, time_invariant=time_invariant, gate=(0.6, 0.99))
    h = linear_scan(a, b, h0, backend="triton")
    ref = linear_scan(a.float(), b.float(), h0.float(), backend="triton")  # float32 on the same rounded inputs
    u = UNIT_ROUNDOFF[dtype]
    # one rounding (u |ref|), plus float32 slack: the two dtypes use different tiles, so sums associate differently
    excess = (h.float() - ref).abs() - u * ref.abs() - 4e-6 * (1 + ref.abs())
    assert h.dtype == dtype and excess.max().item() <= 0, excess.max().item()
    errs = errors_vs_float64(a, b, h0, dh)
    assert max(errs.values()) <= 4 * u, errs  # gradients: a few roundings (h is saved in the input dtype)


@pytest.mark.parametrize("L", [7, 4099])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("time_invariant", [False, True])
def test_complex64_matches_complex128_reference(L, reverse, time_invariant):
    errs = errors_vs_float64(*make_inputs((2, 3), L, torch.complex64, time_invariant=time_invariant), reverse=reverse)
    assert max(errs.values()) <= TOL_C64, errs


def test_complex64_long_sequence():
    errs = errors_vs_float64(*make_inputs((2, 2), 131072, torch.complex64, gate=(0.99, 1.0)))
    assert max(errs.values()) <= TOL_C64, errs


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("with_h0", [False, True])
def test_time_invariant_gates_match_reference(reverse, with_h0):
    a, b, h0, dh = make_inputs((4, 16), 4099, torch.float32, time_invariant=True, with_h0=with_h0, gate=(0.6, 0.99))
    errs = errors_vs_float64(a, b, h0, dh, reverse=reverse)
    assert max(errs.values()) <= TOL_FP32, errs


@pytest.mark.parametrize("reverse", [False, True])
def test_time_invariant_long_memory_is_as_accurate_as_float32_reference(reverse):
    """Constant gates up to |a| = 1: within 4x the error of the float32 PyTorch reference, plus 1e-6."""
    a, b, h0, dh = make_inputs((4, 16), 4099, torch.float32, time_invariant=True)
    errs = errors_vs_float64(a, b, h0, dh, reverse=reverse)
    ref32 = errors_vs_float64(a, b, h0, dh, reverse=reverse, scan=lambda a, b, h0: linear_scan_ref(a, b, h0, reverse=reverse))
    assert all(errs[k] <= 4 * ref32[k] + 1e-6 for k in errs), (errs, ref32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64])
@pytest.mark.parametrize("time_invariant", [False, True])
def test_channels_last_views_run_in_place_and_match(dtype, time_invariant):
    B, L, H = 2, 4099, 96
    a, b, h0, dh = make_inputs((B, H), L, dtype, time_invariant=time_invariant, gate=(0.6, 0.99 if time_invariant else 1.0))
    cl = lambda x: x.transpose(1, 2).contiguous().transpose(1, 2)  # noqa: E731  (B, H, L) view of (B, L, H)
    a = a if time_invariant else cl(a)
    errs = errors_vs_float64(a, cl(b), h0, cl(dh), reverse=True)
    assert max(errs.values()) <= (TOL_C64 if dtype.is_complex else TOL_FP32), errs
    assert linear_scan(a, cl(b), h0).transpose(1, 2).is_contiguous()


def test_outputs_are_fully_written():
    """Poison the memory the output will reuse (NaN): every element must be overwritten."""
    a, b, h0, dh = make_inputs((3, 5), 4099, torch.float32)
    want = linear_scan_ref(wide(a), wide(b), wide(h0))
    for _ in range(3):
        poison = torch.full_like(b, float("nan"))
        del poison  # the caching allocator hands this block to the output next
        h = linear_scan(a, b, h0)
        assert torch.isfinite(h).all() and rel_err(h, want) <= TOL_FP32
