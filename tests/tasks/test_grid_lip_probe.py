"""scripts/grid_lip_probe.py: slot features and the per-slot probe on synthetic features (no encoder)."""
from __future__ import annotations

import random

import torch

from conftest import load_script


def test_slot_features_are_the_means_of_each_slot_and_its_neighbours():
    mod = load_script("grid_lip_probe")
    x = torch.arange(12, dtype=torch.float64)[:, None].repeat(1, 2)  # 12 frames, 2 s per slot of 6
    f = mod.slot_features(x)
    assert f.shape == (6, 6)
    means = torch.tensor([0.5, 2.5, 4.5, 6.5, 8.5, 10.5], dtype=torch.float64)
    torch.testing.assert_close(f[:, 2], means)  # slot k
    torch.testing.assert_close(f[:, 0], torch.cat([means[:1], means[:-1]]))  # k-1 (the first repeats)
    torch.testing.assert_close(f[:, 4], torch.cat([means[1:], means[-1:]]))  # k+1 (the last repeats)
    assert mod.slot_features(torch.ones(4, 3)).shape == (6, 9)  # fewer frames than slots: no empty slot


def test_probe_reads_words_that_the_features_carry_and_not_others():
    mod = load_script("grid_lip_probe")
    rnd = random.Random(0)
    choices = [("bin", "lay"), ("red", "blue", "green"), ("at", "by"), tuple("abcd"), ("one", "two"), ("now", "soon")]
    code = {w: torch.randn(8, generator=torch.Generator().manual_seed(i)) for i, w in
            enumerate(sorted({w for c in choices for w in c}))}

    def clip():
        words = [rnd.choice(c) for c in choices]
        frames = []
        for k, w in enumerate(words):  # 5 frames per word; the colour slot carries nothing
            v = code[w] if k != 1 else torch.zeros(8)
            frames += [v + 0.1 * torch.randn(8)] * 5
        return torch.stack(frames).double(), words

    train = [clip() for _ in range(200)]
    test = [clip() for _ in range(100)]
    out = mod.probe(train, test, lam=1.0)
    assert out["command"]["accuracy"] == 1.0 and out["letter"]["accuracy"] > 0.9 and out["letter"]["chance"] == 0.25
    assert out["colour"]["accuracy"] < 0.6  # nothing to read: near chance (1/3), far from the other slots
