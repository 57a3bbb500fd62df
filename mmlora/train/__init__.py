"""Training: an Accelerate loop with atomic checkpoints, exact resume and frame-budget batches.

Public API (docs/TRAINING.md):

* :class:`TrainConfig`, :func:`train` -> :class:`TrainResult` (``loop.py``)
* :class:`BudgetBatchSampler` (``sampler.py``)
* :func:`lr_factor`, :func:`build_scheduler` (``schedule.py``)
* :func:`list_checkpoints`, :func:`latest_checkpoint`, :func:`average_checkpoints`,
  :func:`load_trainable`, :func:`read_trainable`, :func:`trainable_state_dict` (``checkpoint.py``)
* :class:`SampleError` (raise it from a dataset or collate for a sample to skip)
"""
from ..data.errors import SampleError
from .checkpoint import (average_checkpoints, latest_checkpoint, list_checkpoints, load_trainable, read_trainable,
                         trainable_state_dict)
from .loop import TrainConfig, TrainResult, build_param_groups, train
from .sampler import BudgetBatchSampler
from .schedule import build_scheduler, lr_factor

__all__ = ["TrainConfig", "TrainResult", "train", "build_param_groups", "BudgetBatchSampler", "build_scheduler",
           "lr_factor", "list_checkpoints", "latest_checkpoint", "average_checkpoints", "load_trainable",
           "read_trainable", "trainable_state_dict", "SampleError"]
