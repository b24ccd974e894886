"""diag_ssm_scan: Triton kernels vs the PyTorch reference, the reference vs float64 ground truths.

Runs on the CPU under TRITON_INTERPRET=1 (tiny float32 shapes). The kernels use
16-step chunks there and keep the states every 4 chunks (64-step blocks, the
backward's blocks); pass 1 and the forward's pass 3 take 8-chunk tiles (two
blocks each); 2 tiles or blocks per program; the carry goes 2 blocks a step.
So lengths above 16 cross chunks, above 64 cross blocks (the carry of states
across blocks, forward and adjoint), 257 has 5 blocks (programs with empty
tiles, 3 carry steps), 128 returns the state after the last block and 130 the
state entering the last block. One test runs tiles of one block and 3 blocks per
program; one the split bfloat16 products of the GPU's float32 default
(emulated in float32) against float64. Errors are relative,
||x - ref|| / ||ref||. Inputs are random and never zero: Re(A) in [-1, -0.1],
Im(A) normal with scale 3, dt in [0.01, 0.11], standard-normal B, C, D, u, h0.
"""

from __future__ import annotations

import pytest
import torch

from tsuite.kernels._dispatch import interpreting
from tsuite.kernels.diag_ssm_scan import _config, _diag_ssm_scan_triton, diag_ssm_scan
from tsuite.kernels.diag_ssm_scan_ref import diag_ssm_scan_loop, diag_ssm_scan_ref, zoh

if interpreting():
    DEVICE = "cpu"
elif torch.cuda.is_available():
    DEVICE = "cuda"
else:
    DEVICE = None
needs_triton = pytest.mark.skipif(DEVICE is None, reason="needs TRITON_INTERPRET=1 or a CUDA device")

TOL_Y = 1e-5  # float32 kernel vs float32 reference: measured up to ~3e-7 here
TOL_GRAD = 1e-4  # gradients (sums over batch and time): measured up to ~2e-6 here
TOL_FP64 = 1e-12


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    x, ref = x.detach().cpu().to(torch.complex128), ref.detach().cpu().to(torch.complex128)
    return ((x - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def make_inputs(batch, H, N, L, *, seed=0, device="cpu"):
    """u, A, B, C, dt, D, h0 as S4D holds them (complex64 parameters), never zero."""
    g = torch.Generator().manual_seed(seed)
    A = torch.complex(-(0.1 + 0.9 * torch.rand(H, N, generator=g)), 3 * torch.randn(H, N, generator=g))
    B = torch.randn(H, N, dtype=torch.complex64, generator=g)
    C = torch.randn(H, N, dtype=torch.complex64, generator=g)
    dt = 0.01 + 0.1 * torch.rand(H, generator=g)
    D = torch.randn(H, generator=g)
    u = torch.randn(batch, H, L, generator=g)
    h0 = torch.randn(batch, H, N, dtype=torch.complex64, generator=g)
    return [x.to(device) for x in (u, A, B, C, dt, D, h0)]


def run(backend, u, A, B, C, dt, D, h0, final, wy, wh, cfg=None):
    """Output(s) and the gradients of sum(wy * y) + Re sum(wh * h_final) for every input given.

    cfg: an explicit launch configuration of the Triton path (see `_config`).
    """
    leaves = [x.detach().clone().requires_grad_(True) if x is not None else None for x in (u, A, B, C, dt, D, h0)]
    if cfg is not None:
        out = _diag_ssm_scan_triton(*leaves, final, cfg)
    else:
        out = diag_ssm_scan(*leaves, return_final_state=final, backend=backend)
    y, h = out if final else (out, None)
    loss = (y * wy).sum() if wy is not None else y.sum()  # y.sum(): an upstream gradient with stride 0
    if final:
        loss = loss + (h * wh).real.sum()
    loss.backward()
    names = ("u", "A", "B", "C", "dt", "D", "h0")
    grads = {n: x.grad for n, x in zip(names, leaves) if x is not None}
    return ([y] + ([h] if final else [])), grads


CASES = [  # (L, with h0, with D, return final state, upstream gradient of y)
    (1, True, True, True, "random"),
    (7, False, True, False, "random"),
    (100, True, False, True, "random"),
    (100, False, True, True, "ones"),
    (128, True, True, True, "random"),
    (130, False, True, True, "random"),
    (190, False, False, False, "random"),
    (257, True, True, True, "random"),
]


@needs_triton
@pytest.mark.parametrize("L,with_h0,with_D,final,upstream", CASES)
def test_kernel_matches_reference_output_and_every_gradient(L, with_h0, with_D, final, upstream):
    check_against_reference(L, with_h0, with_D, final, upstream)


@needs_triton
def test_kernel_with_equal_forward_and_backward_blocks():
    cfg = dict(_config(torch.zeros(1, device=DEVICE), 5), R=4, RB=4, RE=4, G_ends=3, G_out=3, G_bends=3, G_bwd=3)
    check_against_reference(200, True, True, True, "random", cfg)


@needs_triton
def test_kernel_with_split_bfloat16_products_matches_float64():
    """The GPU's float32 default multiplies bfloat16 parts (hi hi + hi lo + lo hi, tables stored split).

    The interpreter cannot multiply bfloat16 tiles, so "bf16x3_emu" holds the same parts in float32
    (exact products, float32 sums: what the tensor cores compute). y, h_final and every gradient
    stay within the GPU tests' 1e-4 of float64 (measured ~7e-6 here).
    """
    batch, H, N, L = 2, 2, 5, 200
    u, A, B, C, dt, D, h0 = make_inputs(batch, H, N, L, seed=3, device=DEVICE)
    g = torch.Generator().manual_seed(4)
    wy = torch.randn(batch, H, L, generator=g).to(DEVICE)
    wh = torch.randn(batch, H, N, dtype=torch.complex64, generator=g).to(DEVICE)
    cfg = dict(_config(u, N), PREC="bf16x3_emu")
    outs, grads = run("triton", u, A, B, C, dt, D, h0, True, wy, wh, cfg)
    wide = [x.double() if not x.is_complex() else x.to(torch.complex128) for x in (u, A, B, C, dt, D, h0)]
    ref_outs, ref_grads = run("torch", *wide, True, wy.double(), wh.to(torch.complex128))
    errs = {"y": rel_err(outs[0], ref_outs[0]), "h_final": rel_err(outs[1], ref_outs[1])}
    errs |= {name: rel_err(grads[name], ref_grads[name]) for name in grads}
    assert all(e < 1e-4 for e in errs.values()), errs


def check_against_reference(L, with_h0, with_D, final, upstream, cfg=None):
    batch, H, N = 2, 2, 5
    u, A, B, C, dt, D, h0 = make_inputs(batch, H, N, L, seed=L, device=DEVICE)
    # non-contiguous u: every other step of a longer sequence, or a (B, L, H) layout seen as (B, H, L)
    u = torch.randn(batch, H, 2 * L, device=DEVICE)[..., ::2] if L % 2 else u.transpose(1, 2).contiguous().transpose(1, 2)
    assert not u.is_contiguous() or L == 1
    D = D if with_D else None
    h0 = h0 if with_h0 else None
    g = torch.Generator().manual_seed(L + 1)
    wy = torch.randn(batch, H, L, generator=g).to(DEVICE) if upstream == "random" else None
    wh = torch.randn(batch, H, N, dtype=torch.complex64, generator=g).to(DEVICE)
    outs, grads = run("triton", u, A, B, C, dt, D, h0, final, wy, wh, cfg)
    ref_outs, ref_grads = run("torch", u, A, B, C, dt, D, h0, final, wy, wh)
    assert outs[0].dtype == u.dtype and outs[0].shape == u.shape
    for name, x, ref in zip(("y", "h_final"), outs, ref_outs):
        assert torch.isfinite(x).all()
        assert rel_err(x, ref) < TOL_Y, f"{name}: {rel_err(x, ref):.2e}"
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        assert grads[name].shape == ref_grads[name].shape and grads[name].dtype == ref_grads[name].dtype, name
        err = rel_err(grads[name], ref_grads[name])
        assert err < TOL_GRAD, f"d{name}: {err:.2e}"


@pytest.mark.parametrize("dtype,tol", [(torch.float64, TOL_FP64), (torch.float32, 1e-5)])
def test_reference_matches_float64_recurrence(dtype, tol):
    u, A, B, C, dt, D, h0 = make_inputs(2, 3, 6, 150, seed=1)
    y, h = diag_ssm_scan_ref(u.to(dtype), A, B, C, dt, D, h0, return_final_state=True, chunk=64)
    y_loop, h_loop = diag_ssm_scan_loop(u, A, B, C, dt, D, h0)
    assert y.dtype == dtype
    assert rel_err(y, y_loop) < tol
    assert rel_err(h, h_loop) < tol


def test_reference_gradients_match_float64_recurrence():
    leaves = [x.double() if not x.is_complex() else x.to(torch.complex128) for x in make_inputs(2, 2, 4, 37, seed=2)]

    def grads(fn):
        xs = [x.clone().requires_grad_(True) for x in leaves]
        y, h = fn(*xs)
        (y.sum() + (h * (0.3 - 0.7j)).real.sum()).backward()
        return [x.grad for x in xs]

    ref = grads(lambda *x: diag_ssm_scan_ref(*x, return_final_state=True, chunk=8))
    loop = grads(diag_ssm_scan_loop)
    for name, g, g_loop in zip(("u", "A", "B", "C", "dt", "D", "h0"), ref, loop):
        assert rel_err(g, g_loop) < 1e-10, name


def test_reference_equals_s4d_convolution_form():
    """y = K * u + D u with K_l = 2 Re(sum_n C_n B̄_n Ā_n^l): S4D's convolution mode."""
    u, A, B, C, dt, D, _ = make_inputs(2, 3, 6, 90, seed=3)
    u = u.double()
    dtA, Bbar = zoh(A.to(torch.complex128), B.to(torch.complex128), dt.double())
    steps = torch.arange(u.shape[-1], dtype=torch.float64)
    K = 2 * torch.einsum("hn,hnl->hl", C.to(torch.complex128) * Bbar, torch.exp(dtA.unsqueeze(-1) * steps)).real
    lag = steps.long().unsqueeze(1) - steps.long().unsqueeze(0)  # (L L): t - s
    toeplitz = K[:, lag.clamp(min=0)] * (lag >= 0)  # (H L L)
    y_conv = torch.einsum("hts,bhs->bht", toeplitz, u) + D.double().unsqueeze(-1) * u
    assert rel_err(diag_ssm_scan_ref(u, A, B, C, dt, D), y_conv) < TOL_FP64
    # S4D's kernel (B = 1) is this K
    s4d_K = 2 * torch.einsum("hn,hnl->hl", C.to(torch.complex128) * (torch.exp(dtA) - 1.0) / A, torch.exp(dtA.unsqueeze(-1) * steps)).real
    _, Bbar1 = zoh(A.to(torch.complex128), torch.ones_like(B, dtype=torch.complex128), dt.double())
    K1 = 2 * torch.einsum("hn,hnl->hl", C.to(torch.complex128) * Bbar1, torch.exp(dtA.unsqueeze(-1) * steps)).real
    assert rel_err(K1, s4d_K) < TOL_FP64


def test_rejects_inputs_with_a_message():
    u, A, B, C, dt, D, h0 = make_inputs(1, 2, 3, 5)
    with pytest.raises(ValueError, match="complex tensor of shape"):
        diag_ssm_scan(u, torch.view_as_real(A), B, C, dt)
    with pytest.raises(ValueError, match="dt must be real"):
        diag_ssm_scan(u, A, B, C, dt[:1])
    with pytest.raises(ValueError, match="h0 must be complex"):
        diag_ssm_scan(u, A, B, C, dt, h0=h0.real)
    with pytest.raises(ValueError, match="backend"):
        diag_ssm_scan(u, A, B, C, dt, backend="cuda")
