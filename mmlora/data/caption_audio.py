"""Soundtrack of the procedural caption world: synthetic tones and short spoken words.

Every sound is a mono float32 waveform at ``sample_rate`` Hz in [-1, 1]. Tones are synthesised
with numpy (deterministic); spoken words come from the Debian ``espeak-ng`` program
(``scripts/setup_caption_tools.sh`` installs it). Without espeak-ng the generator degrades to
tones only and says so (:func:`tts_available`, a warning, and ``"tts": "none"`` in the manifest).

Tone kinds (distinct pitch and timbre, so a listener can tell them apart):

=========  =============================================  ==========================
kind       synthesis                                      used for
=========  =============================================  ==========================
chime      two sine notes 880 Hz then 1320 Hz, 0.26 s      cue of ``appear``
pop        1.2 kHz sine, 80 ms, fast decay                 cue of ``leave``
thud       70 Hz sine + low noise burst, 0.25 s            cue of ``collide``
bell       partials 660·{1, 2.76, 5.40} Hz, 0.8 s decay    ``sound(bell)``
whistle    sine glide 1.8→2.6 kHz with vibrato, 0.6 s      ``sound(whistle)``
buzzer     180 Hz square wave, 0.5 s                       ``sound(buzzer)``
=========  =============================================  ==========================
"""
from __future__ import annotations

import functools
import io
import shutil
import subprocess
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SoundConfig:
    """How the soundtrack is made."""

    sample_rate: int = 16000            # Hz (DESIGN.md: 16 kHz mono)
    tts: str = "auto"                   # "auto" (espeak-ng if installed), "espeak-ng" (required) or "none"
    voices: tuple[str, ...] = ("en-us", "en-gb", "en-gb-x-rp", "en-029")  # espeak-ng voices to draw from
    speech_rate: int = 150              # espeak-ng words per minute
    level: float = 0.5                  # peak amplitude of each sound before mixing


def _env(n: int, attack: int, sr: int, decay_s: float | None) -> np.ndarray:
    """Amplitude envelope: linear attack over ``attack`` samples, then exponential decay (or flat)."""
    t = np.arange(n) / sr
    env = np.ones(n) if decay_s is None else np.exp(-t / decay_s)
    a = min(attack, n)
    env[:a] *= np.linspace(0.0, 1.0, a, endpoint=False)
    r = min(int(0.01 * sr), n)  # 10 ms release, no clicks
    env[n - r:] *= np.linspace(1.0, 0.0, r)
    return env


def tone(kind: str, sr: int = 16000) -> np.ndarray:
    """The waveform of a tone ``kind`` (see the module table), peak 1, float32."""
    def t_of(sec: float) -> np.ndarray:
        return np.arange(int(sec * sr)) / sr

    if kind == "chime":
        notes = [np.sin(2 * np.pi * f * t_of(0.13)) * _env(len(t_of(0.13)), sr // 500, sr, 0.06)
                 for f in (880.0, 1320.0)]
        y = np.concatenate(notes)
    elif kind == "pop":
        t = t_of(0.08)
        y = np.sin(2 * np.pi * 1200.0 * t) * _env(len(t), sr // 2000, sr, 0.015)
    elif kind == "thud":
        t = t_of(0.25)
        noise = np.random.default_rng(7).standard_normal(len(t))
        noise = np.convolve(noise, np.ones(32) / 32, mode="same")  # crude low-pass
        y = (np.sin(2 * np.pi * 70.0 * t) + 0.6 * noise) * _env(len(t), sr // 1000, sr, 0.06)
    elif kind == "bell":
        t = t_of(0.8)
        y = sum(a * np.sin(2 * np.pi * 660.0 * m * t) for a, m in ((1.0, 1.0), (0.5, 2.76), (0.25, 5.40)))
        y = y * _env(len(t), sr // 1000, sr, 0.25)
    elif kind == "whistle":
        t = t_of(0.6)
        f = 1800.0 + 800.0 * t / t[-1] + 40.0 * np.sin(2 * np.pi * 6.0 * t)
        y = np.sin(2 * np.pi * np.cumsum(f) / sr) * _env(len(t), sr // 50, sr, None)
    elif kind == "buzzer":
        t = t_of(0.5)
        y = np.sign(np.sin(2 * np.pi * 180.0 * t)) * 0.6 * _env(len(t), sr // 200, sr, None)
    else:
        raise ValueError(f"unknown tone kind {kind!r}")
    y = np.asarray(y, dtype=np.float64)
    return (y / max(np.abs(y).max(), 1e-9)).astype(np.float32)


@functools.lru_cache(maxsize=1)
def tts_available() -> bool:
    """True when the ``espeak-ng`` program can be run."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        return False
    try:
        return subprocess.run([exe, "--version"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def tts_version() -> str:
    """First line of ``espeak-ng --version`` (recorded in corpus.json: other versions speak differently)."""
    out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, timeout=20).stdout
    return out.splitlines()[0].strip() if out else "unknown"


def resample(y: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Linear-interpolation resampling (enough for short synthetic words; no extra dependency)."""
    if sr_in == sr_out:
        return y.astype(np.float32)
    n_out = int(round(len(y) * sr_out / sr_in))
    x_out = np.arange(n_out) * (sr_in / sr_out)
    return np.interp(x_out, np.arange(len(y)), y).astype(np.float32)


def trim_silence(y: np.ndarray, threshold: float = 0.02) -> np.ndarray:
    """Cut leading and trailing samples quieter than ``threshold`` × peak."""
    loud = np.flatnonzero(np.abs(y) > threshold * max(np.abs(y).max(), 1e-9))
    return y[loud[0]:loud[-1] + 1] if len(loud) else y[:0]


@functools.lru_cache(maxsize=256)
def _speak_cached(word: str, voice: str, rate: int, sr: int) -> bytes:
    import soundfile as sf

    proc = subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "--stdout", word],
                          capture_output=True, timeout=60)
    if proc.returncode != 0 or not proc.stdout:
        raise RuntimeError(f"espeak-ng failed for word {word!r} voice {voice!r}: "
                           f"{proc.stderr.decode(errors='replace').strip()}")
    y, sr_in = sf.read(io.BytesIO(proc.stdout), dtype="float32")
    if y.ndim > 1:
        y = y.mean(axis=1)
    y = trim_silence(resample(y, sr_in, sr))
    return (y / max(np.abs(y).max(), 1e-9)).astype(np.float32).tobytes()


def speak(word: str, voice: str, cfg: SoundConfig) -> np.ndarray:
    """``word`` spoken by espeak-ng ``voice``: float32 at ``cfg.sample_rate``, silence trimmed, peak 1."""
    return np.frombuffer(_speak_cached(word, voice, cfg.speech_rate, cfg.sample_rate), dtype=np.float32).copy()


def mix(length_s: float, placed: list[tuple[float, np.ndarray]], cfg: SoundConfig) -> np.ndarray:
    """Sum sounds placed at start times (seconds) into one track of ``length_s`` seconds.

    Each sound is scaled to peak ``cfg.level``; the sum is clipped to [-1, 1] (the generator
    keeps sounds apart in time, so clipping does not happen in practice).
    """
    n = int(round(length_s * cfg.sample_rate))
    out = np.zeros(n, dtype=np.float32)
    for start, y in placed:
        i = int(round(start * cfg.sample_rate))
        seg = y[: max(0, n - i)] * cfg.level
        out[i:i + len(seg)] += seg
    return np.clip(out, -1.0, 1.0)
