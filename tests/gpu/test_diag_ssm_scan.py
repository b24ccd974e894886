"""diag_ssm_scan on the GPU: the full matrix (lengths up to 16384, N = 16 and 64, float32 and bfloat16).

Every check compares the Triton kernels with the float64 reference (computed on
the GPU from the same, already rounded, inputs) by relative error
||x - ref|| / ||ref||: the output, the final state and the gradients of u, A,
B, C, dt, D and h0. Skipped without CUDA.
"""

from __future__ import annotations

import pytest
import torch

from tsuite.kernels._dispatch import interpreting
from tsuite.kernels.diag_ssm_scan import diag_ssm_scan
from tsuite.kernels.diag_ssm_scan_ref import diag_ssm_scan_ref

pytestmark = pytest.mark.skipif(
    interpreting() or not torch.cuda.is_available(), reason="needs a CUDA device (and no TRITON_INTERPRET)"
)

# float32 runs its products as three bfloat16 products of split operands (~1e-5, as float32 arithmetic gives here);
# bfloat16 in one TF32 pass and rounds u, y, du to 8 bits
TOL = {torch.float32: 1e-4, torch.bfloat16: 1e-2}
TOL_TF32 = 5e-3  # float32 input under torch.set_float32_matmul_precision("high"): one TF32 pass


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    x, ref = x.detach().to(torch.complex128), ref.detach().to(torch.complex128)
    return ((x - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def make_inputs(batch, H, N, L, dtype, seed=0):
    """S4D-like parameters (Re A in [-1, -0.1], Im A up to ~pi N / 2, dt in [1e-3, 1e-1]), never zero."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    kw = dict(generator=g, device="cuda")
    A = torch.complex(-(0.1 + 0.9 * torch.rand(H, N, **kw)), torch.pi * torch.arange(N, device="cuda") / 2 + torch.randn(H, N, **kw))
    B = torch.randn(H, N, dtype=torch.complex64, **kw)
    C = torch.randn(H, N, dtype=torch.complex64, **kw) / N**0.5
    dt = torch.exp(torch.log(torch.tensor(1e-3)) + torch.rand(H, **kw) * torch.log(torch.tensor(100.0)))
    D = torch.randn(H, **kw)
    u = torch.randn(batch, H, L, **kw).to(dtype)
    h0 = torch.randn(batch, H, N, dtype=torch.complex64, **kw)
    wy = torch.randn(batch, H, L, **kw)
    wh = torch.randn(batch, H, N, dtype=torch.complex64, **kw)
    return (u, A, B, C, dt, D, h0), wy, wh


def outputs_and_grads(inputs, wy, wh, *, wide, with_h0=True, with_D=True):
    names = ("u", "A", "B", "C", "dt", "D", "h0")
    keep = [True, True, True, True, True, with_D, with_h0]
    leaves = []
    for x, k in zip(inputs, keep):
        if not k:
            leaves.append(None)
            continue
        if wide:
            x = x.to(torch.complex128) if x.is_complex() else x.double()
        leaves.append(x.detach().clone().requires_grad_(True))
    fn = diag_ssm_scan_ref if wide else diag_ssm_scan
    y, h = fn(*leaves, return_final_state=True)
    loss = (y.double() * wy.double()).sum() + (h.to(torch.complex128) * wh.to(torch.complex128)).real.sum()
    loss.backward()
    return {"y": y, "h_final": h} | {n: x.grad for n, x in zip(names, leaves) if x is not None}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("N", [16, 64])
@pytest.mark.parametrize("L", [1, 7, 1000, 4099, 16384])
def test_kernel_matches_float64_reference(L, N, dtype):
    inputs, wy, wh = make_inputs(2, 4, N, L, dtype, seed=L + N)
    got = outputs_and_grads(inputs, wy, wh, wide=False)
    ref = outputs_and_grads(inputs, wy, wh, wide=True)
    assert got["y"].dtype == dtype and got["u"].dtype == dtype
    errs = {k: rel_err(got[k], ref[k]) for k in ref}
    print(f"L={L} N={N} {dtype}: max rel err {max(errs.values()):.1e} ({max(errs, key=errs.get)})")
    bad = {k: f"{e:.1e}" for k, e in errs.items() if not e < TOL[dtype]}
    assert not bad, f"L={L} N={N} {dtype}: {bad} (all: { {k: f'{e:.1e}' for k, e in errs.items()} })"


def test_kernel_without_h0_and_D_and_strided_input():
    inputs, wy, wh = make_inputs(3, 5, 64, 3000, torch.float32, seed=7)
    u = torch.randn(3, 3000, 5, device="cuda").transpose(1, 2)  # (B, H, L) view with stride 1 along H
    inputs = (u,) + inputs[1:]
    got = outputs_and_grads(inputs, wy, wh, wide=False, with_h0=False, with_D=False)
    ref = outputs_and_grads(inputs, wy, wh, wide=True, with_h0=False, with_D=False)
    for k in ref:
        assert rel_err(got[k], ref[k]) < TOL[torch.float32], k


def test_kernel_in_tf32_when_torch_allows_it():
    inputs, wy, wh = make_inputs(2, 4, 64, 4099, torch.float32, seed=11)
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        got = outputs_and_grads(inputs, wy, wh, wide=False)
    finally:
        torch.set_float32_matmul_precision(before)
    ref = outputs_and_grads(inputs, wy, wh, wide=True)
    for k in ref:
        assert rel_err(got[k], ref[k]) < TOL_TF32, k
