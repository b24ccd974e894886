"""Fused diagonal state-space scan (S4D / LSSL recurrent mode): public function, autograd and launch.

y = scan(u) for a diagonal complex SSM per channel, without writing the
(B, H, N, L) states to device memory. The Triton kernels are in
`diag_ssm_scan_triton.py` and `diag_ssm_scan_bwd.py`. The sequence is cut into chunks of T steps and
blocks of chunks; the forward computes each block's end state from a zero
start (parallel over blocks), carries the states across blocks (a short scan
over B H x L / (RB T) states), then writes every block's output from its
entering state (parallel over blocks); the backward is the same three passes
in reverse time for the adjoint, with the states inside a block recomputed from
the block's entering state. Inside a block the work is matrix products on the
tensor cores (Toeplitz K for the chunk's own inputs, P and Q for the state) and
a scan over the chunk states. The per-channel tables K, P, Q are built once per
call by a small kernel and kept for the backward. The zero-order hold
(A, B, dt) -> (dt A, B̄) and its gradient are plain PyTorch on (H, N) tensors.
The reference is `diag_ssm_scan_ref.py`.

Precision of the tensor-core products (`_precision`): float32 input under
torch's default float32 matmul precision ("highest") runs each product as
three bfloat16 products of split operands ("bf16x3": hi*hi + hi*lo + lo*hi,
relative error ~1e-5 against float64 on the tests' inputs, the same as float32
arithmetic gives there; one TF32 pass would be ~5e-4; "tf32x3", three TF32
products, is as accurate and does twice the tensor-core work). Under
torch.set_float32_matmul_precision("high" / "medium"), and for bfloat16 /
float16 input, one TF32 pass (~1e-3). Everything else (tables, scans,
carries, the parameter gradients' pull-back) is float32 arithmetic.
"""

from __future__ import annotations

import torch
import triton

from ._dispatch import Backend, interpreting, use_triton
from .diag_ssm_scan_ref import diag_ssm_scan_ref, zoh
from .diag_ssm_scan_bwd import _bwd_kernel
from .diag_ssm_scan_triton import _block_ends_kernel, _carry_kernel, _fwd_out_kernel, _tables_kernel

__all__ = ["diag_ssm_scan"]


# ----------------------------------------------------------------------------- launch configuration


def _precision(u: torch.Tensor) -> str:
    """input_precision of the kernels' products for this input (see the module docstring)."""
    if interpreting():
        return "ieee"
    if u.dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest":
        return "bf16x3"
    return "tf32"


def _config(u: torch.Tensor, N: int) -> dict:
    """Block shape and launch parameters.

    T: chunk length (Toeplitz size); RB: chunks per block of pass 2 (the states
    are kept every RB chunks) and of the backward's pass 3; RE, R: chunks per
    tile of the passes 1 (a multiple of RB: RE / RB blocks a tile) and of the
    forward's pass 3 (a multiple of RB); G_*: tiles per program of the
    forward's pass 1 (ends) and pass 3 (out), and of the backward's pass 1
    (bends) and pass 3 (bwd); carry_rows: blocks per step of pass 2 (at most);
    *_warps: warps per program; *_stages: software-pipelining depth of the
    loads (None: Triton's default); *_maxnreg: register cap per thread (None:
    the compiler's choice; a cap lets more programs share a multiprocessor, at
    the price of spills); PREC: product precision.
    """
    NP = triton.next_power_of_2(N) if interpreting() else max(16, triton.next_power_of_2(N))  # tl.dot: dims >= 16
    if interpreting():  # small tiles: the interpreter runs the scans' combine element by element
        return {"T": 16, "R": 8, "RB": 4, "RE": 8, "NP": NP, "G_ends": 2, "G_out": 2, "G_bends": 2, "G_bwd": 2,
                "carry_rows": 2, "ends_warps": 4, "out_warps": 4, "bends_warps": 4, "bwd_warps": 4,
                "out_stages": None, "bwd_stages": None, "out_maxnreg": None, "bwd_maxnreg": None, "PREC": "ieee"}
    # H100, B4 H256 L16384 N64: states every 16 chunks (512 steps, 32 blocks a sequence, 32768 in all); the
    # passes 1 and the forward's pass 3 on 64-chunk tiles (one warpgroup's wgmma tiles, 4096 programs of 2
    # tiles), the backward's pass 3 on 16-chunk blocks (its accumulators and two scans fit 4 warps' registers;
    # 4096 programs of 8 blocks, to spread the pull-back of the parameter gradients at each program's end)
    return {"T": 32, "R": 64, "RB": 16, "RE": 64, "NP": NP, "G_ends": 2, "G_out": 2, "G_bends": 2, "G_bwd": 8,
            "carry_rows": 32, "ends_warps": 4, "out_warps": 4, "bends_warps": 4, "bwd_warps": 4,
            # out_stages=1: the sweep's fastest accurate setting (fwd 0.337 ms vs 0.471 with the default pipelining;
            # `python -m benchmarks.kernels_diag_ssm --sweep`, H200, 2026-11-25)
            "out_stages": 1, "bwd_stages": 1, "out_maxnreg": None, "bwd_maxnreg": None, "PREC": _precision(u)}


def _launch(stages=None, maxnreg=None):
    """Launch options: software-pipelining depth and register cap (none in the interpreter, None: Triton's default)."""
    out = {}
    if stages is not None and not interpreting():
        out["num_stages"] = stages
    if maxnreg is not None and not interpreting():
        out["maxnreg"] = maxnreg
    return out


def _tables(ssm, cfg, R, adjoint, with_tab):
    """`_tables_kernel`: (tab, wts) with the product tables (if with_tab) and the block weights of R-chunk blocks."""
    H, N = ssm.shape[:2]
    T, NP, PREC = cfg["T"], cfg["NP"], cfg["PREC"]
    parts = 2 if PREC in ("bf16x3", "bf16x3_emu") else 1
    size = T * T + 4 * T * NP
    tab_dtype = torch.bfloat16 if PREC == "bf16x3" else torch.float32
    tab = torch.empty((H, parts, size) if with_tab else (1,), device=ssm.device, dtype=tab_dtype)
    wts = torch.empty((H, 2, R, NP), device=ssm.device, dtype=torch.float32)
    _tables_kernel[(H,)](ssm, tab, wts, N, T=T, NP=NP, RW=R, ADJ=adjoint, WRITE_TAB=with_tab, PREC=PREC, num_warps=4)
    return tab, wts


def _carry(ssm, ends, init, batch, H, N, BL, NP, rows, reverse):
    """Pass 2: states (B H, n_blocks + 1, 2, NP) entering each block (reverse: the adjoint, from the end)."""
    n_blocks = ends.shape[1]
    states = torch.empty((batch * H, n_blocks + 1, 2, NP), device=ends.device, dtype=torch.float32)
    NBT = rows  # fixed (one compilation for every length); a tile past the last block is masked
    n_tiles = triton.cdiv(n_blocks, NBT)
    si = init.stride()[:3] if init is not None else (0, 0, 0)
    _carry_kernel[(batch * H,)](
        ssm, ends, init if init is not None else ends, states,
        H, N, n_blocks, n_tiles, *si,
        BL=BL, NP=NP, NBT=NBT, REVERSE=reverse, HAS_INIT=init is not None,
        TILES_STATIC=n_tiles if interpreting() else 0, num_warps=4,
    )
    return states


def _pad_state(x, NP):
    """(B, H, N, 2) float32 -> (B H, 2, NP) float32, zero past N."""
    batch, H, N, _ = x.shape
    out = torch.zeros((batch * H, 2, NP), device=x.device, dtype=torch.float32)
    out[:, :, :N] = x.reshape(batch * H, N, 2).transpose(1, 2)
    return out


def _unpad_state(x, batch, H, N):
    """(B H, 2, NP) -> (B, H, N, 2)."""
    return x[:, :, :N].transpose(1, 2).reshape(batch, H, N, 2).contiguous()


class _DiagSSMScanFn(torch.autograd.Function):
    """y, h_mid = scan(u; ssm, D, h0); ssm (H, N, 6) float32 packs (dt A, B̄, C) as real pairs.

    h_mid (B, H, N, 2) is the state entering chunk L // T (after the last full chunk).
    """

    @staticmethod
    def forward(ctx, u, ssm, D, h0r, want_hmid, cfg):
        batch, H, L = u.shape
        N = ssm.shape[1]
        T, R, RB, NP, PREC = cfg["T"], cfg["R"], cfg["RB"], cfg["NP"], cfg["PREC"]
        RE = cfg["RE"]
        if R % RB or RE % RB:
            raise ValueError(f"config: R={R} and RE={RE} must be multiples of RB={RB}")
        BH = batch * H
        tab, wts = _tables(ssm, cfg, RB, adjoint=False, with_tab=True)
        n_sb = triton.cdiv(L, RB * T)  # blocks of pass 2
        ends = torch.empty((BH, n_sb, 2, NP), device=u.device, dtype=torch.float32)
        G = cfg["G_ends"]
        n_prog = triton.cdiv(triton.cdiv(L, RE * T), G)
        _block_ends_kernel[(BH * n_prog,)](
            u, tab, wts, ends, ends, H, L, N, n_sb, n_prog, *u.stride(), -1,
            T=T, R=RE, SUB=RB, NP=NP, G=G, ADJOINT=False, HAS_DMID=False, PREC=PREC, num_warps=cfg["ends_warps"],
        )
        states = _carry(ssm, ends, h0r, batch, H, N, RB * T, NP, cfg["carry_rows"], reverse=False)
        n_full = L // T
        at_end = n_full == n_sb * RB
        y = torch.empty((batch, H, L), device=u.device, dtype=u.dtype)
        hmid = torch.empty((BH, 2, NP), device=u.device, dtype=torch.float32) if want_hmid and not at_end else ends
        n_blocks = triton.cdiv(L, R * T)
        G = cfg["G_out"]
        n_prog = triton.cdiv(n_blocks, G)
        _fwd_out_kernel[(BH * n_prog,)](
            u, y, ssm, tab, D if D is not None else y, states, hmid,
            H, L, N, n_blocks, n_prog, n_sb, *u.stride(),
            n_full if want_hmid and not at_end else -1,
            T=T, R=R, NP=NP, G=G, SPB=R // RB,
            HAS_D=D is not None, WRITE_HMID=want_hmid and not at_end, PREC=PREC, num_warps=cfg["out_warps"],
            **_launch(cfg.get("out_stages"), cfg.get("out_maxnreg")),
        )
        if want_hmid:
            hmid = _unpad_state(states[:, n_sb] if at_end else hmid, batch, H, N)
        ctx.save_for_backward(u, ssm, tab, D, states)
        ctx.cfg = cfg
        ctx.has_h0 = h0r is not None
        return y, (hmid if want_hmid else None)

    @staticmethod
    def backward(ctx, dy, dhmid):
        u, ssm, tab, D, states = ctx.saved_tensors
        cfg = ctx.cfg
        batch, H, L = u.shape
        N = ssm.shape[1]
        T, R, NP, PREC = cfg["T"], cfg["RB"], cfg["NP"], cfg["PREC"]
        BH = batch * H
        n_blocks = states.shape[1] - 1
        n_full = L // T
        at_end = n_full == n_blocks * R
        # dh_mid enters where h_mid left: inside a block (passes 1 and 3), or after the last block (pass 2's start)
        dmid = _pad_state(dhmid.float(), NP) if dhmid is not None and not at_end else None
        init = dhmid.float().contiguous() if dhmid is not None and at_end else None
        j_mid = n_full if dmid is not None else -1
        _, wts = _tables(ssm, cfg, R, adjoint=True, with_tab=False)
        F = torch.empty((BH, n_blocks, 2, NP), device=u.device, dtype=torch.float32)
        RE = cfg["RE"]
        G = cfg["G_bends"]
        n_prog = triton.cdiv(triton.cdiv(L, RE * T), G)
        _block_ends_kernel[(BH * n_prog,)](
            dy, tab, wts, F, dmid if dmid is not None else F, H, L, N, n_blocks, n_prog, *dy.stride(), j_mid,
            T=T, R=RE, SUB=R, NP=NP, G=G, ADJOINT=True, HAS_DMID=dmid is not None, PREC=PREC,
            num_warps=cfg["bends_warps"],
        )
        adj = _carry(ssm, F, init, batch, H, N, R * T, NP, cfg["carry_rows"], reverse=True)
        G = cfg["G_bwd"]
        n_prog = triton.cdiv(n_blocks, G)
        du = torch.empty((batch, H, L), device=u.device, dtype=u.dtype)
        dssm = torch.empty((BH * n_prog, N, 6), device=u.device, dtype=torch.float32)
        dd = torch.empty((BH * n_prog,), device=u.device, dtype=torch.float32)
        _bwd_kernel[(BH * n_prog,)](
            u, dy, ssm, tab, D if D is not None else u, states, adj, dmid if dmid is not None else F,
            du, dssm, dd,
            H, L, N, n_blocks, n_prog, *u.stride(), *dy.stride(), j_mid,
            T=T, R=R, NP=NP, G=G, HAS_D=D is not None, HAS_DMID=dmid is not None, PREC=PREC,
            num_warps=cfg["bwd_warps"], **_launch(cfg.get("bwd_stages"), cfg.get("bwd_maxnreg")),
        )
        dssm = dssm.view(batch, H, n_prog, N, 6).sum((0, 2))
        dD = dd.view(batch, H, n_prog).sum((0, 2)).to(D.dtype) if D is not None else None
        dh0 = _unpad_state(adj[:, 0], batch, H, N) if ctx.has_h0 else None
        return du, dssm, dD, dh0, None, None


def _check(u, A, B, C, dt, D, h0):
    if u.dim() != 3 or u.is_complex():
        raise ValueError(f"u must be real with shape (B, H, L), got {tuple(u.shape)} {u.dtype}")
    batch, H, L = u.shape
    for name, z in (("A", A), ("B", B), ("C", C)):
        if not z.is_complex() or z.dim() != 2 or z.shape[0] != H:
            raise ValueError(
                f"{name} must be a complex tensor of shape (H, N) with H={H}, got {tuple(z.shape)} {z.dtype}; "
                "parameters stored as real pairs (..., 2) convert with torch.view_as_complex"
            )
    if not (A.shape == B.shape == C.shape):
        raise ValueError(f"A, B, C must share the shape (H, N), got {tuple(A.shape)}, {tuple(B.shape)}, {tuple(C.shape)}")
    if dt.shape != (H,) or dt.is_complex():
        raise ValueError(f"dt must be real with shape ({H},) (the step itself, exp(log_dt)), got {tuple(dt.shape)}")
    if D is not None and (D.shape != (H,) or D.is_complex()):
        raise ValueError(f"D must be real with shape ({H},), got {tuple(D.shape)}")
    if h0 is not None and (h0.shape != (batch, H, A.shape[1]) or not h0.is_complex()):
        raise ValueError(f"h0 must be complex with shape ({batch}, {H}, {A.shape[1]}), got {tuple(h0.shape)} {h0.dtype}")
    if L == 0:
        raise ValueError("u has length 0 along its last axis; the scan needs at least one step")


def diag_ssm_scan(
    u: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    dt: torch.Tensor,
    D: torch.Tensor | None = None,
    h0: torch.Tensor | None = None,
    return_final_state: bool = False,
    backend: Backend = "auto",
):
    """Diagonal state-space scan of S4D / LSSL in recurrent mode, fused (no (B, H, N, L) states in memory).

    Per channel h (H of them) and state n (N of them), with the zero-order hold
    Ā = exp(dt A), B̄ = (exp(dt A) - 1) / A * B:

        h_t = Ā h_{t-1} + B̄ u_t            (complex, h_{-1} = h0 or 0)
        y_t = 2 Re(sum_n C_n h_{t,n}) + D u_t

    The factor 2 is S4D's convention (`models/s4/s4d.py`): A, B, C keep one
    eigenvalue of each conjugate pair, the other half contributes the complex
    conjugate. Equals the S4D convolution y = K * u + D u with
    K_l = 2 Re(sum_n C_n B̄_n Ā_n^l) (with B = 1 this is S4DKernel's K).

    Args:
        u: (B, H, L) float32, bfloat16 or float16, any strides.
        A: (H, N) complex64, Re(A) < 0 for a stable system (not checked).
        B, C: (H, N) complex64. Parameters kept as real pairs: pass torch.view_as_complex(p).
        dt: (H,) real, positive: the step itself (S4D keeps log_dt; pass exp(log_dt)).
        D: (H,) real skip connection, or None.
        h0: (B, H, N) complex initial state, or None for zeros.
        return_final_state: also return h_{L-1}, (B, H, N) complex64.
        backend: "auto" (Triton on CUDA tensors, the reference elsewhere), "triton" or "torch".

    Returns:
        y (B, H, L) in u's dtype, or (y, h_final) if return_final_state.

    Arithmetic is float32 (complex as real pairs) for every input dtype. On the
    GPU the matrix products run on tensor cores: for float32 input as three
    bfloat16 products of split operands (about 1e-5 relative error, as float32
    arithmetic) unless torch.set_float32_matmul_precision is "high" or
    "medium" (one TF32 pass, about 1e-3 relative error); for bfloat16/float16
    input in one TF32 pass. Gradients flow to u, A, B, C, dt,
    D and h0 (complex gradients follow torch: d/dRe + i d/dIm).
    """
    _check(u, A, B, C, dt, D, h0)
    if not use_triton(backend, u, A, B, C, dt, D, h0):
        return diag_ssm_scan_ref(u, A, B, C, dt, D, h0, return_final_state)
    return _diag_ssm_scan_triton(u, A, B, C, dt, D, h0, return_final_state, _config(u, A.shape[1]))


def _diag_ssm_scan_triton(u, A, B, C, dt, D, h0, return_final_state, cfg):
    """The Triton path of `diag_ssm_scan` with an explicit launch configuration (see `_config`)."""
    A, B, C = A.to(torch.complex64), B.to(torch.complex64), C.to(torch.complex64)
    dtA, Bbar = zoh(A, B, dt.float())  # (H N)
    ssm = torch.cat([torch.view_as_real(dtA), torch.view_as_real(Bbar), torch.view_as_real(C)], dim=-1)  # (H N 6)
    h0r = torch.view_as_real(h0.to(torch.complex64)) if h0 is not None else None  # (B H N 2)
    D = D.contiguous() if D is not None else None
    y, hmid = _DiagSSMScanFn.apply(u, ssm, D, h0r, return_final_state, cfg)
    if not return_final_state:
        return y
    # the kernel returns the state after the last full chunk; the last T0 < T steps are added here
    L = u.shape[-1]
    hmid = torch.view_as_complex(hmid)  # (B H N)
    T0 = L % cfg["T"]
    if T0 == 0:
        return y, hmid
    steps = torch.arange(T0 - 1, -1, -1, device=u.device, dtype=torch.float32)  # T0-1-s
    w = Bbar.unsqueeze(-1) * torch.exp(dtA.unsqueeze(-1) * steps)  # (H N T0): Ā^{T0-1-s} B̄
    tail = u[..., L - T0 :].to(torch.float32).to(torch.complex64)  # (B H T0)
    h_final = torch.exp(T0 * dtA) * hmid + torch.einsum("bhs,hns->bhn", tail, w)
    return y, h_final
