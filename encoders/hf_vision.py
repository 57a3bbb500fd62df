"""Any local transformers vision tower (CLIP, SigLIP, ViT, …) as a frozen image / per-frame encoder.

    frames [M, 3, H, W] in [0, 1] ─ resize to the processor's size, (x − mean) / std
        ─ vision tower ─▶ hidden_states[layer] [M, P(+1 CLS), D] ─ drop CLS? ─▶ [M, P, D]

The folder is read with ``AutoConfig`` / ``AutoModel`` (``local_files_only``, no remote code); a
dual-encoder checkpoint (``CLIPModel``, ``SiglipModel``) contributes its ``vision_model`` only.
Resizing and normalization use the folder's ``preprocessor_config.json`` (``size``, ``image_mean``,
``image_std``) when present, else ``image_size`` of the vision config and mean = std = 0.5.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from .base import Encoder, Features, FrameSampling, encode_frames, preprocess_frames, to_frames


@dataclass
class HFVisionConfig:
    """A local HF vision tower."""

    path: str = ""  # local folder with config.json + *.safetensors (CLIP/SigLIP/ViT-style AutoModel)
    layer: int = -1  # which hidden state gives the features (-1 last, -2 penultimate as in LLaVA)
    drop_cls: bool | None = None  # drop the leading CLS token (None: drop it when the tower has one)
    frames: FrameSampling = field(default_factory=FrameSampling)  # video: fps, frame stride, chunk size
    dtype: str = "float32"  # compute dtype
    device: str = "cpu"  # where the encoder runs

    def __post_init__(self):
        if isinstance(self.frames, dict):
            self.frames = FrameSampling(**self.frames)


def _processor_settings(folder: Path, vcfg) -> tuple[tuple[int, int], list[float], list[float]]:
    size = getattr(vcfg, "image_size", 224)
    size = (size, size) if isinstance(size, int) else tuple(size)
    mean, std = [0.5] * 3, [0.5] * 3
    pp = folder / "preprocessor_config.json"
    if pp.is_file():
        d = json.loads(pp.read_text())
        s = d.get("crop_size") or d.get("size")
        if isinstance(s, dict):
            if "height" in s:
                size = (s["height"], s["width"])
            elif "shortest_edge" in s:
                size = (s["shortest_edge"], s["shortest_edge"])
        elif isinstance(s, int):
            size = (s, s)
        mean, std = d.get("image_mean", mean), d.get("image_std", std)
    return size, list(mean), list(std)


def load_hf_vision(path: str | Path, dtype: torch.dtype = torch.float32) -> tuple[nn.Module, dict]:
    """``(vision tower in eval mode, {"size", "mean", "std", "has_cls"})`` from a local folder."""
    from transformers import AutoConfig, AutoModel

    p = Path(path)
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"{p}: not a transformers model folder (no config.json)")
    cfg = AutoConfig.from_pretrained(str(p), local_files_only=True)
    model = AutoModel.from_pretrained(str(p), local_files_only=True, dtype=dtype)
    tower = getattr(model, "vision_model", model)
    vcfg = getattr(cfg, "vision_config", cfg)
    size, mean, std = _processor_settings(p, vcfg)
    # CLIP-style towers prepend a class embedding; SigLIP's do not.
    has_cls = any(hasattr(m, "class_embedding") for m in tower.modules())
    return tower.eval(), {"size": size, "mean": mean, "std": std, "has_cls": has_cls}


class HFVisionEncoder(Encoder):
    """``encode(list of images or videos) -> Features``; grid tokens per frame, CLS dropped by default.

    ``hidden_states`` (when asked) are the outputs of every transformer layer (HF ``hidden_states[1:]``),
    CLS removed like ``x``, for images only.
    """

    kind = "hf-vision"

    def __init__(self, cfg: HFVisionConfig, tower: nn.Module | None = None, settings: dict | None = None):
        super().__init__()
        self.cfg = cfg
        if tower is None:
            tower, settings = load_hf_vision(cfg.path, getattr(torch, cfg.dtype))
        self.tower = tower.to(device=cfg.device, dtype=getattr(torch, cfg.dtype)).eval()
        self.settings = settings
        self.drop_cls = settings["has_cls"] if cfg.drop_cls is None else cfg.drop_cls
        vcfg = tower.config
        self.output_dim = vcfg.hidden_size
        self.rate_hz = cfg.frames.fps / cfg.frames.stride

    def preprocess_config(self) -> dict:
        c = self.cfg
        return {"layer": c.layer, "drop_cls": self.drop_cls, "size": list(self.settings["size"]),
                "mean": self.settings["mean"], "std": self.settings["std"], "fps": c.frames.fps,
                "stride": c.frames.stride, "dtype": c.dtype}

    def _run(self, frames: Tensor) -> tuple[Tensor, ...]:
        x = preprocess_frames(frames.to(self.device), self.settings["size"], self.settings["mean"], self.settings["std"])
        out = self.tower(pixel_values=x.to(self.dtype), output_hidden_states=True)
        skip = 1 if self.drop_cls else 0
        return tuple(h[:, skip:] for h in out.hidden_states)

    def encode_frames(self, frames: Tensor) -> Tensor:
        """``[M, 3, H, W]`` in [0, 1] → ``[M, P, D]`` (the configured layer's tokens)."""
        return self._run(frames)[self.cfg.layer]

    def _encode(self, batch: list, output_hidden_states: bool) -> Features:
        if not output_hidden_states:
            return encode_frames(batch, self.cfg.frames, self.encode_frames, device=self.device)
        frames, is_video = zip(*(to_frames(b) for b in batch))
        if any(is_video):
            raise ValueError("hidden states are returned for images only, not videos")
        hs = self._run(torch.cat(frames))  # embeddings + one per layer, each [B, P, D]
        x = hs[self.cfg.layer]
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        return Features(x, mask, None, x.shape[1], tuple(hs[1:]), mask)
