"""Host → device copies that do not stall the host.

``tensor.to("cuda")`` from ordinary (pageable) host memory waits for the GPU to finish everything queued
before it: a training step that makes a few dozen such copies (token ids, masks, index tensors) keeps the
host from running ahead of the GPU, and the GPU then idles while the host prepares each part of the step.
:func:`to_device` copies through pinned memory without waiting instead.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["to_device"]


def to_device(t: Tensor, device: torch.device | str) -> Tensor:
    """``t`` on ``device``; a CPU tensor bound for a CUDA device is pinned and copied asynchronously (the
    caller must not modify ``t`` afterwards). Anything else is ``t.to(device)``."""
    device = torch.device(device)
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)
