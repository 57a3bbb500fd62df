"""Media decoding: audio → 16 kHz mono float32, video → RGB uint8 frames at 25 fps, images → RGB uint8.

    load_audio(path)  -> Tensor [n]           float32 in [-1, 1], mono (channel mean), resampled (torchaudio)
    load_video(path)  -> Tensor [T, H, W, 3]  uint8, frames picked at ``fps`` from the file's timeline (decord)
    load_image(path)  -> Tensor [H, W, 3]     uint8 RGB (Pillow)

Every failure raises :class:`MediaError` (a ``ValueError``) or ``FileNotFoundError`` naming the file and
the reason. Outputs feed :mod:`mmlora.encoders` directly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

SAMPLE_RATE = 16000
VIDEO_FPS = 25.0


class MediaError(ValueError):
    """A media file that cannot be decoded or is unusable (the message names the file)."""


@dataclass
class AudioConfig:
    """How audio is decoded."""

    sample_rate: int = SAMPLE_RATE  # output rate in Hz (Whisper: 16000)
    max_seconds: float | None = None  # truncate longer clips (None: keep everything)


@dataclass
class VideoConfig:
    """How video is decoded."""

    fps: float = VIDEO_FPS  # output frame rate: frames are picked at t = i / fps from the file's timeline
    width: int = -1  # resize frames to width × height (bilinear, antialiased); -1 keeps the file's size
    height: int = -1
    max_seconds: float | None = None  # truncate longer clips (None: keep everything)


def _existing(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} file not found: {p}")
    if p.stat().st_size == 0:
        raise MediaError(f"{p}: empty file, cannot decode {what}")
    return p


def to_mono(samples: np.ndarray, sr: int, sample_rate: int = SAMPLE_RATE) -> Tensor:
    """``[n]`` or ``[n, channels]`` samples at ``sr`` Hz -> ``[m]`` float32 mono (channel mean) at
    ``sample_rate`` (``torchaudio.functional.resample``, its defaults, when the rates differ)."""
    x = np.asarray(samples, dtype=np.float32)
    wav = torch.from_numpy(np.ascontiguousarray(x.mean(axis=1) if x.ndim == 2 else x))
    if sr != sample_rate:
        import torchaudio.functional as AF

        wav = AF.resample(wav, orig_freq=int(sr), new_freq=sample_rate)
    return wav


def load_audio(path: str | Path, cfg: AudioConfig | None = None) -> Tensor:
    """Decode ``path`` (wav/flac/ogg/… via soundfile) to mono float32 at ``cfg.sample_rate``: ``[n]``."""
    import soundfile as sf

    cfg = cfg or AudioConfig()
    p = _existing(path, "audio")
    try:
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)
    except Exception as e:  # noqa: BLE001 - soundfile raises several types; re-raised with the file name
        raise MediaError(f"{p}: cannot decode audio ({type(e).__name__}: {e})") from e
    if data.shape[0] == 0:
        raise MediaError(f"{p}: audio has no samples")
    if not np.isfinite(data).all():
        raise MediaError(f"{p}: audio contains NaN or infinite samples")
    wav = to_mono(data, sr, cfg.sample_rate)
    if cfg.max_seconds is not None:
        wav = wav[: int(round(cfg.max_seconds * cfg.sample_rate))]
    return wav.contiguous()


def split_at_pauses(wav: Tensor, max_samples: int, sample_rate: int = SAMPLE_RATE, search_s: float = 5.0,
                    frame_s: float = 0.02) -> list[Tensor]:
    """Cut a waveform longer than ``max_samples`` into consecutive pieces of at most ``max_samples``:
    each cut lies at the centre of the quietest ``frame_s`` frame (mean square) within the last
    ``search_s`` seconds (at most half the limit) before the limit, so it falls in a pause between words
    where there is one, and at least a quarter of the limit before the end, so no sliver is left to be
    decoded on its own (a 6.05 s recording under a 6 s limit once became 5.99 + 0.06 s, and the model
    "read" the 60 ms of silence as its instruction). Concatenated, the pieces are the input; a waveform
    within the limit comes back whole."""
    wav = torch.as_tensor(wav)
    if wav.ndim != 1 or max_samples < 2:
        raise ValueError(f"split_at_pauses: expected a 1-D waveform and max_samples >= 2, got {tuple(wav.shape)}, "
                         f"{max_samples}")
    frame = max(1, int(round(frame_s * sample_rate)))
    search = min(int(search_s * sample_rate), max_samples // 2)
    pieces, start, n = [], 0, wav.numel()
    while n - start > max_samples:
        # the rest keeps at least a quarter of the limit; where that moves the window, the rest is under 1.25 x the
        # limit and fits in one piece after the cut
        hi = min(start + max_samples, n - max_samples // 4)
        lo = max(start + 1, min(start + max_samples - search, hi - search // 2))
        k = (hi - lo) // frame
        if k >= 1:
            energy = wav[lo : lo + k * frame].float().reshape(k, frame).pow(2).mean(1)
            cut = lo + int(torch.argmin(energy)) * frame + frame // 2
        else:
            cut = hi
        pieces.append(wav[start:cut])
        start = cut
    pieces.append(wav[start:])
    return pieces


def frame_indices(n_frames: int, native_fps: float, fps: float, max_seconds: float | None = None) -> np.ndarray:
    """Indices of the source frames shown at ``t = i / fps`` (nearest earlier frame, no repeat past the end).

    ``T = floor(duration · fps)`` output frames for ``duration = n_frames / native_fps``."""
    duration = n_frames / native_fps
    if max_seconds is not None:
        duration = min(duration, max_seconds)
    n_out = max(1, int(math.floor(duration * fps + 1e-6)))
    idx = np.floor(np.arange(n_out) * native_fps / fps + 1e-6).astype(np.int64)
    return np.clip(idx, 0, n_frames - 1)


def load_video(path: str | Path, cfg: VideoConfig | None = None) -> Tensor:
    """Decode ``path`` with decord to RGB frames at ``cfg.fps``: ``[T, H, W, 3]`` uint8."""
    import decord

    cfg = cfg or VideoConfig()
    p = _existing(path, "video")
    try:
        vr = decord.VideoReader(str(p), ctx=decord.cpu(0), num_threads=1)
        n, native = len(vr), float(vr.get_avg_fps())
    except Exception as e:  # noqa: BLE001 - decord raises DECORDError/RuntimeError; re-raised with the file name
        raise MediaError(f"{p}: cannot decode video ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    if n == 0:
        raise MediaError(f"{p}: video has no frames")
    if not native > 0:
        raise MediaError(f"{p}: video reports a frame rate of {native}")
    idx = frame_indices(n, native, cfg.fps, cfg.max_seconds)
    try:
        frames = vr.get_batch(idx.tolist()).asnumpy()
    except Exception as e:  # noqa: BLE001
        raise MediaError(f"{p}: cannot decode video frames ({type(e).__name__}: {e})") from e
    out = torch.from_numpy(np.ascontiguousarray(frames))
    if cfg.width > 0 or cfg.height > 0:  # decord's own resize is unreliable for some sizes: resize here
        h = cfg.height if cfg.height > 0 else round(out.shape[1] * cfg.width / out.shape[2])
        w = cfg.width if cfg.width > 0 else round(out.shape[2] * cfg.height / out.shape[1])
        x = torch.nn.functional.interpolate(out.permute(0, 3, 1, 2).float(), size=(h, w), mode="bilinear",
                                            align_corners=False, antialias=True)
        out = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    return out


def load_image(path: str | Path) -> Tensor:
    """Decode an image file (Pillow) to RGB ``[H, W, 3]`` uint8."""
    from PIL import Image, UnidentifiedImageError

    p = _existing(path, "image")
    try:
        with Image.open(p) as im:
            arr = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise MediaError(f"{p}: cannot decode image ({type(e).__name__}: {e})") from e
    return torch.from_numpy(arr.copy())


# decoder of a media file per modality, default settings (what a model uses for items given as paths)
LOADERS = {"audio": load_audio, "video": load_video, "image": load_image}
