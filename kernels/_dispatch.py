"""Backend choice shared by every kernel: Triton on CUDA tensors, the PyTorch reference elsewhere."""

from __future__ import annotations

from typing import Literal

import torch

Backend = Literal["auto", "triton", "torch"]


def use_triton(backend: Backend, *tensors: torch.Tensor | None) -> bool:
    """Return True when the Triton path should run for these tensors.

    ``auto`` picks Triton when every tensor is on a CUDA device (or when
    ``TRITON_INTERPRET=1`` is set, so the kernels can be tested on the CPU).
    ``triton`` forces it, ``torch`` forces the pure-PyTorch reference.
    """
    if backend not in ("auto", "triton", "torch"):
        raise ValueError(f"backend must be 'auto', 'triton' or 'torch', got {backend!r}")
    if backend == "torch":
        return False
    if backend == "triton":
        return True
    present = [t for t in tensors if t is not None]
    if present and all(t.is_cuda for t in present):
        return True
    return interpreting()


def interpreting() -> bool:
    """True when Triton runs in its CPU interpreter (TRITON_INTERPRET=1)."""
    import os

    return os.environ.get("TRITON_INTERPRET", "0") == "1"
