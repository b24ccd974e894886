"""LRCN for activity recognition: a per-frame CNN, an LSTM over time, class scores averaged over frames.

Donahue, Hendricks, Guadarrama, Rohrbach, Venugopalan, Saenko, Darrell.
"Long-term Recurrent Convolutional Networks for Visual Recognition and
Description", arXiv 1411.4389 (CVPR 2015), section 4 (activity recognition).

Each frame x_t goes through the CNN φ (shared over time); an LSTM reads
φ(x_1) … φ(x_T); a linear layer on every hidden state h_t gives class scores
and the softmax probabilities are averaged over the T steps. Training uses the
cross-entropy of every step's prediction with the clip's label (the paper
trains on clips of T frames and predicts at every step). At test time the
clips of a video are read with a stride and their averaged probabilities give
the video-level prediction; both clip and video accuracy are logged.

Differences from the paper: the CNN is a small one with batch norm, trained from
scratch (or a randomly initialised ResNet-18) instead of an ImageNet-pretrained CaffeNet,
on RGB frames only (no optical-flow stream); Adam instead of SGD; the LSTM
width follows the paper (256 units) by default.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from tsuite.module import TsuiteModule
from tsuite.tables import InputError
from tsuite.vision_video.frame_encoder import EncoderName, FrameEncoder
from tsuite.vision_video.video_data import resize_frames, table_frames


class LRCN(TsuiteModule):
    """LRCN activity recognition model.

    Args:
        classes: class names (None: taken from the data module when fitting starts).
        clip_frames, input_size: clip length T and frame side (None: the data module's n_frames and frame_size).
        encoder, feature_dim, freeze_encoder, channels: the per-frame CNN (:class:`FrameEncoder`).
        hidden_size: LSTM units (256 in the paper).
        dropout: dropout on the CNN features and the LSTM outputs.
        predict_stride: default stride between the clips of a video in :meth:`predict_frame`.
        lr, weight_decay: Adam.
    """

    def __init__(
        self,
        classes: list[str] | None = None,
        clip_frames: int | None = None,
        input_size: int | None = None,
        encoder: EncoderName = "small",
        feature_dim: int = 256,
        freeze_encoder: bool = False,
        channels: int = 16,
        hidden_size: int = 256,
        dropout: float = 0.5,
        predict_stride: int = 2,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.built = False
        if classes is not None and clip_frames is not None and input_size is not None:
            self._build()

    def _build(self) -> None:
        hp = self.hparams
        self.encoder = FrameEncoder(hp.input_size, hp.feature_dim, hp.encoder, hp.freeze_encoder, hp.channels)
        self.lstm = nn.LSTM(hp.feature_dim, hp.hidden_size, batch_first=True)
        self.drop = nn.Dropout(hp.dropout)
        self.head = nn.Linear(hp.hidden_size, len(hp.classes))
        k = len(hp.classes)
        self.metrics = nn.ModuleDict({s: MulticlassAccuracy(num_classes=k, average="micro")
                                      for s in ("val", "test", "test_unseen")})
        self.built = True
        self._eval: dict[str, dict[str, list[torch.Tensor]]] = {}

    def setup(self, stage: str) -> None:
        data = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if data is None or not hasattr(data, "classes"):
            if not self.built:
                raise InputError("LRCN needs classes, clip_frames and input_size, or a VideoDataModule to take them from")
            return
        data.setup(stage)
        found = {"classes": list(data.classes), "clip_frames": data.n_frames, "input_size": data.frame_size}
        if self.built:
            for key, value in found.items():
                if self.hparams[key] != value:
                    raise InputError(f"model.{key}={self.hparams[key]} but the data has {key}={value}; "
                                     "set the same value in the config")
            return
        self.hparams.update(found)
        self._build()

    # -- model -----------------------------------------------------------------------------------
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames (B, T, H, W, 3) uint8 → per-step class scores (B, T, K)."""
        feats = self.drop(self.encoder(frames))  # (B, T, D)
        h, _ = self.lstm(feats)  # (B, T, hidden)
        return self.head(self.drop(h))  # (B, T, K)

    def clip_probs(self, frames: torch.Tensor) -> torch.Tensor:
        """Class probabilities of each clip (B, K): the softmax of every step, averaged over time."""
        return self(frames).softmax(-1).mean(1)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self(batch["frames"])  # (B, T, K)
        target = batch["label"][:, None].expand(-1, logits.shape[1])  # (B, T)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
        self.log("train_loss", loss, prog_bar=True, batch_size=len(target))
        return loss

    def _split(self, stage: str, dataloader_idx: int) -> str:
        if stage == "val":
            return "val"
        names = getattr(self.trainer.datamodule, "test_split_names", ["test"])
        return names[dataloader_idx]

    def _eval_step(self, batch: dict, split: str) -> None:
        logits = self(batch["frames"])
        target = batch["label"]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                               target[:, None].expand(-1, logits.shape[1]).reshape(-1))
        probs = logits.softmax(-1).mean(1)  # (B, K)
        self.metrics[split].update(probs, target)
        self.log(f"{split}_loss", loss, batch_size=len(target), add_dataloader_idx=False, sync_dist=True)
        store = self._eval.setdefault(split, {"probs": [], "video": [], "label": []})
        store["probs"].append(probs.detach().cpu())
        store["video"].append(batch["video"].cpu())
        store["label"].append(target.cpu())

    def _eval_end(self) -> None:
        for split, store in self._eval.items():
            probs, video, label = (torch.cat(store[k]) for k in ("probs", "video", "label"))
            if self.trainer.world_size > 1:  # DDP: a video's clips are spread over the ranks; vote over all of them
                probs, video, label = (self.all_gather(t.to(self.device)).flatten(0, 1).cpu()
                                       for t in (probs, video, label))
            n = int(video.max()) + 1
            summed = torch.zeros(n, probs.shape[1]).index_add_(0, video, probs)  # (V, K)
            video_label = torch.zeros(n, dtype=torch.long).index_put_((video,), label)
            present = torch.zeros(n, dtype=torch.bool).index_fill_(0, video, True)
            video_acc = (summed.argmax(1) == video_label)[present].float().mean()
            self.log(f"{split}_acc_clip", self.metrics[split].compute(), add_dataloader_idx=False)
            self.log(f"{split}_acc_video", video_acc, add_dataloader_idx=False)
            self.metrics[split].reset()
        self._eval = {}

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_end()

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, self._split("test", dataloader_idx))

    def on_test_epoch_end(self) -> None:
        self._eval_end()

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        """Clip probabilities (B, K) and the video index of each clip (the predict loop of ``tsuite predict``)."""
        return {"probs": self.clip_probs(batch["frames"]), "video": batch["video"]}

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.Adam(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    # -- tables ----------------------------------------------------------------------------------
    def predict_params(self) -> dict[str, Any]:
        return {"clip_stride": int(self.hparams.predict_stride)}

    @torch.no_grad()
    def predict_video(self, frames: np.ndarray, clip_stride: int | None = None) -> np.ndarray:
        """Class probabilities (K,) of one video (N, H, W, 3) uint8: clips of T frames at a stride, averaged."""
        T, stride = self.hparams.clip_frames, int(clip_stride or self.hparams.predict_stride)
        video = resize_frames(frames, self.hparams.input_size)
        if len(video) < T:
            raise InputError(f"a video of {len(video)} frames is shorter than the model's clip length {T}")
        starts = range(0, len(video) - T + 1, max(stride, 1))
        clips = torch.from_numpy(np.stack([video[s : s + T] for s in starts]))  # (C, T, S, S, 3)
        self.eval()
        return self.clip_probs(clips.to(self.device)).mean(0).cpu().numpy()

    def predict_frame(self, df: pd.DataFrame, clip_stride: int | None = None) -> pd.DataFrame:
        """Activity of each clip of a frames table (clip, frames, shape): ``label`` and ``prob_<class>`` columns."""
        rows = table_frames(df)
        probs = np.stack([self.predict_video(v, clip_stride) for _, v in rows]) if rows else np.zeros(
            (0, len(self.hparams.classes)))
        classes = list(self.hparams.classes)
        out = {"clip": [name for name, _ in rows], "label": [classes[i] for i in probs.argmax(1)]}
        for k, c in enumerate(classes):
            out[f"prob_{c}"] = probs[:, k].astype(np.float64)
        return pd.DataFrame(out)
