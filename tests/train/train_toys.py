"""Tiny models and datasets for the training-loop tests (CPU, fp32, milliseconds per step)."""
from __future__ import annotations

import time

import torch
from torch import nn
from torch.utils.data import Dataset

from mmlora.data.errors import SampleError


class ToyRegressor(nn.Module):
    """y ≈ head(dropout(tanh(frozen(x)))): a frozen feature layer, a trainable head and dropout
    (so resume must restore the RNG). ``forward(batch)`` follows the loop's model contract."""

    def __init__(self, d: int = 6, seed: int = 0, dropout: float = 0.1):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.frozen = nn.Linear(d, 16)
        self.head = nn.Linear(16, 1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        self.frozen.requires_grad_(False)
        self.drop = nn.Dropout(dropout)
        self.calls = 0
        self.crash_at: int | None = None  # raise on this forward call (simulated crash)

    def forward(self, batch):
        self.calls += 1
        if self.crash_at is not None and self.calls >= self.crash_at:
            raise RuntimeError("simulated crash")
        x, y, mask = batch["x"], batch["y"], batch["mask"]
        pred = self.head(self.drop(torch.tanh(self.frozen(x)))).squeeze(-1)  # [B, L]
        err = ((pred - y) ** 2) * mask
        n = mask.sum()
        return {"loss": err.sum() / n, "num_tokens": n, "metrics": {"max_err": err.max().detach()}}


class ToySequences(Dataset):
    """Variable-length sequences of vectors x_t with targets y_t = sin(w·x_t); ``lengths`` are
    the sequence lengths. ``bad``: indices that raise SampleError, ``none``: ones that give None."""

    def __init__(self, n: int = 32, d: int = 6, min_len: int = 1, max_len: int = 5, seed: int = 0,
                 bad: set[int] = frozenset(), none: set[int] = frozenset()):
        g = torch.Generator().manual_seed(seed)
        self.lengths = torch.randint(min_len, max_len + 1, (n,), generator=g).tolist()
        w = torch.randn(d, generator=g)
        self.items = []
        for L in self.lengths:
            x = torch.randn(L, d, generator=g)
            self.items.append((x, torch.sin(x @ w)))
        self.bad, self.none = set(bad), set(none)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        if i in self.bad:
            raise SampleError(f"sample {i} is corrupt", index=i)
        if i in self.none:
            return None
        x, y = self.items[i]
        return {"x": x, "y": y, "index": i}


class SlowSequences(ToySequences):
    """ToySequences whose every sample takes ``delay`` seconds to produce (a loader slower than the step)."""

    def __init__(self, delay: float, **kw):
        super().__init__(**kw)
        self.delay = delay

    def __getitem__(self, i):
        time.sleep(self.delay)
        return super().__getitem__(i)


def pad_collate(items):
    L = max(it["x"].shape[0] for it in items)
    d = items[0]["x"].shape[1]
    x = torch.zeros(len(items), L, d)
    y = torch.zeros(len(items), L)
    mask = torch.zeros(len(items), L)
    for b, it in enumerate(items):
        n = it["x"].shape[0]
        x[b, :n], y[b, :n], mask[b, :n] = it["x"], it["y"], 1.0
    return {"x": x, "y": y, "mask": mask, "index": torch.tensor([it["index"] for it in items])}
