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
from .data.media import SAMPLE_RATE, MediaError, load_audio, load_video, split_at_pauses
from .model import SWEEPS, MultimodalLM

__all__ = ["load_pipeline", "MediaPipeline", "MediaError"]


def _is_batch(x: Any) -> bool:
    return isinstance(x, (list, tuple))


class MediaPipeline:
    """Prompted generation over media: ``transcribe`` for speech, ``caption`` for video/images."""

    def __init__(self, model: MultimodalLM, instruction: str | None = None, modalities: Sequence[str] | None = None,
                 batch_size: int = 8, generation: dict | None = None, piece_seconds: float | None = None):
        self.model = model.eval()
        info = model.pipeline_info
        self.instruction = instruction or info.get("instruction", "Transcribe the speech.")
        self.modalities = tuple(modalities or info.get("modalities") or sorted(model.encoders))
        self.batch_size = batch_size
        self.generation = {"max_new_tokens": 48, "num_beams": 1, **info.get("generation", {}), **(generation or {})}
        # audio longer than this is cut at pauses into pieces decoded one by one (None: the encoder's window)
        self.piece_seconds = piece_seconds if piece_seconds is not None else info.get("piece_seconds")

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
        kw = self.generation_for(gen)
        for k in SWEEPS:
            if isinstance(kw.get(k), (list, tuple)):
                raise ValueError(f"transcribe takes one {k}, got {kw[k]} (several are for evaluate's sweep)")
        out: list[str] = []
        n = len(next(iter(media.values())))
        for start in range(0, n, self.batch_size):
            chunk = {m: v[start:start + self.batch_size] for m, v in media.items()}
            batch = collate_samples(self._samples(chunk, prompt), self.model.prompts, with_answer=False)
            out.extend(tidy_text(t) for t in self.model.generate(batch, rates=rates, **kw))
        return out if batched else out[0]

    def generation_for(self, gen: dict) -> dict:
        """The saved generation settings with a call's ``gen`` on top. A call that asks for greedy decoding
        (``num_beams=1``) without naming ``ctc_weight`` (``whisper_weight``) drops a saved one, which rescores beams: ``mmlora
        evaluate --num-beams 1`` on the release (saved with 4 beams and CTC rescoring) decodes greedily. A saved
        ``whisper_proposal`` (``confidence_gate``, ``second_judge_weight``) goes where no ``whisper_weight`` is left (it
        adds to (ranks, weighs beside) the beams that weight rescores): ``--whisper-weight 0`` on a release with second
        judges reads the LLM's own beams."""
        kw = {**self.generation, **gen}
        if int(gen.get("num_beams") or 2) < 2:
            for k in ("ctc_weight", "whisper_weight"):
                if k not in gen:
                    kw.pop(k, None)
        if not kw.get("whisper_weight"):  # what adds to or ranks the beams the judge rescores goes with it
            for k in ("whisper_proposal", "confidence_gate", "second_judge_weight"):
                if k not in gen:
                    kw.pop(k, None)
        return kw

    # --------------------------------------------------------------- tasks
    def transcribe(self, audio=None, video=None, rates: dict[str, int] | None = None, **gen) -> str | list[str]:
        """Transcribe one input (path or array) or a list of them; ``video`` is the lip video.
        ``rates`` picks a Matryoshka rate pair, e.g. ``{"audio": 16, "video": 5}``. Audio longer than
        ``piece_seconds`` (saved with the model; else the encoder's window, Whisper's 30 s) is cut at
        pauses (:func:`split_at_pauses`), the pieces are transcribed in one batch and their texts
        joined; with a lip video the audio is decoded whole and must fit the window."""
        limit = self.piece_limit()
        if audio is None or video is not None or not limit:
            return self._run({"audio": audio, "video": video}, self.instruction, rates, gen)
        batched = _is_batch(audio)
        waves = [self._load("audio", a) for a in (audio if batched else [audio])]
        pieces, owner = cut_long_audio(waves, limit)
        joined = join_pieces(self._run({"audio": pieces}, self.instruction, rates, gen), owner, len(waves))
        return joined if batched else joined[0]

    def piece_limit(self) -> int | None:
        """Longest audio (samples) decoded in one piece: the audio encoder's window, or ``piece_seconds``
        if shorter; None for a model without an audio encoder that has a window."""
        enc = self.model.encoders["audio"] if "audio" in self.model.encoders else None
        return piece_limit(getattr(enc, "max_samples", None), self.piece_seconds)

    def caption(self, video=None, audio=None, image=None, prompt: str | None = None, **gen) -> str | list[str]:
        """Describe a video (with its soundtrack) or an image."""
        return self._run({"audio": audio, "video": video, "image": image}, prompt or self.instruction, None, gen)


def piece_limit(window: int | None, piece_seconds: float | None) -> int | None:
    """Longest audio (samples) decoded in one piece: an audio encoder's ``window`` (samples; None: the encoder has
    none, nothing is cut), or ``piece_seconds`` if shorter (:meth:`MediaPipeline.piece_limit`; ``picker_probe.py``
    cuts again as a decoding did)."""
    if window and piece_seconds:
        return min(window, int(piece_seconds * SAMPLE_RATE))
    return window


def cut_long_audio(waves: Sequence[torch.Tensor], limit: int) -> tuple[list[torch.Tensor], list[int]]:
    """Each waveform longer than ``limit`` samples cut at pauses (:func:`split_at_pauses`); returns the
    pieces in order and, for each piece, the index of the waveform it came from."""
    pieces, owner = [], []
    for i, w in enumerate(waves):
        parts = split_at_pauses(w, limit) if w.ndim == 1 else [w]  # not 1-D: the encoder names the problem
        pieces += parts
        owner += [i] * len(parts)
    return pieces, owner


def tidy_text(text: str) -> str:
    """A generated answer as shown to users and scored: without U+FFFD, what a byte-level tokenizer decodes
    from a piece of a multi-byte character the model left unfinished ("not an\ufffd an\ufffd disposed" ->
    "not an an disposed"), and without the double spaces that leaves."""
    if "\ufffd" not in text:
        return text
    return " ".join(t for t in text.replace("\ufffd", "").split(" ") if t).strip()


def join_pieces(texts: Sequence[str], owner: Sequence[int], n: int) -> list[str]:
    """The texts of each waveform's pieces (:func:`tidy_text`), in order, joined by spaces (empty ones left out)."""
    parts: list[list[str]] = [[] for _ in range(n)]
    for t, o in zip(texts, owner):
        t = tidy_text(t)
        if t:
            parts[o].append(t)
    return [" ".join(p) for p in parts]


def load_pipeline(model_dir: str | os.PathLike, device: str | torch.device | None = None,
                  dtype: str | None = None, **kwargs) -> MediaPipeline:
    """Load a model saved by training (``output_dir/final`` or a checkpoint) for inference. ``dtype``: the LLM's
    weights (``float32``, ``bfloat16``, ``float16``); default the saved one (the release's ``bfloat16``, as trained
    on the GPU), except on the CPU, where it is ``float32``: a CPU without bfloat16 arithmetic (the 2-core AMD EPYC
    of CI) decoded the release's 12 demo clips 2.7x slower in bfloat16 (docs/PERFORMANCE.md "The LLM's dtype on
    the CPU")."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype is None and torch.device(device).type == "cpu":
        dtype = "float32"
    overrides = {"llm": {"dtype": dtype}} if dtype is not None else {}
    model = MultimodalLM.from_pretrained(model_dir, **overrides)
    model.to(device)
    return MediaPipeline(model, **kwargs)
