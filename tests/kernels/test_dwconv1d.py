"""Depthwise dilated convolution: Triton kernels vs the float64 reference, streaming vs full, determinism.

Runs on the CPU under TRITON_INTERPRET=1 (tiny float32 shapes: a representative
part of the K x dilation matrix); on a CUDA machine without the interpreter the
Triton checks run on the GPU. The full matrix (bf16, fp16, large shapes) is
tests/gpu/test_dwconv1d.py. Errors are relative, ||a - b|| / max(||b||, sqrt(numel)).
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from tsuite.kernels import dwconv1d, dwconv1d_step
from tsuite.kernels._dispatch import interpreting
from tsuite.kernels.dwconv1d import _dwconv1d_triton, choose_path
from tsuite.kernels.dwconv1d_ref import dwconv1d_ref, left_padding

if interpreting():
    DEVICE = "cpu"
elif torch.cuda.is_available():
    DEVICE = "cuda"
else:
    DEVICE = None
needs_triton = pytest.mark.skipif(DEVICE is None, reason="needs TRITON_INTERPRET=1 or a CUDA device")

# float32 kernels vs a float64 reference: the interpreter is exact float32 (~1e-7); on the GPU the dense
# path's tf32x3 products land near 1e-6.
TOL_FP32 = 1e-5


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    return ((a - b).norm() / max(b.norm().item(), b.numel() ** 0.5)).item()


def make_inputs(B=2, C=3, L=67, K=5, channels_last=False, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, L, C, generator=g).transpose(1, 2) if channels_last else torch.randn(B, C, L, generator=g)
    w = torch.randn(C, K, generator=g) / K**0.5
    b = torch.randn(C, generator=g)
    gy = torch.randn(B, C, L, generator=g)
    return [t.to(device) for t in (x, w, b, gy)]


def grads_of(fn, x, w, b, gy):
    """Output and (grad_x, grad_w, grad_b) of fn(x, w, b) for upstream gradient gy (strides of x kept)."""
    leaves = [t.detach().requires_grad_() for t in (x, w, b)]
    y = fn(*leaves)
    return (y, *torch.autograd.grad(y, leaves, gy))


def reference64(x, w, b, gy, dilation, causal):
    ref = lambda *a: dwconv1d_ref(*a, dilation=dilation, causal=causal)  # noqa: E731
    return grads_of(ref, x.double(), w.double(), b.double(), gy.double())


def assert_close_all(got, want, tol, what=""):
    for name, a, b in zip(("y", "grad_x", "grad_w", "grad_b"), got, want):
        assert a.shape == b.shape, f"{what} {name}: shape {tuple(a.shape)} != {tuple(b.shape)}"
        assert torch.isfinite(a).all(), f"{what} {name} has non-finite entries"
        err = rel_err(a, b)
        assert err < tol, f"{what} {name}: relative error {err:.2e} >= {tol:.0e}"


def check_triton(K, dilation, causal, L=67, channels_last=False, path=None, seed=0, C=3, **overrides):
    x, w, b, gy = make_inputs(L=L, K=K, C=C, channels_last=channels_last, seed=seed, device=DEVICE)
    fn = lambda *a: _dwconv1d_triton(*a, dilation=dilation, causal=causal, path=path, **overrides)  # noqa: E731
    got = grads_of(fn, x, w, b, gy)
    assert got[0].dtype == x.dtype
    assert_close_all(got, reference64(x, w, b, gy, dilation, causal), TOL_FP32, f"K={K} d={dilation} causal={causal}")


# --------------------------------------------------------------------------- Triton vs reference


@needs_triton
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "centred"])
@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("K", [1, 2, 5, 17])
def test_triton_matches_reference_over_kernel_sizes_and_dilations(K, dilation, causal):
    check_triton(K, dilation, causal, seed=K * 10 + dilation)


@needs_triton
@pytest.mark.parametrize("K,dilation,causal,L", [(39, 1, False, 45), (64, 1, True, 50), (39, 2, False, 41)])
def test_triton_wide_kernels_on_sequences_shorter_than_the_halo(K, dilation, causal, L):
    check_triton(K, dilation, causal, L=L)


@needs_triton
@pytest.mark.parametrize("K,dilation,causal", [(3, 64, True), (4, 8, False)])
def test_triton_large_dilations(K, dilation, causal):
    check_triton(K, dilation, causal, L=201)


@needs_triton
@pytest.mark.parametrize("path", ["direct", "dense"])
@pytest.mark.parametrize("K,dilation,causal", [(17, 2, True), (8, 1, False), (4, 3, False)])
def test_both_paths_match_reference(path, K, dilation, causal):
    # C = 5 is not a multiple of the channel block; L = 300 crosses tiles, dense row blocks and chunks
    tiles = dict(chunk=256) if path == "dense" else dict(block_t=64, chunk=128)
    check_triton(K, dilation, causal, L=300, C=5, path=path, **tiles)


@needs_triton
@pytest.mark.parametrize("K,dilation", [(5, 2), (17, 1)])
def test_triton_reads_channels_last_views_in_place(K, dilation):
    x, _, _, _ = make_inputs(K=K, channels_last=True)
    assert x.stride(1) == 1 and not x.is_contiguous()
    check_triton(K, dilation, causal=True, channels_last=True)
    check_triton(K, dilation, causal=False, channels_last=True)


@needs_triton
@pytest.mark.parametrize("wgrad", ["tile", "tap"])
@pytest.mark.parametrize("K,dilation,causal", [(17, 1, False), (39, 2, False), (6, 3, True)])
def test_channels_last_weight_gradient_kernels_match_reference(wgrad, K, dilation, causal):
    # C = 5 is not a multiple of the channel block; L = 300 crosses tiles and 64-step chunks (partial sums)
    check_triton(K, dilation, causal, L=300, C=5, channels_last=True, path="direct", wgrad=wgrad, chunk=64,
                 block_t=32, unroll=32, seed=K + dilation)


@needs_triton
def test_tapwise_weight_gradient_without_bias_is_deterministic():
    x, w, _, gy = make_inputs(L=300, K=9, channels_last=True, device=DEVICE)
    fn = lambda x, w: _dwconv1d_triton(x, w, None, dilation=2, causal=False, wgrad="tap", chunk=64)  # noqa: E731
    grads = [torch.autograd.grad(fn(x.requires_grad_(), w.requires_grad_()), (x, w), gy) for _ in range(2)]
    assert torch.equal(grads[0][1], grads[1][1])
    xr, wr = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    gxr, gwr = torch.autograd.grad(dwconv1d_ref(xr, wr, None, 2, False), (xr, wr), gy.double())
    assert rel_err(grads[0][0], gxr) < TOL_FP32 and rel_err(grads[0][1], gwr) < TOL_FP32


@needs_triton
def test_triton_output_keeps_channels_last_layout_and_gradient_layouts():
    x, w, b, gy = make_inputs(K=3, channels_last=True, device=DEVICE)
    y, gx, gw, gb = grads_of(lambda *a: dwconv1d(*a, dilation=2, backend="triton"), x, w, b, gy)
    assert y.stride() == x.stride() and gx.shape == x.shape
    assert gw.shape == w.shape and gb.shape == b.shape


@needs_triton
def test_triton_takes_an_nn_conv1d_weight_and_no_bias():
    x, w, _, gy = make_inputs(K=5, device=DEVICE)
    w3 = w[:, None, :].detach().requires_grad_()
    xl = x.detach().requires_grad_()
    y = dwconv1d(xl, w3, None, dilation=2, causal=False, backend="triton")
    gx, gw = torch.autograd.grad(y, (xl, w3), gy)
    xr, wr = x.double().requires_grad_(), w3.double().detach().requires_grad_()
    yr = dwconv1d_ref(xr, wr, None, dilation=2, causal=False)
    gxr, gwr = torch.autograd.grad(yr, (xr, wr), gy.double())
    assert gw.shape == (3, 1, 5)
    for a, r in ((y, yr), (gx, gxr), (gw, gwr)):
        assert rel_err(a, r) < TOL_FP32


@needs_triton
@pytest.mark.parametrize("path", ["direct", "dense"])
def test_weight_gradient_is_deterministic(path):
    x, w, b, gy = make_inputs(L=300, K=9, device=DEVICE)
    tiles = dict(chunk=256) if path == "dense" else dict(block_t=64, chunk=128)
    fn = lambda *a: _dwconv1d_triton(*a, dilation=1, causal=False, path=path, **tiles)  # noqa: E731
    _, _, gw1, gb1 = grads_of(fn, x, w, b, gy)
    _, _, gw2, gb2 = grads_of(fn, x, w, b, gy)
    assert torch.equal(gw1, gw2) and torch.equal(gb1, gb2)


@needs_triton
def test_triton_rejects_float64_and_auto_falls_back():
    x, w, b, _ = make_inputs(K=3, device=DEVICE)
    with pytest.raises(ValueError, match="float32, bfloat16 or float16"):
        dwconv1d(x.double(), w.double(), b.double(), backend="triton")
    assert dwconv1d(x.double(), w.double(), b.double(), backend="auto").dtype == torch.float64


# --------------------------------------------------------------------------- reference and dispatch


@pytest.mark.parametrize("K,dilation", [(3, 1), (4, 1), (4, 3), (5, 2), (2, 5)])
def test_centred_reference_is_conv1d_same_padding(K, dilation):
    x, w, b, _ = make_inputs(K=K, L=31)
    with warnings.catch_warnings():  # even K, odd d: PyTorch notes it pads a copy
        warnings.simplefilter("ignore", UserWarning)
        want = F.conv1d(x.double(), w.double()[:, None, :], b.double(), padding="same", dilation=dilation, groups=3)
    got = dwconv1d_ref(x.double(), w.double(), b.double(), dilation=dilation, causal=False)
    assert rel_err(got, want) < 1e-12


@pytest.mark.parametrize("causal", [True, False])
def test_reference_sees_the_documented_window(causal):
    # y[t] depends on x[t + j d - P] only: perturb one input and see which outputs move.
    K, d, L, t = 4, 3, 40, 20
    x, w, _, _ = make_inputs(K=K, L=L)
    x2 = x.clone()
    x2[:, :, t] += 1.0
    moved = (dwconv1d_ref(x2, w, None, d, causal) - dwconv1d_ref(x, w, None, d, causal)).abs().amax(dim=(0, 1)) > 0
    P = left_padding(K, d, causal)
    expected = torch.zeros(L, dtype=torch.bool)
    for j in range(K):
        expected[t - (j * d - P)] = True  # output s reads x[s + j d - P] = x[t]
    assert torch.equal(moved, expected)
    if causal:
        assert not moved[:t].any()  # nothing before t sees x[t]


def test_dispatch_uses_the_dense_path_for_many_close_taps_only():
    assert choose_path(39, 1, 19, stride_l=1, itemsize=4) == "dense"
    assert choose_path(39, 2, 38, stride_l=1, itemsize=2) == "dense"
    assert choose_path(3, 64, 128, stride_l=1, itemsize=4) == "direct"
    assert choose_path(39, 1, 19, stride_l=512, itemsize=4) == "direct"  # channels-last


# --------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("K,dilation", [(1, 1), (3, 1), (4, 3), (5, 2)])
def test_streaming_step_equals_full_causal_convolution(K, dilation):
    x, w, b, _ = make_inputs(K=K, L=40, seed=K + dilation)
    state, outs = None, []
    for t in range(x.shape[2]):
        y_t, state = dwconv1d_step(state, x[:, :, t], w, b, dilation)
        outs.append(y_t)
    stepped = torch.stack(outs, dim=2)
    assert state.shape == (2, 3, (K - 1) * dilation)
    assert rel_err(stepped, dwconv1d_ref(x.double(), w.double(), b.double(), dilation, causal=True)) < TOL_FP32
    assert torch.equal(state, x[:, :, x.shape[2] - (K - 1) * dilation :])  # the last (K-1) d inputs, unrounded
    if DEVICE is not None:
        full = dwconv1d(x.to(DEVICE), w.to(DEVICE), b.to(DEVICE), dilation, causal=True, backend="triton")
        assert rel_err(stepped, full) < TOL_FP32


def test_streaming_resumes_from_a_state_and_is_differentiable():
    x, w, b, _ = make_inputs(K=3, L=20)
    d, split = 2, 13
    full = dwconv1d_ref(x, w, b, d, causal=True)
    state = x[:, :, split - 4 : split]  # (K - 1) d = 4 previous inputs
    w = w.detach().requires_grad_()
    y_t, new_state = dwconv1d_step(state, x[:, :, split], w, b, d)
    assert rel_err(y_t, full[:, :, split]) < TOL_FP32
    assert torch.equal(new_state, x[:, :, split - 3 : split + 1])
    (gw,) = torch.autograd.grad(y_t.sum(), w)
    assert torch.isfinite(gw).all() and gw.abs().sum() > 0


# --------------------------------------------------------------------------- argument checks


def test_rejects_wrong_shapes_with_a_message():
    x, w, b, _ = make_inputs(K=3)
    with pytest.raises(ValueError, match=r"weight must have shape \(C, K\)"):
        dwconv1d(x, w[:2], backend="torch")
    with pytest.raises(ValueError, match=r"x must have shape \(B, C, L\)"):
        dwconv1d(x[0], w, backend="torch")
    with pytest.raises(ValueError, match="dilation must be a positive integer"):
        dwconv1d(x, w, dilation=0, backend="torch")
    with pytest.raises(ValueError, match=r"bias must have shape \(C,\)"):
        dwconv1d(x, w, b[:2], backend="torch")
    with pytest.raises(ValueError, match=r"state must have shape"):
        dwconv1d_step(torch.zeros(2, 3, 5), x[:, :, 0], w, None, 1)


# --------------------------------------------------------------------------- torch.compile


@needs_triton
@pytest.mark.parametrize("with_bias", [True, False])
def test_custom_op_passes_opcheck(with_bias):
    """The tsuite::dwconv1d operator: schema, fake-tensor shapes and strides, autograd registration."""
    x, w, b, _ = make_inputs(L=40, K=5, channels_last=True, device=DEVICE)
    args = (x.requires_grad_(), w.requires_grad_(), b.requires_grad_() if with_bias else None, 2, False)
    torch.library.opcheck(torch.ops.tsuite.dwconv1d.default, args)


@needs_triton
def test_compiled_function_keeps_dwconv1d_in_one_graph_with_the_same_gradients():
    """fullgraph=True fails on a graph break; outputs and gradients equal the eager Triton path's."""
    x, w, b, gy = make_inputs(L=50, K=9, C=4, channels_last=True, device=DEVICE)

    def block(x, w, b):
        return torch.nn.functional.silu(x) + dwconv1d(torch.nn.functional.silu(x), w, b, dilation=2, causal=False)

    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    got = grads_of(compiled, x, w, b, gy)
    want = grads_of(block, x, w, b, gy)
    for name, a, r in zip(("y", "grad_x", "grad_w", "grad_b"), got, want):
        assert rel_err(a, r) < 1e-6, name
