"""Vocal tract length perturbation: the log-mel warp against a sine's measured frequency, the
encoder's per-item warp, and the model drawing factors in training only."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mmlora.encoders import WhisperAudioEncoder, WhisperEncoderConfig
from mmlora.encoders.whisper import random_whisper_encoder, warp_matrix


def _encoder() -> WhisperAudioEncoder:
    return WhisperAudioEncoder(WhisperEncoderConfig(path="random:tiny", full_context=False),
                               *random_whisper_encoder("random:tiny"))


def _sine(hz: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_identity_and_rows_interpolate():
    torch.testing.assert_close(warp_matrix(1.0), torch.eye(80))
    for a in (0.8, 0.9, 1.1, 1.25):
        w = warp_matrix(a)
        torch.testing.assert_close(w.sum(1), torch.ones(80))  # each output bin: a convex mix of input bins
        assert (w >= 0).all() and ((w > 0).sum(1) <= 2).all()
    with pytest.raises(ValueError, match="warp factor"):
        warp_matrix(3.0)


@pytest.mark.parametrize("hz,alpha", [(600.0, 1.1), (1500.0, 0.9), (2500.0, 1.15), (400.0, 0.85), (3000.0, 0.85)])
def test_warped_sine_peaks_where_the_scaled_sine_does(hz, alpha):
    """Reference: the mel spectrum of a sine at ``alpha * hz``. The warp of the sine at ``hz``
    must peak in the same mel bin (± 1) and match its profile closely around the peak."""
    enc = _encoder()
    mel = enc.log_mel([_sine(hz)], 50)[0]          # [80, 100]
    ref = enc.log_mel([_sine(alpha * hz)], 50)[0]
    got = warp_matrix(alpha) @ mel
    peak = lambda m: int(m[:, 10:90].mean(1).argmax())  # noqa: E731 - frames away from the edges
    assert abs(peak(got) - peak(ref)) <= 1, (peak(mel), peak(got), peak(ref))
    assert abs(peak(mel) - peak(ref)) >= 2  # the warp moved the peak: the check above is not trivial
    p = peak(ref)
    prof = lambda m: m[max(p - 4, 0): p + 5, 10:90].mean(1)  # noqa: E731
    corr = lambda m: float(torch.corrcoef(torch.stack([prof(m), prof(ref)]))[0, 1])  # noqa: E731
    # the window's leakage skirt is scaled too, so the profiles are close, not equal (0.87-0.997 here)
    assert corr(got) > 0.85 and corr(got) > corr(mel) + 0.3, (corr(got), corr(mel))


def test_encoder_warps_each_item_and_refuses_bad_calls():
    enc = _encoder()
    w = [torch.from_numpy(_sine(700.0, 0.6)), torch.from_numpy(_sine(900.0, 0.4))]
    plain = enc.encode(w)
    same = enc.encode(w, warp=[1.0, 1.0])
    torch.testing.assert_close(same.x, plain.x)
    warped = enc.encode(w, warp=[1.0, 1.12])
    torch.testing.assert_close(warped.x[0], plain.x[0])  # item 0 unwarped, and independent of item 1 (masked)
    assert (warped.x[1] - plain.x[1]).abs().max() > 1e-3
    assert torch.equal(warped.mask, plain.mask)  # frequency warp keeps the length
    with pytest.raises(ValueError, match="2 items"):
        enc.encode(w, warp=[1.1])


def test_model_draws_factors_in_training_only(monkeypatch):
    from mmlora.model import MediaConfig, ModelConfig, MultimodalLM

    media = {"audio": MediaConfig(encoder={"kind": "whisper", "path": "random:tiny", "full_context": False},
                                  projector={"compressor": "stack", "rates": [2], "hidden_dim": 16}, vtlp=[0.9, 1.1])}
    model = MultimodalLM.build(ModelConfig(llm={"path": "random:tiny"}, media=media))
    seen = []
    enc = model.encoders["audio"]
    real = enc.encode
    monkeypatch.setattr(enc, "encode", lambda items, output_hidden_states=False, warp=None:
                        seen.append(warp) or real(items, output_hidden_states, warp))
    clips = [torch.from_numpy(_sine(500.0, 0.3)) for _ in range(6)]
    model.train()
    model.encode_media({"audio": clips})
    model.eval()
    model.encode_media({"audio": clips})
    assert len(seen[0]) == 6 and all(0.9 <= a <= 1.1 for a in seen[0]) and len(set(seen[0])) == 6
    assert seen[1] is None


def test_vtlp_config_errors():
    from mmlora.model import MediaConfig, ModelConfig, MultimodalLM

    with pytest.raises(ValueError, match="vtlp"):
        MediaConfig(vtlp=[1.1, 0.9])
    with pytest.raises(ValueError, match="vtlp"):
        MediaConfig(vtlp=[0.9])
    video = {"video": MediaConfig(encoder={"kind": "efficientnet", "path": "random", "image_size": 64},
                                  projector={"compressor": "stack", "rates": [2], "hidden_dim": 16}, vtlp=[0.9, 1.1])}
    with pytest.raises(ValueError, match="no frequency warp"):
        MultimodalLM.build(ModelConfig(llm={"path": "random:tiny"}, media=video))


def _warp_reference(alpha: float, n_mels: int = 80) -> torch.Tensor:
    """One factor's matrix written out row by row (the scalar form warp_matrices vectorises)."""
    from mmlora.encoders.whisper import _slaney_hz, _slaney_mel

    lo, hi = float(_slaney_mel(np.array(0.0))), float(_slaney_mel(np.array(8000.0)))
    step = (hi - lo) / (n_mels + 1)
    w = torch.zeros(n_mels, n_mels)
    for j in range(n_mels):
        src = (float(_slaney_mel(_slaney_hz(np.array(lo + step * (j + 1))) / alpha)) - lo) / step - 1
        src = min(max(src, 0.0), n_mels - 1)
        j0 = int(np.floor(src))
        w[j, j0] += 1.0 - (src - j0)
        w[j, min(j0 + 1, n_mels - 1)] += src - j0
    return w


def test_warp_matrices_match_the_row_by_row_reference():
    from mmlora.encoders.whisper import warp_matrices

    alphas = [0.9, 1.0, 1.137, 0.85, 1.2]
    got = warp_matrices(alphas, 80)
    assert got.shape == (5, 80, 80) and got.dtype == torch.float32
    for a, m in zip(alphas, got):
        torch.testing.assert_close(m, _warp_reference(a), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="warp factor"):
        warp_matrices([1.0, 2.5])
