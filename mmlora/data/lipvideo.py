"""Synthetic lip video aligned to speech: phone timings -> visemes -> a drawn mouth at 25 fps.

::

    phones [(label, start_s, end_s), ...]        (festival / flite "radio" phones or espeak mnemonics)
        │ phone_to_visemes()                       1-2 viseme targets per phone (diphthongs have 2)
        ▼
    targets (t_k, p_k), p = (open, width, round)   piecewise-linear between targets, held at the ends
        │ mouth_trajectory(): 1 ms grid, Gaussian coarticulation blur (sigma = coart_ms),
        │                     mean over each 40 ms frame (exposure)
        ▼
    params [T, 3], T = ceil(duration * fps)
        │ render_frames(): lips = outer ellipse minus inner cavity (teeth band, tongue), 2x
        │                  supersampled; per-clip scale/position/rotation noise, per-frame AR(1) jitter
        ▼
    uint8 frames [T, H, W] (grayscale)  ──write_mp4()──▶  H.264 mp4 (yuv420p, read by decord)

The appearance (skin and lip tone, lip thickness, mouth width) is drawn from a seed; the corpus
seeds it per voice, so a held-out voice also has a held-out face.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# --- visemes -----------------------------------------------------------------------------------
# name -> (open, width, round): open in [0,1] (fraction of the largest opening), width relative to
# the resting mouth width, round in [0,1] (protrusion: narrower, thicker, rounder lips).
VISEMES: dict[str, tuple[float, float, float]] = {
    "sil": (0.04, 1.00, 0.0),  # rest, lips lightly together
    "bilabial": (0.00, 0.95, 0.1),  # p b m: closed, pressed
    "labiodental": (0.10, 1.00, 0.0),  # f v: lower lip under the upper teeth
    "dental": (0.22, 1.02, 0.0),  # th dh: tongue tip between the teeth
    "alveolar": (0.20, 1.05, 0.0),  # t d n s z l
    "postalveolar": (0.24, 0.82, 0.6),  # sh zh ch jh: protruded
    "velar": (0.32, 1.00, 0.0),  # k g ng hh y
    "rhotic": (0.26, 0.82, 0.5),  # r er
    "round_close": (0.18, 0.62, 1.0),  # w uw uh
    "round_open": (0.50, 0.72, 0.8),  # ao ow oy
    "open": (0.85, 1.00, 0.0),  # aa ah ax aw ay
    "mid": (0.55, 1.15, 0.0),  # ae eh ey
    "spread": (0.24, 1.25, 0.0),  # iy ih
}
VISEME_NAMES = list(VISEMES)

# CMU "radio" phone set (festival kal/ked/slt, flite): phone -> one or two visemes.
_RADIO: dict[str, tuple[str, ...]] = {
    "pau": ("sil",), "h#": ("sil",), "brth": ("sil",), "sil": ("sil",), "#": ("sil",),
    "p": ("bilabial",), "b": ("bilabial",), "m": ("bilabial",), "em": ("bilabial",),
    "f": ("labiodental",), "v": ("labiodental",),
    "th": ("dental",), "dh": ("dental",),
    "t": ("alveolar",), "d": ("alveolar",), "n": ("alveolar",), "en": ("alveolar",), "s": ("alveolar",),
    "z": ("alveolar",), "l": ("alveolar",), "el": ("alveolar",), "dx": ("alveolar",), "nx": ("alveolar",),
    "sh": ("postalveolar",), "zh": ("postalveolar",), "ch": ("postalveolar",), "jh": ("postalveolar",),
    "k": ("velar",), "g": ("velar",), "ng": ("velar",), "hh": ("velar",), "y": ("velar",), "q": ("velar",),
    "r": ("rhotic",), "er": ("rhotic",), "axr": ("rhotic",),
    "w": ("round_close",), "uw": ("round_close",), "uh": ("round_close",),
    "ao": ("round_open",), "ow": ("round_open", "round_close"), "oy": ("round_open", "spread"),
    "aa": ("open",), "ah": ("open",), "ax": ("open",), "aw": ("open", "round_close"), "ay": ("open", "spread"),
    "ae": ("mid",), "eh": ("mid",), "ey": ("mid", "spread"),
    "iy": ("spread",), "ih": ("spread",), "ix": ("spread",),
}

# espeak-ng English phoneme mnemonics, matched on the longest prefix after stress marks.
_ESPEAK: dict[str, tuple[str, ...]] = {
    "_": ("sil",), "p": ("bilabial",), "b": ("bilabial",), "m": ("bilabial",),
    "f": ("labiodental",), "v": ("labiodental",), "T": ("dental",), "D": ("dental",),
    "t": ("alveolar",), "d": ("alveolar",), "n": ("alveolar",), "s": ("alveolar",), "z": ("alveolar",),
    "l": ("alveolar",), "*": ("alveolar",),
    "S": ("postalveolar",), "Z": ("postalveolar",), "tS": ("postalveolar",), "dZ": ("postalveolar",),
    "k": ("velar",), "g": ("velar",), "N": ("velar",), "h": ("velar",), "j": ("velar",), "x": ("velar",),
    "?": ("velar",), "C": ("velar",),
    "r": ("rhotic",), "3": ("rhotic",), "R": ("rhotic",),
    "w": ("round_close",), "u": ("round_close",), "U": ("round_close",), "W": ("round_close",),
    "O": ("round_open",), "o": ("round_open",), "0": ("round_open",), "oU": ("round_open", "round_close"),
    "OI": ("round_open", "spread"), "aI": ("open", "spread"), "aU": ("open", "round_close"),
    "eI": ("mid", "spread"), "a": ("open",), "A": ("open",), "V": ("open",), "@": ("open",),
    "e": ("mid",), "E": ("mid",), "i": ("spread",), "I": ("spread",), "y": ("round_close",),
}


def phone_to_visemes(phone: str) -> tuple[str, ...]:
    """Map a phone label (radio set or espeak-ng mnemonic) to 1-2 viseme names; unknown -> ('velar',)."""
    if phone in _RADIO:
        return _RADIO[phone]
    p = phone.lstrip("',%=")
    if not p:
        return ("sil",)
    for n in (2, 1):
        if p[:n] in _ESPEAK:
            return _ESPEAK[p[:n]]
    return ("velar",)


# --- appearance and rendering config ---------------------------------------------------------
@dataclass
class MouthConfig:
    size: int = 64  # output frame is size x size pixels (grayscale)
    fps: float = 25.0  # frames per second
    coart_ms: float = 25.0  # sigma of the Gaussian coarticulation blur on the parameter tracks
    supersample: int = 2  # render at size*supersample, then average-pool (anti-aliasing)
    scale_noise: float = 0.08  # per-clip mouth scale ~ 1 + U(-x, x)
    position_noise: float = 0.06  # per-clip centre offset ~ N(0, x * size) pixels
    rotation_deg: float = 4.0  # per-clip head roll ~ N(0, x) degrees
    jitter_px: float = 0.6  # per-frame AR(1) position jitter, stationary std in pixels
    jitter_scale: float = 0.015  # per-frame AR(1) scale jitter, stationary std (relative)
    crf: int = 36  # H.264 constant rate factor (higher = smaller file)


@dataclass
class Appearance:
    skin: float  # skin grey level (0..255)
    lip: float  # lip grey level
    cavity: float  # mouth interior grey level
    teeth: float  # teeth grey level
    lip_thickness: float  # lip thickness, fraction of frame size
    mouth_width: float  # resting half-width of the mouth, fraction of frame size
    max_open: float  # half-height of the widest opening, fraction of frame size

    @staticmethod
    def sample(rng: np.random.Generator) -> Appearance:
        skin = rng.uniform(120, 200)
        return Appearance(
            skin=skin,
            lip=skin - rng.uniform(35, 70),
            cavity=rng.uniform(15, 40),
            teeth=rng.uniform(200, 240),
            lip_thickness=rng.uniform(0.055, 0.08),
            mouth_width=rng.uniform(0.24, 0.3),
            max_open=rng.uniform(0.2, 0.26),
        )


def mouth_trajectory(
    phones: list[tuple[str, float, float]], duration: float, cfg: MouthConfig
) -> np.ndarray:
    """Mouth parameters per video frame.

    phones: (label, start_s, end_s), sorted, within [0, duration]. Returns float32 [T, 3] with
    T = ceil(duration * fps) and columns (open, width, round); frame i averages the blurred
    track over [i/fps, (i+1)/fps).
    """
    n_frames = max(1, math.ceil(duration * cfg.fps - 1e-9))
    times: list[float] = [0.0]
    vals: list[tuple[float, float, float]] = [VISEMES["sil"]]
    for label, start, end in phones:
        vis = phone_to_visemes(label)
        fracs = (0.5,) if len(vis) == 1 else (0.3, 0.8)
        for v, f in zip(vis, fracs):
            times.append(start + f * max(end - start, 0.0))
            vals.append(VISEMES[v])
    times.append(max(duration, times[-1]))
    vals.append(VISEMES["sil"])
    t_ms = np.arange(int(math.ceil(n_frames / cfg.fps * 1000)) + 1) / 1000.0
    tt = np.asarray(times)
    vv = np.asarray(vals, dtype=np.float64)
    track = np.stack([np.interp(t_ms, tt, vv[:, j]) for j in range(3)], axis=1)  # [ms, 3]
    if cfg.coart_ms > 0:
        r = int(3 * cfg.coart_ms)
        k = np.exp(-0.5 * (np.arange(-r, r + 1) / cfg.coart_ms) ** 2)
        k /= k.sum()
        padded = np.pad(track, ((r, r), (0, 0)), mode="edge")
        track = np.stack([np.convolve(padded[:, j], k, mode="valid") for j in range(3)], axis=1)
    edges = np.round(np.arange(n_frames + 1) / cfg.fps * 1000).astype(int)
    out = np.stack([track[edges[i] : max(edges[i + 1], edges[i] + 1)].mean(0) for i in range(n_frames)])
    return out.astype(np.float32)


def render_frames(
    params: np.ndarray, cfg: MouthConfig, look: Appearance, rng: np.random.Generator
) -> np.ndarray:
    """Draw the mouth for each parameter row. params [T, 3] -> uint8 frames [T, size, size].

    Lips: outer ellipse (half-axes a_o, b_o) minus the cavity (a_i, b_i) with b_i = open * max_open;
    rounding narrows the mouth (x(1 - 0.3 r)) and thickens the lips (x(1 + 0.5 r)). Teeth are a
    band at the top of the cavity, the tongue a disc at its bottom.
    """
    T = params.shape[0]
    S = cfg.size * cfg.supersample
    base_scale = 1.0 + rng.uniform(-cfg.scale_noise, cfg.scale_noise)
    c0 = np.array([0.5, 0.5]) * S + rng.normal(0, cfg.position_noise * S, size=2)
    rot = math.radians(rng.normal(0, cfg.rotation_deg))
    # AR(1) jitter with stationary std sigma: x_t = a x_{t-1} + sqrt(1-a^2) sigma e_t
    a = 0.8
    jit = np.zeros((T, 3))
    sig = np.array([cfg.jitter_px * cfg.supersample] * 2 + [cfg.jitter_scale])
    state = rng.normal(0, 1, 3) * sig
    for t in range(T):
        state = a * state + math.sqrt(1 - a * a) * sig * rng.normal(0, 1, 3)
        jit[t] = state
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32) + 0.5
    frames = np.empty((T, cfg.size, cfg.size), np.uint8)
    shade = (1.0 - 0.15 * (yy / S - 0.5)).astype(np.float32)  # light from above
    for t in range(T):
        op, wd, rd = (float(v) for v in params[t])
        sc = base_scale * (1 + jit[t, 2]) * S
        cx, cy = c0[0] + jit[t, 0], c0[1] + jit[t, 1]
        dx, dy = xx - cx, yy - cy
        u = dx * math.cos(rot) + dy * math.sin(rot)
        v = -dx * math.sin(rot) + dy * math.cos(rot)
        thick = look.lip_thickness * (1 + 0.5 * rd) * sc
        a_i = max(look.mouth_width * wd * (1 - 0.3 * rd) * sc, 1.0)
        b_i = max(op, 0.0) * look.max_open * sc
        a_o, b_o = a_i + 0.6 * thick, b_i + thick
        img = np.full((S, S), look.skin, np.float32)
        outer = (u / a_o) ** 2 + (v / b_o) ** 2 <= 1.0
        img[outer] = look.lip
        if b_i > 0.5:
            inner = (u / a_i) ** 2 + (v / b_i) ** 2 <= 1.0
            teeth = inner & (v < -b_i + min(0.35 * b_i, 0.05 * sc)) & (np.abs(u) < 0.7 * a_i)
            tongue = inner & ((u / (0.6 * a_i)) ** 2 + ((v - b_i) / (0.7 * b_i)) ** 2 <= 1.0)
            img[inner] = look.cavity
            img[tongue] = look.cavity + 0.5 * (look.lip - look.cavity)
            img[teeth] = look.teeth
        else:  # closed: a dark line where the lips meet
            line = outer & (np.abs(v) < 0.06 * thick + 0.5)
            img[line] = look.lip * 0.6
        img *= shade
        k = cfg.supersample
        img = img.reshape(cfg.size, k, cfg.size, k).mean(axis=(1, 3))
        frames[t] = np.clip(np.round(img), 0, 255).astype(np.uint8)
    return frames


def write_mp4(path: str | Path, frames: np.ndarray, fps: float = 25.0, crf: int = 36) -> None:
    """Write uint8 grayscale frames [T, H, W] as H.264 (yuv420p) mp4; deterministic (1 thread)."""
    import av

    if frames.ndim != 3 or frames.dtype != np.uint8 or frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(
            f"write_mp4({path}): frames must be uint8 [T,H,W] with even H, W; got {frames.dtype} {frames.shape}"
        )
    from fractions import Fraction

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        s.width, s.height = frames.shape[2], frames.shape[1]
        s.pix_fmt = "yuv420p"
        s.codec_context.thread_count = 1  # multithreaded x264 is not bit-reproducible
        # no B-frames: x264's mbtree with B-frames gave different bytes for the same input from run
        # to run; without B-frames the output is reproducible (and smaller: no ctts table)
        s.options = {"crf": str(crf), "preset": "slow", "threads": "1", "x264-params": "bframes=0"}
        s.codec_context.time_base = Fraction(1, 1) / s.codec_context.framerate
        for i, f in enumerate(frames):
            # build yuv420p ourselves (U = V = 128): swscale's gray->yuv path left bytes that
            # varied between runs, which made x264's output differ
            # limited-range luma (16-235), which decoders expand back to 0-255 when converting to RGB
            y = np.round(16.0 + f.astype(np.float32) * (219.0 / 255.0)).astype(np.uint8)
            yuv = np.concatenate([y, np.full((f.shape[0] // 2, f.shape[1]), 128, np.uint8)], axis=0)
            vf = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
            vf.pts, vf.time_base = i, s.codec_context.time_base
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def lip_video(
    path: str | Path,
    phones: list[tuple[str, float, float]],
    duration: float,
    cfg: MouthConfig,
    look: Appearance,
    rng: np.random.Generator,
) -> int:
    """Render and write the lip video of one utterance; returns the number of frames."""
    params = mouth_trajectory(phones, duration, cfg)
    frames = render_frames(params, cfg, look, rng)
    write_mp4(path, frames, cfg.fps, cfg.crf)
    return len(frames)
