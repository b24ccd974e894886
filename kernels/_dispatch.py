"""Backend choice shared by every kernel: Triton on CUDA tensors, the PyTorch reference elsewhere.

Importing this module under ``TRITON_INTERPRET=1`` also patches the Triton
interpreter so that loops with run-time bounds work with numpy >= 2.4.
"""

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


def backport_interpreter_index_fix() -> None:
    """Let loops with run-time bounds run under TRITON_INTERPRET=1 with numpy >= 2.4.

    triton 3.6's interpreter turns a scalar (a 1-element array) into a loop bound
    with int(array), which numpy 2.4 refuses ("only 0-dimensional arrays can be
    converted"); triton issue 9171, fixed upstream by PR 9172. This applies the
    same fix (idempotent, interpreter only; a no-op where triton changed).
    """
    from triton.runtime import interpreter

    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None or getattr(original, "index_fix", False):
        return

    def patched(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    patched.index_fix = True
    interpreter._patch_lang_tensor = patched


def interpreting() -> bool:
    """True when Triton runs in its CPU interpreter (TRITON_INTERPRET=1)."""
    import os

    return os.environ.get("TRITON_INTERPRET", "0") == "1"


if interpreting():
    backport_interpreter_index_fix()
