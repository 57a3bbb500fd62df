"""Speech recognition tasks (ASR / VSR / AVSR / Matryoshka AVSR): manifests, datasets, prompts.

Llama-AVSR's prompt (SYSTEMS.md §2) is ``<audio> A </audio> <video> V </video> instruction``
with the transcript as the assistant's answer; the loss is on the transcript only. The task
modules (``asr``, ``vsr``, ``avsr``, ``avsr_matryoshka``) differ in which modalities they feed.

Manifest lines (JSONL), paths relative to the manifest's folder; either the short form
``{"id", "audio", "video", "text"}`` (+ optional ``voice``, ``split``, ``duration``) or the
canonical chat form with ``messages`` / ``audios`` / ``videos``.
"""
from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmlora.data.errors import SampleError

log = logging.getLogger(__name__)

INSTRUCTION = "Transcribe the speech."
AUDIO_HZ, VIDEO_FPS = 50, 25  # Whisper frames / lip-video frames per second


@dataclass
class SpeechDataConfig:
    """Where the data is and how batches are made."""

    train_manifest: str = ""                 # JSONL (short or chat form)
    val_manifest: str | None = None          # evaluated every train.eval_every steps (WER on a few)
    instruction: str = INSTRUCTION           # the user's text after the media slots
    max_frames: int | None = 6000            # batch budget in audio frames (50 Hz; video counts x2), None: batch_size
    batch_size: int = 16                     # max samples per batch
    max_samples: int | None = None           # use only the first N training samples
    noise_snrs: list[float] = field(default_factory=list)  # training noise SNRs (dB) to sample from; [] = clean
    noise_prob: float = 0.0                  # probability a training sample gets noise
    noise_kind: str = "babble"               # babble (other utterances) | white
    val_samples: int = 64                    # val utterances decoded at each evaluation


@dataclass
class Record:
    id: str
    text: str
    audio: Path | None
    video: Path | None
    frames: int  # cost in 50 Hz frames (for the batch budget)
    line: int


def read_manifest(path: str | Path, need: tuple[str, ...] = ("audio",)) -> list[Record]:
    """Read a speech manifest; a line lacking a needed field is named in the error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found")
    root = path.parent
    out = []
    for no, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{no}: not valid JSON ({e.msg})") from None
        if "messages" in d:  # chat form
            msgs = d["messages"]
            text = next((m["content"] for m in reversed(msgs) if m.get("role") == "assistant"), None)
            audio = (d.get("audios") or [None])[0]
            video = (d.get("videos") or [None])[0]
        else:
            text, audio, video = d.get("text"), d.get("audio"), d.get("video")
        fields = {"text": text, "audio": audio, "video": video}
        for f in ("text", *need):
            if fields[f] in (None, ""):
                raise ValueError(f"{path}:{no}: missing field {f!r}")
        dur = d.get("duration")
        frames = int(round(float(dur) * AUDIO_HZ)) if dur is not None else 0
        out.append(Record(id=str(d.get("id", f"{path.stem}-{no}")), text=str(text),
                          audio=root / audio if audio else None, video=root / video if video else None,
                          frames=frames, line=no))
    if not out:
        raise ValueError(f"{path}: manifest has no samples")
    return out


def record_frames(rec: Record) -> int:
    """Cost of a record in 50 Hz frames (duration from the manifest, else the audio header)."""
    if rec.frames:
        return rec.frames
    if rec.audio is not None:
        try:
            import soundfile as sf

            info = sf.info(str(rec.audio))
            return int(info.frames / info.samplerate * AUDIO_HZ)
        except Exception:  # noqa: BLE001 - unreadable: the dataset reports it when loading
            return AUDIO_HZ
    return 3 * AUDIO_HZ


class SpeechDataset(torch.utils.data.Dataset):
    """Records → chat samples with decoded media for :func:`mmlora.data.collate.collate_samples`."""

    def __init__(self, records: list[Record], modalities: tuple[str, ...], instruction: str = INSTRUCTION,
                 noise_snrs: list[float] | None = None, noise_prob: float = 0.0, noise_kind: str = "babble",
                 seed: int = 0, with_answer: bool = True):
        self.records = records
        self.modalities = modalities
        self.instruction = instruction
        self.noise_snrs = list(noise_snrs or [])
        self.noise_prob = noise_prob
        self.noise_kind = noise_kind
        self.seed = seed
        self.with_answer = with_answer
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.records)

    def lengths(self) -> list[int]:
        return [record_frames(r) for r in self.records]

    def prompt(self) -> str:
        return "".join(f"<{m}>" for m in self.modalities) + self.instruction

    def _noise_for(self, idx: int, n: int) -> tuple[np.ndarray, float] | None:
        if not self.noise_snrs or self.noise_prob <= 0:
            return None
        rng = random.Random(hash((self.seed, self.epoch, idx)))
        if rng.random() >= self.noise_prob:
            return None
        snr = rng.choice(self.noise_snrs)
        if self.noise_kind == "white":
            return np.random.default_rng(rng.randrange(2**31)).standard_normal(n).astype(np.float32), snr
        from mmlora.data.media import load_audio

        parts, total = [], 0
        while total < n:  # babble: other utterances summed
            other = self.records[rng.randrange(len(self.records))]
            if other.audio is None:
                break
            try:
                w = load_audio(other.audio).numpy()
            except Exception:  # noqa: BLE001
                break
            parts.append(w)
            total += len(w)
        if not parts:
            return None
        babble = np.concatenate(parts)[:n]
        return np.pad(babble, (0, n - len(babble))), snr

    def __getitem__(self, idx: int) -> dict[str, Any]:
        from mmlora.data.media import load_audio, load_video

        rec = self.records[idx]
        sample: dict[str, Any] = {"id": rec.id, "messages": [{"role": "user", "content": self.prompt()}]}
        if self.with_answer:
            sample["messages"].append({"role": "assistant", "content": rec.text})
        try:
            if "audio" in self.modalities:
                wav = load_audio(rec.audio)
                noise = self._noise_for(idx, wav.shape[-1])
                if noise is not None:
                    wav = mix_at_snr(wav, torch.from_numpy(noise[0]), noise[1])
                sample["audios"] = [wav]
            if "video" in self.modalities:
                sample["videos"] = [load_video(rec.video)]
        except SampleError:
            raise
        except Exception as e:  # noqa: BLE001 - any decode failure is a bad sample, named
            raise SampleError(f"{rec.audio or rec.video}: cannot read sample {rec.id!r} ({e})", index=idx,
                              path=str(rec.audio or rec.video)) from e
        return sample


def mix_at_snr(speech: torch.Tensor, noise: torch.Tensor, snr_db: float) -> torch.Tensor:
    """``speech + g · noise`` with ``g`` chosen so that 10·log10(P_speech / P_noise) = snr_db."""
    noise = noise[: speech.shape[-1]]
    if noise.shape[-1] < speech.shape[-1]:
        noise = torch.nn.functional.pad(noise, (0, speech.shape[-1] - noise.shape[-1]))
    p_s = speech.pow(2).mean().clamp(min=1e-10)
    p_n = noise.pow(2).mean().clamp(min=1e-10)
    g = torch.sqrt(p_s / (p_n * 10 ** (snr_db / 10)))
    return speech + g * noise
