"""Continual learning over a task sequence in one Lightning fit, with hypernetwork learners and the regularisers.

:class:`ContinualLearner` is the shared base: the model learns task
``current_epoch // epochs_per_task`` (the data module's training loader follows
it; the optimizer is rebuilt at each task switch, as in von Oswald et al.);
after each task it evaluates every task's test split and fills the accuracy
matrix R[i, j] (accuracy on task j after training task i), once with the task
given (task-incremental) and once with the task inferred by the lowest
predictive entropy over the tasks learnt so far (class-incremental). At the end
of training it logs R to MLflow (a table, a CSV and a heatmap) with the
summary metrics of :func:`continual_metrics`.

:class:`HypernetworkContinual` trains a task-conditioned hypernetwork
(:mod:`tsuite.vision_video.hypernetworks`) that generates all weights of a
target network (:mod:`tsuite.vision_video.target_nets`), with the output
regulariser of von Oswald et al. 2020 (arXiv 1906.00695):

    L = CE(f(x; h(e_T, θ)), y) + β/(T−1) · Σ_{t<T} ‖h(e_t, θ*) − h(e_t, θ)‖²

where θ* are the hypernetwork's parameters before task T (stored as the
weights they generate, so no old data is replayed) and the e_t (t < T) are the
stored task embeddings, held fixed. Differences from the paper: no look-ahead
(ΔΘ) in the regulariser; the old embeddings are not trained further.

With ``importance=True`` each old task's squared differences are weighted by
the diagonal (empirical, per-batch) Fisher information of its task loss with
respect to its generated weights, normalised to mean 1: our reading of the
regulariser proposed for the RNN hypernetwork of Chandra et al. 2023 (arXiv
2209.07712), not a verified reproduction of its equation: only the paper's
abstract and the opening of its introduction were consulted (docs/continual.md).
Off by default; it did not help on permuted digits.
"""

from __future__ import annotations

import abc

import math
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.functional.classification import multiclass_accuracy

from tsuite.module import TsuiteModule
from tsuite.tables import InputError
from tsuite.vision_video.hypernetworks import build_hypernetwork
from tsuite.vision_video.target_nets import build_target, unflatten


def continual_metrics(R: np.ndarray) -> dict[str, float]:
    """Summary of an accuracy matrix R (T, T), in the units of R.

    avg_acc = 1/T Σ_j R[T−1, j]; BWT (Lopez-Paz & Ranzato 2017) = 1/(T−1) Σ_{i<T−1} R[T−1, i] − R[i, i];
    forgetting (Chaudhry et al. 2018) = 1/(T−1) Σ_{j<T−1} max_{l<T−1} R[l, j] − R[T−1, j].
    With T = 1, BWT and forgetting are 0.
    """
    R = np.asarray(R, dtype=float)
    T = R.shape[0]
    out = {"avg_acc": float(R[-1].mean())}
    if T == 1:
        return {**out, "bwt": 0.0, "forgetting": 0.0}
    out["bwt"] = float(np.mean([R[-1, i] - R[i, i] for i in range(T - 1)]))
    out["forgetting"] = float(np.mean([R[: T - 1, j].max() - R[-1, j] for j in range(T - 1)]))
    return out


def output_regularizer(generated: torch.Tensor, stored: torch.Tensor, beta: float,
                       importance: torch.Tensor | None = None) -> torch.Tensor:
    """β/(T−1) Σ_t ‖h(e_t, θ*) − h(e_t, θ)‖² over the K = T−1 old tasks (K, P), optionally weighted."""
    sq = (generated - stored) ** 2  # (K, P)
    if importance is not None:
        sq = sq * importance
    return beta * sq.sum(-1).mean()


class ContinualLearner(TsuiteModule):
    """Base of the continual learners: task schedule, evaluation matrix, MLflow logging and the table interface.

    Subclasses implement :meth:`logits` (task-local logits of task t), :meth:`training_loss`,
    :meth:`task_parameters` and optionally :meth:`begin_task` / :meth:`end_task`.
    """

    def __init__(self, n_tasks: int, input_shape: list[int], classes_per_task: int, epochs_per_task: int,
                 lr: float, task_classes: list[list[int]] | None):
        super().__init__()
        self.n_tasks, self.input_shape, self.n_classes = n_tasks, list(input_shape), classes_per_task
        self.epochs_per_task, self.lr = epochs_per_task, lr
        self.register_buffer("acc_matrix", torch.full((n_tasks, n_tasks), float("nan")))
        self.register_buffer("cil_matrix", torch.full((n_tasks, n_tasks), float("nan")))
        self.register_buffer("tasks_done", torch.zeros((), dtype=torch.long))
        self._active_task = -1
        self.val_acc, self.test_acc = MeanMetric(), MeanMetric()

    # -- to implement --------------------------------------------------------------------------------
    @abc.abstractmethod
    def logits(self, x: torch.Tensor, task: int) -> torch.Tensor:
        """Implemented by each subclass."""

    @abc.abstractmethod
    def training_loss(self, x: torch.Tensor, y: torch.Tensor, task: int) -> torch.Tensor:
        """Implemented by each subclass."""

    @abc.abstractmethod
    def task_parameters(self, task: int) -> list[torch.nn.Parameter]:
        """Implemented by each subclass."""

    def begin_task(self, task: int) -> None:
        """Called before the first step of ``task``."""

    def end_task(self, task: int) -> None:
        """Called after the last step of ``task`` (consolidation)."""

    def count_parameters(self) -> int:
        """Trainable parameters of the method (for the comparison table)."""
        return sum(p.numel() for p in self.parameters())

    # -- schedule --------------------------------------------------------------------------------------
    @property
    def current_task(self) -> int:
        return min(self.current_epoch // self.epochs_per_task, self.n_tasks - 1)

    def on_fit_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "task_classes"):
            if dm.n_tasks != self.n_tasks or dm.input_shape != self.input_shape:
                raise InputError(f"the data has {dm.n_tasks} tasks of images {dm.input_shape}, but the model was "
                                 f"built for n_tasks={self.n_tasks}, input_shape={self.input_shape}; set them to match")
            sizes = {len(c) for c in dm.task_classes}
            if sizes != {self.n_classes}:
                raise InputError(f"the data's tasks have {sorted(sizes)} classes, but classes_per_task="
                                 f"{self.n_classes}; set classes_per_task to match")
            self.hparams["task_classes"] = dm.task_classes
        budget = self.n_tasks * self.epochs_per_task
        if self.trainer.max_epochs is not None and self.trainer.max_epochs > budget:
            raise InputError(f"trainer.max_epochs={self.trainer.max_epochs} is more than n_tasks × epochs_per_task = "
                             f"{budget}; set max_epochs to {budget} (or fewer to stop early)")
        if self.trainer.reload_dataloaders_every_n_epochs != 1:
            raise InputError("continual learning needs trainer.reload_dataloaders_every_n_epochs: 1 (the training "
                             "loader follows the current task)")

    def on_train_epoch_start(self) -> None:
        task = self.current_task
        if task != self._active_task:
            if self._active_task >= 0 and int(self.tasks_done) <= self._active_task:
                self._finish_task(self._active_task)
            self._active_task = task
            self.begin_task(task)
            self.trainer.strategy.setup_optimizers(self.trainer)  # a fresh optimizer per task

    def on_train_epoch_end(self) -> None:
        last_of_task = (self.current_epoch + 1) % self.epochs_per_task == 0
        if last_of_task and self.current_epoch // self.epochs_per_task < self.n_tasks:
            self._finish_task(self.current_task)

    def on_train_end(self) -> None:
        if self._active_task >= 0 and int(self.tasks_done) <= self._active_task:
            self._finish_task(self._active_task)  # training stopped inside a task (max_steps, early stop)
        self._log_results()

    def _finish_task(self, task: int) -> None:
        was_training = self.training
        self.eval()
        with torch.enable_grad():
            self.end_task(task)
        self.evaluate_row(task)
        self.tasks_done.fill_(task + 1)
        self.train(was_training)

    def configure_optimizers(self):
        return torch.optim.Adam(self.task_parameters(max(self._active_task, 0)), lr=self.lr)

    # -- steps -----------------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.training_loss(x, y, self.current_task)
        if self._trainer is not None and self.trainer.world_size > 1:
            # DDP waits for a gradient of every trainable parameter; the embeddings of tasks not yet learnt
            # have none, so they join the loss at weight 0 (their gradient is 0; they are in no optimizer)
            loss = loss + 0.0 * sum(p.sum() for p in self.parameters() if p.requires_grad)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        if dataloader_idx > self.current_task:
            return  # tasks not yet learnt
        x, y = batch
        self.val_acc.update(multiclass_accuracy(self.logits(x, dataloader_idx).argmax(-1), y, self.n_classes,
                                                average="micro"), len(y))

    def on_validation_epoch_end(self) -> None:
        if self.val_acc.update_count:
            self.log("val_acc", self.val_acc.compute())  # over the tasks learnt so far
        self.val_acc.reset()

    def test_step(self, batch, batch_idx, dataloader_idx: int = 0):
        x, y = batch
        self.test_acc.update(multiclass_accuracy(self.logits(x, dataloader_idx).argmax(-1), y, self.n_classes,
                                                 average="micro"), len(y))

    def predict_step(self, batch, batch_idx, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        """Per task's loader: the local class with the task given and the (task, class) inferred by entropy."""
        x = batch[0]
        task, cls, _ = self.infer_task(x, max(int(self.tasks_done), 1))
        return {"task_given_class": self.logits(x, dataloader_idx).argmax(-1), "inferred_task": task,
                "inferred_class": cls}

    def forward(self, x: torch.Tensor, task: int) -> torch.Tensor:
        return self.logits(x, task)  # (B, C) task-local logits

    def on_test_epoch_end(self) -> None:
        self.log("test_acc", self.test_acc.compute())  # over all tasks, task given
        self.test_acc.reset()

    # -- evaluation ------------------------------------------------------------------------------------
    @torch.no_grad()
    def infer_task(self, x: torch.Tensor, n_seen: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Task inference by predictive entropy: (task (B,), local class (B,), probability (B,)) over tasks < n_seen."""
        probs = torch.stack([self.logits(x, t).softmax(-1) for t in range(n_seen)])  # (S, B, C)
        entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1)  # (S, B)
        task = entropy.argmin(0)  # (B,)
        p = probs[task, torch.arange(x.shape[0])]  # (B, C)
        conf, cls = p.max(-1)
        return task, cls, conf

    @torch.no_grad()
    def evaluate_row(self, row: int) -> None:
        """Fill R[row, :] (task given) and the class-incremental row (task inferred among tasks ≤ row), in %."""
        tasks = self.trainer.datamodule.tasks
        for j, task in enumerate(tasks):
            x, y = task.x_test.to(self.device), task.y_test.to(self.device)
            pred = self.logits(x, j).argmax(-1)
            self.acc_matrix[row, j] = 100 * multiclass_accuracy(pred, y, self.n_classes, average="micro")
            if j <= row:
                t_hat, cls, _ = self.infer_task(x, row + 1)
                right = (t_hat == j) & (cls == y)
                self.cil_matrix[row, j] = 100 * right.float().mean()

    def results(self) -> dict[str, Any]:
        """R (task given), class-incremental accuracies and the summary metrics over the tasks trained so far."""
        T = int(self.tasks_done)
        R = self.acc_matrix[:T, :T].cpu().numpy()
        out: dict[str, Any] = {"R": self.acc_matrix[:T].cpu().numpy(), "tasks": T}
        if T:
            out.update(continual_metrics(R))
            out["cil_avg_acc"] = float(np.nanmean(self.cil_matrix[T - 1, :T].cpu().numpy()))
        return out

    def _log_results(self) -> None:
        from lightning.pytorch.loggers import MLFlowLogger

        res = self.results()
        if not res["tasks"]:
            return
        metrics = {f"cl_{k}": v for k, v in res.items() if k not in ("R", "tasks")}
        metrics["n_params"] = float(self.count_parameters())
        logger = self.logger
        if not isinstance(logger, MLFlowLogger) or not self.trainer.is_global_zero:
            return
        logger.log_metrics(metrics, step=int(self.global_step))
        R = res["R"]
        df = pd.DataFrame(R, columns=[f"task_{j}" for j in range(R.shape[1])])
        df.insert(0, "after_task", range(len(df)))
        client, run = logger.experiment, logger.run_id
        client.log_table(run, data=df, artifact_file="accuracy_matrix.json")
        client.log_text(run, df.to_csv(index=False), "accuracy_matrix.csv")
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return
        fig, ax = plt.subplots(figsize=(1 + 0.6 * R.shape[1], 1 + 0.6 * R.shape[0]))
        im = ax.imshow(R, vmin=0, vmax=100, cmap="viridis")
        for (i, j), v in np.ndenumerate(R):
            ax.text(j, i, f"{v:.0f}", ha="center", va="center", color="w" if v < 60 else "k", fontsize=7)
        ax.set_xlabel("evaluated on task j")
        ax.set_ylabel("after training task i")
        fig.colorbar(im, ax=ax, label="accuracy (%)")
        fig.tight_layout()
        client.log_figure(run, fig, "accuracy_matrix.png")
        plt.close(fig)

    # -- table interface -------------------------------------------------------------------------------
    def predict_params(self) -> dict[str, Any]:
        return {}

    def predict_frame(self, df: pd.DataFrame, **params: Any) -> pd.DataFrame:
        """Classify images given as ``pixel_0 … pixel_{D-1}`` (and ``task_id``; −1 or absent: infer the task).

        Returns ``task_id`` (given or inferred), ``class`` (the original label) and ``probability``.
        """
        d = math.prod(self.input_shape)
        cols = [f"pixel_{i}" for i in range(d)]
        missing = [c for c in cols if c not in df.columns]
        if missing:
            more = " …" if len(missing) > 3 else ""
            raise InputError(f"input table: missing column(s) {', '.join(missing[:3])}{more}; expected pixel_0 … "
                             f"pixel_{d - 1} (images of shape {self.input_shape}, flattened)")
        values = df[cols].apply(pd.to_numeric, errors="coerce").to_numpy(np.float32)
        if not np.isfinite(values).all():
            r, c = map(int, np.argwhere(~np.isfinite(values))[0])
            raise InputError(f"input table row {r + 1}: {cols[c]} value {df[cols[c]].iloc[r]!r} is not a number; "
                             "expected pixel values")
        n_seen = max(int(self.tasks_done), 1)
        given = (df["task_id"].to_numpy(np.int64) if "task_id" in df.columns else np.full(len(df), -1))
        bad = (given < -1) | (given >= self.n_tasks)
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            raise InputError(f"input table row {r + 1}: task_id {given[r]} is outside -1..{self.n_tasks - 1}; "
                             "expected a task id or -1 to infer it")
        x = torch.from_numpy(values).reshape(len(df), *self.input_shape).to(self.device)
        was_training = self.training
        self.eval()
        with torch.no_grad():
            task, cls, prob = self.infer_task(x, n_seen)
            for t in np.unique(given[given >= 0]):
                rows = torch.from_numpy(np.flatnonzero(given == t))
                p = self.logits(x[rows], int(t)).softmax(-1)
                prob[rows], cls[rows] = p.max(-1)
                task[rows] = int(t)
        self.train(was_training)
        classes = self.hparams.get("task_classes") or [list(range(self.n_classes))] * self.n_tasks
        task_np, cls_np = task.cpu().numpy(), cls.cpu().numpy()
        labels = [classes[t][c] for t, c in zip(task_np, cls_np)]
        return pd.DataFrame({"task_id": task_np.astype(np.int64), "class": np.asarray(labels, dtype=np.int64),
                             "probability": prob.cpu().numpy().astype(np.float64)})


class HypernetworkContinual(ContinualLearner):
    """A task-conditioned hypernetwork that generates the target network's weights, trained task by task.

    Args:
        n_tasks, input_shape, classes_per_task: the task sequence (checked against the data at fit start).
        epochs_per_task: epochs spent on each task.
        hypernetwork: ``lstm`` (Chandra et al. 2023), ``mlp`` / ``chunked_mlp`` (von Oswald et al. 2020) or
            ``hypnettorch_mlp`` (the authors' package, an optional peer).
        target: ``mlp`` (hidden widths ``target_hidden``) or ``cnn`` (channels ``target_hidden``).
        emb_dim: task embedding size. hnet_hidden: MLP hypernetwork widths.
        chunk_size, chunk_emb_dim: chunked / LSTM hypernetworks. lstm_hidden, grow_units: LSTM units, growth.
        beta: strength of the output regulariser. importance: weight it by the Fisher information.
        lr: Adam learning rate. task_classes: original labels of each task (filled from the data).
    """

    def __init__(self, n_tasks: int = 5, input_shape: list[int] = (1, 8, 8), classes_per_task: int = 2,
                 epochs_per_task: int = 20,
                 hypernetwork: Literal["lstm", "mlp", "chunked_mlp", "hypnettorch_mlp"] = "lstm",
                 target: Literal["mlp", "cnn"] = "mlp", target_hidden: list[int] = (100, 100), emb_dim: int = 32,
                 hnet_hidden: list[int] = (100, 100), chunk_size: int = 300, chunk_emb_dim: int = 32,
                 lstm_hidden: int = 64, grow_units: int = 0, beta: float = 0.01, importance: bool = False,
                 lr: float = 0.001, task_classes: list[list[int]] | None = None):
        super().__init__(n_tasks, list(input_shape), classes_per_task, epochs_per_task, lr, task_classes)
        self.save_hyperparameters()
        self.target = build_target(target, list(input_shape), classes_per_task, list(target_hidden))
        self.shapes = self.target.param_shapes()
        self.hnet = build_hypernetwork(hypernetwork, self.shapes, n_tasks, emb_dim, list(hnet_hidden), chunk_size,
                                       chunk_emb_dim, lstm_hidden, grow_units)
        self.beta, self.use_importance = beta, importance
        p = self.hnet.n_outputs
        self.register_buffer("stored", torch.zeros(n_tasks, p), persistent=False)  # h(e_t, θ*) of old tasks
        self.register_buffer("importance", torch.ones(n_tasks, p), persistent=False)
        self.target.requires_grad_(False)  # its own parameters are only placeholders for the generated weights

    def count_parameters(self) -> int:
        return self.hnet.num_params()

    def task_parameters(self, task: int) -> list[torch.nn.Parameter]:
        return [*self.hnet.shared_parameters(), self.hnet.task_embedding(task)]

    def logits(self, x: torch.Tensor, task: int) -> torch.Tensor:
        flat = self.hnet([task])[0]  # (P,)
        return self.target(x, unflatten(flat, self.shapes))  # (B, C)

    def begin_task(self, task: int) -> None:
        if task > 0:
            with torch.no_grad():
                self.stored[:task] = self.hnet(list(range(task)))  # (task, P), θ* = θ before this task

    def end_task(self, task: int) -> None:
        if not self.use_importance:
            return
        weights = self.hnet([task])[0].detach().requires_grad_(True)  # (P,)
        fisher = torch.zeros_like(weights)
        data = self.trainer.datamodule.tasks[task]
        for x, y in zip(data.x_train.split(32), data.y_train.split(32)):
            loss = F.cross_entropy(self.target(x.to(self.device), unflatten(weights, self.shapes)), y.to(self.device))
            (g,) = torch.autograd.grad(loss, weights)
            fisher += g**2
        self.importance[task] = fisher / fisher.mean().clamp_min(1e-20)

    def training_loss(self, x: torch.Tensor, y: torch.Tensor, task: int) -> torch.Tensor:
        flat = self.hnet(list(range(task + 1)))  # (task+1, P): old tasks for the regulariser, then the current one
        loss = F.cross_entropy(self.target(x, unflatten(flat[task], self.shapes)), y)
        if task > 0 and self.beta > 0:
            imp = self.importance[:task] if self.use_importance else None
            reg = output_regularizer(flat[:task], self.stored[:task], self.beta, imp)
            self.log("train_reg", reg)
            loss = loss + reg
        return loss
