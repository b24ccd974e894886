"""Aaren: attention as an RNN, and the causal Transformer encoder it is compared with.

Feng, Tung, Hajimirsadeghi, Ahmed, Bengio, Mori. "Attention as an RNN",
arXiv 2405.13956, 2024.

Aaren is attention whose query is not computed from the input but is a learned
token ``q`` (one per head). Since ``q`` does not change with time, the output
for every prefix,

    o_t = Σ_{i≤t} exp(s_i) v_i / Σ_{i≤t} exp(s_i),      s_i = q · k_i / √d,

is a parallel prefix scan over the paper's (running max m, normaliser u,
weighted sum w) for training (:func:`tsuite.kernels.prefix_attention`), and a
recurrence that updates (m, u, w) with each new token in O(1) memory for
inference (:func:`tsuite.kernels.prefix_attention_step`). As in the paper,
Aaren layers replace the attention of Transformer blocks: here pre-norm blocks
``x + Attn(LN(x))``, ``x + FFN(LN(x))`` and a final LayerNorm.

Two options that the paper does not have, both off by default and both still
computed by the same (m, u, w) scan:

- ``time_decay``: each key carries its event time as one extra coordinate whose
  query weight γ_h ≥ 0 is learned per head, so s_i gains γ_h t_i and, relative
  to the current time t, the weights become exp(q·k_i) exp(−γ_h (t − t_i)): an
  exponentially decaying recency bias (ALiBi, Press et al. 2022, in continuous
  time). A constant query cannot otherwise prefer recent tokens.
- ``sink``: a per-head learned score b_h of a virtual token with a zero value,
  present at every step at the current time ("softmax + 1"). The output becomes
  o_t · sigmoid(log Z_t − b_h), Z_t = Σ_{i≤t} exp(s_i − γ_h(t − t_i)), so a head
  can express unnormalised (decayed) sums such as a Hawkes intensity, not only
  weighted averages. The needed log Z_t is the log-sum-exp the scan carries.

:class:`TransformerEncoder` is the baseline of the paper: the same blocks with
causal softmax self-attention (query from the current token), with the same two
options (the decay as a bias −γ_h (t_q − t_k), the sink as an extra logit).
"""

from __future__ import annotations

import math
import torch
from torch import nn

from tsuite.kernels import PrefixAttentionState, prefix_attention, prefix_attention_step

MASKED = -1.0e4  # score added to padded keys: exp(−1e4) is exactly 0 in float32


def _decay_init(n_heads: int) -> torch.Tensor:
    """Initial per-head decay rates γ_h, log-spaced from 1/32 to 4 (in the caller's time unit)."""
    if n_heads == 1:
        return torch.tensor([0.5])
    return torch.logspace(math.log10(1 / 32), math.log10(4.0), n_heads)


def _softplus_inverse(x: torch.Tensor) -> torch.Tensor:
    return x + torch.log(-torch.expm1(-x))


class AarenAttention(nn.Module):
    """Multi-head Aaren attention with a learned query token per head.

    Args:
        d_model: width of the tokens.
        n_heads: number of heads (d_model must be divisible by it).
        time_decay: learn a per-head recency decay γ_h over the token times (see the module docstring).
        sink: add a per-head learned virtual token with a zero value (see the module docstring).
        backend: kernel backend of :func:`tsuite.kernels.prefix_attention`.
    """

    def __init__(self, d_model: int, n_heads: int, time_decay: bool = False, sink: bool = False,
                 backend: str = "auto"):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.time_decay, self.sink, self.backend = time_decay, sink, backend
        self.query = nn.Parameter(torch.randn(n_heads, self.d_head) * 0.1)  # q: (H, d), the learned token
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)
        if time_decay:
            self.decay_raw = nn.Parameter(_softplus_inverse(_decay_init(n_heads)))
        if sink:
            self.sink_score = nn.Parameter(torch.zeros(n_heads))

    @property
    def decay(self) -> torch.Tensor:
        """γ_h ≥ 0 per head (H,)."""
        return nn.functional.softplus(self.decay_raw)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, L, _ = x.shape
        return x.view(B, L, self.n_heads, self.d_head).transpose(1, 2)  # (B, H, L, d)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
        state: PrefixAttentionState | None = None,
    ) -> tuple[torch.Tensor, PrefixAttentionState]:
        """Outputs for every prefix, in parallel.

        Args:
            x: (B, L, D) tokens.
            t: (B, L) token times (needed with ``time_decay``), non-decreasing; with ``state``,
                measured from the time of the state's last token.
            key_mask: (B, L) True for real tokens; padding must come first (left padding).
            state: the summary of earlier tokens (from a previous call or :meth:`step`), or None.

        Returns:
            (y (B, L, D), the state after the last token, referenced to its time).
        """
        B, L, _ = x.shape
        q = self.query * self.d_head**-0.5  # (H, d), the score scale folded in
        k, v = self._heads(self.key(x)), self._heads(self.value(x))  # (B, H, L, d)
        bias = self._bias(B, L, t, key_mask)  # (B, H, L) or None
        if bias is not None:  # the bias rides on one extra key coordinate with query weight 1, value 0
            q = torch.cat([q, q.new_ones(self.n_heads, 1)], dim=-1)  # (H, d+1)
            k = torch.cat([k, bias[..., None].to(k.dtype)], dim=-1)  # (B, H, L, d+1)
            v = torch.cat([v, v.new_zeros(B, self.n_heads, L, 1)], dim=-1)  # (B, H, L, d+1)
        ct = torch.float64 if x.dtype == torch.float64 else torch.float32  # the kernels' compute dtype
        o = prefix_attention(q, k, v, self.backend, scale=1.0)[..., : self.d_head].to(ct)  # (B, H, L, d)
        s = torch.einsum("hd,bhld->bhl", q.to(ct), k.to(ct))  # (B, H, L), the scores the scan used
        if state is None and not self.sink:
            lse_last = torch.logsumexp(s, dim=-1)  # (B, H): only the final state needs it
        else:
            lse = torch.logcumsumexp(s, dim=-1)  # (B, H, L): log Σ_{i≤t} exp(s_i) at the reference time
            if state is not None:  # merge the earlier summary, re-referenced to this call's reference time
                m_p = state.m - self._shift(t, B)  # (B, H)
                M = torch.maximum(m_p[..., None], lse).detach()  # (B, H, L)
                a, c = torch.exp(m_p[..., None] - M), torch.exp(lse - M)  # weights of old and new parts
                U = state.u[..., None] * a + c
                o = (state.w[:, :, None, :] * a[..., None] + o * c[..., None]) / U[..., None]
                lse = M + torch.log(U)
            lse_last = lse[..., -1]
        new_state = PrefixAttentionState(lse_last, torch.ones_like(lse_last), o[..., -1, :])
        if self.sink:
            o = o * torch.sigmoid(self._log_z(lse, t) - self.sink_score[:, None])[..., None]
        y = o.transpose(1, 2).reshape(B, L, -1).to(x.dtype)  # (B, L, D)
        return self.out(y), new_state

    def _bias(self, B: int, L: int, t: torch.Tensor | None, key_mask: torch.Tensor | None) -> torch.Tensor | None:
        """Additive score terms (B, H, L): γ_h (t_i − t_L) and MASKED on padded keys; None when there are none."""
        bias = None
        if self.time_decay:
            if t is None:
                raise ValueError("AarenAttention with time_decay needs the token times t (B, L)")
            rel = t - t[:, -1:]  # (B, L), ≤ 0: measured at the last token
            bias = self.decay[None, :, None] * rel[:, None, :]
        if key_mask is not None:
            pad = (~key_mask.bool()).to(self.query.dtype)[:, None, :] * MASKED  # (B, 1, L)
            bias = pad.expand(B, self.n_heads, L) if bias is None else bias + pad
        return bias

    def _shift(self, t: torch.Tensor | None, B: int) -> torch.Tensor:
        """γ_h (t_L − 0): how much older the previous state's reference is than this call's (B, H)."""
        if not self.time_decay:
            return torch.zeros(B, self.n_heads, device=self.query.device)
        return self.decay[None, :] * t[:, -1:]

    def _log_z(self, lse: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
        """log Z_t measured at each token's own time (B, H, L)."""
        if not self.time_decay:
            return lse
        rel = t - t[:, -1:]  # (B, L)
        return lse - self.decay[None, :, None] * rel[:, None, :]

    def step(self, x_t: torch.Tensor, dt: torch.Tensor | None = None,
             state: PrefixAttentionState | None = None) -> tuple[torch.Tensor, PrefixAttentionState]:
        """One new token in O(1) memory: x_t (B, D) and dt (B,), the time since the previous token.

        Returns (y_t (B, D), the state referenced to this token's time); y_t equals the last
        output of :meth:`forward` over all tokens so far.
        """
        B = x_t.shape[0]
        q = self.query * self.d_head**-0.5  # (H, d)
        k = self.key(x_t).view(B, self.n_heads, self.d_head)  # (B, H, d)
        v = self.value(x_t).view(B, self.n_heads, self.d_head)
        attn = None
        if state is not None:
            m, u, w = state
            if self.time_decay:
                if dt is None:
                    raise ValueError("AarenAttention with time_decay needs dt, the time since the previous token")
                m = m - self.decay[None, :] * dt.to(m.dtype)[:, None]  # re-reference the scores to the new token
            attn = PrefixAttentionState(m, u, w)
        # the new token sits at the reference time, so it has no decay bias: plain q · k
        o, attn = prefix_attention_step(attn, q, k, v, scale=1.0)  # (B, H, d)
        o = o.to(attn.w.dtype)
        if self.sink:
            log_z = attn.m + torch.log(attn.u)  # (B, H), at the new token's time
            o = o * torch.sigmoid(log_z - self.sink_score)[..., None]
        return self.out(o.reshape(B, -1).to(x_t.dtype)), attn


class CausalSelfAttention(nn.Module):
    """Multi-head causal softmax self-attention (the Transformer baseline), with Aaren's two options.

    ``time_decay`` adds −γ_h (t_q − t_k) to the score of query q and key k; ``sink`` adds a
    per-head logit b_h with a zero value. Scores are materialised (B, H, L, L): meant for the
    sequence lengths of training and evaluation, not for unbounded streams.
    """

    def __init__(self, d_model: int, n_heads: int, time_decay: bool = False, sink: bool = False):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.time_decay, self.sink = time_decay, sink
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        if time_decay:
            self.decay_raw = nn.Parameter(_softplus_inverse(_decay_init(n_heads)))
        if sink:
            self.sink_score = nn.Parameter(torch.zeros(n_heads))

    @property
    def decay(self) -> torch.Tensor:
        return nn.functional.softplus(self.decay_raw)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None,
                key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, D), t (B, L) times (with ``time_decay``), key_mask (B, L) True for real tokens → (B, L, D)."""
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)  # 3 x (B, H, L, d)
        ct = torch.float64 if x.dtype == torch.float64 else torch.float32
        logits = (q @ k.transpose(-1, -2)).to(ct) * self.d_head**-0.5  # (B, H, Lq, Lk)
        if self.time_decay:
            if t is None:
                raise ValueError("CausalSelfAttention with time_decay needs the token times t (B, L)")
            age = (t[:, :, None] - t[:, None, :]).to(ct).clamp_min(0.0)  # (B, Lq, Lk)
            logits = logits - self.decay[None, :, None, None] * age[:, None]
        if key_mask is not None:
            logits = logits + (~key_mask.bool()).to(ct)[:, None, None, :] * MASKED
        causal = torch.ones(L, L, dtype=torch.bool, device=x.device).tril()
        logits = logits.masked_fill(~causal, float("-inf"))
        if self.sink:
            sink = self.sink_score[None, :, None, None].to(ct).expand(B, -1, L, 1)
            p = torch.softmax(torch.cat([logits, sink], dim=-1), dim=-1)[..., :L]  # (B, H, Lq, Lk)
        else:
            p = torch.softmax(logits, dim=-1)
        y = (p.to(v.dtype) @ v).transpose(1, 2).reshape(B, L, D)  # (B, L, D)
        return self.out(y)


class FeedForward(nn.Sequential):
    """The Transformer block's position-wise MLP: Linear → GELU → dropout → Linear."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0):
        super().__init__(nn.Linear(d_model, d_ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model))


class EncoderBlock(nn.Module):
    """Pre-norm Transformer block around any attention: x + Attn(LN(x)), then x + FFN(LN(x))."""

    def __init__(self, attention: nn.Module, d_model: int, d_ff: int, dropout: float = 0.0):
        super().__init__()
        self.attention = attention
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.ff = FeedForward(d_model, d_ff, dropout)
        self.drop = nn.Dropout(dropout)

    def mix(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """The block after attention: residual, then the feed-forward part with its residual."""
        x = x + self.drop(a)
        return x + self.drop(self.ff(self.norm2(x)))


class AarenEncoder(nn.Module):
    """A stack of Aaren blocks: parallel over a sequence (optionally continuing a state), or one token at a time.

    Args:
        d_model, n_heads, n_layers, d_ff, dropout: sizes of the blocks.
        time_decay, sink: options of :class:`AarenAttention` (off in the paper).
        backend: kernel backend of the parallel scan.
    """

    def __init__(self, d_model: int, n_heads: int = 4, n_layers: int = 2, d_ff: int | None = None,
                 dropout: float = 0.0, time_decay: bool = False, sink: bool = False, backend: str = "auto"):
        super().__init__()
        d_ff = d_ff or 4 * d_model
        self.blocks = nn.ModuleList(
            EncoderBlock(AarenAttention(d_model, n_heads, time_decay, sink, backend), d_model, d_ff, dropout)
            for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None, key_mask: torch.Tensor | None = None,
                state: list[PrefixAttentionState] | None = None) -> tuple[torch.Tensor, list[PrefixAttentionState]]:
        """x (B, L, D), t (B, L), key_mask (B, L) (left padding) → (y (B, L, D), per-layer states).

        With ``state`` (from an earlier call or :meth:`step`), ``t`` is measured from the
        time of the last token already absorbed, and y continues that sequence.
        """
        states = []
        for i, block in enumerate(self.blocks):
            a, s = block.attention(block.norm1(x), t, key_mask, None if state is None else state[i])
            x = block.mix(x, a)
            states.append(s)
        return self.norm(x), states

    def step(self, x_t: torch.Tensor, dt: torch.Tensor | None = None,
             state: list[PrefixAttentionState] | None = None) -> tuple[torch.Tensor, list[PrefixAttentionState]]:
        """One token x_t (B, D), dt (B,) time since the previous token → (y_t (B, D), states); O(1) memory."""
        states = []
        for i, block in enumerate(self.blocks):
            a, s = block.attention.step(block.norm1(x_t), dt, None if state is None else state[i])
            x_t = block.mix(x_t, a)
            states.append(s)
        return self.norm(x_t), states


class TransformerEncoder(nn.Module):
    """The baseline: the same blocks as :class:`AarenEncoder` with causal softmax self-attention."""

    def __init__(self, d_model: int, n_heads: int = 4, n_layers: int = 2, d_ff: int | None = None,
                 dropout: float = 0.0, time_decay: bool = False, sink: bool = False):
        super().__init__()
        d_ff = d_ff or 4 * d_model
        self.blocks = nn.ModuleList(
            EncoderBlock(CausalSelfAttention(d_model, n_heads, time_decay, sink), d_model, d_ff, dropout)
            for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None,
                key_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        """x (B, L, D), t (B, L), key_mask (B, L) → (y (B, L, D), None: there is no constant-size state)."""
        for block in self.blocks:
            x = block.mix(x, block.attention(block.norm1(x), t, key_mask))
        return self.norm(x), None
