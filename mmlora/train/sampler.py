"""Batches filled to a budget of frames (or tokens), deterministic, resumable, DDP-aware.

Speech batches are sized by how much they cost, not by a sample count: a batch of short
clips holds many, a batch of long ones few (Llama-AVSR, fairseq ``max_tokens``). For epoch
``e`` the batches are a pure function of ``(lengths, budget, seed, e)``:

1. shuffle the sample indices with ``numpy.random.default_rng([seed, e])`` (PCG64, stable);
2. sort each window of ``sort_window`` consecutive shuffled samples by length, longest first
   (similar lengths share a batch, so little padding), stable for ties;
3. fill batches greedily in that order while the cost stays within ``max_budget`` and the
   count within ``max_batch_size``. Cost of a batch of lengths ``l_1..l_n``:
   ``n * max(l)`` when ``padded`` (what a padded tensor really holds) else ``sum(l)``;
4. shuffle the batch order with the same generator;
5. for ``num_replicas = W`` processes, repeat the first batches so the count divides by W
   (or drop the rest with ``drop_last``), and rank ``r`` takes batches ``r, r+W, r+2W, …``:
   every rank runs the same number of batches (DDP needs that), the ranks' shares are disjoint
   apart from those few repeats.

A sample longer than the budget on its own is dropped and counted (``oversize="drop"``),
put alone in a batch (``"alone"``) or refused (``"error"``). Resuming mid-epoch is
``set_epoch(e, start=k)``: the same batches as before, from the k-th on.
"""
from __future__ import annotations

import logging
from typing import Iterator, Literal, Sequence

import numpy as np
import torch

log = logging.getLogger(__name__)


class BudgetBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Yields lists of dataset indices (pass as ``DataLoader(batch_sampler=...)``)."""

    def __init__(self, lengths: Sequence[int], max_budget: int | None = None, max_batch_size: int | None = None,
                 *, padded: bool = True, shuffle: bool = True, seed: int = 0, num_replicas: int = 1, rank: int = 0,
                 drop_last: bool = False, sort_window: int = 1024,
                 oversize: Literal["drop", "alone", "error"] = "drop"):
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if self.lengths.ndim != 1:
            raise ValueError(f"lengths must be a flat sequence of ints, got shape {self.lengths.shape}")
        if (self.lengths < 0).any():
            raise ValueError(f"lengths must be >= 0 (sample {int(np.argmin(self.lengths))} has "
                             f"{int(self.lengths.min())})")
        if max_budget is None and max_batch_size is None:
            raise ValueError("give max_budget (frames/tokens per batch) or max_batch_size (samples per batch)")
        if max_budget is not None and max_budget <= 0:
            raise ValueError(f"max_budget must be > 0, got {max_budget}")
        if max_batch_size is not None and max_batch_size <= 0:
            raise ValueError(f"max_batch_size must be > 0, got {max_batch_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        if oversize not in ("drop", "alone", "error"):
            raise ValueError(f"oversize must be drop, alone or error, got {oversize!r}")
        self.max_budget, self.max_batch_size = max_budget, max_batch_size
        self.padded, self.shuffle, self.seed = padded, shuffle, seed
        self.num_replicas, self.rank, self.drop_last = num_replicas, rank, drop_last
        self.sort_window, self.oversize = max(1, sort_window), oversize
        too_long = np.nonzero(self.lengths > max_budget)[0] if max_budget is not None else np.array([], int)
        if len(too_long) and oversize == "error":
            raise ValueError(f"{len(too_long)} sample(s) exceed the batch budget {max_budget} on their own "
                             f"(e.g. index {int(too_long[0])}, length {int(self.lengths[too_long[0]])})")
        self.oversize_indices = too_long.tolist()
        if len(too_long) and oversize == "drop":
            log.warning("%d sample(s) longer than the batch budget %d are left out (e.g. index %d, length %d)",
                        len(too_long), max_budget, int(too_long[0]), int(self.lengths[too_long[0]]))
        self.epoch, self.start = 0, 0
        self._cache: tuple[int, list[list[int]]] | None = None

    @classmethod
    def fixed(cls, num_samples: int, batch_size: int, **kw) -> "BudgetBatchSampler":
        """Plain fixed-size batches (every sample costs 1), same shuffling/sharding/resume."""
        return cls([1] * num_samples, max_budget=None, max_batch_size=batch_size, sort_window=1, **kw)

    # -- epochs and resume --------------------------------------------------------------------
    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select epoch ``epoch``'s batches; iteration begins at this rank's ``start``-th batch."""
        self.epoch, self.start = int(epoch), int(start)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "start": self.start, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.seed = state.get("seed", self.seed)
        self.set_epoch(state["epoch"], state.get("start", 0))

    # -- batches ------------------------------------------------------------------------------
    def all_batches(self, epoch: int | None = None) -> list[list[int]]:
        """Every batch of the epoch, all ranks, before sharding (steps 1-4 above)."""
        epoch = self.epoch if epoch is None else epoch
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.lengths)) if self.shuffle else np.arange(len(self.lengths))
        if self.max_budget is not None and self.oversize == "drop" and self.oversize_indices:
            order = order[self.lengths[order] <= self.max_budget]
        if self.sort_window > 1:
            chunks = [order[i:i + self.sort_window] for i in range(0, len(order), self.sort_window)]
            order = np.concatenate([c[np.argsort(-self.lengths[c], kind="stable")] for c in chunks]) \
                if chunks else order
        batches: list[list[int]] = []
        cur: list[int] = []
        cur_max = cur_sum = 0
        for i in order.tolist():
            n = int(self.lengths[i])
            if cur:
                new_cost = (len(cur) + 1) * max(cur_max, n) if self.padded else cur_sum + n
                full = (self.max_budget is not None and new_cost > self.max_budget) or \
                       (self.max_batch_size is not None and len(cur) >= self.max_batch_size)
                if full:
                    batches.append(cur)
                    cur, cur_max, cur_sum = [], 0, 0
            cur.append(i)
            cur_max, cur_sum = max(cur_max, n), cur_sum + n
        if cur:
            batches.append(cur)
        if self.shuffle:
            perm = rng.permutation(len(batches))
            batches = [batches[j] for j in perm]
        return batches

    def rank_batches(self, epoch: int | None = None) -> list[list[int]]:
        """This rank's batches of the epoch (step 5), from the first one."""
        epoch = self.epoch if epoch is None else epoch
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        batches = self.all_batches(epoch)
        w = self.num_replicas
        if w > 1 and len(batches) % w:
            if self.drop_last:
                batches = batches[: len(batches) - len(batches) % w]
            else:
                extra = w - len(batches) % w
                batches = batches + [batches[j % len(batches)] for j in range(extra)]
        mine = batches[self.rank::w]
        self._cache = (epoch, mine)
        return mine

    def num_batches(self, epoch: int | None = None) -> int:
        """Batches this rank runs in a whole epoch."""
        return len(self.rank_batches(epoch))

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.rank_batches()[self.start:]

    def __len__(self) -> int:
        return max(0, self.num_batches() - self.start)
