"""Task-conditioned hypernetworks: a learned task embedding e_t in, all weights of a target network out.

- :class:`MLPHypernetwork`: von Oswald, Henning, Grewe, Sacramento, "Continual
  learning with hypernetworks", ICLR 2020, arXiv 1906.00695. An MLP maps e_t to
  the whole flat weight vector of the target network in one shot (the paper's
  non-chunked "HNET"). Layers and initialisation as in the authors' package
  hypnettorch (``HMLP``): ReLU hidden layers with PyTorch's default init, task
  embeddings drawn from N(0, 1); the parameter count is identical to ``HMLP``
  for the same sizes (checked in tests and the benchmark).
- :class:`ChunkedMLPHypernetwork`: the same paper's chunked hypernetwork. The
  MLP maps [e_t, c_i] to chunk i of ``chunk_size`` weights, for learned chunk
  embeddings c_1..c_n shared across tasks; the chunks are concatenated and the
  tail cut to the target's size (hypnettorch's ``ChunkedHMLP``).
- :class:`LSTMHypernetwork`: Chandra, Varshney, Srijith, Gupta, "Continual
  learning with dependency preserving hypernetworks", WACV 2023 (pp. 2338-2347),
  arXiv 2209.07712. What the paper states in its abstract and introduction:
  existing hypernetworks assume the weights of different layers independent in
  order to stay parameter-efficient, which hurts continual learning; an RNN
  hypernetwork generates the layer weights efficiently while allowing for
  dependencies across them; and it adds "novel regularisation and network growth
  techniques" for the RNN hypernetwork. Only the abstract and the opening of
  the introduction were consulted; the method section (the equations, the
  RNN's input at each step, the regulariser, the growth rule, the sizes used)
  was not, so the three parts below are a design consistent with that summary,
  not checked against the paper's equations (docs/continual.md):

  * generation: an LSTM runs over the chunk sequence, input [e_t, c_i] at step
    i (c_i a learned chunk embedding, as in von Oswald's chunked hypernetwork),
    and a linear read-out maps its hidden state to chunk i. Chunks follow the
    target's parameters in order (layer by layer, weight then bias), so later
    weights depend, through the recurrent state, on those generated before them
    (tested), while the generator is one small LSTM cell (far fewer parameters
    than the MLP hypernetwork, whose output layer alone has hidden × P weights);
  * regulariser: von Oswald's output regulariser, optionally weighted per
    generated weight by a diagonal Fisher information
    (:mod:`tsuite.vision_video.continual`, ``importance=True``);
  * network growth, below.

  Network growth: with ``grow_units > 0`` the LSTM holds
  ``hidden_size + grow_units·(n_tasks−1)`` units and task t uses the first
  ``hidden_size + grow_units·t`` of them; the units beyond a task's share get
  zero gate weights for that task, so their states stay exactly zero: a later
  task's new units add capacity for it without changing what the hypernetwork
  generates for earlier tasks. The units are allocated up front and masked (so
  the model's shapes do not depend on how many tasks were trained, and it
  rebuilds from its hyperparameters), and growth is per task, not triggered by
  a criterion.

Every hypernetwork returns flat weights (K, P) for K task ids; cut them with
:func:`tsuite.vision_video.target_nets.unflatten`.
"""

from __future__ import annotations

import abc

import math

import torch
from torch import nn
from torch.func import functional_call


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class Hypernetwork(nn.Module, abc.ABC):
    """Base: ``n_tasks`` task embeddings (N(0, 1), as in the paper) and ``forward(task_ids) -> (K, P)``."""

    def __init__(self, target_shapes: list[list[int]], n_tasks: int, emb_dim: int):
        super().__init__()
        self.target_shapes = [list(s) for s in target_shapes]
        self.n_outputs = sum(math.prod(s) for s in self.target_shapes)
        self.task_embs = nn.ParameterList(nn.Parameter(torch.randn(emb_dim)) for _ in range(n_tasks))

    def task_embedding(self, task: int) -> nn.Parameter:
        return self.task_embs[task]

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters shared by all tasks (everything but the task embeddings): θ of the paper."""
        own = {id(p) for p in self.task_embs}
        return [p for p in self.parameters() if id(p) not in own]

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def embeddings(self, task_ids: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.task_embs[int(t)] for t in task_ids])  # (K, E)

    def forward(self, task_ids: torch.Tensor | list[int]) -> torch.Tensor:
        """Flat target weights (K, P) for the task ids (K,)."""
        ids = torch.as_tensor(task_ids).reshape(-1)
        return self.generate(self.embeddings(ids), ids)

    @abc.abstractmethod
    def generate(self, emb: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        """Implemented by each subclass."""


class MLPHypernetwork(Hypernetwork):
    """von Oswald et al. (2020) full hypernetwork: e_t → MLP(hidden) → all P target weights.

    Args:
        target_shapes: parameter shapes of the target network.
        n_tasks: number of task embeddings.
        emb_dim: task embedding size.
        hidden: widths of the hidden layers (the paper's MNIST runs use 100, 100 / 25, 25).
    """

    def __init__(self, target_shapes: list[list[int]], n_tasks: int, emb_dim: int = 32,
                 hidden: list[int] | tuple[int, ...] = (100, 100)):
        super().__init__(target_shapes, n_tasks, emb_dim)
        self.net = _mlp([emb_dim, *hidden, self.n_outputs])

    def generate(self, emb: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        return self.net(emb)  # (K, E) -> (K, P)


class ChunkedMLPHypernetwork(Hypernetwork):
    """von Oswald et al. (2020) chunked hypernetwork: [e_t, c_i] → MLP → chunk i (``chunk_size`` weights).

    Args:
        chunk_size: weights generated per chunk; n_chunks = ceil(P / chunk_size).
        chunk_emb_dim: size of the chunk embeddings c_i (N(0, 1) init).
    """

    def __init__(self, target_shapes: list[list[int]], n_tasks: int, emb_dim: int = 32, chunk_emb_dim: int = 32,
                 chunk_size: int = 300, hidden: list[int] | tuple[int, ...] = (100, 100)):
        super().__init__(target_shapes, n_tasks, emb_dim)
        self.chunk_size = chunk_size
        self.n_chunks = math.ceil(self.n_outputs / chunk_size)
        self.chunk_embs = nn.Parameter(torch.randn(self.n_chunks, chunk_emb_dim))
        self.net = _mlp([emb_dim + chunk_emb_dim, *hidden, chunk_size])

    def generate(self, emb: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        k, n = emb.shape[0], self.n_chunks
        x = torch.cat([emb[:, None].expand(k, n, -1), self.chunk_embs[None].expand(k, n, -1)], dim=-1)  # (K, n, E+C)
        chunks = self.net(x)  # (K, n, chunk_size)
        return chunks.reshape(k, -1)[:, : self.n_outputs]  # (K, P)


class LSTMHypernetwork(Hypernetwork):
    """Chandra et al. (2023) RNN hypernetwork: an LSTM over the chunks, [e_t, c_i] in, chunk i out.

    Args:
        chunk_size: weights generated per step; the LSTM runs n_chunks = ceil(P / chunk_size) steps.
        chunk_emb_dim: size of the chunk embeddings c_i.
        hidden_size: LSTM units used by every task.
        grow_units: extra LSTM units given to each new task (network growth; 0 turns it off).
    """

    def __init__(self, target_shapes: list[list[int]], n_tasks: int, emb_dim: int = 32, chunk_emb_dim: int = 32,
                 chunk_size: int = 300, hidden_size: int = 64, grow_units: int = 0):
        super().__init__(target_shapes, n_tasks, emb_dim)
        self.chunk_size, self.hidden_size, self.grow_units = chunk_size, hidden_size, grow_units
        self.n_chunks = math.ceil(self.n_outputs / chunk_size)
        self.chunk_embs = nn.Parameter(torch.randn(self.n_chunks, chunk_emb_dim))
        total = hidden_size + grow_units * (n_tasks - 1)
        self.lstm = nn.LSTM(emb_dim + chunk_emb_dim, total, batch_first=True)
        self.readout = nn.Linear(total, chunk_size)

    def unit_mask(self, task_ids: torch.Tensor) -> torch.Tensor:
        """(K, units) 1 for the LSTM units task t may use: hidden_size + grow_units · t."""
        units = torch.arange(self.lstm.hidden_size, device=task_ids.device)
        return (units[None] < (self.hidden_size + self.grow_units * task_ids[:, None])).float()

    def generate(self, emb: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        k, n = emb.shape[0], self.n_chunks
        x = torch.cat([emb[:, None].expand(k, n, -1), self.chunk_embs[None].expand(k, n, -1)], dim=-1)  # (K, n, E+C)
        if self.grow_units == 0:
            h, _ = self.lstm(x)  # (K, n, H)
        else:
            # A task's unused units get all-zero gate weights and biases: with a zero initial state their
            # cell and hidden states then stay exactly 0 (c = ½·c + ½·tanh(0), h = ½·tanh(c)), so they
            # neither carry nor receive anything. One LSTM call per distinct task.
            h = x.new_zeros(k, n, self.lstm.hidden_size)
            masks = self.unit_mask(task_ids.to(emb.device))  # (K, H)
            for t in task_ids.unique():
                rows = (task_ids == t).nonzero().flatten().to(emb.device)
                gate_mask = masks[rows[0]].repeat(4)  # (4H,): gates i, f, g, o of each unit
                params = {name: w * (gate_mask[:, None] if w.dim() == 2 else gate_mask)
                          for name, w in self.lstm.named_parameters()}
                h[rows] = functional_call(self.lstm, params, (x[rows],))[0]  # (K_t, n, H)
        chunks = self.readout(h)  # (K, n, chunk_size)
        return chunks.reshape(k, -1)[:, : self.n_outputs]  # (K, P)


class HypnettorchMLP(Hypernetwork):
    """The authors' ``hypnettorch.hnets.HMLP`` behind the same interface (optional peer, for comparison only)."""

    def __init__(self, target_shapes: list[list[int]], n_tasks: int, emb_dim: int = 32,
                 hidden: list[int] | tuple[int, ...] = (100, 100)):
        nn.Module.__init__(self)
        from hypnettorch.hnets import HMLP

        self.target_shapes = [list(s) for s in target_shapes]
        self.n_outputs = sum(math.prod(s) for s in self.target_shapes)
        self.hnet = HMLP(self.target_shapes, uncond_in_size=0, cond_in_size=emb_dim, layers=list(hidden),
                         num_cond_embs=n_tasks, verbose=False)

    def task_embedding(self, task: int) -> nn.Parameter:
        return self.hnet.conditional_params[task]

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.hnet.unconditional_params)

    def forward(self, task_ids: torch.Tensor | list[int]) -> torch.Tensor:
        ids = [int(t) for t in torch.as_tensor(task_ids).reshape(-1)]
        return self.hnet.forward(cond_id=ids, ret_format="flattened")  # (K, P)


def build_hypernetwork(kind: str, target_shapes: list[list[int]], n_tasks: int, emb_dim: int, hidden: list[int],
                       chunk_size: int, chunk_emb_dim: int, lstm_hidden: int, grow_units: int) -> Hypernetwork:
    """``mlp`` | ``chunked_mlp`` | ``lstm`` | ``hypnettorch_mlp`` with the given sizes."""
    if kind == "mlp":
        return MLPHypernetwork(target_shapes, n_tasks, emb_dim, hidden)
    if kind == "chunked_mlp":
        return ChunkedMLPHypernetwork(target_shapes, n_tasks, emb_dim, chunk_emb_dim, chunk_size, hidden)
    if kind == "lstm":
        return LSTMHypernetwork(target_shapes, n_tasks, emb_dim, chunk_emb_dim, chunk_size, lstm_hidden, grow_units)
    if kind == "hypnettorch_mlp":
        return HypnettorchMLP(target_shapes, n_tasks, emb_dim, hidden)
    raise ValueError(f"unknown hypernetwork {kind!r}; expected mlp, chunked_mlp, lstm or hypnettorch_mlp")
