"""Target networks with external weights, and the MLP / chunked / LSTM hypernetworks."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from tsuite.vision_video.hypernetworks import ChunkedMLPHypernetwork, LSTMHypernetwork, MLPHypernetwork
from tsuite.vision_video.target_nets import TargetCNN, TargetMLP, unflatten

HAS_HYPNETTORCH = importlib.util.find_spec("hypnettorch") is not None
DIGITS_MLP_SHAPES = TargetMLP(64, [100, 100], 2).param_shapes()


@pytest.mark.parametrize("net", [TargetMLP(64, [32, 16], 3), TargetCNN([3, 16, 16], [8, 4], 5)], ids=["mlp", "cnn"])
def test_target_net_with_external_weights_matches_its_own_forward(net):
    torch.manual_seed(0)
    x = torch.randn(7, *([1, 8, 8] if isinstance(net, TargetMLP) else [3, 16, 16]))
    own = net(x)
    flat = torch.cat([p.detach().flatten() for p in net.parameters()])
    assert flat.numel() == net.num_params() == sum(torch.Size(s).numel() for s in net.param_shapes())
    external = net(x, unflatten(flat, net.param_shapes()))
    torch.testing.assert_close(external, own, rtol=0, atol=0)
    doubled = net(x, [2 * w for w in unflatten(flat, net.param_shapes())])
    assert (doubled - own).abs().max() > 1e-3  # the external weights are really used


def test_gradients_reach_the_generator_through_external_weights():
    net = TargetMLP(64, [16], 2)
    hnet = MLPHypernetwork(net.param_shapes(), n_tasks=2, emb_dim=4, hidden=[8])
    out = net(torch.randn(5, 64), unflatten(hnet([1])[0], net.param_shapes()))
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in hnet.shared_parameters())
    assert hnet.task_embs[1].grad.abs().sum() > 0 and hnet.task_embs[0].grad is None


def test_mlp_hypernetwork_parameter_count_is_input_hidden_output_layers_plus_embeddings():
    hnet = MLPHypernetwork(DIGITS_MLP_SHAPES, n_tasks=5, emb_dim=32, hidden=[100, 100])
    p = 64 * 100 + 100 + 100 * 100 + 100 + 100 * 2 + 2  # 16,802 target weights
    assert hnet.n_outputs == p
    assert hnet.num_params() == 5 * 32 + (32 * 100 + 100) + (100 * 100 + 100) + (100 * p + p)
    assert hnet([0, 3]).shape == (2, p)


@pytest.mark.skipif(not HAS_HYPNETTORCH, reason="hypnettorch (optional peer) not installed")
def test_mlp_hypernetwork_matches_hypnettorch_hmlp():
    from hypnettorch.hnets import HMLP

    ours = MLPHypernetwork(DIGITS_MLP_SHAPES, n_tasks=5, emb_dim=32, hidden=[100, 100])
    theirs = HMLP(DIGITS_MLP_SHAPES, uncond_in_size=0, cond_in_size=32, layers=[100, 100], num_cond_embs=5,
                  verbose=False)
    assert ours.num_params() == theirs.num_params == 1_710_562
    with torch.no_grad():  # same weights in both → same generated weights
        for mine, other in zip(ours.shared_parameters(), theirs.unconditional_params):
            other.copy_(mine)
        for t in range(5):
            theirs.conditional_params[t].copy_(ours.task_embs[t])
    torch.testing.assert_close(ours([0, 4]), theirs.forward(cond_id=[0, 4], ret_format="flattened"),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.skipif(not HAS_HYPNETTORCH, reason="hypnettorch (optional peer) not installed")
def test_chunked_hypernetwork_parameter_count_matches_hypnettorch():
    from hypnettorch.hnets import ChunkedHMLP

    ours = ChunkedMLPHypernetwork(DIGITS_MLP_SHAPES, n_tasks=5, emb_dim=32, chunk_emb_dim=32, chunk_size=300)
    theirs = ChunkedHMLP(DIGITS_MLP_SHAPES, chunk_size=300, chunk_emb_size=32, cond_in_size=32, layers=[100, 100],
                         num_cond_embs=5, verbose=False)
    assert ours.num_params() == theirs.num_params == 48_884


def _perturb_chunk_embedding(hnet, i):
    base = hnet([2])[0].detach()
    with torch.no_grad():
        hnet.chunk_embs[i] += 1.0
    changed = (hnet([2])[0].detach() - base).abs().reshape(-1)
    n = hnet.chunk_size
    per_chunk = torch.nn.functional.pad(changed, (0, hnet.n_chunks * n - changed.numel())).reshape(-1, n).amax(-1)
    return per_chunk  # (n_chunks,) largest change in each chunk


def test_lstm_hypernetwork_later_chunks_depend_on_earlier_ones():
    torch.manual_seed(0)
    hnet = LSTMHypernetwork(DIGITS_MLP_SHAPES, n_tasks=3, emb_dim=8, chunk_emb_dim=8, chunk_size=500, hidden_size=16)
    change = _perturb_chunk_embedding(hnet, 10)
    assert change[:10].max() == 0  # earlier chunks are untouched
    assert change[10] > 1e-3 and (change[11:] > 1e-6).all()  # this chunk and every later one move


def test_chunked_mlp_chunks_are_independent():
    torch.manual_seed(0)
    hnet = ChunkedMLPHypernetwork(DIGITS_MLP_SHAPES, n_tasks=3, emb_dim=8, chunk_emb_dim=8, chunk_size=500,
                                  hidden=[16])
    change = _perturb_chunk_embedding(hnet, 10)
    assert change[10] > 1e-3 and change[:10].max() == 0 and change[11:].max() == 0


def test_lstm_hypernetwork_has_far_fewer_parameters_than_the_mlp_hypernetwork():
    lstm = LSTMHypernetwork(DIGITS_MLP_SHAPES, n_tasks=5, emb_dim=32, chunk_emb_dim=32, chunk_size=300, hidden_size=64)
    mlp = MLPHypernetwork(DIGITS_MLP_SHAPES, n_tasks=5, emb_dim=32, hidden=[100, 100])
    n_chunks = -(-16_802 // 300)
    expected = 5 * 32 + n_chunks * 32 + 4 * 64 * (64 + 64) + 2 * 4 * 64 + 64 * 300 + 300
    assert lstm.num_params() == expected == 54_764
    assert lstm.num_params() * 30 < mlp.num_params()
    assert lstm([0, 1, 4]).shape == (3, 16_802)


def test_network_growth_leaves_earlier_tasks_unchanged():
    torch.manual_seed(0)
    hnet = LSTMHypernetwork(DIGITS_MLP_SHAPES, n_tasks=3, emb_dim=8, chunk_emb_dim=8, chunk_size=1000,
                            hidden_size=16, grow_units=4)
    assert hnet.lstm.hidden_size == 16 + 4 * 2
    before = hnet([0, 1, 2]).detach()
    with torch.no_grad():  # change only what the units of task 2's growth block (units 20..23) read and write
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0"):
            w = getattr(hnet.lstm, name).view(4, 24, -1)
            w[:, 20:] += 0.5
        hnet.readout.weight[:, 20:] += 0.5
    after = hnet([0, 1, 2]).detach()
    torch.testing.assert_close(after[:2], before[:2], rtol=0, atol=0)  # tasks 0 and 1 do not use those units
    assert (after[2] - before[2]).abs().max() > 1e-3
