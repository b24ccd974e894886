"""Continual-learning baselines on the same target network: fine-tuning, online EWC and SI.

The target network is trained directly, with one output head per task
(multi-head, task-incremental): the last layer has ``n_tasks · classes_per_task``
outputs and task t reads its own slice. Class-incremental results use the same
entropy-based task inference as the hypernetworks (the head with the lowest
predictive entropy wins).

- ``finetune``: plain sequential training, no protection of old tasks.
- ``ewc``: online EWC (Schwarz et al. 2018, arXiv 1805.06370; Kirkpatrick et al. 2017, arXiv 1612.00796):
  after task t, F ← γ F + F_t with F_t the diagonal empirical Fisher information (mean squared
  per-example gradients of the task loss at the end of the task); the loss gets
  λ/2 · Σ_i F_i (θ_i − θ*_i)², θ* the parameters after the previous task.
- ``si``: Synaptic Intelligence (Zenke, Poole, Ganguli 2017, arXiv 1703.04200): along the training
  path ω_i += −g_i Δθ_i each step; after task t, Ω_i += ω_i / ((Δ_i)² + ξ) with Δ the parameter
  change over the task; the loss gets c · Σ_i Ω_i (θ_i − θ*_i)².

Differences: the EWC Fisher uses the true labels (empirical Fisher), and SI's path integral uses
the gradient of the whole loss (task loss + SI penalty), as common reference implementations do.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from tsuite.vision_video.continual import ContinualLearner
from tsuite.vision_video.target_nets import build_target


class TargetNetContinual(ContinualLearner):
    """Fine-tuning, online EWC or SI on a multi-head target network.

    Args:
        method: ``finetune`` | ``ewc`` | ``si``.
        target, target_hidden: the target network (as for the hypernetwork learners).
        ewc_lambda, ewc_gamma: online EWC strength λ and decay γ.
        si_c, si_xi: SI strength c and damping ξ.
        lr: Adam learning rate. Other arguments as in :class:`HypernetworkContinual`.
    """

    def __init__(self, n_tasks: int = 5, input_shape: list[int] = (1, 8, 8), classes_per_task: int = 2,
                 epochs_per_task: int = 20, method: Literal["finetune", "ewc", "si"] = "finetune",
                 target: Literal["mlp", "cnn"] = "mlp", target_hidden: list[int] = (100, 100),
                 ewc_lambda: float = 100.0, ewc_gamma: float = 1.0, si_c: float = 1.0, si_xi: float = 0.1,
                 lr: float = 0.001, task_classes: list[list[int]] | None = None):
        super().__init__(n_tasks, list(input_shape), classes_per_task, epochs_per_task, lr, task_classes)
        self.save_hyperparameters()
        self.method = method
        self.net = build_target(target, list(input_shape), n_tasks * classes_per_task, list(target_hidden))
        for name, p in self.net.named_parameters():
            key = name.replace(".", "_")
            self.register_buffer(f"anchor_{key}", p.detach().clone(), persistent=False)  # θ*
            self.register_buffer(f"omega_{key}", torch.zeros_like(p), persistent=False)  # F (EWC) or Ω (SI)
            self.register_buffer(f"path_{key}", torch.zeros_like(p), persistent=False)  # SI: ω along the path
            self.register_buffer(f"prev_{key}", p.detach().clone(), persistent=False)  # SI: θ before the step

    def _buf(self, kind: str, name: str) -> torch.Tensor:
        return getattr(self, f"{kind}_{name.replace('.', '_')}")

    def task_parameters(self, task: int) -> list[torch.nn.Parameter]:
        return list(self.net.parameters())

    def logits(self, x: torch.Tensor, task: int) -> torch.Tensor:
        c = self.n_classes
        return self.net(x)[:, task * c : (task + 1) * c]  # (B, C): the head of this task

    def penalty(self) -> torch.Tensor:
        total = torch.zeros((), device=self.device)
        for name, p in self.net.named_parameters():
            total = total + (self._buf("omega", name) * (p - self._buf("anchor", name)) ** 2).sum()
        if self.method == "ewc":
            return 0.5 * self.hparams.ewc_lambda * total
        return self.hparams.si_c * total

    def training_loss(self, x: torch.Tensor, y: torch.Tensor, task: int) -> torch.Tensor:
        loss = F.cross_entropy(self.logits(x, task), y)
        if self.method != "finetune" and task > 0:
            reg = self.penalty()
            self.log("train_reg", reg)
            loss = loss + reg
        return loss

    # -- SI path integral ------------------------------------------------------------------------------
    def on_train_batch_start(self, batch, batch_idx) -> None:
        if self.method == "si":
            for name, p in self.net.named_parameters():
                self._buf("prev", name).copy_(p.detach())

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.method == "si":
            for name, p in self.net.named_parameters():
                if p.grad is not None:
                    self._buf("path", name).add_(-p.grad.detach() * (p.detach() - self._buf("prev", name)))

    # -- consolidation ---------------------------------------------------------------------------------
    def end_task(self, task: int) -> None:
        if self.method == "ewc":
            data = self.trainer.datamodule.tasks[task]
            fisher = self.empirical_fisher(task, data.x_train, data.y_train)
            for name, p in self.net.named_parameters():
                omega = self._buf("omega", name)
                omega.mul_(self.hparams.ewc_gamma).add_(fisher[name])
        elif self.method == "si":
            for name, p in self.net.named_parameters():
                delta = p.detach() - self._buf("anchor", name)
                self._buf("omega", name).add_(self._buf("path", name) / (delta**2 + self.hparams.si_xi))
                self._buf("path", name).zero_()
        for name, p in self.net.named_parameters():
            self._buf("anchor", name).copy_(p.detach())

    def empirical_fisher(self, task: int, x_all: torch.Tensor, y_all: torch.Tensor) -> dict[str, torch.Tensor]:
        """Mean squared per-example gradients of task ``task``'s loss on (x_all, y_all) (vmap over examples)."""
        params = {k: v.detach() for k, v in self.net.named_parameters()}
        c = self.n_classes

        def loss_one(p, x, y):
            out = functional_call(self.net, p, (x[None],))[:, task * c : (task + 1) * c]
            return F.cross_entropy(out, y[None])

        sums = {k: torch.zeros_like(v) for k, v in params.items()}
        for x, y in zip(x_all.split(128), y_all.split(128)):
            grads = vmap(grad(loss_one), in_dims=(None, 0, 0))(params, x.to(self.device), y.to(self.device))
            for k in sums:
                sums[k] += (grads[k] ** 2).sum(0)
        return {k: v / len(x_all) for k, v in sums.items()}
