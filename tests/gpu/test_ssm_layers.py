"""S4, S4D and LSSL layers on the GPU: the Triton paths (fftconv, diag_ssm_scan) against the CPU references.

On CUDA the convolution view runs ``tsuite.kernels.fftconv`` and S4D's recurrent
view ``tsuite.kernels.diag_ssm_scan`` in Triton. Checks: convolution = recurrence
at L = 4096 (float32), outputs and every parameter gradient equal to the same
layer on the CPU, and a streaming forecast on the GPU equal to the window
forecast. Skipped without CUDA.
"""

from __future__ import annotations

import copy

import pytest
import torch

from tsuite.forecasting import LSSLLayer, S4DLayer, S4Layer, SSMForecaster
from tsuite.kernels._dispatch import interpreting

pytestmark = pytest.mark.skipif(
    interpreting() or not torch.cuda.is_available(), reason="needs a CUDA device (and no TRITON_INTERPRET)"
)

LAYERS = {
    "s4d-zoh": lambda: S4DLayer(64, 64),
    "s4d-bilinear-inv": lambda: S4DLayer(64, 64, init="inv", disc="bilinear"),
    "s4-legs": lambda: S4Layer(32, 64),
    "lssl-legs": lambda: LSSLLayer(32, 32),
}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


@pytest.mark.parametrize("name", LAYERS)
def test_convolution_and_recurrent_views_agree_on_the_gpu(name):
    torch.manual_seed(0)
    layer = LAYERS[name]().cuda()
    u = torch.randn(4, layer.d_model, 4096, device="cuda")
    with torch.no_grad():
        conv = layer(u)
        rec, _ = layer.recurrent(u)
    assert rel(conv, rec) <= 1e-4


@pytest.mark.parametrize("name", LAYERS)
def test_gpu_outputs_and_gradients_match_the_cpu(name):
    torch.manual_seed(1)
    cpu = LAYERS[name]()
    gpu = copy.deepcopy(cpu).cuda()
    u = torch.randn(3, cpu.d_model, 1000)
    w = torch.randn(3, cpu.d_model, 1000)
    (cpu(u) * w).sum().backward()
    y = gpu(u.cuda())
    (y * w.cuda()).sum().backward()
    assert rel(y, cpu(u)) <= 1e-4
    for (n, p), q in zip(cpu.named_parameters(), gpu.parameters()):
        assert rel(q.grad, p.grad) <= 1e-3, n


def test_s4d_scan_gradients_match_the_cpu():
    torch.manual_seed(2)
    cpu = S4DLayer(32, 64)
    gpu = copy.deepcopy(cpu).cuda()
    u = torch.randn(2, 32, 3000)
    cpu.recurrent(u)[0].square().sum().backward()
    gpu.recurrent(u.cuda())[0].square().sum().backward()
    for (n, p), q in zip(cpu.named_parameters(), gpu.parameters()):
        assert rel(q.grad, p.grad) <= 1e-3, n


@pytest.mark.parametrize("layer", ["s4", "s4d", "lssl"])
def test_streaming_on_the_gpu_equals_the_window_forecast(layer):
    torch.manual_seed(3)
    model = SSMForecaster(n_lags=48, horizon=4, layer=layer, d_model=16, n_layers=2, d_state=32).cuda().eval()
    x = torch.randn(5, 48, device="cuda")
    with torch.no_grad():
        expected = model(x).double().cpu().numpy()
    stream = model.stream(batch=5)
    for t in range(48):
        forecast = stream.update(x[:, t].cpu().numpy())
    assert abs(forecast - expected).max() <= 1e-4
