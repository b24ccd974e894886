"""Prefix attention (Aaren) on the GPU: the full matrix of lengths, dtypes and head dims, forward and every gradient.

Each case compares the Triton kernels with the float64 PyTorch reference run on
the same (rounded) inputs, by ||a - b|| / max(||b||, sqrt(numel)) (the floor
only matters where the true value is ~0: the q, k gradients at L = 1).
float32 must land under 1e-4. For bfloat16 and float16, o and dv must lie
within a small multiple of the error of rounding the float64 result itself to
that dtype; dq and dk come from ds_i = sum_t p_ti dO_t . (v_i - o_t), a
difference of nearly equal terms (and sum_i ds_i = 0 makes dq a cancelling
sum), so their error is bounded by a few unit roundoffs of the dtype instead
(measured on an H100 with the softmax weights rounded to tf32, 2^-11: at most
1.2 u in bf16, 2.3 u in fp16; the kernels now split the weights into hi + lo
16-bit parts, ~2^-16, so the errors can only be smaller).
"""

from __future__ import annotations

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

from tsuite.kernels.prefix_attention import prefix_attention  # noqa: E402
from tsuite.kernels.prefix_attention_ref import prefix_attention_ref  # noqa: E402

LENGTHS = [1, 7, 1000, 4099, 131072]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
HEAD_DIMS = [16, 64, 128]
TOL_FP32 = 1e-4
ROUNDING_FACTOR = 5.0  # 16-bit o, dv: error <= 5 x (error of rounding the exact result) + 1e-4
UNIT_ROUNDOFF = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}
SCORE_GRAD_FACTOR = 4.0  # 16-bit dq, dk: error <= 4 u


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / max(b.norm().item(), b.numel() ** 0.5)).item()


def poison_allocator(n_bytes: int = 1 << 30) -> None:
    """Fill free cached memory with NaN, so an output element the kernels never write shows up."""
    torch.empty(n_bytes // 4, dtype=torch.float32, device="cuda").fill_(float("nan"))


def run_case(L: int, dtype: torch.dtype, d: int, B: int = 2, H: int = 2, seed: int = 0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = (torch.randn(H, d, device="cuda", generator=g) * 2).to(dtype)
    k = torch.randn(B, H, L, d, device="cuda", generator=g).to(dtype)
    v = torch.randn(B, H, L, d, device="cuda", generator=g).to(dtype)
    do = torch.randn(B, H, L, d, device="cuda", generator=g).to(dtype)

    poison_allocator()
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    o = prefix_attention(*leaves, backend="triton")
    got = (o, *torch.autograd.grad(o, leaves, do))

    leaves64 = [x.double().requires_grad_() for x in (q, k, v)]
    o64 = prefix_attention_ref(*leaves64)
    want = (o64, *torch.autograd.grad(o64, leaves64, do.double()))
    return got, want


@pytest.mark.parametrize("d", HEAD_DIMS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: str(t).removeprefix("torch."))
@pytest.mark.parametrize("L", LENGTHS)
def test_triton_matches_float64_reference(L, dtype, d):
    got, want = run_case(L, dtype, d, seed=L + d)
    report = []
    for name, a, b in zip(("o", "dq", "dk", "dv"), got, want):
        assert a.dtype == dtype and a.shape == b.shape, name
        assert torch.isfinite(a).all(), f"{name}: non-finite entries (unwritten or overflow)"
        err = rel_err(a, b)
        if dtype == torch.float32:
            tol = TOL_FP32
        elif name in ("dq", "dk"):
            tol = SCORE_GRAD_FACTOR * UNIT_ROUNDOFF[dtype]
        else:
            tol = ROUNDING_FACTOR * rel_err(b.to(dtype), b) + 1e-4
        report.append(f"{name} {err:.2e} (tol {tol:.1e})")
        assert err < tol, f"L={L} {dtype} d={d}: " + ", ".join(report)
    print(f"L={L} {dtype} d={d}: " + ", ".join(report))


@pytest.mark.parametrize("pattern", ["random_sign", "rising"])
def test_triton_is_stable_over_a_million_steps_with_scores_of_80(pattern):
    B, H, L, d = 1, 2, 1_000_000, 64
    g = torch.Generator(device="cuda").manual_seed(3)
    q = torch.zeros(H, d, device="cuda")
    q[:, 0] = d**0.5  # s_i = k_i[0]
    k = torch.randn(B, H, L, d, device="cuda", generator=g)
    if pattern == "random_sign":
        k[..., 0] = 80 * torch.sign(torch.randn(B, H, L, device="cuda", generator=g))
    else:
        k[..., 0] = torch.linspace(-80, 80, L, device="cuda")
    v = torch.randn(B, H, L, d, device="cuda", generator=g)
    do = torch.randn(B, H, L, d, device="cuda", generator=g)
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    o = prefix_attention(*leaves, backend="triton")
    got = (o, *torch.autograd.grad(o, leaves, do))
    leaves64 = [x.double().requires_grad_() for x in (q, k, v)]
    o64 = prefix_attention_ref(*leaves64)
    want = (o64, *torch.autograd.grad(o64, leaves64, do.double()))
    for name, a, b in zip(("o", "dq", "dk", "dv"), got, want):
        assert torch.isfinite(a).all(), name
        err = rel_err(a, b)
        print(f"L=1e6 {pattern} {name}: {err:.2e}")
        assert err < 1e-4, f"{name}: {err:.2e}"


# (chunk, chunks per block, warps, pipeline stages): the launch space of the benchmark's
# --sweep, so that any configuration it may pick as a default has been checked on the GPU.
LAUNCHES = (
    [(16, r, w, 1) for w in (2, 4) for r in (1, 2, 4)] + [(16, 4, w, 2) for w in (2, 4)]
    + [(32, r, w, 1) for w in (4, 8) for r in (1, 2, 4)] + [(32, r, w, 2) for w in (4, 8) for r in (2, 4)]
    + [(64, 1, 8, 1), (64, 2, 8, 1), (64, 2, 8, 2)]
)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=lambda t: str(t).removeprefix("torch."))
@pytest.mark.parametrize("chunk,per_block,warps,stages", LAUNCHES)
def test_triton_launch_configurations_match_float64_reference(chunk, per_block, warps, stages, dtype):
    from tsuite.kernels.prefix_attention import _prefix_attention_triton

    B, H, L, d = 2, 3, 5003, 64  # L: ~80 blocks and a partial last chunk
    g = torch.Generator(device="cuda").manual_seed(chunk * 10 + per_block)
    q = (torch.randn(H, d, device="cuda", generator=g) * 2).to(dtype)
    k, v, do = (torch.randn(B, H, L, d, device="cuda", generator=g).to(dtype) for _ in range(3))
    poison_allocator()
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    o = _prefix_attention_triton(
        *leaves, chunk=chunk, segment=chunk * per_block, num_warps=warps, num_stages=stages
    )
    got = (o, *torch.autograd.grad(o, leaves, do))
    leaves64 = [x.double().requires_grad_() for x in (q, k, v)]
    o64 = prefix_attention_ref(*leaves64)
    want = (o64, *torch.autograd.grad(o64, leaves64, do.double()))
    for name, a, b in zip(("o", "dq", "dk", "dv"), got, want):
        assert torch.isfinite(a).all(), f"{name}: non-finite entries (unwritten or overflow)"
        if dtype == torch.float32:
            tol = TOL_FP32
        elif name in ("dq", "dk"):
            tol = SCORE_GRAD_FACTOR * UNIT_ROUNDOFF[dtype]
        else:
            tol = ROUNDING_FACTOR * rel_err(b.to(dtype), b) + 1e-4
        assert rel_err(a, b) < tol, f"{name}: {rel_err(a, b):.2e} >= {tol:.1e}"


def test_triton_accepts_non_contiguous_bf16_views():
    B, H, L, d = 2, 4, 3000, 64
    g = torch.Generator(device="cuda").manual_seed(5)
    k = torch.randn(B, L, H, d, device="cuda", generator=g).bfloat16().transpose(1, 2)  # time-major storage
    v = torch.randn(B, L, H, 2 * d, device="cuda", generator=g).bfloat16().transpose(1, 2)[..., :d]
    q = torch.randn(B, H, d, device="cuda", generator=g).bfloat16()
    do = torch.randn(B, L, H, d, device="cuda", generator=g).bfloat16().transpose(1, 2)
    leaves = [x.detach().requires_grad_() for x in (q, k, v)]  # keeps the strides
    assert not (leaves[1].is_contiguous() or leaves[2].is_contiguous())
    o = prefix_attention(*leaves, backend="triton")
    got = (o, *torch.autograd.grad(o, leaves, do))
    leaves64 = [x.double().requires_grad_() for x in (q, k, v)]
    o64 = prefix_attention_ref(*leaves64)
    want = (o64, *torch.autograd.grad(o64, leaves64, do.double()))
    for name, a, b in zip(("o", "dq", "dk", "dv"), got, want):
        if name in ("dq", "dk"):
            tol = SCORE_GRAD_FACTOR * UNIT_ROUNDOFF[torch.bfloat16]
        else:
            tol = ROUNDING_FACTOR * rel_err(b.bfloat16(), b) + 1e-4
        assert rel_err(a, b) < tol, f"{name}: {rel_err(a, b):.2e} >= {tol:.1e}"
