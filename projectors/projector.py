"""One modality projector: [QLadder] → compressor (k frames → 1 token) → MLP into the LLM width.

::

    x [B, N, D], mask [B, N]
      └─(QLadder, optional)──▶ [B, N + n_q, D]          queries appended after the valid frames
      └─compressor (rate k)──▶ [B, N', D']               stack: D' = k·D; avgpool: D; conv: conv_dim
      └─MLP─────────────────▶ [B, N', d_llm], mask' [B, N']

Positions where ``mask'`` is False are zero vectors (the model must ignore them anyway).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from torch import Tensor, nn

from .compress import (REMAINDERS, AvgPoolCompressor, Compressor, ConvCompressor, IdentityCompressor,
                       StackCompressor, check_inputs)
from .mlp import ACTIVATIONS, MLPProjector
from .qladder import QLadder, QLadderConfig

__all__ = ["ProjectorConfig", "Projector", "make_compressor", "COMPRESSORS", "PRESETS"]

COMPRESSORS = ("stack", "avgpool", "conv", "none")


@dataclass
class ProjectorConfig:
    """A modality projector (or, with several ``rates``, a Matryoshka bank of them)."""

    compressor: str = "stack"              # k frames -> 1 token: "stack" | "avgpool" | "conv" | "none" (k = 1)
    rates: tuple[int, ...] = (4,)          # compression rate(s) k; more than one -> bank, one compressor+MLP per rate
    remainder: str = "drop"                # last partial window: "drop" it (Llama-AVSR) or "keep" it (zero-filled / partial mean)
    hidden_dim: int | None = 2048          # MLP hidden width (Llama-AVSR: 2048); None: d_llm (LLaVA / Phi-4-MM style)
    activation: str = "relu"               # MLP activation: "relu" (Llama-AVSR) | "gelu" (Phi-4-MM)
    conv_kernel: int | None = None         # conv only: window K >= k (None: K = k, non-overlapping)
    conv_dim: int | None = None            # conv only: output channels (None: the frame width D)
    qladder: QLadderConfig | None = None   # Arcana QLadder before the compressor; shared by all rates of a bank
    init_scale: float = 1.0                # multiplies the last MLP layer's initial weight and bias (outputs start
                                           # that much smaller; 0.1 brings Whisper features near SmolLM2's embedding scale)

    def __post_init__(self) -> None:
        if isinstance(self.rates, int):
            self.rates = (self.rates,)
        self.rates = tuple(int(r) for r in self.rates)
        if isinstance(self.qladder, dict):
            self.qladder = QLadderConfig(**self.qladder)
        if self.compressor not in COMPRESSORS:
            raise ValueError(f"ProjectorConfig.compressor must be one of {COMPRESSORS}, got {self.compressor!r}")
        if not self.rates:
            raise ValueError("ProjectorConfig.rates is empty: give at least one compression rate")
        if len(set(self.rates)) != len(self.rates):
            raise ValueError(f"ProjectorConfig.rates has duplicates: {self.rates}")
        if any(r < 1 for r in self.rates):
            raise ValueError(f"ProjectorConfig.rates must be >= 1, got {self.rates}")
        if self.compressor == "none" and self.rates != (1,):
            raise ValueError(f"compressor 'none' needs rates=(1,), got {self.rates}")
        if self.remainder not in REMAINDERS:
            raise ValueError(f"ProjectorConfig.remainder must be one of {REMAINDERS}, got {self.remainder!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"ProjectorConfig.activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        if self.hidden_dim is not None and self.hidden_dim < 1:
            raise ValueError(f"ProjectorConfig.hidden_dim must be >= 1, got {self.hidden_dim}")
        if not self.init_scale > 0:
            raise ValueError(f"ProjectorConfig.init_scale must be > 0, got {self.init_scale}")
        if self.conv_kernel is not None and self.conv_kernel < max(self.rates):
            raise ValueError(f"ProjectorConfig.conv_kernel ({self.conv_kernel}) must be >= every rate {self.rates}")

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "projector") -> "ProjectorConfig":
        """Build from a plain dict (parsed YAML); unknown keys raise an error naming ``where``."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"{where}: unknown projector field(s) {unknown}; valid: {sorted(names)}")
        d = dict(d)
        if isinstance(d.get("qladder"), dict):
            q_names = {f.name for f in fields(QLadderConfig)}
            bad = sorted(set(d["qladder"]) - q_names)
            if bad:
                raise ValueError(f"{where}.qladder: unknown field(s) {bad}; valid: {sorted(q_names)}")
            d["qladder"] = QLadderConfig(**d["qladder"])
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["rates"] = list(self.rates)
        return out

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> "ProjectorConfig":
        """A named preset (see ``PRESETS``) with field overrides."""
        if name not in PRESETS:
            raise KeyError(f"unknown projector preset {name!r}; choose from {sorted(PRESETS)}")
        return replace(PRESETS[name], **overrides)


# Named presets from SYSTEMS.md. Arcana's QLadder needs the encoder depth: from_name("arcana", qladder=...).
PRESETS: dict[str, ProjectorConfig] = {
    "llama-avsr-audio": ProjectorConfig("stack", (4,), "drop", 2048, "relu"),    # Whisper 50 Hz -> 12.5 tok/s
    "llama-avsr-video": ProjectorConfig("stack", (2,), "drop", 2048, "relu"),    # 25 fps -> 12.5 tok/s
    "llama-mtsk-audio": ProjectorConfig("stack", (4, 16), "drop", 2048, "relu"),
    "llama-mtsk-video": ProjectorConfig("stack", (2, 5), "drop", 2048, "relu"),
    "phi4mm": ProjectorConfig("none", (1,), "drop", None, "gelu"),               # Linear -> GELU -> Linear, width d_llm
    "arcana": ProjectorConfig("none", (1,), "drop", None, "gelu"),               # add qladder=QLadderConfig(L)
}


def make_compressor(cfg: ProjectorConfig, rate: int, d_in: int) -> Compressor:
    """The compressor of ``cfg`` at one rate, for frames of width ``d_in``."""
    if cfg.compressor == "stack":
        return StackCompressor(rate, cfg.remainder)
    if cfg.compressor == "avgpool":
        return AvgPoolCompressor(rate, cfg.remainder)
    if cfg.compressor == "conv":
        return ConvCompressor(rate, d_in, cfg.conv_dim, cfg.conv_kernel, cfg.remainder)
    return IdentityCompressor(rate, cfg.remainder)


class Projector(nn.Module):
    """Single-rate projector: ``forward(x [B,N,D], mask [B,N]) -> (emb [B,N',d_llm], mask' [B,N'])``.

    ``qladder`` may be None; ``rate`` is the compressor's ``k``.
    """

    def __init__(self, compressor: Compressor, mlp: MLPProjector, qladder: QLadder | None = None):
        super().__init__()
        self.compressor = compressor
        self.mlp = mlp
        self.qladder = qladder

    @property
    def rate(self) -> int:
        return self.compressor.rate

    @property
    def rates(self) -> tuple[int, ...]:
        return (self.compressor.rate,)

    @property
    def d_out(self) -> int:
        return self.mlp.d_out

    def num_tokens(self, n_frames: int | Tensor, rate: int | None = None, tokens_per_step: int = 1) -> int | Tensor:
        """Tokens this projector emits for ``n_frames`` valid input tokens (int or per-sample tensor)."""
        self._check_rate(rate)
        return _num_tokens(self.compressor, self.qladder, n_frames, tokens_per_step)

    def _check_rate(self, rate: int | None) -> None:
        if rate is not None and int(rate) != self.rate:
            raise KeyError(f"this projector has the single rate {self.rate}; rate {rate} was asked for")

    def compress(self, x: Tensor, mask: Tensor, tokens_per_step: int = 1) -> tuple[Tensor, Tensor]:
        """Compressor + MLP, without QLadder (the bank runs QLadder once for all rates)."""
        z, new_mask = self.compressor(x, mask, tokens_per_step)
        emb = self.mlp(z)
        return emb * new_mask.unsqueeze(-1).to(emb.dtype), new_mask

    def forward(self, x: Tensor, mask: Tensor | None = None, *, rate: int | None = None,
                hidden_states: Sequence[Tensor] | None = None,
                hidden_masks: Tensor | Sequence[Tensor | None] | None = None,
                tokens_per_step: int = 1) -> tuple[Tensor, Tensor]:
        """``(x [B,N,D], mask [B,N]) -> (emb [B,N',d_llm], mask' [B,N'])``.

        ``hidden_states``/``hidden_masks``: QLadder inputs (see :meth:`QLadder.run_queries`).
        ``tokens_per_step``: spatial tokens per time step of ``x`` (``Features.tokens_per_step``).
        """
        self._check_rate(rate)
        x, mask, g = run_qladder(self.qladder, x, mask, hidden_states, hidden_masks, tokens_per_step, self.rate)
        return self.compress(x, mask, g)


def run_qladder(qladder: QLadder | None, x: Tensor, mask: Tensor | None, hidden_states, hidden_masks,
                tokens_per_step: int, rate: int) -> tuple[Tensor, Tensor, int]:
    """Validate inputs and append the QLadder queries when there is a QLadder."""
    mask = check_inputs(x, mask, "Projector")
    if qladder is None:
        return x, mask, tokens_per_step
    if tokens_per_step != 1 and rate != 1:
        raise ValueError("QLadder queries are not part of the spatial grid: with tokens_per_step > 1 use rate 1")
    x, mask = qladder(x, mask, hidden_states, hidden_masks)
    return x, mask, 1


def _num_tokens(compressor: Compressor, qladder: QLadder | None, n: int | Tensor, tokens_per_step: int):
    if qladder is not None:
        return compressor.out_len(n + qladder.num_queries)
    return compressor.out_len(n, tokens_per_step)
