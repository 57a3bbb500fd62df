"""Build encoders from typed configs; named presets as data (``preset("whisper-tiny.en", full_context=False)``).

    cfg = preset("efficientnet-lite0", pool="grid")        # or EfficientNetConfig(...), or from YAML:
    cfg = config_from_dict({"kind": "whisper", "path": "/ckpt/whisper-small"})
    enc = build_encoder(cfg)                               # frozen Encoder; enc.encode(batch) -> Features
"""
from __future__ import annotations

import copy
from dataclasses import fields, replace
from typing import Any, Union

from .base import Encoder, FrameSampling
from .efficientnet import EfficientNetConfig, EfficientNetEncoder
from .hf_vision import HFVisionConfig, HFVisionEncoder
from .whisper import WhisperAudioEncoder, WhisperEncoderConfig

EncoderConfig = Union[WhisperEncoderConfig, EfficientNetConfig, HFVisionConfig]

# kind name (YAML "kind:") -> (config class, encoder class)
KINDS: dict[str, tuple[type, type]] = {
    "whisper": (WhisperEncoderConfig, WhisperAudioEncoder),
    "efficientnet": (EfficientNetConfig, EfficientNetEncoder),
    "hf_vision": (HFVisionConfig, HFVisionEncoder),
}

PRESETS: dict[str, EncoderConfig] = {
    "whisper-tiny.en": WhisperEncoderConfig(path="whisper-tiny.en"),  # 384-d, 4 layers, 50 Hz
    "whisper-base": WhisperEncoderConfig(path="whisper-base"),  # 512-d, 6 layers, 50 Hz, multilingual
    "efficientnet-lite0": EfficientNetConfig(path="efficientnet-lite0"),  # 1280-d, one token per frame
    "efficientnet-lite0-grid": EfficientNetConfig(path="efficientnet-lite0", pool="grid"),  # 49 tokens per frame
}


def preset(name: str, **overrides: Any) -> EncoderConfig:
    """A copy of a named preset with field overrides."""
    if name not in PRESETS:
        raise KeyError(f"unknown encoder preset {name!r}; choose from {sorted(PRESETS)}")
    return replace(copy.deepcopy(PRESETS[name]), **overrides)


def config_from_dict(d: dict[str, Any]) -> EncoderConfig:
    """``{"kind": "whisper"|"efficientnet"|"hf_vision", **fields}`` or ``{"preset": name, **overrides}``."""
    d = dict(d)
    if "preset" in d:
        return preset(d.pop("preset"), **d)
    kind = d.pop("kind", None)
    if kind not in KINDS:
        raise ValueError(f"encoder config: 'kind' must be one of {sorted(KINDS)} (or give 'preset'), got {kind!r}")
    cls = KINDS[kind][0]
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"encoder config ({kind}): unknown fields {unknown}; known: {sorted(known)}")
    if isinstance(d.get("frames"), dict):
        d["frames"] = FrameSampling(**d["frames"])
    for k in ("mean", "std"):
        if isinstance(d.get(k), list):
            d[k] = tuple(d[k])
    return cls(**d)


def build_encoder(cfg: EncoderConfig | dict | str) -> Encoder:
    """A frozen encoder from a config dataclass, a dict (see :func:`config_from_dict`) or a preset name."""
    if isinstance(cfg, str):
        cfg = preset(cfg)
    elif isinstance(cfg, dict):
        cfg = config_from_dict(cfg)
    for cfg_cls, enc_cls in KINDS.values():
        if isinstance(cfg, cfg_cls):
            return enc_cls(cfg)
    raise TypeError(f"build_encoder: unsupported config type {type(cfg).__name__}")
