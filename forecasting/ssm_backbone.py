"""The deep SSM backbone shared by S4, S4D and LSSL, and its optimiser set-up.

A backbone is an input projection and ``n_layers`` residual blocks, each

    x → [norm] → SSM (H channels) → GELU → dropout → output map → dropout → + x → [norm]

with the normalisation before (``prenorm``) or after the residual, the output
map a GLU (Linear(H, 2H) then GLU, the papers' default) or Linear(H, H) + GELU,
and, when ``bidirectional``, a second SSM run on the reversed sequence and
added (non-causal: no recurrent view). The SSM is one of the layers of
:data:`LAYERS`. Its recurrent view (``step``) threads a state per block, so a
causal backbone consumes a sequence one step at a time with memory that does
not grow with the sequence.

:func:`ssm_param_groups` gives the SSM state matrices (A, B, Δt, P) their own
learning rate and no weight decay (the ``_optim`` attribute the layers set),
as the S4, S4D and LSSL papers do. The Lightning modules that use the backbone
are in :mod:`tsuite.forecasting.ssm_models`.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import nn

from tsuite.forecasting.lssl import LSSLLayer
from tsuite.forecasting.s4 import S4Layer
from tsuite.forecasting.s4d import S4DLayer
from tsuite.forecasting.ssm_layer import SSMLayer

LAYERS: dict[str, type[SSMLayer]] = {"s4": S4Layer, "s4d": S4DLayer, "lssl": LSSLLayer}
LAYER_NAMES = {"s4": "S4", "s4d": "S4D", "lssl": "LSSL"}
LayerKind = Literal["s4", "s4d", "lssl"]


def make_layer(kind: str, d_model: int, d_state: int, dt_min: float, dt_max: float, lr: float | None,
               layer_args: dict[str, Any] | None = None) -> SSMLayer:
    """One SSM layer of ``kind`` (s4, s4d, lssl); ``layer_args`` are the layer's own options."""
    if kind not in LAYERS:
        raise ValueError(f"unknown SSM layer {kind!r}; expected one of {', '.join(LAYERS)}")
    try:
        return LAYERS[kind](d_model, d_state, dt_min=dt_min, dt_max=dt_max, lr=lr, **(layer_args or {}))
    except TypeError as err:
        raise ValueError(f"layer_args {layer_args} do not fit the {LAYER_NAMES[kind]} layer: {err}") from err


class SSMBlock(nn.Module):
    """One residual block: normalisation, SSM, GELU, output map, dropout, residual. x (B, L, H) → (B, L, H)."""

    def __init__(self, ssm: SSMLayer, ssm_backward: SSMLayer | None, d_model: int, dropout: float,
                 norm: str, prenorm: bool, activation: str):
        super().__init__()
        self.ssm, self.ssm_backward, self.prenorm = ssm, ssm_backward, prenorm
        self.norm = nn.LayerNorm(d_model) if norm == "layer" else nn.BatchNorm1d(d_model)
        self.norm_kind = norm
        self.drop = nn.Dropout(dropout)
        if activation == "glu":
            self.out = nn.Sequential(nn.Linear(d_model, 2 * d_model), nn.GLU(dim=-1))
        else:
            self.out = nn.Sequential(nn.Linear(d_model, d_model), nn.GELU())

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm_kind == "layer":
            return self.norm(x)
        if x.dim() == 2:  # (B H): one step
            return self.norm(x)
        return self.norm(x.transpose(1, 2)).transpose(1, 2)  # BatchNorm over (B, L) per channel

    def _mix(self, y: torch.Tensor) -> torch.Tensor:
        return self.drop(self.out(self.drop(nn.functional.gelu(y))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self._norm(x) if self.prenorm else x
        u = z.transpose(1, 2)  # (B H L)
        y = self.ssm(u)
        if self.ssm_backward is not None:
            y = y + self.ssm_backward(u.flip(-1)).flip(-1)
        x = x + self._mix(y.transpose(1, 2))  # (B L H)
        return x if self.prenorm else self._norm(x)

    def step(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x_t (B, H), state → (out_t (B, H), next state)."""
        z = self._norm(x) if self.prenorm else x
        y, state = self.ssm.step(z, state)
        x = x + self._mix(y)
        return (x if self.prenorm else self._norm(x)), state


class SSMBackbone(nn.Module):
    """Input projection and ``n_layers`` SSM blocks: x (B, L, d_input) → features (B, L, d_model).

    Args:
        d_input: input channels per time step.
        d_model: H, channels of every block.
        n_layers: number of blocks.
        layer: SSM of the blocks: ``s4``, ``s4d`` or ``lssl``.
        d_state: N, the state size of each SSM.
        dropout: dropout rate inside the blocks.
        norm: ``layer`` or ``batch`` normalisation.
        prenorm: normalise before the SSM (otherwise after the residual).
        activation: output map ``glu`` or ``gelu``.
        bidirectional: add an SSM over the reversed sequence (non-causal).
        dt_min, dt_max: range of the initial Δt.
        lr_ssm: learning rate of the SSM state matrices (no weight decay).
        layer_args: options of the SSM layer (e.g. ``{init: inv}`` for S4D, ``{measure: legt}`` for LSSL).
    """

    def __init__(
        self,
        d_input: int,
        d_model: int = 64,
        n_layers: int = 4,
        layer: LayerKind = "s4d",
        d_state: int = 64,
        dropout: float = 0.0,
        norm: Literal["layer", "batch"] = "layer",
        prenorm: bool = False,
        activation: Literal["glu", "gelu"] = "glu",
        bidirectional: bool = False,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        lr_ssm: float | None = 0.001,
        layer_args: dict[str, Any] | None = None,
    ):
        super().__init__()
        if norm not in ("layer", "batch") or activation not in ("glu", "gelu"):
            raise ValueError(f"norm must be 'layer' or 'batch' and activation 'glu' or 'gelu'; got {norm!r}, "
                             f"{activation!r}")
        self.d_model, self.bidirectional = d_model, bidirectional
        self.encoder = nn.Linear(d_input, d_model)

        def ssm() -> SSMLayer:
            return make_layer(layer, d_model, d_state, dt_min, dt_max, lr_ssm, layer_args)

        self.blocks = nn.ModuleList(
            SSMBlock(ssm(), ssm() if bidirectional else None, d_model, dropout, norm, prenorm, activation)
            for _ in range(n_layers)
        )
        self.final_norm = nn.LayerNorm(d_model) if prenorm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.encoder(x)  # (B L H)
        for block in self.blocks:
            x = block(x)
        return self.final_norm(x)

    def set_mode(self, mode: str, conv_backend: str = "auto") -> None:
        """Every layer's view in ``forward``: ``conv`` or ``recurrent`` (see :meth:`SSMLayer.set_mode`)."""
        for block in self.blocks:
            for ssm in (block.ssm, block.ssm_backward):
                if ssm is not None:
                    ssm.set_mode(mode, conv_backend)

    # -- recurrent view -------------------------------------------------------------------------
    def _causal(self) -> None:
        if self.bidirectional:
            raise ValueError("a bidirectional SSM backbone sees the future: it has no recurrent (step) view")

    def setup_step(self) -> None:
        """Compute every layer's discrete step matrices from the current parameters."""
        self._causal()
        for block in self.blocks:
            block.ssm.setup_step()

    def default_state(self, batch: int) -> list[torch.Tensor]:
        """Zero states of every block for ``batch`` sequences: size independent of any sequence length."""
        self._causal()
        return [block.ssm.default_state(batch) for block in self.blocks]

    def step(self, x: torch.Tensor, states: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """x_t (B, d_input) and the block states → (features_t (B, d_model), next states)."""
        self._causal()
        x = self.encoder(x)
        new_states = []
        for block, state in zip(self.blocks, states):
            x, state = block.step(x, state)
            new_states.append(state)
        return self.final_norm(x), new_states


def ssm_param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Optimiser parameter groups: SSM state matrices with their ``_optim`` settings, the rest with ``weight_decay``."""
    plain: list[nn.Parameter] = []
    special: dict[tuple, list[nn.Parameter]] = {}
    for p in module.parameters():
        if not p.requires_grad:
            continue
        hp = getattr(p, "_optim", None)
        if hp is None:
            plain.append(p)
        else:
            special.setdefault(tuple(sorted(hp.items())), []).append(p)
    groups = [{"params": plain, "weight_decay": weight_decay}]
    groups += [{"params": params, **dict(hp)} for hp, params in special.items()]
    return groups


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup: float = 0.05):
    """Linear warm-up over ``warmup`` of training, then cosine decay to 0 (scales every group's lr)."""
    total = max(int(total_steps), 1)
    ramp = max(int(warmup * total), 1)

    def factor(step: int) -> float:
        if step < ramp:
            return (step + 1) / ramp
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - ramp) / max(total - ramp, 1))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def configure_ssm_optimizer(module, lr: float, weight_decay: float, warmup: float = 0.05) -> dict:
    """AdamW over :func:`ssm_param_groups` with a warm-up + cosine schedule stepped every batch."""
    opt = torch.optim.AdamW(ssm_param_groups(module, weight_decay), lr=lr)
    total = module.trainer.estimated_stepping_batches if module._trainer is not None else 1
    return {"optimizer": opt, "lr_scheduler": {"scheduler": warmup_cosine(opt, total, warmup), "interval": "step"}}
