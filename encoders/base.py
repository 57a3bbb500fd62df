"""The frozen-encoder interface: ``encode(batch) -> Features``.

Every encoder is an ``nn.Module`` that stays in eval mode and runs under ``torch.no_grad`` (unless LoRA
adapters inside it train: ``media.<m>.encoder_lora``, :func:`mmlora.model.attach_encoder_lora`)::

    media batch (list of B waveforms / images / videos)
        └─ encode ─▶ Features(x [B, N, D], mask [B, N], rate_hz, tokens_per_step,
                              hidden_states=(h_1 … h_L) each [B, N_h, D_h] | None)

``N = steps · tokens_per_step``: a time axis (audio frames, video frames) of ``steps`` steps, each
carrying ``tokens_per_step`` spatial tokens (1 for audio or pooled frames, h·w for a kept grid),
flattened step-major. ``mask`` is True on real tokens; padded positions hold zeros.

``encoder_id`` is a stable string (architecture + preprocessing + a hash of the weights) so that
features can be cached on disk (:mod:`mmlora.data.feature_cache`).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, is_dataclass

import torch
from torch import Tensor, nn


@dataclass
class Features:
    """Encoder output for a batch of B media items."""

    x: Tensor  # [B, N, D] features, zero at padded positions
    mask: Tensor  # [B, N] bool, True = real token
    rate_hz: float | None  # time steps per second (50 for Whisper, fps/stride for video); None for still images
    tokens_per_step: int = 1  # spatial tokens per time step (N = steps * tokens_per_step)
    hidden_states: tuple[Tensor, ...] | None = None  # one [B, N_h, D_h] per encoder layer (QLadder), when asked
    hidden_mask: Tensor | None = None  # [B, N_h] bool mask shared by all hidden_states (None: all valid)

    @property
    def lengths(self) -> Tensor:
        """Number of real tokens per item, ``[B]`` (int64)."""
        return self.mask.sum(dim=1)

    def to(self, *args, **kwargs) -> Features:
        """Move/cast the float tensors (masks keep their dtype but follow the device)."""
        dev = kwargs.get("device", next((a for a in args if isinstance(a, (str, torch.device))), None))
        hs = None if self.hidden_states is None else tuple(h.to(*args, **kwargs) for h in self.hidden_states)
        hm = None if self.hidden_mask is None else self.hidden_mask.to(dev) if dev is not None else self.hidden_mask
        return Features(self.x.to(*args, **kwargs), self.mask.to(dev) if dev is not None else self.mask,
                        self.rate_hz, self.tokens_per_step, hs, hm)

    def unbatch(self) -> list[dict[str, Tensor]]:
        """Per-item tensors with padding removed: ``{"x": [n_i, D], "hidden.<l>": [m_i, D_h], ...}``."""
        out = []
        for i in range(self.x.shape[0]):
            item = {"x": self.x[i, : int(self.mask[i].sum())]}
            if self.hidden_states is not None:
                m = int(self.hidden_mask[i].sum()) if self.hidden_mask is not None else self.hidden_states[0].shape[1]
                for l, h in enumerate(self.hidden_states):
                    item[f"hidden.{l}"] = h[i, :m]
            out.append(item)
        return out

    @staticmethod
    def collate(items: Sequence[dict[str, Tensor]], rate_hz: float | None, tokens_per_step: int = 1) -> Features:
        """Inverse of :meth:`unbatch`: right-pad per-item tensors into one batch."""
        if not items:
            raise ValueError("Features.collate: no items")
        x, mask = pad_sequence([it["x"] for it in items])
        n_hidden = sum(1 for k in items[0] if k.startswith("hidden."))
        hs = hm = None
        if n_hidden:
            layers = []
            for l in range(n_hidden):
                h, hm = pad_sequence([it[f"hidden.{l}"] for it in items])
                layers.append(h)
            hs = tuple(layers)
        return Features(x, mask, rate_hz, tokens_per_step, hs, hm)


def pad_sequence(seqs: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Right-pad ``[n_i, D]`` tensors with zeros: ``([B, max n, D], mask [B, max n])``."""
    n = max(s.shape[0] for s in seqs)
    x = seqs[0].new_zeros((len(seqs), n) + tuple(seqs[0].shape[1:]))
    mask = torch.zeros(len(seqs), n, dtype=torch.bool, device=seqs[0].device)
    for i, s in enumerate(seqs):
        x[i, : s.shape[0]] = s
        mask[i, : s.shape[0]] = True
    return x, mask


def weights_fingerprint(module: nn.Module) -> str:
    """sha256 (first 16 hex digits) over parameter/buffer names, shapes, dtypes and bytes."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def config_fingerprint(cfg) -> str:
    """Stable short hash of a config dataclass (or dict), for ids and cache keys."""
    d = asdict(cfg) if is_dataclass(cfg) else dict(cfg)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


class Encoder(nn.Module):
    """Base class: frozen (always eval), ``encode`` under ``torch.no_grad``, stable ``encoder_id``.

    Subclasses set ``kind`` and implement ``_encode(batch, output_hidden_states) -> Features`` and
    ``preprocess_config() -> dict`` (everything besides the weights that changes the output).
    """

    kind: str = "encoder"
    output_dim: int  # D of Features.x
    rate_hz: float | None  # default time rate of the features (None: still images)

    def __init__(self) -> None:
        super().__init__()
        self._fingerprint: str | None = None

    def train(self, mode: bool = True) -> Encoder:  # noqa: ARG002 - frozen: always eval
        return super().train(False)

    def preprocess_config(self) -> dict:
        raise NotImplementedError

    @property
    def encoder_id(self) -> str:
        """``kind:<weights hash>:<preprocessing hash>`` — equal ids give equal features."""
        if self._fingerprint is None:
            self._fingerprint = weights_fingerprint(self)
        return f"{self.kind}:{self._fingerprint}:{config_fingerprint(self.preprocess_config())}"

    @property
    def device(self) -> torch.device:
        p = next(self.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        p = next(self.parameters(), None)
        return p.dtype if p is not None else torch.float32

    supports_warp: bool = False  # encode(..., warp=...) takes per-item frequency-warp factors (training VTLP)

    def encode(self, batch: Sequence, output_hidden_states: bool = False,
               warp: Sequence[float] | None = None) -> Features:
        """Encode a list of media items (see the subclass for the item format). ``warp``: one
        frequency-warp factor per item (vocal tract length perturbation, training only), for
        encoders with ``supports_warp``. Runs under ``torch.no_grad`` unless LoRA adapters inside the
        encoder train (``media.<m>.encoder_lora``) and gradients are on: its own weights never get a graph,
        whatever their ``requires_grad`` says."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.adapters_train()):
            return self._encode_checked(batch, output_hidden_states, warp)

    def adapters_train(self) -> bool:
        """Whether a LoRA adapter attached inside this encoder trains (mmlora.lora names their weights
        ``….adapters.<name>.A|B``)."""
        return any(p.requires_grad for n, p in self.named_parameters() if ".adapters." in n)

    def _encode_checked(self, batch: Sequence, output_hidden_states: bool, warp: Sequence[float] | None) -> Features:
        if len(batch) == 0:
            raise ValueError(f"{type(self).__name__}.encode: empty batch")
        if warp is None:
            return self._encode(list(batch), output_hidden_states)
        if not self.supports_warp:
            raise ValueError(f"{type(self).__name__} has no frequency warp (vtlp); only spectrogram encoders do")
        if len(warp) != len(batch):
            raise ValueError(f"warp has {len(warp)} factors for {len(batch)} items")
        return self._encode(list(batch), output_hidden_states, warp=list(warp))

    def _encode(self, batch: list, output_hidden_states: bool, warp: list[float] | None = None) -> Features:
        raise NotImplementedError

    def forward(self, batch: Sequence, output_hidden_states: bool = False) -> Features:
        return self.encode(batch, output_hidden_states)


@dataclass
class FrameSampling:
    """How video frames reach a per-frame image encoder."""

    fps: float = 25.0  # frame rate of the decoded video (mmlora.data.media.load_video default)
    stride: int = 1  # encode every stride-th frame: feature rate = fps / stride
    chunk: int = 64  # frames per encoder call (memory bound)
    # pad a batch's last, shorter chunk with blank frames up to a power of two (at most ``chunk``) and drop their
    # outputs: the encoder then sees at most log2(chunk) + 1 distinct shapes instead of a new one on most batches
    # (cuDNN plans each new conv shape; scripts/bench_shape_churn.py). Frames are encoded independently, so the
    # features do not change.
    pad_chunks: bool = True


def to_frames(item: Tensor) -> tuple[Tensor, bool]:
    """One image or video → ``(frames [T, 3, H, W] float in [0, 1], is_video)``.

    uint8 inputs are channels-last (``[H, W, 3]`` / ``[T, H, W, 3]``, as decoded by
    :mod:`mmlora.data.media`); float inputs are channels-first in [0, 1] (``[3, H, W]`` / ``[T, 3, H, W]``).
    """
    if not isinstance(item, Tensor):
        item = torch.as_tensor(item)
    if item.dim() not in (3, 4):
        raise ValueError(f"expected an image [H,W,3]/[3,H,W] or a video [T,H,W,3]/[T,3,H,W], got shape {tuple(item.shape)}")
    is_video = item.dim() == 4
    x = item if is_video else item.unsqueeze(0)
    if x.dtype == torch.uint8:
        if x.shape[-1] != 3:
            raise ValueError(f"uint8 frames must be channels-last RGB [..., H, W, 3], got shape {tuple(item.shape)}")
        x = x.permute(0, 3, 1, 2).float() / 255.0
    else:
        if x.shape[1] != 3:
            raise ValueError(f"float frames must be channels-first RGB [..., 3, H, W] in [0, 1], got shape {tuple(item.shape)}")
        x = x.float()
    if x.shape[0] == 0:
        raise ValueError("video has no frames")
    return x, is_video


def encode_frames(batch: list, sampling: FrameSampling, frame_fn, device: torch.device | str | None = None
                  ) -> Features:
    """Shared image/video path: ``frame_fn(frames [M, 3, H, W]) -> [M, P, D]`` per frame.

    Images give ``N = P`` tokens and ``rate_hz=None``; videos keep the time axis: every
    ``stride``-th frame, ``N = T' · P`` tokens (step-major), ``rate_hz = fps / stride``.
    A batch holds either images or videos, not both. Frames of equal size are encoded together
    across items, ``sampling.chunk`` per call (one clip's frames no longer need calls of their own);
    ``device``: items are moved there before the conversion to float (uint8 moves 4× fewer bytes).
    """
    if device is not None:
        batch = [torch.as_tensor(b).to(device, non_blocking=True) for b in batch]
    frames, kinds = zip(*(to_frames(b) for b in batch))
    if len(set(kinds)) > 1:
        raise ValueError("a batch must hold only images or only videos")
    is_video = kinds[0]
    if is_video and sampling.stride > 1:
        frames = tuple(f[:: sampling.stride] for f in frames)

    def run(f: Tensor) -> Tensor:
        outs = []
        for s in range(0, f.shape[0], sampling.chunk):
            c = f[s : s + sampling.chunk]
            m = c.shape[0]
            size = min(sampling.chunk, 1 << (m - 1).bit_length()) if sampling.pad_chunks else m
            if size > m:
                c = torch.cat([c, c.new_zeros((size - m, *c.shape[1:]))])
            outs.append(frame_fn(c)[:m])
        return torch.cat(outs, dim=0)

    if len({tuple(f.shape[1:]) for f in frames}) == 1:  # one frame size: batch across items
        ys = run(torch.cat(frames) if len(frames) > 1 else frames[0]).split([f.shape[0] for f in frames])
    else:
        ys = [run(f) for f in frames]
    P = ys[0].shape[1]
    items = [{"x": y.reshape(-1, y.shape[-1])} for y in ys]
    rate = sampling.fps / sampling.stride if is_video else None
    return Features.collate(items, rate_hz=rate, tokens_per_step=P)


def preprocess_frames(frames: Tensor, size: int | tuple[int, int] | None, mean: Sequence[float],
                      std: Sequence[float]) -> Tensor:
    """Resize (bilinear, antialiased) to ``size`` and normalize ``(x - mean) / std`` per channel."""
    if size is not None:
        hw = (size, size) if isinstance(size, int) else tuple(size)
        if tuple(frames.shape[-2:]) != hw:
            frames = nn.functional.interpolate(frames, size=hw, mode="bilinear", align_corners=False, antialias=True)
    m = torch.tensor(mean, dtype=frames.dtype, device=frames.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=frames.dtype, device=frames.device).view(1, -1, 1, 1)
    return (frames - m) / s


__all__ = ["Features", "Encoder", "FrameSampling", "encode_frames", "to_frames", "preprocess_frames",
           "pad_sequence", "weights_fingerprint", "config_fingerprint"]
