"""Frozen Whisper encoder: 16 kHz waveforms → 50 Hz features, trimmed to each clip.

    wav [n_i] ─ WhisperFeatureExtractor ─▶ log-mel [B, 80, 3000] (30 s, zero-padded audio)
        ─ conv1+GELU, conv2(stride 2)+GELU ─▶ [B, 1500, D] + positions ─ L layers ─ LayerNorm
        ─ trim ─▶ Features(x [B, N, D], N = max_i ceil(n_i · 50 / 16000), rate_hz = 50)

``full_context=True`` (default) runs the full 30 s window like Whisper was trained; ``False`` runs
only the batch's longest clip (positions sliced), much cheaper for short clips but not identical.
``encode(..., warp=[a_i])`` scales every frequency of item i's log-mel by ``a_i`` first (vocal tract
length perturbation, :func:`warp_matrix`): the model's ``media.audio.vtlp`` range draws them in training.

Weights come from a transformers folder (an encoder-only folder as written by ``mmlora assets``, or a
full ``WhisperModel`` / ``WhisperForConditionalGeneration`` checkpoint: only the encoder is read) or
a CTranslate2 ``model.bin`` (file, or folder holding one) through :mod:`mmlora.encoders.ct2`.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mmlora.hostdev import to_device

from .base import Encoder, Features

SAMPLE_RATE = 16000
FRAMES_PER_SECOND = 50  # encoder frames per second of audio (hop 160 samples, conv2 stride 2)


@dataclass
class WhisperEncoderConfig:
    """Which Whisper encoder and how it runs."""

    path: str = "whisper-tiny.en"  # asset name (mmlora.assets), a local HF folder / CTranslate2 model.bin,
    # or "random:tiny" (random weights, d=32, 2 layers: tests and CPU recipes)
    full_context: bool = True  # pad every clip to 30 s as Whisper does; False: run the longest clip only
    mask_padding: bool = True  # full_context False: attention ignores the frames past each clip's end and every
    # clip's last frame sees one frame of silence after it, so a clip's features do not depend on the other clips of
    # its batch. False attends to the padding (as Whisper did on its 30 s windows): batch-dependent outputs.
    dtype: str = "float32"  # compute dtype of the encoder ("float32", "bfloat16", "float16")
    device: str = "cpu"  # where the encoder runs


def frames_for(n_samples: int, sample_rate: int = SAMPLE_RATE) -> int:
    """Encoder frames covering ``n_samples`` of audio: ``ceil(n · 50 / sr)`` (2.0 s → 100)."""
    return math.ceil(n_samples * FRAMES_PER_SECOND / sample_rate)


def _slaney_mel(hz: np.ndarray) -> np.ndarray:
    """Hz → mel on the Slaney scale of Whisper's (librosa's) filter bank: linear below 1 kHz, log above."""
    hz = np.asarray(hz, dtype=np.float64)
    lin = hz / (200.0 / 3)
    return np.where(hz < 1000.0, lin, 15.0 + np.log(np.maximum(hz, 1e-9) / 1000.0) / (np.log(6.4) / 27.0))


def _slaney_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    return np.where(mel < 15.0, mel * (200.0 / 3), 1000.0 * np.exp((mel - 15.0) * (np.log(6.4) / 27.0)))


def warp_matrix(alpha: float, n_mels: int = 80, sample_rate: int = SAMPLE_RATE) -> Tensor:
    """``[n_mels, n_mels]`` matrix ``W`` with ``W @ mel`` = the mel spectrogram with every frequency
    scaled by ``alpha`` (vocal tract length perturbation, Jaitly & Hinton 2013): bin ``j`` of the
    result reads the input at ``f_j / alpha`` (``f_j``: bin j's centre on Whisper's 0–8 kHz Slaney mel
    scale), linearly interpolated between neighbouring bins and clamped at the edges. ``alpha`` > 1
    moves formants and harmonics up (a shorter vocal tract), < 1 down; 1 is the identity."""
    return warp_matrices([alpha], n_mels, sample_rate)[0]


def warp_matrices(alphas, n_mels: int = 80, sample_rate: int = SAMPLE_RATE) -> Tensor:
    """:func:`warp_matrix` of every factor in ``alphas`` at once: ``[len(alphas), n_mels, n_mels]`` (float32)."""
    a = np.asarray(alphas, dtype=np.float64).reshape(-1, 1)
    bad = a[(a < 0.5) | (a > 2.0)]
    if bad.size:
        raise ValueError(f"frequency warp factor must be in [0.5, 2], got {float(bad[0])}")
    lo, hi = _slaney_mel(np.array(0.0)), _slaney_mel(np.array(sample_rate / 2))
    step = (hi - lo) / (n_mels + 1)
    centres = lo + step * np.arange(1, n_mels + 1)
    src = (_slaney_mel(_slaney_hz(centres)[None, :] / a) - lo) / step - 1  # [K, n_mels] fractional input bins
    src = np.clip(src, 0.0, n_mels - 1)
    j0 = np.floor(src).astype(np.int64)
    j1 = np.minimum(j0 + 1, n_mels - 1)
    frac = src - j0
    w = np.zeros((a.shape[0], n_mels, n_mels))
    k, rows = np.meshgrid(np.arange(a.shape[0]), np.arange(n_mels), indexing="ij")
    np.add.at(w, (k, rows, j0), 1.0 - frac)
    np.add.at(w, (k, rows, j1), frac)
    return torch.from_numpy(w).float()


def _is_hf_whisper_folder(p: Path) -> bool:
    cfg = p / "config.json"
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text()).get("model_type") == "whisper"
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg}: not valid JSON ({e})") from e


def _read_safetensors_encoder(folder: Path) -> dict[str, Tensor]:
    """Encoder tensors of an HF Whisper folder, keys relative to ``WhisperEncoder``."""
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder}: no *.safetensors weights (pickled .bin checkpoints are not loaded)")
    sd: dict[str, Tensor] = {}
    for f in files:
        sd.update(load_file(str(f)))
    for prefix in ("model.encoder.", "encoder."):  # full WhisperModel / ForConditionalGeneration checkpoints
        if any(k.startswith(prefix) for k in sd):
            return {k[len(prefix):]: t for k, t in sd.items() if k.startswith(prefix)}
    return sd


def feature_extractor_for(cfg):
    """Whisper's log-mel front end for ``cfg``: window = 2 · max_source_positions hops (30 s for real models)."""
    from transformers import WhisperFeatureExtractor

    hop = 160
    return WhisperFeatureExtractor(feature_size=cfg.num_mel_bins, sampling_rate=SAMPLE_RATE, hop_length=hop,
                                   chunk_length=cfg.max_source_positions * 2 * hop // SAMPLE_RATE)


def load_whisper_encoder(path: str | Path, dtype: torch.dtype = torch.float32):
    """``(transformers WhisperEncoder in eval mode, WhisperFeatureExtractor)`` from a local path."""
    from transformers import WhisperConfig, WhisperFeatureExtractor
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from .ct2 import read_ct2, whisper_encoder_from_ct2

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"Whisper weights not found: {p}")
    if p.is_dir() and _is_hf_whisper_folder(p):
        cfg = WhisperConfig.from_pretrained(str(p))
        sd = _read_safetensors_encoder(p)
        fe_file = p / "preprocessor_config.json"
        fe = WhisperFeatureExtractor.from_pretrained(str(p)) if fe_file.is_file() else None
    else:
        bin_path = p / "model.bin" if p.is_dir() else p
        if not bin_path.is_file():
            raise FileNotFoundError(f"{p}: neither an HF Whisper folder (config.json with model_type 'whisper') "
                                    "nor a CTranslate2 folder/model.bin")
        cfg, sd = whisper_encoder_from_ct2(read_ct2(bin_path, prefix="encoder/"), bin_path)
        fe = None
    if fe is None:
        fe = feature_extractor_for(cfg)
    with torch.device("meta"):
        enc = WhisperEncoder(cfg)
    expected = set(enc.state_dict())
    missing, extra = sorted(expected - set(sd)), sorted(set(sd) - expected)
    if missing or extra:
        raise ValueError(f"{p}: Whisper encoder weights do not match the config: missing {missing[:6]}, "
                         f"unexpected {extra[:6]}")
    enc.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, strict=True, assign=True)
    return enc.eval(), fe


def random_whisper_encoder(name: str, seed: int = 0):
    """A randomly initialized Whisper encoder of a named tiny size (no weights needed)."""
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    sizes = {"random:tiny": dict(d_model=32, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=64)}
    if name not in sizes:
        raise ValueError(f"unknown random Whisper size {name!r}; choose from {sorted(sizes)}")
    cfg = WhisperConfig(num_mel_bins=80, max_source_positions=1500, **sizes[name])
    torch.manual_seed(seed)
    return WhisperEncoder(cfg).eval(), feature_extractor_for(cfg)


class WhisperAudioEncoder(Encoder):
    """``encode(list of 1-D float waveforms at 16 kHz) -> Features`` (50 Hz, trimmed to each clip).

    ``hidden_states`` (when asked) are the L layer outputs, transformers' ``hidden_states[1:]`` (the
    last one after the final LayerNorm, i.e. equal to ``x``), trimmed like ``x``: each ``[B, N, D]``,
    with ``hidden_mask = mask``.
    """

    kind = "whisper"
    supports_warp = True

    def __init__(self, cfg: WhisperEncoderConfig, model=None, feature_extractor=None):
        super().__init__()
        self.cfg = cfg
        if model is None and cfg.path.startswith("random:"):
            model, feature_extractor = random_whisper_encoder(cfg.path)
        elif model is None:
            from mmlora.assets import resolve

            model, feature_extractor = load_whisper_encoder(resolve(cfg.path), getattr(torch, cfg.dtype))
        self.model = model.to(device=cfg.device, dtype=getattr(torch, cfg.dtype)).eval()
        self.feature_extractor = feature_extractor
        self.output_dim = model.config.d_model
        self.rate_hz = float(FRAMES_PER_SECOND)
        self.max_samples = model.config.max_source_positions * 2 * feature_extractor.hop_length

    def preprocess_config(self) -> dict:
        fe = self.feature_extractor
        return {"sample_rate": fe.sampling_rate, "n_mels": fe.feature_size, "hop": fe.hop_length, "n_fft": fe.n_fft,
                "full_context": self.cfg.full_context, "dtype": self.cfg.dtype,
                **({"mask_padding": True, "edge": "silence"} if self.cfg.mask_padding and not self.cfg.full_context
                   else {})}

    def log_mel(self, waves: list[np.ndarray], frames: int | None = None) -> Tensor:
        """``[B, n_mels, 3000]`` log-mel features of the clips zero-padded to 30 s, or only the first
        ``2 · frames`` mel frames (``frames`` encoder frames). The short form pads the audio just past
        the last needed STFT window, so its values equal the 30 s computation's first frames exactly
        (padding is silence, which never raises the per-clip maximum used by Whisper's clamp).

        The arithmetic of ``WhisperFeatureExtractor``'s torch path (its STFT, filter bank, per-clip
        clamp at max − 8 and scaling; tested equal), run in one batch on the encoder's device: the
        extractor would pad every clip on the host and send the result back through host memory."""
        fe = self.feature_extractor
        n = fe.n_samples if frames is None else min(self.max_samples, 2 * frames * fe.hop_length + fe.n_fft)
        buf = np.zeros((len(waves), n), dtype=np.float32)
        for i, w in enumerate(waves):
            k = min(len(w), n)
            buf[i, :k] = w[:k]
        x = to_device(torch.from_numpy(buf), self.device)
        window, filters = self._mel_constants()
        # fp32 whatever autocast surrounds it (accelerate's mixed_precision=bf16 would run the filter bank in bf16)
        with torch.autocast(self.device.type, enabled=False):
            if getattr(fe, "dither", 0.0):
                x = x + fe.dither * torch.randn_like(x)
            stft = torch.stft(x, fe.n_fft, fe.hop_length, window=window, return_complex=True)
            mel = filters @ (stft[..., :-1].abs() ** 2).contiguous()
            log_spec = torch.clamp(mel, min=1e-10).log10()
            log_spec = torch.maximum(log_spec, log_spec.amax(dim=(1, 2), keepdim=True) - 8.0)
            log_spec = (log_spec + 4.0) / 4.0
        return log_spec if frames is None else log_spec[..., : 2 * frames]

    def _mel_constants(self) -> tuple[Tensor, Tensor]:
        """Hann window and ``[n_mels, n_freq]`` filter bank on the encoder's device (made once per device)."""
        dev = self.device
        cache = self.__dict__.setdefault("_mel_cache", {})
        if dev not in cache:
            fe = self.feature_extractor
            cache[dev] = (torch.hann_window(fe.n_fft, device=dev),
                          torch.from_numpy(np.ascontiguousarray(fe.mel_filters.T)).to(dev, torch.float32))
        return cache[dev]

    def _encode(self, batch: list, output_hidden_states: bool, warp: list[float] | None = None) -> Features:
        waves = []
        for i, w in enumerate(batch):
            w = w.detach().cpu().float().numpy() if isinstance(w, Tensor) else np.asarray(w, dtype=np.float32)
            if w.ndim != 1 or w.size == 0:
                raise ValueError(f"item {i}: expected a non-empty 1-D waveform at 16 kHz, got shape {w.shape}")
            if w.size > self.max_samples:
                raise ValueError(f"item {i}: {w.size / SAMPLE_RATE:.2f} s is longer than Whisper's "
                                 f"{self.max_samples / SAMPLE_RATE:.0f} s window; split the audio first")
            waves.append(w)
        n = [frames_for(w.size) for w in waves]
        N = max(n)
        masked = self.cfg.mask_padding and not self.cfg.full_context
        # Masked short form: one frame more than the longest clip, so that every clip's last frame (whose
        # convolution reaches past its end) sees silence after it, as in Whisper's 30 s window and as a
        # shorter clip of the same batch does; the extra frame is masked and trimmed. A clip's features
        # then do not depend on its batch at all.
        frames = None if self.cfg.full_context else min(N + 1 if masked else N, self.model.config.max_source_positions)
        mel = self.log_mel(waves, frames)
        if warp is not None and any(a != 1.0 for a in warp):  # on the normalised log-mel, padding included
            mel = to_device(warp_matrices(warp, mel.shape[1]), mel.device) @ mel.float()
        mel = mel.to(self.device, self.dtype)
        T = mel.shape[-1] // 2
        valid = to_device(torch.arange(T)[None, :] < torch.tensor(n)[:, None], mel.device)
        h, hidden = self._forward(mel, output_hidden_states, valid if masked else None)
        mask = valid[:, :N]
        x = h[:, :N] * mask[..., None]
        hs = tuple(t[:, :N] * mask[..., None] for t in hidden) if output_hidden_states else None
        return Features(x, mask, self.rate_hz, 1, hs, mask if hs is not None else None)

    def _forward(self, mel: Tensor, output_hidden_states: bool, valid: Tensor | None = None
                 ) -> tuple[Tensor, list[Tensor]]:
        """transformers' WhisperEncoder forward, positions sliced to the ``mel.shape[-1] / 2`` frames given;
        ``valid [B, T]``: keys outside it get an additive ``-inf``-like mask (every query of a row sees its clip)."""
        m = self.model
        gelu = torch.nn.functional.gelu
        h = gelu(m.conv2(gelu(m.conv1(mel)))).permute(0, 2, 1)
        h = h + m.embed_positions.weight[: h.shape[1]]
        attn = None
        if valid is not None:
            T = h.shape[1]
            attn = torch.zeros(valid.shape, dtype=h.dtype, device=h.device)
            attn = attn.masked_fill(~valid, torch.finfo(h.dtype).min)[:, None, None, :].expand(-1, 1, T, T)
        hidden = []
        for layer in m.layers:
            h = layer(h, attn)
            h = h[0] if isinstance(h, tuple) else h
            if output_hidden_states:
                hidden.append(h)
        h = m.layer_norm(h)
        if hidden:
            hidden[-1] = h  # as transformers reports it: the last layer's state after the final LayerNorm
        return h, hidden
