"""MossFormer2 and the Conv-TasNet wrapper on the CPU: shapes, size, the attention and FSMN maths, learning.

The attention and the FSMN memory are checked against direct re-statements of their definitions in
float64; the whole network against the authors' released code (clearvoice, when installed) with the
same weights; a tiny network must fit one two-source mixture.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import os
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from tsuite.audio import ConvTasNet, MossFormer2
from tsuite.audio.fsmn import DilatedDenseMemory, depthwise_conv_time
from tsuite.audio.mossformer2 import _group_norm, _group_norm_reduce, count_parameters, from_release_state_dict
from tsuite.audio.mossformer_block import grouped_attention

TINY = dict(num_layers=1, enc_channels=32, model_dim=32, fsmn_channels=16, query_key_dim=16, group_size=16,
            fsmn_order=5, rotary_dim=8, enc_kernel_size=8)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp(min=1e-300))


def si_snr(est: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    est, ref = est - est.mean(-1, keepdim=True), ref - ref.mean(-1, keepdim=True)
    proj = (est * ref).sum(-1, keepdim=True) / ref.square().sum(-1, keepdim=True) * ref
    return 10 * torch.log10(proj.square().sum(-1) / (est - proj).square().sum(-1))


def pit_si_snr(est: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Best-permutation SI-SNR (dB) per example; est, ref (B, S, T)."""
    perms = itertools.permutations(range(est.shape[1]))
    return torch.stack([si_snr(est[:, list(p)], ref).mean(1) for p in perms], 1).max(1).values


@pytest.mark.parametrize("T", [1, 7, 8, 257, 1001, 4003])
@pytest.mark.parametrize("S", [2, 3])
def test_output_has_the_input_length_for_odd_and_short_inputs(T, S):
    model = MossFormer2(num_speakers=S, **TINY).eval()
    with torch.no_grad():
        y = model(torch.randn(2, T))
    assert y.shape == (2, S, T) and y.dtype == torch.float32 and torch.isfinite(y).all()


def test_full_size_model_has_the_papers_parameter_count():
    n = count_parameters(MossFormer2())
    assert abs(n - 55.7e6) / 55.7e6 < 0.02
    assert n == 55_735_394  # the authors' released MossFormer at its defaults (trainable parameters)


def _release_class():
    spec = importlib.util.find_spec("clearvoice")
    if spec is None or spec.origin is None:
        pytest.skip("clearvoice (the authors' release) is not installed")
    for dep in ("einops", "rotary_embedding_torch", "torchinfo"):
        pytest.importorskip(dep)
    pkg = types.ModuleType("_release_mossformer2")
    pkg.__path__ = [os.path.join(os.path.dirname(spec.origin), "models", "mossformer2_ss")]
    sys.modules["_release_mossformer2"] = pkg
    return importlib.import_module("_release_mossformer2.mossformer2").MossFormer


@pytest.mark.parametrize("T", [801, 4001])  # 99 and 499 frames: a partial group; one full and one partial
def test_same_function_as_the_authors_release_with_their_weights(T):
    Release = _release_class()
    torch.manual_seed(0)
    release = Release(in_channels=64, out_channels=64, num_blocks=2).eval()
    with torch.no_grad():
        for p in release.parameters():  # move every parameter off its initial value (gains, offsets too)
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))
    ours = MossFormer2(enc_channels=64, model_dim=64, num_layers=2).eval()
    ours.load_state_dict(from_release_state_dict(release.state_dict()))
    assert count_parameters(ours) == sum(p.numel() for p in release.parameters() if p.requires_grad)
    x = torch.randn(2, T)
    with torch.no_grad():
        expected = torch.stack(release(x), dim=1)
        assert rel_err(ours(x), expected) < 1e-5


def reference_attention(q, k, q_lin, k_lin, h, g):
    """The definition: zero-pad to whole groups, relu(q k^T / g)^2 h inside each group, plus q_lin (k_lin^T h) / L."""
    B, L, _ = q.shape
    out = torch.zeros_like(h)
    for b in range(B):
        for start in range(0, L, g):
            rows = slice(start, min(start + g, L))
            att = F.relu(q[b, rows] @ k[b, rows].T / g) ** 2
            out[b, rows] += att @ h[b, rows]
        for t in range(L):
            out[b, t] += sum(q_lin[b, t] @ k_lin[b, s] * h[b, s] for s in range(L)) / L
    return out


@pytest.mark.parametrize("L", [1, 5, 16, 37, 64])
@pytest.mark.parametrize("B", [1, 2])
def test_grouped_attention_matches_the_definition(L, B):
    torch.manual_seed(L)
    g, d, E = 16, 8, 12
    q, k, q_lin, k_lin = (torch.randn(B, L, d, dtype=torch.float64, requires_grad=True) for _ in range(4))
    h = torch.randn(B, L, E, dtype=torch.float64, requires_grad=True)
    ours = grouped_attention(q, k, q_lin, k_lin, h, g)
    ref = reference_attention(q, k, q_lin, k_lin, h, g)
    assert rel_err(ours, ref) < 1e-12
    w = torch.randn_like(ref)
    grads = torch.autograd.grad((ours * w).sum(), (q, k, q_lin, k_lin, h))
    grads_ref = torch.autograd.grad((ref * w).sum(), (q, k, q_lin, k_lin, h))
    for a, b in zip(grads, grads_ref):
        assert rel_err(a, b) < 1e-12


@pytest.mark.parametrize("L,dilation,K", [(1, 1, 39), (37, 2, 39), (1000, 1, 17), (999, 2, 39), (50, 3, 5)])
def test_depthwise_conv_matches_conv1d(L, dilation, K):
    torch.manual_seed(0)
    x = torch.randn(2, L, 24)
    w = torch.randn(24, K)
    ref = F.conv1d(x.double().transpose(1, 2), w.double()[:, None], padding=(K - 1) * dilation // 2,
                   dilation=dilation, groups=24).transpose(1, 2)
    assert rel_err(depthwise_conv_time(x, w, dilation), ref) < 1e-6


def test_fsmn_dense_memory_matches_grouped_conv_reference():
    """The release's dense block: grouped Conv over [out_0, x] (2 inputs per group), InstanceNorm, PReLU."""
    torch.manual_seed(0)
    C, L = 8, 301
    mem = DilatedDenseMemory(C, order=20, depth=2).double()
    with torch.no_grad():
        mem.norm_weight.uniform_(0.5, 1.5)
        mem.norm_bias.normal_()
        mem.prelu.uniform_(0.0, 0.5)
    x = torch.randn(2, L, C, dtype=torch.float64)
    skip = x.transpose(1, 2)  # (B, C, L)
    for i in range(2):
        y = F.conv1d(skip, mem.weights[i], padding=19 * 2**i, dilation=2**i, groups=C)  # (B, C, L)
        y = F.instance_norm(y, weight=mem.norm_weight[i], bias=mem.norm_bias[i], eps=1e-5)
        out = F.prelu(y, mem.prelu[i])
        skip = torch.cat([out, skip], dim=1)
    assert rel_err(mem(x), out.transpose(1, 2)) < 1e-10


def test_bf16_autocast_on_cpu_stays_close_to_fp32():
    torch.manual_seed(0)
    model = MossFormer2(**{**TINY, "num_layers": 2}).eval()
    x = torch.randn(2, 3001)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
    assert out.shape == ref.shape and si_snr(out.float(), ref).min() > 20.0  # dB of agreement


@pytest.mark.parametrize("norm", [_group_norm, _group_norm_reduce])  # CPU form and the CUDA form
def test_channels_last_group_norm_matches_nn_group_norm(norm):
    torch.manual_seed(0)
    gn = torch.nn.GroupNorm(1, 24, eps=1e-8)
    torch.nn.init.normal_(gn.weight)
    torch.nn.init.normal_(gn.bias)
    x = torch.randn(3, 50, 24) * 3 + 1  # (B, L, C)
    ref = gn(x.transpose(1, 2)).transpose(1, 2)
    assert rel_err(norm(x, gn.weight, gn.bias, gn.eps), ref) < 1e-6


def test_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = MossFormer2(**{**TINY, "num_layers": 2}, dropout=0.1).train()
    x = torch.randn(2, 1000)
    grads = []
    for ckpt in (False, True):
        model.checkpoint_layers = ckpt
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)  # the same dropout masks; checkpointing must replay them
        model(x).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert rel_err(grads[1], grads[0]) < 1e-6


def test_compiled_layers_give_the_same_outputs_and_gradients():
    # aot_eager: dynamo's graph capture and AOTAutograd's forward/backward split, without C++ compilation
    torch.manual_seed(0)
    model = MossFormer2(**{**TINY, "num_layers": 2}, dropout=0.0).eval()
    x = torch.randn(2, 1500)
    grads, outs = [], []
    for compiled in (False, True):
        if compiled:
            model.compile_layers(backend="aot_eager")
        model.zero_grad(set_to_none=True)
        out = model(x)
        out.square().mean().backward()
        outs.append(out.detach())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert rel_err(outs[1], outs[0]) < 1e-6 and rel_err(grads[1], grads[0]) < 1e-5


def _two_source_mixture(T: int = 4000) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    t = torch.arange(T) / 8000.0
    s1 = torch.sin(2 * torch.pi * (300 + 400 * t) * t) * (1 + 0.5 * torch.sin(2 * torch.pi * 3 * t))
    noise = torch.randn(T, generator=g)
    s2 = F.conv1d(noise[None, None], torch.ones(1, 1, 5) / 5, padding=2)[0, 0]  # low-passed noise
    s2 = s2 / s2.std() * s1.std()
    sources = torch.stack([s1, s2])[None]  # (1, 2, T)
    return sources.sum(1), sources


STEPS = 60


@pytest.mark.parametrize("net", ["mossformer2", "convtasnet"])
def test_tiny_model_learns_to_separate_one_mixture(net):
    torch.manual_seed(0)
    mix, sources = _two_source_mixture()
    if net == "mossformer2":
        model = MossFormer2(**TINY, dropout=0.0)
    else:
        model = ConvTasNet(enc_kernel_size=8, enc_channels=32, bottleneck_channels=16, hidden_channels=32,
                           num_layers=3, num_stacks=1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    with torch.no_grad():
        start = float(pit_si_snr(model(mix), sources))
    for _ in range(STEPS):
        opt.zero_grad()
        loss = -pit_si_snr(model(mix), sources).mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        end = float(pit_si_snr(model(mix), sources))
    baseline = float(pit_si_snr(torch.stack([mix, mix], 1), sources))  # the unseparated mixture: about 0 dB
    # measured (60 steps): MossFormer2 -22.9 -> +3.8 dB, Conv-TasNet -7.0 -> +3.6 dB; the mixture -0.3 dB
    assert end > start + 8.0 and end > baseline + 2.0, (start, end, baseline)


@pytest.mark.parametrize("T", [3, 16, 999, 4001])
def test_conv_tasnet_keeps_the_interface(T):
    model = ConvTasNet(num_speakers=3, enc_channels=32, bottleneck_channels=16, hidden_channels=32, num_layers=2,
                       num_stacks=1).eval()
    with torch.no_grad():
        assert model(torch.randn(2, T)).shape == (2, 3, T)


def test_conv_tasnet_default_is_the_papers_size():
    assert abs(count_parameters(ConvTasNet()) - 5.1e6) / 5.1e6 < 0.03  # the paper reports 5.1M


def test_graphed_needs_a_cuda_model():
    with pytest.raises(ValueError, match="CUDA"):
        MossFormer2(**TINY).eval().graphed(1, 100)
