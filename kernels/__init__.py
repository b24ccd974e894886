from .prefix_attention import PrefixAttentionState, prefix_attention, prefix_attention_step
from .diag_ssm_scan import diag_ssm_scan
from .linear_scan import linear_scan
from .dwconv1d import dwconv1d, dwconv1d_step
from .fftconv import fftconv
