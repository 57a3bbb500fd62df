"""Audio augmentation for the speech corpus: speed perturbation, gain, and additive noise at a
chosen SNR (white, or babble made from other utterances).

SNR convention (also used by ``mmlora evaluate --snr``): powers are means of squares over the
whole clip, ``snr_db = 10 log10(P_speech / P_noise)``; the noise is scaled to hit it exactly, then
the mix is scaled down as a whole if it would clip (which keeps the SNR).
"""
from __future__ import annotations

import numpy as np


def bounded_range(values, name: str, low: float, high: float) -> list[float]:
    """An augmentation's ``[lo, hi]`` range, checked: ``low <= lo <= hi <= high``; an empty range (off) stays empty."""
    out = [float(v) for v in values or []]
    if out and not (len(out) == 2 and low <= out[0] <= out[1] <= high):
        raise ValueError(f"{name} must be [lo, hi] with {low:g} <= lo <= hi <= {high:g}, got {list(values)}")
    return out


def factor_range(values, name: str) -> list[float]:
    """A factor range (speed, vocal tract length): ``0.5 <= lo <= hi <= 2``."""
    return bounded_range(values, name, 0.5, 2.0)


def pad_with_room_tone(x: np.ndarray, lead: int, trail: int, level_db: float, rng: np.random.Generator) -> np.ndarray:
    """``x`` with ``lead`` samples before and ``trail`` after of white noise ``level_db`` dB below x's RMS (a quiet
    room before and after the speaker: TTS clips start and end at the voice, real recordings do not). The speech
    itself is unchanged; float32 out."""
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0
    scale = rms * 10.0 ** (level_db / 20.0)
    pre = (rng.standard_normal(lead) * scale).astype(np.float32)
    post = (rng.standard_normal(trail) * scale).astype(np.float32)
    return np.concatenate([pre, x.astype(np.float32, copy=False), post])


def resample(x: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """Band-limited resampling (torchaudio's windowed sinc), float32 in and out."""
    if orig_sr == new_sr:
        return x.astype(np.float32, copy=False)
    import torch
    import torchaudio.functional as AF

    return AF.resample(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), orig_sr, new_sr).numpy()


def speed_perturb(x: np.ndarray, sr: int, factor: float) -> np.ndarray:
    """Kaldi-style speed perturbation: play `factor` times faster (tempo and pitch change);
    the output has round(len(x) / factor) samples at the same rate."""
    if factor == 1.0:
        return x
    return resample(x, int(round(sr * factor)), sr)


def apply_gain(x: np.ndarray, gain_db: float) -> np.ndarray:
    return (x * 10.0 ** (gain_db / 20.0)).astype(np.float32)


def power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64))) if len(x) else 0.0


def white_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(n).astype(np.float32)


def babble_noise(pool: list[np.ndarray], n: int, rng: np.random.Generator, talkers: tuple[int, int] = (3, 6)) -> np.ndarray:
    """Sum of k ~ U{talkers} utterances drawn from `pool`, each at unit power, looped to length n
    and started at a random offset. Returns float32 [n] (unit-less; scale with mix_at_snr)."""
    if not pool:
        raise ValueError("babble_noise: the pool of utterances is empty")
    k = int(rng.integers(talkers[0], talkers[1] + 1))
    out = np.zeros(n, np.float64)
    for j in rng.choice(len(pool), size=min(k, len(pool)), replace=False):
        u = pool[int(j)]
        p = power(u)
        if p <= 0:
            continue
        reps = int(np.ceil((n + len(u)) / len(u)))
        tiled = np.tile(u, reps)
        off = int(rng.integers(0, len(u)))
        out += tiled[off : off + n] / np.sqrt(p)
    return out.astype(np.float32)


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float, peak: float = 0.99) -> np.ndarray:
    """speech + a * noise with a chosen so that 10 log10(P(speech) / P(a * noise)) = snr_db.

    speech, noise: float [n] (same length). If the mix peaks above `peak` it is scaled down as a
    whole (the SNR is unchanged)."""
    if speech.shape != noise.shape:
        raise ValueError(f"mix_at_snr: speech {speech.shape} and noise {noise.shape} differ in shape")
    ps, pn = power(speech), power(noise)
    if ps <= 0 or pn <= 0:
        raise ValueError("mix_at_snr: speech or noise is silent (zero power)")
    a = np.sqrt(ps / (pn * 10.0 ** (snr_db / 10.0)))
    y = speech.astype(np.float64) + a * noise.astype(np.float64)
    m = float(np.max(np.abs(y)))
    if m > peak:
        y *= peak / m
    return y.astype(np.float32)



def synthetic_rir(sr: int, rt60: float, drr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Room impulse response: a unit direct path, then exponentially decaying Gaussian noise.

    h[0] = 1; h[n] = a * e[n] * exp(-ln(1000) * n / (sr * rt60)) for n >= 1 (-60 dB at rt60);
    `a` sets the direct-to-reverberant energy ratio 10 log10(1 / sum_{n>=1} h[n]^2) = drr_db."""
    n = max(2, int(round(1.2 * rt60 * sr)))
    t = np.arange(1, n) / sr
    tail = rng.standard_normal(n - 1) * np.exp(-np.log(1000.0) * t / rt60)
    tail *= np.sqrt(10.0 ** (-drr_db / 10.0) / np.sum(tail**2))
    return np.concatenate([[1.0], tail]).astype(np.float64)


def add_reverb(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve with `rir` (FFT), keep the first len(x) samples (the direct path is at lag 0, so
    phone timings are unchanged), and restore the input's power."""
    n = len(x) + len(rir) - 1
    size = 1 << (n - 1).bit_length()
    y = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(rir, size), size)[: len(x)]
    p = power(y)
    return (y * np.sqrt(power(x) / p) if p > 0 else y).astype(np.float32)


def training_change(seed: int):
    """``(transform, warp)``: one training-like change of a clip's audio (speed through
    ``SpeechDataset.speed`` and room tone at its ``PAD_LEVEL_DB``, as training makes them; reverberation on half) and
    the batch's VTLP factors, drawn from one seeded generator (``scripts/fit_ctc_head.py --augment``,
    ``scripts/whisper_decoder_probe.py --augment``)."""
    import torch

    from mmlora.data.media import SAMPLE_RATE
    from mmlora.tasks.speech import SpeechDataset  # late: tasks.speech imports this module

    rng = np.random.default_rng(seed)

    def transform(x: torch.Tensor) -> torch.Tensor:
        x = SpeechDataset.speed(x, float(rng.uniform(0.9, 1.1))).numpy()
        if rng.random() < 0.5:
            rir = synthetic_rir(SAMPLE_RATE, float(rng.uniform(0.2, 0.7)), float(rng.uniform(0.0, 10.0)), rng)
            x = add_reverb(x, rir)
        lead, trail = (int(rng.uniform(0.2, 1.2) * SAMPLE_RATE) for _ in range(2))
        level = float(rng.uniform(*SpeechDataset.PAD_LEVEL_DB))
        return torch.from_numpy(pad_with_room_tone(x, lead, trail, level, rng))

    def warp(n: int) -> list[float]:
        return [float(f) for f in rng.uniform(0.9, 1.1, n)]

    return transform, warp
