"""Two-layer MLP into the LLM width (Llama-AVSR: ``Linear(k·D → 2048) → ReLU → Linear(→ d_llm)``;
Phi-4-MM: the same with GELU)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["MLPProjector", "ACTIVATIONS"]

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


class MLPProjector(nn.Module):
    """``y = W₂ · act(W₁ x + b₁) + b₂``; input ``(..., d_in)``, output ``(..., d_out)``.

    ``fc1: Linear(d_in → hidden)``, ``fc2: Linear(hidden → d_out)``; PyTorch's default init, with
    ``fc2``'s weight and bias multiplied by ``init_scale`` (so the initial outputs are ``init_scale``
    times smaller, e.g. to start near the scale of the LLM's token embeddings).
    """

    def __init__(self, d_in: int, d_out: int, hidden: int = 2048, activation: str = "relu",
                 init_scale: float = 1.0):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"MLP activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        for name, v in (("d_in", d_in), ("d_out", d_out), ("hidden", hidden)):
            if int(v) < 1:
                raise ValueError(f"MLPProjector {name} must be >= 1, got {v}")
        self.fc1 = nn.Linear(d_in, hidden)
        self.act = ACTIVATIONS[activation]()
        self.fc2 = nn.Linear(hidden, d_out)
        if not init_scale > 0:
            raise ValueError(f"MLPProjector init_scale must be > 0, got {init_scale}")
        if init_scale != 1.0:
            with torch.no_grad():
                self.fc2.weight.mul_(init_scale)
                self.fc2.bias.mul_(init_scale)

    @property
    def d_in(self) -> int:
        return self.fc1.in_features

    @property
    def d_out(self) -> int:
        return self.fc2.out_features

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.fc1.in_features:
            raise ValueError(f"MLPProjector expects width {self.fc1.in_features}, got {x.shape[-1]}")
        return self.fc2(self.act(self.fc1(x)))
