"""MossFormer2 on the GPU: the Triton depthwise convolutions, the CUDA-graph replay, bf16 and checkpointing.

Every fast path is compared with the plain one on the same weights and input: the CUDA forward (Triton
dwconv1d) with the CPU forward (oneDNN convolutions), the CUDA graph with the eager forward, checkpointed gradients
with stored-activation gradients (all float32, relative error by norm), and bf16 with float32 by the
SI-SNR of one output against the other.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

from tsuite.audio.mossformer2 import MossFormer2  # noqa: E402

SMALL = dict(num_layers=2, enc_channels=64, model_dim=64, fsmn_channels=32, group_size=32, query_key_dim=32)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def si_snr(est: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    est, ref = est - est.mean(-1, keepdim=True), ref - ref.mean(-1, keepdim=True)
    proj = (est * ref).sum(-1, keepdim=True) / ref.square().sum(-1, keepdim=True) * ref
    return 10 * torch.log10(proj.square().sum(-1) / (est - proj).square().sum(-1))


@pytest.fixture(autouse=True)
def _no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@pytest.mark.parametrize("T", [1001, 8 * 32 * 3 + 8, 12345])
def test_cuda_forward_matches_cpu_forward(T):
    torch.manual_seed(0)
    model = MossFormer2(**SMALL).eval()
    x = torch.randn(2, T)
    with torch.no_grad():
        cpu = model(x)
        gpu = model.cuda()(x.cuda()).cpu()
    assert rel_err(gpu, cpu) < 1e-4


def test_cuda_graph_replays_the_eager_forward():
    torch.manual_seed(0)
    model = MossFormer2(**SMALL).cuda().eval()
    x = torch.randn(1, 9001, device="cuda")
    with torch.no_grad():
        eager = model(x)
    run = model.graphed(1, 9001)
    assert rel_err(run(x), eager) < 1e-6
    x2 = torch.randn(1, 9001, device="cuda")  # a new input through the same graph
    with torch.no_grad():
        assert rel_err(run(x2), model(x2)) < 1e-6


def test_bf16_graph_stays_close_to_fp32():
    torch.manual_seed(0)
    model = MossFormer2(**SMALL).cuda().eval()
    x = torch.randn(2, 16000, device="cuda")
    with torch.no_grad():
        ref = model(x)
    out = model.graphed(2, 16000, autocast_dtype=torch.bfloat16)(x)
    assert si_snr(out, ref).min() > 20.0  # dB of agreement


def test_full_size_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = MossFormer2(num_layers=4, dropout=0.0).cuda()
    x = torch.randn(2, 8000, device="cuda")
    target = torch.randn(2, 2, 8000, device="cuda")
    grads = []
    for ckpt in (False, True):
        model.checkpoint_layers = ckpt
        model.zero_grad(set_to_none=True)
        (model(x) - target).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert rel_err(grads[1], grads[0]) < 1e-5


def test_training_with_dropout_and_checkpointing_replays_the_same_masks():
    torch.manual_seed(0)
    model = MossFormer2(**SMALL).cuda().train()
    x = torch.randn(2, 4000, device="cuda")
    grads = []
    for ckpt in (False, True):
        model.checkpoint_layers = ckpt
        model.zero_grad(set_to_none=True)
        torch.manual_seed(123)
        model(x).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert rel_err(grads[1], grads[0]) < 1e-5



@pytest.mark.parametrize("T", [32000, 80000], ids=["4s", "10s"])
def test_compiled_layers_match_the_eager_forward(T):
    """compile_layers() (one graph per layer pair, dwconv1d as a custom op): fp32 equal to eager within 1e-4;
    bf16 within bf16 rounding of eager bf16 (> 30 dB). Full width and 4 layers whose parameters differ
    (a compiled graph shared by the layers must not carry one layer's values into another)."""
    torch.manual_seed(0)
    model = MossFormer2(num_layers=4).cuda().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    x = torch.randn(1, T, device="cuda")
    with torch.inference_mode():
        eager32 = model(x)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            eager16 = model(x)
        model.compile_layers()
        compiled32 = model(x)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            compiled16 = model(x)
    assert rel_err(compiled32, eager32) < 1e-4
    assert si_snr(compiled16.float(), eager16.float()).min() > 30.0
