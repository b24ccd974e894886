# LRCN activity recognition and video captioning (docs/lrcn.md).
from tsuite.vision_video.caption_metrics import bleu, caption_scores, cider_d
from tsuite.vision_video.lrcn import LRCN
from tsuite.vision_video.lrcn_captioner import LRCNCaptioner
from tsuite.vision_video.shapes import MovingShapes
from tsuite.vision_video.video_data import VideoDataModule, read_video
from tsuite.vision_video.vocab import Vocab
# Continual learning with hypernetworks (docs/continual.md).
from tsuite.vision_video.continual import ContinualLearner, HypernetworkContinual, continual_metrics
from tsuite.vision_video.continual_baselines import TargetNetContinual
from tsuite.vision_video.hypernetworks import ChunkedMLPHypernetwork, LSTMHypernetwork, MLPHypernetwork
from tsuite.vision_video.target_nets import TargetCNN, TargetMLP
from tsuite.vision_video.task_data import ContinualDataModule, build_tasks, read_cifar_batch, read_idx, read_mnist
