"""scripts/lip_feature_probe.py --model: it probes a saved model's lip encoder with the LoRA trained inside it, not a
fresh frozen one (a tiny random VSR model, CPU)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import lip_feature_probe as probe  # noqa: E402


def _vsr(*overrides: str):
    from mmlora.tasks.cli import build_model, load_run_config

    _, cfg = load_run_config(str(ROOT / "recipes/vsr_tiny.yaml"), list(overrides))
    return build_model(cfg)


def test_load_encoder_runs_the_saved_encoder_lora(tmp_path):
    from mmlora.lora import iter_adapters

    model = _vsr("model.media.video.encoder_lora={rank: 2, alpha: 4}")
    enc = model.encoders["video"]
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, _, ad in iter_adapters(enc):  # non-zero B: trained adapters change the encoder's output
            ad.B.copy_(torch.randn(ad.B.shape, generator=g) * 0.1)
    model.save_pretrained(tmp_path / "m")
    frames = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    loaded = probe.load_encoder(str(tmp_path / "m"))
    assert not loaded.training
    with torch.no_grad():
        want, got = enc.eval().encode_frames(frames), loaded.encode_frames(frames)
        fresh = _vsr().encoders["video"].eval().encode_frames(frames)  # the same random network without LoRA
    assert ((got - want).abs().max() / want.abs().max()).item() < 1e-5
    assert ((got - fresh).abs().max() / fresh.abs().max()).item() > 1e-2  # the adapters act: the check can fail


def test_load_encoder_names_a_model_without_lips(tmp_path):
    from mmlora.tasks.cli import build_model, load_run_config

    _, cfg = load_run_config(str(ROOT / "recipes/asr_tiny.yaml"), [])
    build_model(cfg).save_pretrained(tmp_path / "asr")
    with pytest.raises(SystemExit, match=r"asr: the model has no video encoder"):
        probe.load_encoder(str(tmp_path / "asr"))


def test_top_confusions_counts_wrong_pairs_only():
    true = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    pred = torch.tensor([1, 1, 0, 0, 1, 1, 0, 2])
    assert probe.top_confusions(true, pred, ["a", "b", "c"]) == ["a->b 2", "b->a 1", "c->a 1", "c->b 1"]
    assert probe.top_confusions(true, pred, ["a", "b", "c"], k=1) == ["a->b 2"]
    assert probe.top_confusions(true, true, ["a", "b", "c"]) == []


def test_load_encoder_without_a_model_builds_the_frozen_encoder_of_the_config():
    from mmlora.encoders.efficientnet import EfficientNetEncoder

    enc = probe.load_encoder(None, '{"kind": "efficientnet", "path": "random", "image_size": 64}')
    assert isinstance(enc, EfficientNetEncoder) and not enc.training
    frames = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert enc.encode_frames(frames).shape[0] == 2
