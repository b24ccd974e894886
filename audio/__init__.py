"""Speech separation: MossFormer2 and Conv-TasNet networks, mixture data, SI-SNR/PIT losses, the separate job."""

from tsuite.audio.conv_tasnet import ConvTasNet
from tsuite.audio.mossformer2 import MossFormer2
from tsuite.audio.losses import pit_si_snr, pit_si_snr_loss, separation_scores, si_snr
from tsuite.audio.mixture_data import MixtureDataModule, read_audio
from tsuite.audio.separation import SpeechSeparation
