"""Aaren computes attention with a learned query for every prefix, in parallel and one token at a time alike;
the Transformer baseline is causal; the options (time decay, sink) are the formulas they claim."""

from __future__ import annotations

import math

import pytest
import torch

from tsuite.forecasting import AarenAttention, AarenEncoder, TransformerEncoder


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def stream(enc: AarenEncoder, x: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
    """Feed tokens one at a time through the recurrent form."""
    state, out = None, []
    for i in range(x.shape[1]):
        dt = None if (t is None or i == 0) else t[:, i] - t[:, i - 1]
        y, state = enc.step(x[:, i], dt, state)
        out.append(y)
    return torch.stack(out, dim=1)


@pytest.mark.parametrize("time_decay, sink", [(False, False), (True, True)], ids=["paper", "decay+sink"])
def test_parallel_and_recurrent_modes_agree_over_2048_steps(time_decay, sink):
    torch.manual_seed(0)
    enc = AarenEncoder(32, n_heads=4, n_layers=2, time_decay=time_decay, sink=sink).eval()
    B, L = 2, 2048
    x = torch.randn(B, L, 32)
    t = (torch.rand(B, L) * 0.05).cumsum(1)
    with torch.no_grad():
        parallel, _ = enc(x, t)
        recurrent = stream(enc, x, t)
    assert rel_err(recurrent, parallel) <= 1e-5
    assert rel_err(recurrent[:, -1], parallel[:, -1]) <= 1e-5  # the newest output too, not only on average


def test_state_carries_a_sequence_across_chunks():
    torch.manual_seed(1)
    enc = AarenEncoder(16, n_heads=2, n_layers=3, time_decay=True, sink=True).eval()
    x = torch.randn(3, 301, 16)
    t = (torch.rand(3, 301) + 0.01).cumsum(1)
    with torch.no_grad():
        whole, _ = enc(x, t)
        first, state = enc(x[:, :100], t[:, :100])
        rest, _ = enc(x[:, 100:], t[:, 100:] - t[:, 99:100], state=state)  # times from the last absorbed token
    assert rel_err(torch.cat([first, rest], 1), whole) <= 1e-5


def test_layer_is_softmax_attention_of_a_learned_query_over_each_prefix():
    torch.manual_seed(2)
    layer = AarenAttention(8, n_heads=2).double()
    x = torch.randn(2, 9, 8, dtype=torch.float64)
    with torch.no_grad():
        y, _ = layer(x)
        k = layer.key(x).view(2, 9, 2, 4).transpose(1, 2)  # (B, H, L, d)
        v = layer.value(x).view(2, 9, 2, 4).transpose(1, 2)
        s = torch.einsum("hd,bhld->bhl", layer.query, k) / math.sqrt(4)
        expected = []
        for t in range(9):
            w = torch.softmax(s[..., : t + 1], dim=-1)  # attention over the prefix 1..t only
            expected.append(torch.einsum("bhl,bhld->bhd", w, v[:, :, : t + 1]))
        o = torch.stack(expected, dim=2).transpose(1, 2).reshape(2, 9, 8)
    torch.testing.assert_close(y, layer.out(o), rtol=1e-10, atol=1e-12)


def test_time_decay_and_sink_are_the_documented_formulas():
    torch.manual_seed(3)
    layer = AarenAttention(8, n_heads=2, time_decay=True, sink=True).double()
    with torch.no_grad():
        layer.sink_score.copy_(torch.tensor([0.5, -1.0]))
    x = torch.randn(1, 7, 8, dtype=torch.float64)
    t = torch.tensor([[0.0, 0.3, 0.31, 1.5, 2.0, 2.2, 4.0]], dtype=torch.float64)
    with torch.no_grad():
        y, _ = layer(x, t)
        k = layer.key(x).view(1, 7, 2, 4).transpose(1, 2)
        v = layer.value(x).view(1, 7, 2, 4).transpose(1, 2)
        a = torch.einsum("hd,bhld->bhl", layer.query, k) / 2.0
        gamma, b = layer.decay, layer.sink_score
        rows = []
        for i in range(7):
            logits = a[..., : i + 1] - gamma[None, :, None] * (t[:, None, i : i + 1] - t[:, None, : i + 1])
            w = torch.exp(logits)  # (B, H, i+1)
            rows.append(torch.einsum("bhl,bhld->bhd", w, v[:, :, : i + 1]) / (w.sum(-1) + torch.exp(b))[..., None])
        expected = layer.out(torch.stack(rows, 2).transpose(1, 2).reshape(1, 7, 8))
    torch.testing.assert_close(y, expected, rtol=1e-9, atol=1e-12)


def test_left_padding_is_masked_out():
    torch.manual_seed(4)
    for enc in (AarenEncoder(16, 2, 2, time_decay=True, sink=True), TransformerEncoder(16, 2, 2, time_decay=True,
                                                                                      sink=True)):
        enc.eval()
        x = torch.randn(1, 10, 16)
        t = torch.arange(10.0)[None]
        padded_x = torch.cat([torch.randn(1, 5, 16) * 100, x], dim=1)
        padded_t = torch.cat([torch.zeros(1, 5), t], dim=1)
        mask = torch.arange(15)[None] >= 5
        with torch.no_grad():
            plain, _ = enc(x, t)
            padded, _ = enc(padded_x, padded_t, mask)
        torch.testing.assert_close(padded[:, 5:], plain, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls", [AarenEncoder, TransformerEncoder])
def test_outputs_do_not_depend_on_future_tokens(cls):
    torch.manual_seed(5)
    enc = cls(16, 4, 2, time_decay=True, sink=True).eval()
    x, t = torch.randn(2, 20, 16), torch.arange(20.0).expand(2, 20)
    changed = x.clone()
    changed[:, 12:] = torch.randn(2, 8, 16)
    with torch.no_grad():
        a, _ = enc(x, t)
        b, _ = enc(changed, t)
    torch.testing.assert_close(a[:, :12], b[:, :12])
    assert (a[:, 12:] - b[:, 12:]).abs().max() > 1e-3


def test_transformer_with_the_options_matches_explicit_attention():
    torch.manual_seed(6)
    enc = TransformerEncoder(8, n_heads=2, n_layers=1, time_decay=True, sink=True).double()
    attn = enc.blocks[0].attention
    with torch.no_grad():
        attn.sink_score.copy_(torch.tensor([0.2, 1.0]))
    x = torch.randn(1, 6, 8, dtype=torch.float64)
    t = torch.tensor([[0.0, 0.5, 0.7, 2.0, 2.1, 3.0]], dtype=torch.float64)
    with torch.no_grad():
        y = attn(x, t)
        q, k, v = attn.qkv(x).view(1, 6, 3, 2, 4).permute(2, 0, 3, 1, 4)
        rows = []
        for i in range(6):
            logits = (k[:, :, : i + 1] @ q[:, :, i, :, None])[..., 0] / 2.0
            w = torch.exp(logits - attn.decay[None, :, None] * (t[:, None, i : i + 1] - t[:, None, : i + 1]))
            rows.append((w[..., None] * v[:, :, : i + 1]).sum(2) / (w.sum(-1) + torch.exp(attn.sink_score))[..., None])
        expected = attn.out(torch.stack(rows, 2).transpose(1, 2).reshape(1, 6, 8))
    torch.testing.assert_close(y, expected, rtol=1e-9, atol=1e-12)


def test_gradients_reach_the_query_decay_and_sink():
    torch.manual_seed(7)
    enc = AarenEncoder(16, 4, 2, time_decay=True, sink=True)
    y, _ = enc(torch.randn(2, 30, 16), torch.arange(30.0).expand(2, 30))
    y.square().sum().backward()
    attn = enc.blocks[0].attention
    for p in (attn.query, attn.decay_raw, attn.sink_score):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_long_time_spans_stay_finite_in_float32():
    """Scores are measured relative to the newest token, so times far from 0 lose no precision."""
    torch.manual_seed(8)
    enc = AarenEncoder(16, 4, 1, time_decay=True, sink=True).eval()
    x = torch.randn(1, 50, 16)
    t = torch.arange(50.0)[None]
    with torch.no_grad():
        near, _ = enc(x, t)
        far, _ = enc(x, t + 1.0e6)
    assert torch.isfinite(far).all()
    torch.testing.assert_close(far, near, rtol=1e-4, atol=1e-4)
