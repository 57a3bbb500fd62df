"""Frozen encoders: ``build_encoder(cfg).encode(batch) -> Features(x [B,N,D], mask [B,N], rate_hz, ...)``.

Whisper (HF folder or CTranslate2 model.bin), EfficientNet-Lite0 (image / per-frame video), any local
HF vision tower. See docs/ASSETS.md for the offline weights and runnable snippets.
"""
from .base import Encoder, Features, FrameSampling
from .efficientnet import EfficientNetConfig, EfficientNetEncoder, EfficientNetLite0, load_efficientnet_lite0
from .hf_vision import HFVisionConfig, HFVisionEncoder, load_hf_vision
from .registry import KINDS, PRESETS, EncoderConfig, build_encoder, config_from_dict, preset
from .whisper import WhisperAudioEncoder, WhisperEncoderConfig, frames_for, load_whisper_encoder

__all__ = [
    "Encoder", "Features", "FrameSampling", "EncoderConfig", "build_encoder", "config_from_dict", "preset",
    "KINDS", "PRESETS", "WhisperEncoderConfig", "WhisperAudioEncoder", "load_whisper_encoder", "frames_for",
    "EfficientNetConfig", "EfficientNetEncoder", "EfficientNetLite0", "load_efficientnet_lite0",
    "HFVisionConfig", "HFVisionEncoder", "load_hf_vision",
]
