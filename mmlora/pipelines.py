"""Inference API: ``load_pipeline(dir)`` → an object that transcribes (or captions) media.

    >>> asr = mmlora.load_pipeline("checkpoints/asr-smollm2-whisper-tiny")
    >>> asr.transcribe(audio="clip.flac")
    'and god said let there be light'
    >>> asr.transcribe(audio=["a.flac", "b.flac"], num_beams=4)   # a batch -> list of texts

Inputs may be file paths (audio: anything soundfile reads, resampled to 16 kHz mono; video:
anything decord reads, at 25 fps) or already-decoded arrays (a 16 kHz waveform; uint8 frames
``[T, H, W, 3]``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch

from .data.collate import MEDIA_KEYS, collate_samples
from .data.media import MediaError, load_audio, load_video
from .model import MultimodalLM

__all__ = ["load_pipeline", "MediaPipeline", "MediaError"]


def _is_batch(x: Any) -> bool:
    return isinstance(x, (list, tuple))


class MediaPipeline:
    """Prompted generation over media: ``transcribe`` for speech, ``caption`` for video/images."""

    def __init__(self, model: MultimodalLM, instruction: str | None = None, modalities: Sequence[str] | None = None,
                 batch_size: int = 8, generation: dict | None = None):
        self.model = model.eval()
        info = model.pipeline_info
        self.instruction = instruction or info.get("instruction", "Transcribe the speech.")
        self.modalities = tuple(modalities or info.get("modalities") or sorted(model.encoders))
        self.batch_size = batch_size
        self.generation = {"max_new_tokens": 48, "num_beams": 1, **info.get("generation", {}), **(generation or {})}

    # --------------------------------------------------------------- media
    @staticmethod
    def _load(kind: str, item: Any):
        if not isinstance(item, (str, os.PathLike)):
            return torch.as_tensor(item)
        path = Path(item)
        if not path.is_file():
            raise MediaError(f"{path}: no such {kind} file")
        return load_audio(path) if kind == "audio" else load_video(path)

    def _samples(self, media: dict[str, list], prompt: str) -> list[dict]:
        n = len(next(iter(media.values())))
        samples = []
        for i in range(n):
            s = {"id": i, "messages": [{"role": "user", "content": "".join(f"<{m}>" for m in media) + prompt}]}
            for m, items in media.items():
                s[MEDIA_KEYS[m]] = [self._load(m, items[i])]
            samples.append(s)
        return samples

    def _run(self, media: dict[str, Any], prompt: str, rates: dict[str, int] | None, gen: dict) -> str | list[str]:
        media = {m: v for m, v in media.items() if v is not None}
        if not media:
            raise ValueError("give at least one input (audio=..., video=..., image=...)")
        for m in media:
            if m not in self.model.encoders:
                raise ValueError(f"this model takes {sorted(self.model.encoders)}, not {m}")
        batched = _is_batch(next(iter(media.values())))
        media = {m: list(v) if _is_batch(v) else [v] for m, v in media.items()}
        if len({len(v) for v in media.values()}) > 1:
            raise ValueError("audio and video lists must have the same length")
        kw = {**self.generation, **gen}
        out: list[str] = []
        n = len(next(iter(media.values())))
        for start in range(0, n, self.batch_size):
            chunk = {m: v[start:start + self.batch_size] for m, v in media.items()}
            batch = collate_samples(self._samples(chunk, prompt), self.model.prompts, with_answer=False)
            out.extend(self.model.generate(batch, rates=rates, **kw))
        return out if batched else out[0]

    # --------------------------------------------------------------- tasks
    def transcribe(self, audio=None, video=None, rates: dict[str, int] | None = None, **gen) -> str | list[str]:
        """Transcribe one input (path or array) or a list of them; ``video`` is the lip video.
        ``rates`` picks a Matryoshka rate pair, e.g. ``{"audio": 16, "video": 5}``."""
        return self._run({"audio": audio, "video": video}, self.instruction, rates, gen)

    def caption(self, video=None, audio=None, image=None, prompt: str | None = None, **gen) -> str | list[str]:
        """Describe a video (with its soundtrack) or an image."""
        return self._run({"audio": audio, "video": video, "image": image}, prompt or self.instruction, None, gen)


def load_pipeline(model_dir: str | os.PathLike, device: str | torch.device | None = None,
                  dtype: str | None = None, **kwargs) -> MediaPipeline:
    """Load a model saved by training (``output_dir/final`` or a checkpoint) for inference."""
    overrides = {"llm": {"dtype": dtype}} if dtype is not None else {}
    model = MultimodalLM.from_pretrained(model_dir, **overrides)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    return MediaPipeline(model, **kwargs)
