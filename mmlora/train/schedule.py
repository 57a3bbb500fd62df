"""Learning-rate schedules: linear warmup, then cosine / linear decay or constant.

With warmup ``W``, total ``T`` optimizer steps and floor ``m`` (``min_lr_ratio``), the factor
applied to every parameter group's base lr at step ``s`` (0-based, the step about to run) is

    f(s) = s / W                                   for s < W
    cosine:   f(s) = m + (1 - m) * 0.5 * (1 + cos(pi * p)),  p = (s - W) / (T - W)
    linear:   f(s) = m + (1 - m) * (1 - p)
    constant: f(s) = 1

(``p`` clipped to [0, 1]). With ``m = 0`` these equal transformers'
``get_cosine_schedule_with_warmup`` / ``get_linear_schedule_with_warmup`` /
``get_constant_schedule_with_warmup``; tests check that.
"""
from __future__ import annotations

import math
from typing import Literal

import torch

ScheduleKind = Literal["cosine", "linear", "constant"]


def lr_factor(step: int, total_steps: int, warmup_steps: int = 0, kind: ScheduleKind = "cosine",
              min_lr_ratio: float = 0.0) -> float:
    """The multiplier f(step) above."""
    if warmup_steps > 0 and step < warmup_steps:
        return step / warmup_steps
    if kind == "constant":
        return 1.0
    p = min(max((step - warmup_steps) / max(1, total_steps - warmup_steps), 0.0), 1.0)
    if kind == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * p))
    elif kind == "linear":
        decay = 1.0 - p
    else:
        raise ValueError(f"unknown schedule {kind!r}; choose cosine, linear or constant")
    return min_lr_ratio + (1.0 - min_lr_ratio) * decay


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0,
                    kind: ScheduleKind = "cosine", min_lr_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` applying :func:`lr_factor` to every group's base lr (step it once per
    optimizer step; its ``state_dict`` restores exactly)."""
    if kind not in ("cosine", "linear", "constant"):
        raise ValueError(f"unknown schedule {kind!r}; choose cosine, linear or constant")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, _Factor(total_steps, warmup_steps, kind, min_lr_ratio))


class _Factor:
    """Picklable lambda (LambdaLR's state_dict keeps callable objects' __dict__)."""

    def __init__(self, total_steps: int, warmup_steps: int, kind: str, min_lr_ratio: float):
        self.total_steps, self.warmup_steps, self.kind, self.min_lr_ratio = total_steps, warmup_steps, kind, min_lr_ratio

    def __call__(self, step: int) -> float:
        return lr_factor(step, self.total_steps, self.warmup_steps, self.kind, self.min_lr_ratio)
