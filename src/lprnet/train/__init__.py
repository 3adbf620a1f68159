"""Training: owns everything between datasets and exported weights.

* :mod:`lprnet.train.config` -- :class:`TrainConfig`, the validated run configuration
  (YAML/JSON file + CLI overrides);
* :mod:`lprnet.train.trainer` -- :func:`train`, the loop: CTC loss on the deploy-form
  :class:`~lprnet.model.LPRNet`, AdamW with warm-up + cosine, clipping, CUDA autocast,
  periodic evaluation on synthetic (and optional user-given real) validation sets,
  atomic checkpoints with exact ``--resume``, ``torchrun`` DDP, CSV/PNG logs, and export of
  ``best``/``final`` weights as safetensors with provenance.

Data loading lives in :mod:`lprnet.data.dataset` and :mod:`lprnet.data.real`; the command
line in :mod:`lprnet.cli.train` and :mod:`lprnet.cli.data`.
"""

from __future__ import annotations

from lprnet.train.config import ConfigError, TrainConfig, make_config
from lprnet.train.trainer import TrainError, TrainResult, benchmark, train

__all__ = ["ConfigError", "TrainConfig", "TrainError", "TrainResult", "benchmark", "make_config", "train"]
