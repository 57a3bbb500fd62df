"""SpecAugment-style feature masking: spans inside the valid frames, the documented width
distribution, reproducibility, and only in training inside MultimodalLM."""
from __future__ import annotations

import pytest
import torch

from mmlora.data.spec_augment import SpecAugmentConfig, spec_augment


def _mask(lengths, N):
    return torch.arange(N)[None, :] < torch.tensor(lengths)[:, None]


def test_off_returns_the_input_and_config_is_validated():
    x = torch.randn(2, 5, 3)
    assert spec_augment(x, _mask([5, 3], 5), SpecAugmentConfig()) is x
    assert spec_augment(x, _mask([5, 3], 5), SpecAugmentConfig(time_masks=2, time_width=0.0)) is x
    for bad, match in ((dict(time_masks=-1), "time_masks"), (dict(time_width=1.5), "time_width"),
                       (dict(feature_width=-2), "feature_width")):
        with pytest.raises(ValueError, match=match):
            SpecAugmentConfig(**bad)


def test_time_mask_is_one_span_inside_the_valid_frames_with_uniform_width():
    B, N, D, n = 4000, 60, 2, [50, 30, 10, 1] * 1000
    x = torch.ones(B, N, D)
    mask = _mask(n, N)
    out = spec_augment(x, mask, SpecAugmentConfig(time_masks=1, time_width=0.2), torch.Generator().manual_seed(0))
    zero = out[..., 0] == 0
    assert torch.equal(out[..., 0] == 0, out[..., 1] == 0)      # whole frames
    assert not (zero & ~mask).any()                              # never in the padding
    widths = zero.sum(1)
    for length, cap in ((50, 10), (30, 6), (10, 2), (1, 0)):
        w = widths[torch.tensor(n) == length].float()
        assert w.max() <= cap and abs(w.mean().item() - cap / 2) < 0.06 * cap + 0.05, (length, w.mean())
    rows = zero[widths > 0]
    first = rows.float().argmax(1)
    span = torch.arange(N)[None, :] - first[:, None]
    assert torch.equal(rows, (span >= 0) & (span < rows.sum(1, keepdim=True)))  # contiguous
    # starts spread over the whole valid range: some masks end on the last valid frame of 50
    ends = first + rows.sum(1)
    assert (ends[torch.tensor(n)[widths > 0] == 50] == 50).any()


def test_feature_masks_zero_whole_channels_of_valid_frames_only():
    x = torch.randn(8, 7, 40)
    mask = _mask([7, 4, 7, 2, 7, 7, 5, 3], 7)
    out = spec_augment(x, mask, SpecAugmentConfig(feature_masks=2, feature_width=6), torch.Generator().manual_seed(1))
    dropped = (out == 0) & (x != 0)
    per_channel = dropped.any(1)                                          # [B, D]
    assert (per_channel.sum(1) <= 12).all() and per_channel.any()
    for b in range(8):                                                     # a dropped channel is dropped in every valid frame
        valid = mask[b]
        assert torch.equal(dropped[b][valid].any(0), dropped[b][valid].all(0))
        assert not dropped[b][~valid].any()


def test_reproducible_with_a_generator():
    x, mask = torch.randn(3, 20, 8), _mask([20, 15, 9], 20)
    cfg = SpecAugmentConfig(time_masks=2, time_width=0.3, feature_masks=1, feature_width=3)
    a = spec_augment(x, mask, cfg, torch.Generator().manual_seed(5))
    b = spec_augment(x, mask, cfg, torch.Generator().manual_seed(5))
    c = spec_augment(x, mask, cfg, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_model_masks_features_in_training_only():
    from mmlora.encoders.base import Features
    from mmlora.llm import LLMConfig
    from mmlora.model import ModelConfig, MultimodalLM
    from test_model import FakeEncoder

    cfg = ModelConfig(llm=LLMConfig("random:tiny"), adapters={"default": {"rank": 2, "alpha": 4}},
                      media={"audio": {"projector": {"compressor": "stack", "rates": [1], "hidden_dim": 8},
                                       "spec_augment": {"time_masks": 2, "time_width": 0.5}}})
    model = MultimodalLM.build(cfg, encoders={"audio": FakeEncoder()})
    assert ModelConfig.from_dict(cfg.to_dict()).media["audio"].spec_augment == cfg.media["audio"].spec_augment
    with pytest.raises(ValueError, match="media.spec_augment: field 'time_mask': unknown key 'time_mask'"):
        ModelConfig(media={"audio": {"spec_augment": {"time_mask": 1}}})
    feats = {"audio": Features(torch.randn(2, 40, 12), torch.ones(2, 40, dtype=torch.bool), 50.0)}
    model.eval()
    ref = model.project(feats, {})["audio"]
    assert all(torch.equal(a, b) for a, b in zip(ref, model.project(feats, {})["audio"]))
    model.train()
    torch.manual_seed(0)
    aug = model.project(feats, {})["audio"]
    changed = [(a != b).any(-1).sum().item() for a, b in zip(ref, aug)]
    assert all(0 < c <= 40 for c in changed), changed
