"""SpecAugment-style masking of encoder features during training (Park et al., 2019), applied to
the frozen encoder's output (so it also works on cached features) before the projector.

For each sample with ``n`` valid frames of width ``D``:

* ``time_masks`` times: width ``w ~ U{0 … ⌊time_width · n⌋}``, start ``s ~ U{0 … n − w}``,
  frames ``s … s+w−1`` set to zero;
* ``feature_masks`` times: width ``f ~ U{0 … feature_width}``, start ``c ~ U{0 … D − f}``,
  channels ``c … c+f−1`` set to zero in every frame.

Padding frames (``mask`` False) are never chosen and stay as they were. Random numbers come from
torch's generator (``generator`` or the default one, which the training loop seeds and restores
on resume).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["SpecAugmentConfig", "spec_augment"]


@dataclass
class SpecAugmentConfig:
    """How much of the features to mask in training (all zero: off)."""

    time_masks: int = 0          # time masks per sample
    time_width: float = 0.05     # a time mask's maximum width, as a fraction of the sample's valid frames
    feature_masks: int = 0       # feature (channel) masks per sample
    feature_width: int = 0       # a feature mask's maximum width in channels

    def __post_init__(self) -> None:
        for name in ("time_masks", "feature_masks", "feature_width"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"spec_augment.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= float(self.time_width) <= 1.0:
            raise ValueError(f"spec_augment.time_width must be in [0, 1], got {self.time_width}")

    @property
    def active(self) -> bool:
        return (self.time_masks > 0 and self.time_width > 0) or (self.feature_masks > 0 and self.feature_width > 0)


def _spans(length: Tensor, max_width: Tensor, k: int, size: int, generator) -> Tensor:
    """``[B, size]`` bool: union of ``k`` random spans per row, each within ``[0, length)``."""
    B, dev = length.shape[0], length.device
    u = torch.rand(B, k, 2, device=dev, generator=generator)
    w = torch.minimum((u[..., 0] * (max_width[:, None] + 1)).floor(), length[:, None].float())
    s = (u[..., 1] * (length[:, None] - w + 1)).floor()
    t = torch.arange(size, device=dev, dtype=torch.float32)[None, None, :]
    return ((t >= s[..., None]) & (t < (s + w)[..., None])).any(1)


def spec_augment(x: Tensor, mask: Tensor, cfg: SpecAugmentConfig, generator: torch.Generator | None = None) -> Tensor:
    """``x [B, N, D]`` with the masked frames/channels zeroed; ``mask [B, N]`` marks valid frames."""
    if not cfg.active or x.numel() == 0:
        return x
    B, N, D = x.shape
    n = mask.sum(1).to(torch.float32)
    drop = torch.zeros(B, N, D, dtype=torch.bool, device=x.device)
    if cfg.time_masks > 0 and cfg.time_width > 0:
        drop |= _spans(n, (cfg.time_width * n).floor(), cfg.time_masks, N, generator)[:, :, None]
    if cfg.feature_masks > 0 and cfg.feature_width > 0:
        width = torch.full((B,), float(min(cfg.feature_width, D)), device=x.device)
        drop |= _spans(torch.full((B,), float(D), device=x.device), width, cfg.feature_masks, D, generator)[:, None, :]
    drop &= mask[:, :, None].to(torch.bool)
    return x.masked_fill(drop, 0)
