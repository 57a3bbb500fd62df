"""Features container: right padding, unbatch/collate round trip, device/dtype moves; Encoder contract."""
from __future__ import annotations

import pytest
import torch

from mmlora.encoders.base import Encoder, Features, config_fingerprint, pad_sequence, weights_fingerprint


def test_pad_unbatch_collate_round_trip():
    items = [{"x": torch.randn(n, 4), "hidden.0": torch.randn(n + 1, 3), "hidden.1": torch.randn(n + 1, 3)}
             for n in (3, 1, 5)]
    f = Features.collate(items, rate_hz=12.5, tokens_per_step=1)
    assert f.x.shape == (3, 5, 4) and f.mask.sum(1).tolist() == [3, 1, 5] and f.rate_hz == 12.5
    assert f.x[1, 1:].abs().sum() == 0 and f.lengths.tolist() == [3, 1, 5]
    assert len(f.hidden_states) == 2 and f.hidden_states[0].shape == (3, 6, 3)
    assert f.hidden_mask.sum(1).tolist() == [4, 2, 6]
    back = f.unbatch()
    for a, b in zip(items, back):
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    g = f.to(torch.float64)
    assert g.x.dtype == torch.float64 and g.mask.dtype == torch.bool and g.hidden_states[1].dtype == torch.float64
    x, m = pad_sequence([torch.ones(2, 2), torch.ones(1, 2)])
    assert x.tolist() == [[[1, 1], [1, 1]], [[1, 1], [0, 0]]] and m.tolist() == [[True, True], [True, False]]
    with pytest.raises(ValueError, match="no items"):
        Features.collate([], rate_hz=None)


class Tiny(Encoder):
    kind = "tiny"

    def __init__(self, seed=0, scale=1.0):
        super().__init__()
        torch.manual_seed(seed)
        self.lin = torch.nn.Linear(2, 3)
        self.scale, self.output_dim, self.rate_hz = scale, 3, 10.0

    def preprocess_config(self):
        return {"scale": self.scale}

    def _encode(self, batch, output_hidden_states):
        x, m = pad_sequence([self.lin(b * self.scale) for b in batch])
        return Features(x * m[..., None], m, self.rate_hz)


def test_encoder_contract_no_grad_eval_and_ids():
    enc = Tiny()
    f = enc.encode([torch.randn(4, 2), torch.randn(2, 2)])
    assert not f.x.requires_grad and f.x.shape == (2, 4, 3)
    enc.train()
    assert not enc.training
    assert enc.encoder_id == Tiny().encoder_id  # same weights and preprocessing
    assert enc.encoder_id != Tiny(seed=1).encoder_id != Tiny(scale=2.0).encoder_id
    assert weights_fingerprint(Tiny()) == weights_fingerprint(Tiny()) and config_fingerprint({"a": 1}) != \
        config_fingerprint({"a": 2})
    with pytest.raises(ValueError, match="empty batch"):
        enc.encode([])
