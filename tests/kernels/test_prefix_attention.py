"""Prefix attention (Aaren): Triton kernels vs the PyTorch reference, the reference vs float64 ground truths.

Runs on the CPU under TRITON_INTERPRET=1 (tiny float32 shapes); on a CUDA
machine without the interpreter the Triton checks run on the GPU. Errors are
relative, ||a - b|| / max(||b||, sqrt(numel)): the floor (an RMS of 1, the
scale of the inputs) only matters where the true value is ~0, e.g. the q and k
gradients at L = 1, which are exactly zero.
"""

from __future__ import annotations

import pytest
import torch

from tsuite.kernels._dispatch import interpreting
from tsuite.kernels.prefix_attention import (
    PrefixAttentionState,
    _prefix_attention_triton,
    prefix_attention,
    prefix_attention_step,
)
from tsuite.kernels.prefix_attention_ref import (
    masked_softmax_attention,
    prefix_attention_loop,
    prefix_attention_ref,
)

if interpreting():
    DEVICE = "cpu"
elif torch.cuda.is_available():
    DEVICE = "cuda"
else:
    DEVICE = None
needs_triton = pytest.mark.skipif(DEVICE is None, reason="needs TRITON_INTERPRET=1 or a CUDA device")

# float32 kernels against a float64 reference: the interpreter's dot is exact float32,
# the GPU's runs as 3 tf32 passes; both land near 1e-7, far under this.
TOL_FP32 = 2e-5
TOL_FP64 = 1e-12


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    return ((a - b).norm() / max(b.norm().item(), b.numel() ** 0.5)).item()


def make_inputs(B=2, H=3, L=100, d=16, q_batched=True, device="cpu", seed=0, q_scale=2.0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn((B, H, d) if q_batched else (H, d), generator=g) * q_scale
    k = torch.randn(B, H, L, d, generator=g)
    v = torch.randn(B, H, L, d, generator=g)
    do = torch.randn(B, H, L, d, generator=g)
    return [x.to(device) for x in (q, k, v, do)]


def grads_of(fn, q, k, v, do):
    """Output and (dq, dk, dv) of fn(q, k, v) for upstream gradient do."""
    leaves = [x.detach().clone().requires_grad_() for x in (q, k, v)]
    o = fn(*leaves)
    return (o, *torch.autograd.grad(o, leaves, do))


def reference64(q, k, v, do):
    return grads_of(prefix_attention_ref, q.double(), k.double(), v.double(), do.double())


def assert_close_all(got, want, tol):
    for name, a, b in zip(("o", "dq", "dk", "dv"), got, want):
        assert a.shape == b.shape, name
        assert torch.isfinite(a).all(), f"{name} has non-finite entries"
        err = rel_err(a, b)
        assert err < tol, f"{name}: relative error {err:.2e} >= {tol:.0e}"


# --------------------------------------------------------------------------- Triton vs reference


@needs_triton
@pytest.mark.parametrize("L,q_batched", [(1, True), (7, True), (100, True), (100, False), (257, False)])
def test_triton_matches_reference_on_odd_lengths(L, q_batched):
    # Default launch: blocks of a few chunks, a partial last chunk at L = 7, 100, 257.
    q, k, v, do = make_inputs(L=L, q_batched=q_batched, device=DEVICE, seed=L)
    got = grads_of(lambda *x: prefix_attention(*x, backend="triton"), q, k, v, do)
    assert_close_all(got, reference64(q, k, v, do), TOL_FP32)


@needs_triton
@pytest.mark.parametrize("chunk,segment", [(16, 16), (16, 48), (32, None)])
def test_triton_matches_reference_across_chunks_and_segments(chunk, segment):
    # d = 24 is not a power of two (masked head dim); 17 blocks of one chunk, or 6 of three
    # chunks (the carry from chunk to chunk inside a block), merged by the scan over blocks.
    q, k, v, do = make_inputs(B=1, H=2, L=257, d=24, device=DEVICE, seed=chunk + (segment or 0))
    got = grads_of(lambda *x: _prefix_attention_triton(*x, chunk=chunk, segment=segment), q, k, v, do)
    assert_close_all(got, reference64(q, k, v, do), TOL_FP32)


@needs_triton
def test_triton_scan_carries_across_steps_over_many_blocks():
    # 38 chunks in 19 blocks of two, scanned 4 summaries a step: five steps forward and in
    # reverse, so the scan's own carry from step to step is exercised in both directions.
    q, k, v, do = make_inputs(B=1, H=1, L=601, d=16, device=DEVICE, seed=5)
    got = grads_of(lambda *x: _prefix_attention_triton(*x, chunk=16, segment=32, scan_rows=4), q, k, v, do)
    assert_close_all(got, reference64(q, k, v, do), TOL_FP32)


@needs_triton
def test_triton_float16_splits_the_weights_for_16_bit_tensor_cores():
    # 16-bit inputs take the hi + lo split of the softmax weights (two fp16 products):
    # o and dv must be as close as rounding the exact result to fp16, dq and dk within a few u.
    q, k, v, do = (x.half() for x in make_inputs(B=1, H=2, L=150, d=16, device=DEVICE, seed=11))
    got = grads_of(lambda *x: _prefix_attention_triton(*x, chunk=16, segment=32), q, k, v, do)
    want = reference64(q, k, v, do)
    for name, a, b in zip(("o", "dq", "dk", "dv"), got, want):
        assert a.dtype == torch.float16 and torch.isfinite(a).all(), name
        rounding = rel_err(b.half(), b)
        tol = 8 * 2.0**-11 if name in ("dq", "dk") else 5 * rounding + 1e-4
        assert rel_err(a, b) < tol, f"{name}: {rel_err(a, b):.2e} >= {tol:.1e}"


@needs_triton
def test_triton_accepts_non_contiguous_views():
    B, H, L, d = 2, 3, 77, 16
    g = torch.Generator().manual_seed(1)
    # (B, L, H, 2d) storage seen as (B, H, L, d): time-major layout and a strided head dim.
    k = torch.randn(B, L, H, 2 * d, generator=g).to(DEVICE).transpose(1, 2)[..., ::2]
    v = torch.randn(B, L, H, 2 * d, generator=g).to(DEVICE).transpose(1, 2)[..., 1::2]
    q = torch.randn(d, H, generator=g).to(DEVICE).t() * 2  # (H, d), transposed
    do = torch.randn(B, L, H, d, generator=g).to(DEVICE).transpose(1, 2)
    assert not (k.is_contiguous() or v.is_contiguous() or q.is_contiguous() or do.is_contiguous())
    got = grads_of(lambda *x: prefix_attention(*x, backend="triton"), q, k, v, do)
    assert_close_all(got, reference64(q, k, v, do), TOL_FP32)


def large_score_inputs(L, pattern, device, d=16, B=1, H=2):
    """q = sqrt(d) e_0, so s_i = k_i[0]: scores set directly to magnitudes up to 80."""
    g = torch.Generator().manual_seed(7)
    q = torch.zeros(H, d)
    q[:, 0] = d**0.5
    k = torch.randn(B, H, L, d, generator=g)
    if pattern == "random_sign":
        s = 80.0 * torch.sign(torch.randn(B, H, L, generator=g)) * (0.5 + 0.5 * torch.rand(B, H, L, generator=g))
    elif pattern == "rising":  # the running max moves at every step
        s = torch.linspace(-80, 80, L).expand(B, H, L)
    else:  # "jump": -80 then +80 inside one chunk, then back down
        s = torch.full((B, H, L), -80.0)
        s[..., L // 3 :] = 80.0
        s[..., 2 * L // 3 :] = -79.0
    k[..., 0] = s
    v = torch.randn(B, H, L, d, generator=g)
    do = torch.randn(B, H, L, d, generator=g)
    return [x.to(device) for x in (q, k, v, do)]


@needs_triton
@pytest.mark.parametrize("pattern", ["random_sign", "rising", "jump"])
def test_triton_is_stable_for_scores_of_magnitude_80(pattern):
    # Scores of +-80 inside chunks, across chunks of a block, and across blocks (the scan).
    q, k, v, do = large_score_inputs(100, pattern, DEVICE)
    got = grads_of(lambda *x: _prefix_attention_triton(*x, chunk=16, segment=32), q, k, v, do)
    want = reference64(q, k, v, do)
    assert_close_all(got, want, 1e-4)  # scores of 80 in float32 carry ~1e-5 relative rounding
    loop = prefix_attention_loop(q, k, v)
    assert rel_err(got[0], loop) < 1e-4


@needs_triton
def test_triton_rejects_float64_and_auto_falls_back():
    q, k, v, _ = make_inputs(L=5, device=DEVICE)
    with pytest.raises(ValueError, match="float32, bfloat16 or float16"):
        prefix_attention(q.double(), k.double(), v.double(), backend="triton")
    o = prefix_attention(q.double(), k.double(), v.double(), backend="auto")
    assert o.dtype == torch.float64


# --------------------------------------------------------------------------- reference vs ground truths


@pytest.mark.parametrize("L", [1, 7, 100, 257])
def test_reference_matches_float64_sequential_loop(L):
    q, k, v, _ = make_inputs(L=L, seed=3)
    loop = prefix_attention_loop(q, k, v)
    assert rel_err(prefix_attention_ref(q, k, v), loop) < TOL_FP32  # float32 inputs, float32 compute
    assert rel_err(prefix_attention_ref(q.double(), k.double(), v.double()), loop) < TOL_FP64


@pytest.mark.parametrize("L", [1, 7, 100, 257])
def test_reference_matches_masked_softmax_attention(L):
    q, k, v, do = make_inputs(L=L, seed=4)
    want = grads_of(masked_softmax_attention, q.double(), k.double(), v.double(), do.double())
    assert_close_all(reference64(q, k, v, do), want, TOL_FP64)


@pytest.mark.parametrize("pattern", ["random_sign", "rising", "jump"])
def test_reference_is_stable_for_scores_of_magnitude_80(pattern):
    q, k, v, do = large_score_inputs(300, pattern, "cpu")
    got = grads_of(prefix_attention_ref, q, k, v, do)  # float32
    want = grads_of(masked_softmax_attention, q.double(), k.double(), v.double(), do.double())
    assert_close_all(got, want, 1e-4)


# --------------------------------------------------------------------------- recurrent step


def run_steps(q, k, v):
    state, outs = None, []
    for t in range(k.shape[2]):
        o_t, state = prefix_attention_step(state, q, k[:, :, t], v[:, :, t])
        outs.append(o_t)
    return torch.stack(outs, dim=2), state


@pytest.mark.parametrize("q_batched", [True, False])
def test_step_matches_parallel_form(q_batched):
    q, k, v, _ = make_inputs(L=100, q_batched=q_batched, seed=5)
    stepped, state = run_steps(q, k, v)
    assert isinstance(state, PrefixAttentionState)
    assert state.m.shape == (2, 3) and state.u.shape == (2, 3) and state.w.shape == (2, 3, 16)
    assert rel_err(stepped, prefix_attention_loop(q, k, v)) < TOL_FP32
    assert rel_err(stepped, prefix_attention(q, k, v, backend="torch")) < TOL_FP32
    if DEVICE is not None:
        args = [x.to(DEVICE) for x in (q, k, v)]
        assert rel_err(stepped, prefix_attention(*args, backend="triton")) < TOL_FP32


def test_step_is_stable_for_scores_of_magnitude_80():
    q, k, v, _ = large_score_inputs(100, "random_sign", "cpu")
    stepped, _ = run_steps(q, k, v)
    assert torch.isfinite(stepped).all()
    assert rel_err(stepped, prefix_attention_loop(q, k, v)) < 1e-4


# --------------------------------------------------------------------------- argument checks


def test_rejects_wrong_shapes_with_a_message():
    q, k, v, _ = make_inputs(L=5)
    with pytest.raises(ValueError, match=r"q must have shape \(H, d\)"):
        prefix_attention(q[:, :2], k, v, backend="torch")
    with pytest.raises(ValueError, match=r"k and v must both have shape \(B, H, L, d\)"):
        prefix_attention(q, k, v[:, :, :3], backend="torch")
    with pytest.raises(ValueError, match=r"k_t and v_t must both have shape \(B, H, d\)"):
        prefix_attention_step(None, q, k, v)
