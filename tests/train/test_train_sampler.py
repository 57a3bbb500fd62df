"""BudgetBatchSampler: budget, coverage, determinism, resume, DDP shares, oversize samples."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from mmlora.train import BudgetBatchSampler


def lengths_of(n=200, seed=0, lo=1, hi=50):
    return np.random.default_rng(seed).integers(lo, hi + 1, n).tolist()


@pytest.mark.parametrize("padded", [True, False])
@pytest.mark.parametrize("budget,max_bs", [(100, None), (64, 4), (50, None)])
def test_budget_and_coverage(padded, budget, max_bs):
    L = lengths_of()
    s = BudgetBatchSampler(L, max_budget=budget, max_batch_size=max_bs, padded=padded, seed=3)
    for epoch in range(2):
        s.set_epoch(epoch)
        batches = list(s)
        for b in batches:
            cost = len(b) * max(L[i] for i in b) if padded else sum(L[i] for i in b)
            assert cost <= budget
            if max_bs:
                assert len(b) <= max_bs
        flat = sorted(itertools.chain.from_iterable(batches))
        assert flat == list(range(len(L)))  # each sample exactly once per epoch
        if not padded and max_bs is None:
            # greedy filling closes a batch only when the next sample does not fit, so two
            # consecutive batches hold more than the budget: n_batches <= 2 * total / budget + 1
            assert len(batches) <= 2 * sum(L) / budget + 1


def test_deterministic_per_seed_and_epoch():
    L = lengths_of()
    a = BudgetBatchSampler(L, max_budget=120, seed=5)
    b = BudgetBatchSampler(L, max_budget=120, seed=5)
    assert a.all_batches(0) == b.all_batches(0) and a.all_batches(3) == b.all_batches(3)
    assert a.all_batches(0) != a.all_batches(1)
    assert a.all_batches(0) != BudgetBatchSampler(L, max_budget=120, seed=6).all_batches(0)
    unshuffled = BudgetBatchSampler(L, max_budget=120, shuffle=False)
    assert unshuffled.all_batches(0) == unshuffled.all_batches(1)


def test_sorting_window_reduces_padding():
    L = lengths_of(n=500, hi=200)

    def padded_frames(window):
        s = BudgetBatchSampler(L, max_budget=400, sort_window=window, seed=1)
        return sum(len(b) * max(L[i] for i in b) for b in s.all_batches(0))

    assert padded_frames(500) < 0.8 * padded_frames(1)  # sorted windows waste far less on padding


def test_resume_mid_epoch():
    L = lengths_of()
    s = BudgetBatchSampler(L, max_budget=100, seed=2)
    s.set_epoch(4)
    whole = list(s)
    s.set_epoch(4, start=7)
    assert list(s) == whole[7:] and len(s) == len(whole) - 7
    t = BudgetBatchSampler(L, max_budget=100, seed=2)
    t.load_state_dict(s.state_dict())
    assert list(t) == whole[7:]


@pytest.mark.parametrize("world", [2, 3, 4])
@pytest.mark.parametrize("drop_last", [False, True])
def test_ddp_shares(world, drop_last):
    L = lengths_of(n=101)
    full = BudgetBatchSampler(L, max_budget=90, seed=9).all_batches(0)
    ranks = [BudgetBatchSampler(L, max_budget=90, seed=9, num_replicas=world, rank=r, drop_last=drop_last)
             for r in range(world)]
    shares = [r.rank_batches(0) for r in ranks]
    assert len({len(x) for x in shares}) == 1  # every rank runs the same number of batches
    assert all(b in full for x in shares for b in x)  # ranks share the global batch list
    seen = [i for x in shares for b in x for i in b]
    if drop_last:
        assert len(seen) == len(set(seen))  # disjoint
        assert len(shares[0]) == len(full) // world
    else:
        assert set(seen) == set(range(len(L)))  # everything covered
        repeated = sum(len(x) for x in shares) - len(full)
        assert 0 <= repeated < world  # only the few batches that even out the count repeat


def test_oversize_samples():
    L = [5, 50, 6, 7, 200, 3]
    drop = BudgetBatchSampler(L, max_budget=60, shuffle=False)
    assert sorted(i for b in drop.all_batches(0) for i in b) == [0, 1, 2, 3, 5] and drop.oversize_indices == [4]
    alone = BudgetBatchSampler(L, max_budget=60, oversize="alone", shuffle=False)
    assert [4] in alone.all_batches(0)
    with pytest.raises(ValueError, match="exceed the batch budget 60.*index 4, length 200"):
        BudgetBatchSampler(L, max_budget=60, oversize="error")


def test_fixed_size_batches_and_errors():
    s = BudgetBatchSampler.fixed(10, 4, seed=0)
    sizes = sorted(len(b) for b in s.all_batches(0))
    assert sizes == [2, 4, 4]
    with pytest.raises(ValueError, match="max_budget"):
        BudgetBatchSampler([1, 2])
    with pytest.raises(ValueError, match="rank 2"):
        BudgetBatchSampler([1, 2], max_budget=4, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match=">= 0"):
        BudgetBatchSampler([1, -2], max_budget=4)
