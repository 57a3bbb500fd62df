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


def test_encode_frames_batches_frames_across_items():
    """Videos of one frame size are encoded together (``chunk`` frames per call across clips) and
    split back per clip: the same features as one clip at a time, in fewer calls; images of
    different sizes fall back to one item at a time."""
    from mmlora.encoders.base import FrameSampling, encode_frames

    torch.manual_seed(0)
    w = torch.randn(3, 5)
    calls = []

    def frame_fn(f):  # [M, 3, H, W] -> [M, 2, 5]: per-frame, two "patches"
        calls.append(f.shape[0])
        pooled = f.mean(dim=(2, 3)) @ w
        return torch.stack([pooled, pooled * f[:, :, 0, 0].sum(1, keepdim=True)], dim=1)

    clips = [torch.randint(0, 256, (n, 6, 4, 3), dtype=torch.uint8) for n in (7, 3, 10)]
    sampling = FrameSampling(fps=25.0, stride=2, chunk=4)
    got = encode_frames(clips, sampling, frame_fn, device="cpu")
    assert calls == [4, 4, 4]  # 4 + 2 + 5 = 11 frames after stride 2, across clips; the last 3 padded to 4
    calls.clear()
    one = [encode_frames([c], sampling, frame_fn) for c in clips]
    assert calls == [4, 2, 4, 1]
    assert got.rate_hz == 12.5 and got.tokens_per_step == 2
    for i, o in enumerate(one):
        n = int(got.mask[i].sum())
        assert n == o.x.shape[1] == 2 * len(range(0, clips[i].shape[0], 2))
        torch.testing.assert_close(got.x[i, :n], o.x[0])
    calls.clear()
    imgs = [torch.rand(3, 8, 8), torch.rand(3, 6, 10)]
    got = encode_frames(imgs, sampling, frame_fn)
    assert calls == [1, 1] and got.x.shape[:2] == (2, 2) and got.rate_hz is None


def test_encode_frames_pads_the_last_chunk_to_a_power_of_two():
    """``pad_chunks`` (default): a batch's last, shorter chunk is padded with blank frames to a power of two (at
    most ``chunk``) so the encoder sees few shapes; the padded frames' outputs are dropped and every clip's
    features equal those without padding."""
    from mmlora.encoders.base import FrameSampling, encode_frames

    torch.manual_seed(0)
    w = torch.randn(3, 5)
    calls = []

    def frame_fn(f):
        calls.append(f.shape[0])
        return (f.mean(dim=(2, 3)) @ w).unsqueeze(1)

    for total, want in ((37, [16, 16, 8]), (41, [16, 16, 16]), (1, [1]), (3, [4]), (32, [16, 16])):
        clips = [torch.randint(0, 256, (n, 4, 4, 3), dtype=torch.uint8) for n in (total - total // 2, total // 2) if n]
        calls.clear()
        got = encode_frames(clips, FrameSampling(chunk=16), frame_fn)
        assert calls == want, (total, calls)
        calls.clear()
        ref = encode_frames(clips, FrameSampling(chunk=16, pad_chunks=False), frame_fn)
        assert sum(calls) == total
        torch.testing.assert_close(got.x, ref.x)
        torch.testing.assert_close(got.mask, ref.mask)
