"""MossFormer2: time-domain monaural speech separation (encoder, masking network, decoder).

Zhao, Ma, Nguyen, Yip, Zou, Ni, Chng, Ma 2023, "MossFormer2: Combining Transformer and RNN-Free
Recurrent Network for Enhanced Time-Domain Monaural Speech Separation", arXiv 2312.11825; layer by
layer the authors' released configuration (ClearerVoice-Studio, ``MossFormer``), written anew:

    mix (B, T) -> Conv1d(1 -> 512, kernel 16, stride 8) + ReLU                      = w (B, L, 512)
    mask net:  GroupNorm(1) -> 1x1 -> + scaled sinusoidal position -> 24 x [MossFormer attention
               module, gated FSMN recurrent module] -> LayerNorm -> GroupNorm(1) -> + skip -> PReLU
               -> 1x1 (512 -> S*512) -> per speaker tanh(1x1) * sigmoid(1x1) -> 1x1 -> ReLU   = m (B, L, S, 512)
    decoder: ConvTranspose1d(512 -> 1, kernel 16, stride 8) of w * m_s, trimmed/padded to T   -> (B, S, T)

The modules are in ``mossformer_block.py`` (attention) and ``fsmn.py`` (recurrent module). The
full-size model has 55.7M parameters. Differences from the release, none of which change the function:
channels-last tensors throughout (no permute copies), attention computed without zero padding, the
FSMN's grouped Conv2d run as depthwise convolutions (Triton ``dwconv1d`` on CUDA), rotary tables
computed once per forward and shared by the 24 layers, the two output gates as one 1x1 convolution,
and inputs shorter than the encoder kernel zero-padded (the release fails on them). Options the
release lacks: ``checkpoint_layers`` (recompute each layer in the backward pass to save memory),
:meth:`MossFormer2.graphed` (a CUDA-graph replay of the forward pass for fixed shapes) and
:meth:`MossFormer2.compile_layers` (torch.compile of each layer pair). :func:`from_release_state_dict`
loads the authors' weights. Speed and memory against the release: docs/mossformer2.md.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .fsmn import GatedFSMNBlock
from .mossformer_block import MossFormerAttention, rotary_tables

__all__ = ["MossFormer2", "count_parameters", "from_release_state_dict"]


def _group_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """GroupNorm with one group on channels-last x (B, L, C): statistics over (L, C) per example, affine per channel.

    CPU: layer_norm over (L, C) (10x faster there than GroupNorm on the transposed view). CUDA: a var_mean
    reduction, since layer_norm gives each row (here all L*C values of an example) to one thread block:
    12 ms for the two calls at L = 10000, C = 512, against some 0.1 ms.
    """
    x32 = x.to(torch.promote_types(x.dtype, torch.float32))
    if x.is_cuda:
        return _group_norm_reduce(x32, weight, bias, eps)
    return torch.addcmul(bias, F.layer_norm(x32, x32.shape[1:], eps=eps), weight)  # layer_norm over (L, C)


def _group_norm_reduce(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """The one-group GroupNorm of x (B, L, C) from a parallel var_mean over (L, C) (the CUDA path)."""
    var, mean = torch.var_mean(x, dim=(1, 2), correction=0, keepdim=True)  # (B, 1, 1) each
    return torch.addcmul(bias, (x - mean) * torch.rsqrt(var + eps), weight)


def _layer_pair(
    attention: MossFormerAttention, fsmn: GatedFSMNBlock, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> torch.Tensor:
    """One layer of the mask net: the attention module, then the recurrent module, on x (B, L, D)."""
    return fsmn(attention(x, (cos, sin)))


class MossFormer2(nn.Module):
    """MossFormer2 speech separation network: mix (B, T) float waveform -> (B, num_speakers, T) waveforms.

    Defaults are the paper's full-size model (55.7M parameters, 8 kHz WSJ0-2mix/Libri2Mix setting).

    Args:
        num_speakers: S, the number of sources separated.
        enc_channels: encoder filters (N = 512).
        enc_kernel_size: encoder/decoder kernel (16 samples, stride kernel/2 = 8).
        model_dim: width of the masking network's layers (512).
        num_layers: MossFormer attention + FSMN layer pairs (24).
        group_size: frames per quadratic-attention group (256).
        query_key_dim: shared query/key width (128).
        expansion_factor: the attention's [v, u] projection is expansion_factor * model_dim wide (4 -> 2048).
        conv_kernel_size: depthwise kernel in every convolution-augmented projection (17).
        fsmn_channels: the recurrent module's bottleneck width (256).
        fsmn_order: FSMN memory order (20, kernel 2*20-1 = 39).
        fsmn_depth: dilated dense memory layers (2, dilations 1 and 2).
        rotary_dim: features rotated by the rotary position embedding (32).
        dropout: dropout in the attention weights and projections (0.1).
        checkpoint_layers: recompute each layer during backward instead of storing its activations.
    """

    def __init__(
        self,
        num_speakers: int = 2,
        enc_channels: int = 512,
        enc_kernel_size: int = 16,
        model_dim: int = 512,
        num_layers: int = 24,
        group_size: int = 256,
        query_key_dim: int = 128,
        expansion_factor: float = 4.0,
        conv_kernel_size: int = 17,
        fsmn_channels: int = 256,
        fsmn_order: int = 20,
        fsmn_depth: int = 2,
        rotary_dim: int = 32,
        dropout: float = 0.1,
        checkpoint_layers: bool = False,
    ) -> None:
        super().__init__()
        if num_speakers < 1 or num_layers < 0 or enc_kernel_size < 2:
            raise ValueError(
                f"need num_speakers >= 1, num_layers >= 0, enc_kernel_size >= 2; "
                f"got {num_speakers}, {num_layers}, {enc_kernel_size}"
            )
        self.num_speakers, self.model_dim = num_speakers, model_dim
        self.kernel_size, self.stride = enc_kernel_size, enc_kernel_size // 2
        self.rotary_dim = min(rotary_dim, query_key_dim)
        self.checkpoint_layers = checkpoint_layers
        self.encoder = nn.Conv1d(1, enc_channels, enc_kernel_size, stride=self.stride, bias=False)
        # mask network
        self.in_norm = nn.GroupNorm(1, enc_channels, eps=1e-8)
        self.in_proj = nn.Linear(enc_channels, model_dim, bias=False)
        self.pos_scale = nn.Parameter(torch.ones(1))
        inv_freq = 10000.0 ** (-torch.arange(0, model_dim, 2, dtype=torch.float32) / model_dim)
        self.register_buffer("pos_inv_freq", inv_freq, persistent=False)
        self.attention = nn.ModuleList(
            MossFormerAttention(
                model_dim, group_size, query_key_dim, expansion_factor, conv_kernel_size, self.rotary_dim, dropout
            )
            for _ in range(num_layers)
        )
        self.fsmn = nn.ModuleList(
            GatedFSMNBlock(model_dim, fsmn_channels, fsmn_order, fsmn_depth, conv_kernel_size, dropout)
            for _ in range(num_layers)
        )
        self.out_layer_norm = nn.LayerNorm(model_dim, eps=1e-6)
        self.out_group_norm = nn.GroupNorm(1, model_dim, eps=1e-8)
        self.out_prelu = nn.PReLU()
        self.to_speakers = nn.Linear(model_dim, model_dim * num_speakers)
        self.gate = nn.Linear(model_dim, 2 * model_dim)  # [tanh branch, sigmoid branch]
        self.to_mask = nn.Linear(model_dim, enc_channels, bias=False)
        self.decoder = nn.ConvTranspose1d(enc_channels, 1, enc_kernel_size, stride=self.stride, bias=False)
        self._layer_fn = _layer_pair  # or its torch.compile'd form (compile_layers)

    # ------------------------------------------------------------------ pieces
    def position(self, length: int, device: torch.device) -> torch.Tensor:
        """Scaled sinusoidal position embedding (L, model_dim): [sin(t f_i), cos(t f_i)] * scale."""
        angles = torch.arange(length, device=device, dtype=torch.float32)[:, None] * self.pos_inv_freq  # (L, D/2)
        return torch.cat((angles.sin(), angles.cos()), dim=-1) * self.pos_scale

    def compile_layers(self, **compile_kwargs) -> "MossFormer2":
        """Run each layer pair through torch.compile (static shapes): fuses its element-wise work.

        One compiled function serves all layers (the modules are its arguments); the Triton depthwise
        convolutions are custom-operator nodes inside the graph (``tsuite::dwconv1d``), so each layer pair
        is one graph. Returns self.
        """
        self._layer_fn = torch.compile(_layer_pair, dynamic=False, **compile_kwargs)
        return self

    def mask_net(self, w: torch.Tensor) -> torch.Tensor:
        """Masks (B, L, S, N) for encoder features w (B, L, N)."""
        B, L, _ = w.shape
        x = _group_norm(w, self.in_norm.weight, self.in_norm.bias, self.in_norm.eps)  # (B, L, N)
        x = self.in_proj(x) + self.position(L, w.device)  # (B, L, D)
        skip = x
        cos, sin = rotary_tables(L, self.rotary_dim, w.device) if self.rotary_dim else (None, None)
        for attention, fsmn in zip(self.attention, self.fsmn):
            if self.checkpoint_layers and torch.is_grad_enabled():
                x = checkpoint(self._layer_fn, attention, fsmn, x, cos, sin, use_reentrant=False)
            else:
                x = self._layer_fn(attention, fsmn, x, cos, sin)  # (B, L, D)
        x = self.out_layer_norm(x)
        x = _group_norm(x, self.out_group_norm.weight, self.out_group_norm.bias, self.out_group_norm.eps) + skip
        x = self.to_speakers(self.out_prelu(x)).unflatten(-1, (self.num_speakers, self.model_dim))  # (B, L, S, D)
        a, b = self.gate(x).chunk(2, dim=-1)  # (B, L, S, D) each
        return F.relu(self.to_mask(torch.tanh(a) * torch.sigmoid(b)))  # (B, L, S, N)

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """mix (B, T) -> separated sources (B, S, T), trimmed or zero-padded to T."""
        if mix.dim() != 2:
            raise ValueError(f"mix must have shape (B, T); got {tuple(mix.shape)}")
        B, T = mix.shape
        x = mix if T >= self.kernel_size else F.pad(mix, (0, self.kernel_size - T))
        w = F.relu(self.encoder(x[:, None, :])).transpose(1, 2)  # (B, L, N)
        m = self.mask_net(w)  # (B, L, S, N)
        y = self.decode(w[:, :, None, :] * m)  # (B, S, T')
        return y[..., :T] if y.shape[-1] >= T else F.pad(y, (0, T - y.shape[-1]))

    def decode(self, sep: torch.Tensor) -> torch.Tensor:
        """The transposed-convolution decoder on masked features sep (B, L, S, N) -> (B, S, T').

        CUDA: ConvTranspose1d on the (B S, N, L) permutation. CPU: the same sum as one matrix product on
        the channels-last frames and an overlap-add (F.fold), which avoids the transposing copy (10x faster).
        """
        B, L, S, N = sep.shape
        if sep.is_cuda:
            y = self.decoder(sep.permute(0, 2, 3, 1).reshape(B * S, N, L))  # (B S, 1, T')
            return y.view(B, S, -1)
        K = self.kernel_size
        frames = torch.matmul(sep.transpose(1, 2), self.decoder.weight[:, 0, :].to(sep.dtype))  # (B, S, L, K)
        out = F.fold(frames.reshape(B * S, L, K).transpose(1, 2), output_size=(1, (L - 1) * self.stride + K),
                     kernel_size=(1, K), stride=(1, self.stride))  # (B S, 1, 1, T') overlap-add
        return out.view(B, S, -1)

    # ------------------------------------------------------------------ fast inference
    @torch.no_grad()
    def graphed(
        self, batch: int, length: int, autocast_dtype: torch.dtype | None = None, warmup: int = 2
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """A CUDA-graph replay of forward() for inputs of exactly (batch, length) on this model's CUDA device.

        Inference is bound by kernel launches (some 60 per layer); one graph replays them all with one
        launch. Returns f(mix) -> (B, S, T), a fresh tensor each call; autocast_dtype (e.g. bfloat16)
        runs the forward under torch.autocast. The model must be in eval mode and stay unchanged
        (the graph holds its weights by address).
        """
        device = next(self.parameters()).device
        if device.type != "cuda":
            raise ValueError("graphed() needs the model on a CUDA device")
        if self.training:
            raise ValueError("graphed() replays inference: call model.eval() first")
        static_in = torch.zeros(batch, length, device=device)
        ctx = (
            (lambda: torch.autocast("cuda", dtype=autocast_dtype))
            if autocast_dtype is not None
            else (lambda: torch.autocast("cuda", enabled=False))
        )
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up: Triton compilation, cuBLAS workspaces
            for _ in range(warmup):
                with ctx():
                    self(static_in)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            with ctx():
                static_out = self(static_in)

        def run(mix: torch.Tensor) -> torch.Tensor:
            if tuple(mix.shape) != (batch, length):
                raise ValueError(f"this graph takes mix of shape ({batch}, {length}); got {tuple(mix.shape)}")
            static_in.copy_(mix)
            graph.replay()
            return static_out.float().clone()

        return run


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)



def from_release_state_dict(release: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a state dict of the authors' released ``MossFormer`` (ClearerVoice-Studio) onto MossFormer2's names.

    Lets a released checkpoint (loaded by the user with torch.load(weights_only=True)) run here, and the
    tests check that both networks compute the same function. 1x1 Conv1d weights (O, I, 1) become Linear
    weights (O, I); the FSMN's Conv2d weights (C, g, K, 1) become (C, g, K).
    """
    top = {
        "enc.conv1d.weight": "encoder.weight", "dec.weight": "decoder.weight",
        "mask_net.norm.weight": "in_norm.weight", "mask_net.norm.bias": "in_norm.bias",
        "mask_net.conv1d_encoder.weight": "in_proj.weight", "mask_net.pos_enc.scale": "pos_scale",
        "mask_net.mdl.intra_mdl.norm.weight": "out_layer_norm.weight",
        "mask_net.mdl.intra_mdl.norm.bias": "out_layer_norm.bias",
        "mask_net.mdl.intra_norm.weight": "out_group_norm.weight",
        "mask_net.mdl.intra_norm.bias": "out_group_norm.bias", "mask_net.prelu.weight": "out_prelu.weight",
        "mask_net.conv1d_out.weight": "to_speakers.weight", "mask_net.conv1d_out.bias": "to_speakers.bias",
        "mask_net.conv1_decoder.weight": "to_mask.weight",
    }
    ffn = {"mdl.0.g": "norm.g", "mdl.0.weight": "norm.weight", "mdl.0.bias": "norm.bias",
           "mdl.1.weight": "linear.weight", "mdl.1.bias": "linear.bias", "mdl.3.sequential.1.conv.weight": "conv.weight"}
    block = {"conv1.0.weight": "proj_in.weight", "conv1.0.bias": "proj_in.bias", "conv1.1.weight": "prelu.weight",
             "norm1.weight": "norm1.weight", "norm1.bias": "norm1.bias", "norm2.weight": "norm2.weight",
             "norm2.bias": "norm2.bias", "conv2.weight": "proj_out.weight", "conv2.bias": "proj_out.bias",
             "gated_fsmn.fsmn.linear.weight": "fsmn.linear.weight", "gated_fsmn.fsmn.linear.bias": "fsmn.linear.bias",
             "gated_fsmn.fsmn.project.weight": "fsmn.project.weight"}
    out: dict[str, torch.Tensor] = {}
    memory: dict[tuple[int, str], list[tuple[int, torch.Tensor]]] = {}
    prefix = "mask_net.mdl.intra_mdl.mossformerM."
    for key, value in release.items():
        if key in top:
            out[top[key]] = value[..., 0] if key.endswith(("conv1d_encoder.weight", "conv1d_out.weight",
                                                           "conv1_decoder.weight")) else value
        elif key.startswith("mask_net.output"):  # output (tanh) and output_gate (sigmoid) -> one gate Linear
            part = 0 if key.startswith("mask_net.output.") else 1
            name = "weight" if key.endswith("weight") else "bias"
            memory.setdefault((-1, name), []).append((part, value[..., 0] if name == "weight" else value))
        elif key.startswith(prefix + "layers."):
            _, i, rest = key[len(prefix):].split(".", 2)
            if rest.startswith("qk_offset_scale."):
                out[f"attention.{i}.{rest.split('.')[-1]}"] = value
            elif not rest.startswith("rotary_pos_emb"):
                mod, sub = rest.split(".", 1)
                out[f"attention.{i}.{mod}.{ffn[sub]}"] = value
        elif key.startswith(prefix + "fsmn."):
            _, i, rest = key[len(prefix):].split(".", 2)
            if rest in block:
                v = value[..., 0] if rest.startswith("conv") and rest.endswith("weight") and value.dim() == 3 else value
                out[f"fsmn.{i}.{block[rest]}"] = v
            elif rest.startswith(("gated_fsmn.to_u.", "gated_fsmn.to_v.")):
                gate, sub = rest[len("gated_fsmn."):].split(".", 1)
                out[f"fsmn.{i}.{gate}.{ffn[sub]}"] = value
            elif rest.startswith("gated_fsmn.fsmn.conv."):
                name = rest[len("gated_fsmn.fsmn.conv."):]  # conv{j}.weight, norm{j}.weight/bias, prelu{j}.weight
                kind, j = name.split(".")[0][:-1], int(name.split(".")[0][-1]) - 1
                if kind == "conv":
                    out[f"fsmn.{i}.fsmn.memory.weights.{j}"] = value[..., 0]
                else:
                    field = {"norm.weight": "norm_weight", "norm.bias": "norm_bias", "prelu.weight": "prelu"}
                    memory.setdefault((int(i), field[f"{kind}.{name.split('.')[1]}"]), []).append((j, value))
            else:
                raise KeyError(f"unexpected key in the release state dict: {key}")
        elif not key.endswith("inv_freq"):
            raise KeyError(f"unexpected key in the release state dict: {key}")
    for (i, field), parts in memory.items():
        stacked = torch.cat([v for _, v in sorted(parts, key=lambda p: p[0])], dim=0)
        out[f"gate.{field}" if i < 0 else f"fsmn.{i}.fsmn.memory.{field}"] = (
            stacked if i < 0 else stacked.view(len(parts), -1)
        )
    return out
