"""tsuite: recurrent, state-space and convolutional sequence models for time series and signals.

The spine of the suite: the ``tsuite`` command line (:mod:`tsuite.cli`), the base
Lightning module every model family derives from (:mod:`tsuite.module`), MLflow
tracking and model logging (:mod:`tsuite.tracking`), the pyfunc wrapper that
serves every family (:mod:`tsuite.serving`) and shared table I/O
(:mod:`tsuite.tables`). Model families live in ``tsuite.forecasting``,
``tsuite.audio`` and ``tsuite.vision_video``; GPU kernels in ``tsuite.kernels``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tsuite")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
