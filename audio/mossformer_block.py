"""MossFormer2's attention module: gated single-head attention, quadratic inside groups plus linear over all.

Part of :class:`tsuite.audio.MossFormer2` (Zhao et al. 2023, arXiv 2312.11825; the attention is
MossFormer's, Zhao & Ma 2023, arXiv 2302.11824, itself after FLASH, Hua et al. 2022, arXiv 2202.10447).
On channels-last x (B, L, D):

    x' = token shift (the first D/2 channels delayed by one frame)
    [v, u] = ConvFFN(x')                        # (B, L, 2E), E = expansion * D / 2
    z      = ConvFFN(x')                        # (B, L, d) shared query/key, d = 128
    q, q_lin, k, k_lin = z * gamma_i + beta_i   # four scale/offset variants, then rotary (first 32 dims)
    A(h)   = relu(q_g k_g^T / G)^2 h_g  (inside each group g of G = 256 frames)
             + q_lin (k_lin^T h) / L            (over the whole sequence)
    y = x + ConvFFN((A(u) * v) * sigmoid(A(v) * u))

The release computes A(v) and A(u) with four pairs of matrix products on zero-padded copies; here the
quadratic and linear parts act once on the (B, L, 2E) projection [v, u] itself, full groups as one
batched product and the last partial group on its own rows, so nothing is padded. Padded frames of the
release contribute zeros (its v, u are zero there), so both compute the same function.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .fsmn import ConvFFN

__all__ = ["MossFormerAttention", "grouped_attention", "rotary_tables"]


def rotary_tables(length: int, dim: int, device: torch.device, theta: float = 10000.0) -> tuple[torch.Tensor, ...]:
    """cos and sin (L, dim/2) of the rotary angles t * theta^(-2i/dim), for pairs (2i, 2i+1) of features."""
    inv_freq = theta ** (-torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim)  # (dim/2,)
    angles = torch.arange(length, device=device, dtype=torch.float32)[:, None] * inv_freq  # (L, dim/2)
    return angles.cos(), angles.sin()


def apply_rotary(z: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first 2 * cos.shape[-1] features of z (B, L, ..., d) in interleaved pairs by the angles of frame t."""
    r = 2 * cos.shape[-1]
    pairs = z[..., :r].unflatten(-1, (-1, 2))  # (B, L, ..., r/2, 2)
    pairs = pairs.to(torch.promote_types(pairs.dtype, torch.float32))
    shape = (1, cos.shape[0]) + (1,) * (z.dim() - 3) + (cos.shape[1],)
    c, s = cos.view(shape), sin.view(shape)
    x0, x1 = pairs[..., 0], pairs[..., 1]
    rot = torch.stack((x0 * c - x1 * s, x1 * c + x0 * s), dim=-1).flatten(-2)  # (B, L, ..., r)
    return torch.cat((rot.to(z.dtype), z[..., r:]), dim=-1)


def _relu_square(s: torch.Tensor, group_size: int) -> torch.Tensor:
    return torch.square(F.relu(s * (1.0 / group_size)))


def grouped_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    q_lin: torch.Tensor,
    k_lin: torch.Tensor,
    h: torch.Tensor,
    group_size: int,
    dropout: float = 0.0,
    training: bool = False,
) -> torch.Tensor:
    """MossFormer's joint attention A(h) for q, k, q_lin, k_lin (B, L, d) and values h (B, L, E); returns (B, L, E).

    Quadratic: in each group of `group_size` frames (the last one shorter), relu(q k^T / group_size)^2 h,
    with dropout on the attention weights. Linear: q_lin (k_lin^T h) / L over all L frames.
    """
    B, L, d = q.shape
    E = h.shape[-1]
    kv = torch.bmm(k_lin.transpose(1, 2) * (1.0 / L), h)  # (B, d, E)
    out = torch.bmm(q_lin, kv)  # (B, L, E)
    G = L // group_size
    Lf = G * group_size
    if G > 0:
        qg = q[:, :Lf].reshape(B * G, group_size, d)  # (B G, g, d)
        kg = k[:, :Lf].reshape(B * G, group_size, d)
        att = _relu_square(torch.bmm(qg, kg.transpose(1, 2)), group_size)  # (B G, g, g)
        att = F.dropout(att, dropout, training)
        hg = h[:, :Lf].reshape(B * G, group_size, E)  # (B G, g, E)
        if Lf == L:  # out-of-place: autocast casts baddbmm's operands (its pow leaves att in float32)
            out = torch.baddbmm(out.view(B * G, group_size, E), att, hg).view(B, L, E)
        else:
            out[:, :Lf] += torch.bmm(att, hg).view(B, Lf, E)
    if Lf < L:
        att = _relu_square(torch.bmm(q[:, Lf:], k[:, Lf:].transpose(1, 2)), group_size)  # (B, r, r)
        att = F.dropout(att, dropout, training)
        out[:, Lf:] += torch.bmm(att, h[:, Lf:])  # (B, r, E)
    return out


class MossFormerAttention(nn.Module):
    """The MossFormer gated single-head attention module (the release's FLASH_ShareA_FFConvM), residual included."""

    def __init__(
        self,
        dim: int = 512,
        group_size: int = 256,
        query_key_dim: int = 128,
        expansion_factor: float = 4.0,
        kernel_size: int = 17,
        rotary_dim: int = 32,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        hidden = int(dim * expansion_factor)
        if hidden % 2:
            raise ValueError(f"dim * expansion_factor must be even (it is split into v and u); got {hidden}")
        if rotary_dim % 2 or rotary_dim > query_key_dim:
            raise ValueError(f"rotary_dim must be even and <= query_key_dim={query_key_dim}; got {rotary_dim}")
        self.group_size, self.rotary_dim, self.dropout = group_size, rotary_dim, dropout
        self.to_hidden = ConvFFN(dim, hidden, "scale", kernel_size, dropout)  # -> [v, u]
        self.to_qk = ConvFFN(dim, query_key_dim, "scale", kernel_size, dropout)
        self.gamma = nn.Parameter(torch.empty(4, query_key_dim))  # q, q_lin, k, k_lin scales
        self.beta = nn.Parameter(torch.zeros(4, query_key_dim))
        nn.init.normal_(self.gamma, std=0.02)
        self.to_out = ConvFFN(hidden // 2, dim, "scale", kernel_size, dropout)

    def forward(self, x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        B, L, D = x.shape
        half = D // 2
        shifted = torch.cat((F.pad(x[:, :-1, :half], (0, 0, 1, 0)), x[..., half:]), dim=-1)  # (B, L, D)
        h = self.to_hidden(shifted)  # (B, L, 2E) = [v, u]
        z = self.to_qk(shifted)  # (B, L, d)
        z4 = z[:, :, None, :] * self.gamma + self.beta  # (B, L, 4, d)
        if self.rotary_dim:
            cos, sin = rotary if rotary is not None else rotary_tables(L, self.rotary_dim, x.device)
            z4 = apply_rotary(z4, cos, sin)
        q, q_lin, k, k_lin = z4.unbind(2)  # 4 x (B, L, d)
        att = grouped_attention(q, k, q_lin, k_lin, h, self.group_size, self.dropout, self.training)  # (B, L, 2E)
        v, u = h.chunk(2, dim=-1)
        att_v, att_u = att.chunk(2, dim=-1)  # (B, L, E) each
        return x + self.to_out(att_u * v * torch.sigmoid(att_v * u))  # (B, L, D)
