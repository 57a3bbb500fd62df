"""MultimodalLM: frozen encoders → trainable projectors → spliced into a frozen LLM with routed LoRAs.

::

    media ─▶ encoders[m] (frozen) ─▶ Features ─▶ projectors[m] (rate k) ─▶ [n_i, d_llm] per item
    chat prompt with <audio>/<video>/<image> slots ─▶ segments (text ids | media rows)
        ─▶ inputs_embeds [B, L, d_llm], token types [B, L] ─▶ RoutingPlan ─▶ LLM (+ LoRA) ─▶ loss / text

Assembled in one step by :meth:`MultimodalLM.build` from a :class:`ModelConfig`; freezing is
decided there (LLM and encoders frozen, projectors and adapters trainable, by flags).

The batch (made by :func:`mmlora.data.collate.collate_samples`) is a dict::

    segments:  list (B) of lists of TextSegment | MediaSegment   (see mmlora.prompt)
    media:     {modality: list of raw items for the encoder, or Features (precomputed)}
    rates:     optional {modality: k}; None with a Matryoshka bank = every rate pair (training)
"""
from __future__ import annotations

import copy
import functools
import itertools
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import numpy as np

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .ctc import CTCConfig
from .data.spec_augment import SpecAugmentConfig, spec_augment
from .hostdev import to_device
from .llm import LLMConfig, attention_backends, load_llm
from .lora import (LoRASpec, _atomic_dir, adapter_names, adapter_parameters, attach, load_adapters,
                   read_adapter_folder, save_adapters, write_adapter_folder)
from .prompt import MarkerConfig, PromptBuilder, TextSegment
from .routing import RoutingPlan, install_plan

__all__ = ["MediaConfig", "RouterConfig", "ModelConfig", "MultimodalLM", "TOKEN_TYPES"]

TOKEN_TYPES = {"pad": -1, "text": 0, "audio": 1, "video": 2, "image": 3}
ENCODER_LORA = "encoder"  # the adapter name of media.encoder_lora inside an encoder
ENCODER_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")  # Whisper's encoder layers
ENCODER_ADAPTERS = "encoder_adapters"  # a saved model's folder of encoder LoRA, one sub-folder per modality
WHISPER_DECODER = "whisper_decoder.safetensors"  # a saved model's trained Whisper decoder, for whisper_weight's judge
# a saved model's LoRA of the judge's own copy of the audio encoder (an adapter folder, trained through Whisper's
# decoder: scripts/whisper_decoder_probe.py --encoder-lr); without it the judge reads the model's audio encoder
WHISPER_ENCODER = "whisper_encoder_adapters"
# a saved model's second judges (generate(second_judge_weight=…)): one sub-folder each, named as the user likes, with
# a trained decoder (WHISPER_DECODER) and optionally its judge encoder LoRA (WHISPER_ENCODER): other trainings' judges
SECOND_JUDGES = "second_judges"
_VISUAL = ("image", "video")


class Assembled(NamedTuple):
    """One batch spliced for the LLM (:meth:`MultimodalLM.assemble`)."""

    x: Tensor  # [B, L, d] inputs_embeds
    attn: Tensor  # [B, L] attention mask (1 = token)
    labels: Tensor  # [B, L] answer token ids, -100 elsewhere
    types: Tensor  # [B, L] TOKEN_TYPES (-1 = pad)
    answer_pos: Tensor  # [2, K] (row, column) of every position whose next token is an answer token, row-major


def encoder_lora_cache_error(modality: str) -> str:
    return (f"model.media.{modality}.encoder_lora changes the {modality} encoder's output as it trains: its features "
            f"cannot be cached (set data.feature_cache=null, or data.feature_cache_modalities to the others)")


def check_uncached_encoder_lora(media: Mapping[str, "MediaConfig"], cached) -> None:
    """ValueError (:func:`encoder_lora_cache_error`) when a modality in ``cached`` has ``encoder_lora``."""
    for m in cached:
        if m in media and media[m].encoder_lora:
            raise ValueError(encoder_lora_cache_error(m))


def _cached_items(items) -> bool:
    """Media items that are cached per-item features (``{"x": ...}`` dicts). (A ready ``Features`` batch is
    not: :meth:`MultimodalLM.encode_media`'s own output passes through, with its graph when the encoder trains.)"""
    from .encoders.base import Features

    return not isinstance(items, Features) and bool(items) and isinstance(items[0], dict) and "x" in items[0]


def _unpad_rows(emb: Tensor, mask: Tensor) -> list[Tensor]:
    """``[n_i, d]`` rows of each item of ``emb [B, N, d]`` where ``mask [B, N]`` is True. One copy of the mask
    to the host (instead of a device sync per item); a prefix mask (what compressors give) yields views."""
    m = mask.cpu()
    n = m.sum(1)
    if torch.equal(m, torch.arange(m.shape[1])[None, :] < n[:, None]):
        return [emb[i, :k] for i, k in enumerate(n.tolist())]
    return [emb[i, m[i].to(emb.device)] for i in range(emb.shape[0])]


@dataclass
class MediaConfig:
    """One input modality: a frozen encoder and a trainable projector."""

    encoder: dict = field(default_factory=dict)    # mmlora.encoders config (e.g. {"kind": "whisper", "path": ...})
    projector: dict = field(default_factory=dict)  # mmlora.projectors.ProjectorConfig fields
    hidden_states: bool = False                    # pass every encoder layer to the projector (QLadder)
    spec_augment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)  # feature masking in training only
    vtlp: list[float] = field(default_factory=list)  # [lo, hi]: in training, each clip's spectrum is scaled in
    # frequency by a factor ~ U(lo, hi) before the encoder (vocal tract length perturbation; Whisper only; needs
    # raw audio, so not with data.feature_cache). [] = off
    dropout: float = 0.0  # modality dropout, in training only: the probability that an item's tokens of this
    # modality are zeroed, so that the model learns to read the other modalities (AV-HuBERT); never every
    # modality of a sample at once (MultimodalLM.drop_modalities)
    swap: float = 0.0  # mismatch training, in training only: the probability that a sample's tokens of this
    # modality are replaced by another sample's of the same batch (e.g. another clip's lips beside this clip's
    # audio), so that the model learns to follow this modality only where it agrees with the others (GPU runs
    # 39-40: AVSR followed lips that read badly). Needs a second modality (MultimodalLM.swap_items)
    encoder_lora: dict = field(default_factory=dict)  # LoRA on the frozen encoder's linear layers, trained with
    # this modality's projector: {rank, alpha, targets, init, use_rslora}; targets: name suffixes (default: the
    # encoder's lora_targets, e.g. EfficientNet's 1×1 convs, else ENCODER_LORA_TARGETS, Whisper's attention and
    # MLP). {} = none. The encoder then runs with gradients in training and its features cannot be cached
    # (data.feature_cache=null)

    def __post_init__(self) -> None:
        from .data.speech_augment import factor_range

        if not 0.0 <= self.dropout <= 1.0:
            raise ValueError(f"media.dropout must be in [0, 1], got {self.dropout}")
        if not 0.0 <= self.swap <= 1.0:
            raise ValueError(f"media.swap must be in [0, 1], got {self.swap}")
        if self.encoder_lora:
            self.encoder_lora_spec()  # validate now: a bad recipe fails before anything loads

        self.vtlp = factor_range(self.vtlp, "media.vtlp")
        if isinstance(self.spec_augment, dict):
            from .config import from_dict

            self.spec_augment = from_dict(SpecAugmentConfig, self.spec_augment, source="media.spec_augment")

    def encoder_lora_spec(self) -> tuple[LoRASpec, list[str] | None] | None:
        """``(spec, targets)`` of :attr:`encoder_lora` (targets None: the encoder's default), or None when it is
        off. The encoder always runs in eval
        mode, so adapter dropout would never act: it is refused rather than silently ignored."""
        if not self.encoder_lora:
            return None
        d = dict(self.encoder_lora)
        targets = d.pop("targets", None)  # None: the encoder's own default (lora_targets), else Whisper's
        if isinstance(targets, str):
            targets = [targets]
        allowed = {f.name for f in fields(LoRASpec)} - {"dropout"}
        unknown = sorted(set(d) - allowed)
        if unknown:
            raise ValueError(f"media.encoder_lora: unknown key(s) {unknown} (allowed: {sorted(allowed | {'targets'})}; "
                             "no dropout: the frozen encoder always runs in eval mode)")
        if "rank" not in d or "alpha" not in d:
            raise ValueError(f"media.encoder_lora needs rank and alpha, got {self.encoder_lora}")
        if targets is not None and (not targets or not all(isinstance(t, str) and t for t in targets)):
            raise ValueError(f"media.encoder_lora.targets must be a non-empty list of layer names, got {targets!r}")
        try:
            return LoRASpec(**d), None if targets is None else list(targets)
        except (TypeError, ValueError) as e:
            raise ValueError(f"media.encoder_lora: {e}") from None


@dataclass
class RouterConfig:
    """Which adapter acts on which token (see mmlora.routing)."""

    kind: str = "single"       # none | single | token_type (MM-LoRA) | sample_mode (Phi-4-MM) | scale (Matryoshka)
    adapter: str = "default"   # single: the adapter
    token_map: dict[str, str | None] = field(default_factory=lambda: {"text": "language", "image": "visual",
                                                                      "video": "visual", "audio": "language"})
    # token_type: token type -> adapter
    mode_map: dict[str, str | None] = field(default_factory=lambda: {"text": None, "audio": "speech", "vision": "vision"})
    # sample_mode: "text" | "audio" | "vision" (any image/video) or an exact "audio+video" -> adapter or None
    bank: str = "mss"          # scale: ms (shared only) | ss (scale-specific only) | mss (both)
    shared: str = "shared"     # scale: name of the shared adapter


@dataclass
class AlignConfig:
    """Cross-modal alignment, a training objective: the projected tokens of ``source`` (e.g. lip video)
    learn to match those of ``target`` (e.g. audio) of the same clip, token by token (the shorter
    length), as the summed squared error over the target's summed square (0 = equal, 1 = as far as
    zeros); the target is detached and not masked (no SpecAugment). Both must give the same tokens per
    second at their one rate (video 25 fps / 2 = audio 50 Hz / 4). ``lm: false``: alignment is the whole
    loss, no LLM pass, and only the source projector trains (a fast first stage that puts a new modality
    where the adapters already read the other one); ``true``: ``weight`` × it is added to the cross-entropy."""

    source: str = ""       # modality whose projector learns (video); "" = off
    target: str = "audio"  # modality whose projected tokens are the target
    weight: float = 1.0    # lm true: loss = cross-entropy + weight · alignment
    lm: bool = True        # false: alignment only (no LLM forward; only the source projector trains)


@dataclass
class ModelConfig:
    """Everything needed to assemble a MultimodalLM."""

    llm: LLMConfig = field(default_factory=LLMConfig)
    media: dict[str, MediaConfig] = field(default_factory=dict)  # modality ("audio"/"video"/"image") -> MediaConfig
    adapters: dict[str, LoRASpec] = field(default_factory=dict)  # adapter name -> LoRASpec
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])  # LoRA targets (suffix/regex)
    router: RouterConfig = field(default_factory=RouterConfig)
    markers: MarkerConfig = field(default_factory=MarkerConfig)
    system_prompt: str | None = None
    train_projectors: bool = True                    # projector parameters train
    train_adapters: bool = True                      # LoRA parameters train
    align: AlignConfig = field(default_factory=AlignConfig)  # cross-modal alignment objective (off by default)
    ctc: CTCConfig = field(default_factory=CTCConfig)  # auxiliary CTC on one modality's encoder features (off)

    def __post_init__(self) -> None:
        if isinstance(self.llm, dict):
            self.llm = LLMConfig(**self.llm)
        self.media = {k: MediaConfig(**v) if isinstance(v, dict) else v for k, v in self.media.items()}
        for k in self.media:
            if k not in ("audio", "video", "image"):
                raise ValueError(f"model.media: unknown modality {k!r} (audio, video, image)")
        swapped = [k for k, m in self.media.items() if m.swap]
        if swapped and len(self.media) < 2:
            raise ValueError(f"model.media.{swapped[0]}.swap: swapping a modality between samples needs a second "
                             f"modality that stays with its sample (model.media has only {sorted(self.media)})")
        self.adapters = {k: LoRASpec(**v) if isinstance(v, dict) else v for k, v in self.adapters.items()}
        if isinstance(self.router, dict):
            self.router = RouterConfig(**self.router)
        if isinstance(self.markers, dict):
            self.markers = MarkerConfig(**{k: tuple(v) for k, v in self.markers.items()})
        if self.router.kind not in ("none", "single", "token_type", "sample_mode", "scale"):
            raise ValueError(f"model.router.kind: unknown router {self.router.kind!r}")
        if isinstance(self.align, dict):
            from .config import from_dict

            self.align = from_dict(AlignConfig, self.align, source="model.align")
        if isinstance(self.ctc, dict):
            from .config import from_dict

            self.ctc = from_dict(CTCConfig, self.ctc, source="model.ctc")
        if self.ctc.modality and self.ctc.modality not in self.media:
            raise ValueError(f"model.ctc.modality: {self.ctc.modality!r} is not one of model.media {sorted(self.media)}")
        a = self.align
        if a.source:
            for role, mod in (("source", a.source), ("target", a.target)):
                if mod not in self.media:
                    raise ValueError(f"model.align.{role}: {mod!r} is not one of model.media {sorted(self.media)}")
            if a.source == a.target:
                raise ValueError(f"model.align: source and target are both {a.source!r}")
            for mod in (a.source, a.target):
                rates = self.media[mod].projector.get("rates", [1])
                if len(rates) != 1:
                    raise ValueError(f"model.align: the {mod} projector has rates {list(rates)}; alignment needs one")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["markers"] = {k: list(v) for k, v in d["markers"].items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"model: unknown field(s) {unknown}; valid: {sorted(names)}")
        return cls(**d)


def _in_attention_backends(fn):
    """Run a :class:`MultimodalLM` method under :func:`mmlora.llm.attention_backends` for the model's device."""
    @functools.wraps(fn)
    def run(self, *args, **kwargs):
        with attention_backends(self.cfg.llm, self.device):
            return fn(self, *args, **kwargs)
    return run


def scale_adapter_name(rates: dict[str, int]) -> str:
    """Name of the Matryoshka scale-specific adapter for a rate pair, e.g. ``scale_a4_v2``."""
    return "scale_" + "_".join(f"{m[0]}{rates[m]}" for m in sorted(rates))


def _model_config(in_dir: Path) -> Path:
    """``in_dir/config.json`` of a :meth:`MultimodalLM.save_pretrained` folder; missing: an error naming it."""
    cfg_path = in_dir / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path}: missing (not an mmlora model folder)")
    return cfg_path


def _without_unplaced_ctc_heads(state: dict, own: Mapping, source, prefix: str = "") -> dict:
    """``state`` without the saved CTC-head weights (``model.ctc``) that have no place among ``own``'s names (logged
    with ``source``; inference never needs them): a model starting from one with another head, or none. ``prefix``:
    the names' prefix before the modality (``"projectors."`` where they are the model's own names)."""
    unused = [k for k in state if ".ctc_head." in k and k not in own]
    if not unused:
        return state
    import logging

    logging.getLogger("mmlora.model").info("%s: CTC head left out (this model has no model.ctc on %s)", source,
                                           ", ".join(sorted({k[len(prefix):].split(".", 1)[0] for k in unused})))
    return {k: v for k, v in state.items() if k not in unused}


def _state_mismatch(expected: Mapping[str, Tensor], saved: Mapping[str, Tensor]) -> str:
    """How saved weights differ from a module's state ("missing […], unexpected […], shapes (saved vs model) […]"),
    or "" when they fit."""
    missing = [k for k in expected if k not in saved]
    unexpected = [k for k in saved if k not in expected]
    shapes = [f"{k} {tuple(saved[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in saved and saved[k].shape != v.shape]
    if not (missing or unexpected or shapes):
        return ""
    return f"missing {missing[:5]}, unexpected {unexpected[:5]}, shapes (saved vs model) {shapes[:3]}"


def attach_encoder_lora(encoder: nn.Module, spec: LoRASpec, targets: list[str] | None,
                        where: str = "media.encoder_lora") -> None:
    """LoRA adapter :data:`ENCODER_LORA` of ``spec`` on the linear layers of ``encoder`` named by ``targets``
    (:meth:`MediaConfig.encoder_lora_spec`'s; None: the encoder's ``lora_targets``, else Whisper's), its base
    weights frozen, routed to every frame: the plan is installed once and stays."""
    if targets is None:
        targets = list(getattr(encoder, "lora_targets", ENCODER_LORA_TARGETS))
    try:
        prepare = getattr(encoder, "prepare_lora", None)  # e.g. EfficientNet: its 1×1 convs become linear layers
        if prepare is not None:
            prepare(targets)
        attach(encoder, {ENCODER_LORA: spec}, targets, fused_mlp=False)
    except ValueError as e:
        raise ValueError(f"{where}: {e} (the {type(encoder).__name__} encoder)") from None
    install_plan(encoder, RoutingPlan(names=(ENCODER_LORA,), shared=(ENCODER_LORA,)))


SWEEPS = ("ctc_weight", "whisper_weight", "whisper_both")  # generate's settings a list sweeps, one at a time


def _weights(name: str, value) -> tuple[list[float] | None, float]:
    """A rescoring weight of ``generate``: ``(the sweep's weights or None, the largest / the one weight)``."""
    if isinstance(value, (list, tuple)):
        ws = [float(w) for w in value]
        if not all(0.0 <= w <= 1.0 for w in ws):
            raise ValueError(f"{name}: each weight of a sweep must be in [0, 1], got {ws}")
        return ws, max(ws, default=0.0)
    return None, float(value or 0.0)


def _cache_arg(llm: nn.Module) -> str:
    """The name of ``llm``'s KV-cache argument (an LLM's, or Whisper's decoder's for the judge): ``cache``
    (transformers 5.24) or ``past_key_values`` (5.17)."""
    import inspect

    return "cache" if "cache" in inspect.signature(llm.forward).parameters else "past_key_values"


def beam_token_logp(sequences: Tensor, scores: tuple[Tensor, ...], beam_indices: Tensor) -> Tensor:
    """``[N, L]``: each returned beam's score of the token it took at each of its steps, 0 after it ended: what
    transformers' ``compute_transition_scores(sequences, scores, beam_indices, normalize_logits=False)`` gives (the
    same values, picked the same way), gathered step by step instead of from the steps' stacked scores (a copy of
    every step's ``[beams, vocabulary]`` scores at once: about 5 % of the CPU decode of 32 clips at 8 beams and 0.7 GB,
    session 58)."""
    ended = beam_indices < 0
    length = int((~ended).long().sum(-1).max())
    if length == 0:  # no beam took a step
        return torch.zeros(len(sequences), 0, device=sequences.device)
    rows = beam_indices[:, :length].clamp(min=0)
    tokens = sequences[:, sequences.shape[-1] - length:]
    out = torch.stack([scores[t][rows[:, t], tokens[:, t]] for t in range(length)], 1)
    return out.masked_fill(ended[:, :length], 0.0)


def _with_proposals(texts: list[str], llm_logp: Tensor, n_samples: int, proposals: list[list[str]],
                    proposal_logp: Tensor) -> tuple[list[str], Tensor, int]:
    """Each sample's ``K`` beams (sample-major) followed by its ``N`` proposal slots: ``(texts, llm_logp, K + N)``
    (``proposals[b]``: up to ``N`` texts; ``proposal_logp``: ``[n_samples * N]``, slot ``j`` of sample ``b`` at
    ``b * N + j``). A slot whose proposal is missing, already among its sample's beams or an earlier slot becomes a
    copy of the sample's first beam and its score, which loses every tie to it."""
    K, N = len(texts) // n_samples, len(proposal_logp) // n_samples
    out, scores = [], []
    for b in range(n_samples):
        beams, logp = texts[b * K:(b + 1) * K], llm_logp[b * K:(b + 1) * K]
        cands, slot_logp = list(beams), [logp]
        for j in range(N):
            p = proposals[b][j].strip() if j < len(proposals[b]) else None
            new = p is not None and p not in cands
            cands.append(p if new else beams[0])
            slot_logp.append((proposal_logp[b * N + j:b * N + j + 1] if new else logp[:1]).to(logp))
        out += cands
        scores += slot_logp
    return out, torch.cat(scores), K + N


def _proposal_count(value) -> int:
    """``generate``'s ``whisper_proposal``: False / 0 none, True / 1 Whisper's greedy transcript, ``n`` > 1 its ``n``
    best by beam search."""
    if isinstance(value, bool) or (isinstance(value, int) and value >= 0):
        return int(value)
    raise ValueError(f"whisper_proposal is on/off (True/False) or a number of Whisper's transcripts >= 0, got "
                     f"{value!r}")


def _both_share(value) -> tuple[list[float] | None, float]:
    """``generate``'s ``whisper_both``: Whisper's own decoder's share of the judges' score beside the folder's judge,
    as ``(the sweep's shares or None, the largest / the one share)``: False / None 0 (off), True 0.5 (the mean, as
    released in session 51), a share in [0, 1], or a list of them (a sweep: every share reads the same candidates,
    both decoders' proposals among them)."""
    if value is None or isinstance(value, bool):
        return None, 0.5 if value else 0.0
    shares, share = _weights("whisper_both", value)
    if shares is None and not 0.0 <= share <= 1.0:
        raise ValueError(f"whisper_both: Whisper's own decoder's share must be in [0, 1], got {share}")
    return shares, share


def _read_second_judges(folder: Path) -> list[tuple[str, dict[str, Tensor], tuple | None]]:
    """:data:`SECOND_JUDGES` of a saved model: each sub-folder's (name, trained decoder's weights, its encoder LoRA
    as :func:`mmlora.lora.read_adapter_folder` gives it, or None), in name order; none where the folder is absent. A
    sub-folder without a trained decoder is named in the error."""
    if not folder.is_dir():
        return []
    from safetensors.torch import load_file

    out = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        if not (sub / WHISPER_DECODER).is_file():
            raise ValueError(f"{sub}: a second judge needs its trained decoder ({WHISPER_DECODER})")
        lora = read_adapter_folder(sub / WHISPER_ENCODER) if (sub / WHISPER_ENCODER).is_dir() else None
        out.append((sub.name, load_file(str(sub / WHISPER_DECODER)), lora))
    return out


def _check_rescoring(name: str, weight: float, kw: dict) -> None:
    """A rescoring weight of ``generate`` in (0, 1], with beams to rescore and no sampling."""
    if not 0.0 < weight <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {weight}")
    if int(kw.get("num_beams", 1)) < 2 or kw.get("do_sample"):
        raise ValueError(f"{name} rescores beams: set num_beams > 1 (and no sampling)")


class MultimodalLM(nn.Module):
    """See the module docstring. Build with :meth:`build`; load with :meth:`from_pretrained`."""

    def __init__(self, cfg: ModelConfig, llm: nn.Module, tokenizer, encoders: dict[str, nn.Module],
                 projectors: dict[str, nn.Module]):
        super().__init__()
        self.cfg = cfg
        self.llm = llm
        self.tokenizer = tokenizer
        self.encoders = nn.ModuleDict(encoders)
        self.projectors = nn.ModuleDict(projectors)
        self.prompts = PromptBuilder(tokenizer, cfg.markers, cfg.system_prompt)
        self.pipeline_info: dict = {}  # task metadata saved with the model (see save_pretrained)
        self.feature_cache = None  # optional mmlora.data.feature_cache.FeatureCache for media given as paths
        self.zeroed_modalities: frozenset[str] = frozenset()  # ablation: these modalities' tokens are zeroed (always)
        # a trained Whisper decoder's weights for generate(whisper_weight=…)'s judge (WHISPER_DECODER), or None
        self.whisper_decoder_state: dict[str, Tensor] | None = None
        # the judge's own encoder LoRA (WHISPER_ENCODER) as read_adapter_folder gives it, (config, tensors), or None
        self.whisper_encoder_lora: tuple[dict, dict[str, Tensor]] | None = None
        # the second judges (SECOND_JUDGES): (name, trained decoder's weights, encoder LoRA or None), in name order
        self.second_judge_states: list[tuple[str, dict[str, Tensor], tuple[dict, dict[str, Tensor]] | None]] = []

    # ------------------------------------------------------------------ assembly
    @classmethod
    def build(cls, cfg: ModelConfig, encoders: dict[str, nn.Module] | None = None,
              llm: tuple[nn.Module, object] | None = None) -> "MultimodalLM":
        """Assemble from ``cfg``: LLM (frozen) + encoders (frozen) + projectors + adapters.

        ``encoders`` / ``llm`` may be given ready-made (tests, shared instances); the rest is
        built from the config.
        """
        model, tokenizer = llm if llm is not None else load_llm(cfg.llm)
        d_llm = model.get_input_embeddings().weight.shape[1]
        encs: dict[str, nn.Module] = dict(encoders or {})
        for mod, mcfg in cfg.media.items():
            if mod not in encs:
                from .encoders import build_encoder

                encs[mod] = build_encoder(mcfg.encoder)
            if mcfg.vtlp and not getattr(encs[mod], "supports_warp", False):
                raise ValueError(f"model.media.{mod}.vtlp: the {type(encs[mod]).__name__} encoder has no frequency "
                                 "warp (only spectrogram encoders such as Whisper do)")
        from .projectors import ProjectorConfig, build_projector

        projs = {}
        for mod, mcfg in cfg.media.items():
            pcfg = ProjectorConfig.from_dict(mcfg.projector, where=f"model.media.{mod}.projector")
            fed = cfg.ctc.width if cfg.ctc.feed and cfg.ctc.modality == mod else 0  # the CTC head's hidden frames
            projs[mod] = build_projector(pcfg, d_in=encs[mod].output_dim + fed, d_llm=d_llm)
        adapters = dict(cfg.adapters)
        if adapters:
            attach(model, adapters, cfg.target_modules)
        for mod, mcfg in cfg.media.items():  # last: the fresh weights drawn before stay what they were without it
            if mcfg.encoder_lora:
                attach_encoder_lora(encs[mod], *mcfg.encoder_lora_spec(), where=f"model.media.{mod}.encoder_lora")
        if cfg.ctc.modality:  # last too; kept with the projector: it trains, is grouped, saved and loaded with it
            from .ctc import build_ctc_head

            m = cfg.ctc.modality
            projs[m].add_module("ctc_head", build_ctc_head(cfg.ctc, encs[m].output_dim))
        self = cls(cfg, model, tokenizer, encs, projs)
        self._freeze()
        return self

    def _freeze(self) -> None:
        """The one place that decides what trains."""
        for p in self.parameters():
            p.requires_grad_(False)
        align_only = bool(self.cfg.align.source) and not self.cfg.align.lm
        if self.cfg.train_projectors:  # a modality's encoder LoRA trains with its projector
            for mod, proj in self.projectors.items():
                if not align_only or mod == self.cfg.align.source:
                    for p in itertools.chain(proj.parameters(), self.encoder_adapter_parameters(mod)):
                        p.requires_grad_(True)
        if self.cfg.train_adapters and adapter_names(self.llm) and not align_only:
            for p in adapter_parameters(self.llm):
                p.requires_grad_(True)
        for enc in self.encoders.values():
            enc.eval()
        self.llm.eval()  # dropout of the frozen LLM stays off; LoRA dropout follows self.training

    def train(self, mode: bool = True) -> "MultimodalLM":
        super().train(mode)
        for enc in self.encoders.values():
            enc.eval()
        for m in self.llm.modules():  # frozen base in eval, adapters follow mode
            m.training = False
        from .lora import lora_layers

        for _, layer in lora_layers(self.llm):
            layer.training = mode
            for ad in layer.adapters.values():
                ad.train(mode)
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def encoder_adapter_parameters(self, modality: str | None = None) -> list[nn.Parameter]:
        """The LoRA weights inside the encoders (``media.<m>.encoder_lora``), of one modality or all."""
        mods = [modality] if modality is not None else list(self.encoders)
        return [p for m in mods if m in self.encoders for p in adapter_parameters(self.encoders[m])]

    def param_groups(self, projector_lr: float | None = None, lora_lr: float | None = None,
                     weight_decay: float | None = None) -> list[dict]:
        """Optimizer groups ``projectors``, ``lora`` and, with ``media.<m>.encoder_lora``, ``encoder`` (each
        with its own learning rate when given; the training loop's ``group_lr`` can set them by name). A group
        the model has but keeps frozen (LoRA under ``align.lm: false``) comes with no parameters, so that a recipe's
        ``group_lr`` for it stays valid; the loop leaves it out."""
        groups = []
        enc_all = self.encoder_adapter_parameters()
        has = {"projectors": len(self.projectors) > 0, "lora": bool(adapter_names(self.llm)), "encoder": bool(enc_all)}
        proj = [p for p in self.projectors.parameters() if p.requires_grad]
        lora = [p for p in adapter_parameters(self.llm) if p.requires_grad] if has["lora"] else []
        enc = [p for p in enc_all if p.requires_grad]
        for name, params, lr in (("projectors", proj, projector_lr), ("lora", lora, lora_lr), ("encoder", enc, None)):
            if has[name]:
                g = {"name": name, "params": params}
                if lr is not None:
                    g["lr"] = lr
                if weight_decay is not None:
                    g["weight_decay"] = weight_decay
                groups.append(g)
        return groups

    @property
    def device(self) -> torch.device:
        return self.llm.get_input_embeddings().weight.device

    # ------------------------------------------------------------------ media
    def rate_choices(self) -> dict[str, tuple[int, ...]]:
        """Compression rates available per modality (more than one: a Matryoshka bank)."""
        return {m: tuple(p.rates) for m, p in self.projectors.items()}

    def encode_media(self, media: dict[str, Any]) -> dict[str, Any]:
        """Run the frozen encoders. Items may be decoded media, file paths (decoded here, or read
        from ``self.feature_cache`` when set: no encoder work for files seen before), per-item
        feature dicts, or a ready ``Features``."""
        from .data import media as media_io
        from .encoders.base import Features

        out = {}
        for mod, items in media.items():
            if mod not in self.encoders:
                raise KeyError(f"batch has {mod!r} media but the model has no {mod} encoder "
                               f"(model.media has {sorted(self.encoders)})")
            enc, hidden = self.encoders[mod], self.cfg.media[mod].hidden_states
            paths = bool(items) and not isinstance(items, Features) and all(isinstance(i, (str, os.PathLike))
                                                                            for i in items)
            if self.cfg.media[mod].encoder_lora and (_cached_items(items) or paths and self.feature_cache is not None):
                raise ValueError(encoder_lora_cache_error(mod))
            vtlp = self.cfg.media[mod].vtlp if self.training else None
            warp = None
            if vtlp and not isinstance(items, Features):  # torch's generator: seeded and restored by the loop
                warp = (vtlp[0] + (vtlp[1] - vtlp[0]) * torch.rand(len(items))).tolist()
            if isinstance(items, Features):
                feats = items
            elif paths:
                if self.feature_cache is not None:
                    if warp is not None:
                        raise ValueError(f"media.{mod}.vtlp changes the encoder's input every step: it cannot "
                                         "read cached features (set data.feature_cache=null)")
                    feats = self.feature_cache.encode(enc, list(items), media_io.LOADERS[mod], output_hidden_states=hidden)
                else:
                    feats = enc.encode([media_io.LOADERS[mod](p) for p in items], output_hidden_states=hidden, warp=warp)
            elif _cached_items(items):  # cached per-item features
                if warp is not None:
                    raise ValueError(f"media.{mod}.vtlp needs raw audio, got cached features")
                feats = Features.collate(items, rate_hz=getattr(enc, "rate_hz", None),
                                         tokens_per_step=int(getattr(enc, "tokens_per_step", 1) or 1))
            else:
                feats = enc.encode(items, output_hidden_states=hidden, warp=warp)
            out[mod] = feats.to(self.device)
        return out

    def project(self, feats: dict[str, Any], rates: dict[str, int], augment: bool = True) -> dict[str, list[Tensor]]:
        """Projected embeddings per modality: a list with one ``[n_i, d_llm]`` tensor per item
        (``augment``: SpecAugment in training, where configured)."""
        from dataclasses import replace as _replace

        from .projectors import project_features

        out = {}
        for mod, f in feats.items():
            proj = self.projectors[mod]
            if not self.cfg.media[mod].hidden_states:
                f = _replace(f, hidden_states=None, hidden_mask=None)
            f = _replace(f, x=f.x.to(self._proj_dtype(proj)))
            aug = self.cfg.media[mod].spec_augment
            if self.training and augment and aug.active:
                f = _replace(f, x=spec_augment(f.x, f.mask, aug))
            if self.cfg.ctc.feed and mod == self.cfg.ctc.modality:  # the CTC head's hidden frames beside the features
                f = _replace(f, x=torch.cat([f.x, proj.ctc_head.hidden(f.x, f.mask)], dim=-1))
            emb, mask = project_features(proj, f, rate=rates.get(mod))
            out[mod] = _unpad_rows(emb, mask)
        if self.training and augment:
            out = self.drop_modalities(self.swap_items(out))
        if self.zeroed_modalities:  # e.g. an AVSR model read as VSR: the audio tokens as modality dropout leaves them
            out = {m: [t * 0 for t in items] if m in self.zeroed_modalities else items for m, items in out.items()}
        return out

    def drop_modalities(self, emb: dict[str, list[Tensor]]) -> dict[str, list[Tensor]]:
        """Modality dropout (``media.<m>.dropout``): item i's tokens of modality m are zeroed with that
        probability (draws from torch's global generator, so a resumed run repeats them). Where every modality
        has the same number of items (one per sample: AVSR), item i of each belongs to sample i, and a
        sample whose draws would zero all of its modalities keeps the one with the lowest dropout (the
        first in config order on a tie). Positions and lengths stay: the LLM sees zero vectors."""
        probs = {m: self.cfg.media[m].dropout for m in emb if m in self.cfg.media}
        if not any(probs.values()):
            return emb
        mods = list(probs)
        counts = {len(emb[m]) for m in mods}
        drop = {m: (torch.rand(len(emb[m])) < probs[m]).tolist() for m in mods}
        if len(mods) > 1 and len(counts) == 1:
            keep = min(mods, key=lambda m: (probs[m], mods.index(m)))
            for i in range(counts.pop()):
                if all(drop[m][i] for m in mods):
                    drop[keep][i] = False
        return {m: [t * 0 if m in drop and drop[m][i] else t for i, t in enumerate(items)]
                for m, items in emb.items()}

    def swap_items(self, emb: dict[str, list[Tensor]]) -> dict[str, list[Tensor]]:
        """Mismatch training (``media.<m>.swap``): each sample's item of modality m is drawn with that
        probability (torch's global generator, as :meth:`drop_modalities`), and the drawn items pass round
        among themselves (the first drawn takes the second's tokens, ..., the last the first's), so none keeps
        its own; a single drawn item takes the next sample's. Acts only where every modality has one item per
        sample (AVSR) and the batch has two samples or more; lengths follow the tokens (the sequence is
        assembled from them)."""
        probs = {m: self.cfg.media[m].swap for m in emb if m in self.cfg.media and self.cfg.media[m].swap}
        counts = {len(items) for items in emb.values()}
        if not probs or len(emb) < 2 or len(counts) != 1 or (n := counts.pop()) < 2:
            return emb
        out = dict(emb)
        for m, p in probs.items():
            drawn = torch.nonzero(torch.rand(n) < p).flatten().tolist()
            if not drawn:
                continue
            src = drawn[1:] + drawn[:1] if len(drawn) > 1 else [(drawn[0] + 1) % n]
            items = list(emb[m])
            for i, j in zip(drawn, src):
                items[i] = emb[m][j]
            out[m] = items
        return out

    @staticmethod
    def _proj_dtype(proj: nn.Module) -> torch.dtype:
        p = next(proj.parameters(), None)
        return p.dtype if p is not None else torch.float32

    # ------------------------------------------------------------------ sequence assembly
    def assemble(self, segments: list[list], media_emb: dict[str, list[Tensor]], left_pad: bool = False
                 ) -> "Assembled":
        """Splice text embeddings and media embeddings into padded sequences.

        Returns :class:`Assembled`: ``inputs_embeds [B, L, d]``, ``attention_mask [B, L]``,
        ``labels [B, L]`` (answer tokens only, else -100), ``token_types [B, L]`` (TOKEN_TYPES;
        -1 = pad) and the answer positions. The layout is worked out on the host (every length is
        known there) and reaches the device in one copy; the embeddings are gathered in one
        ``index_select`` from the text embeddings and the media rows (no per-row device work).
        """
        embed = self.llm.get_input_embeddings()
        dev = embed.weight.device
        text_ids = [s.ids for segs in segments for s in segs if isinstance(s, TextSegment)]
        n_text = sum(int(t.numel()) for t in text_ids)
        media_start, m_off = {}, 1 + n_text  # source rows: 0 = zeros (padding), then text, then media items
        for mod, items in media_emb.items():
            media_start[mod] = []
            for e in items:
                media_start[mod].append(m_off)
                m_off += e.shape[0]
        lengths = []
        for segs in segments:
            n = 0
            for s in segs:
                if isinstance(s, TextSegment):
                    n += int(s.ids.numel())
                else:
                    try:
                        n += media_emb[s.modality][s.index].shape[0]
                    except (KeyError, IndexError):
                        raise ValueError(f"prompt has a <{s.modality}> slot with no {s.modality} input "
                                         f"(item {s.index})") from None
            lengths.append(n)
        B, L = len(segments), max(lengths)
        # host layout: [4, B, L] = source row, attention, label, token type
        lay = np.zeros((4, B, L), dtype=np.int64)
        lay[2] = -100
        lay[3] = TOKEN_TYPES["pad"]
        t_off = 1
        for i, segs in enumerate(segments):
            p = L - lengths[i] if left_pad else 0
            lay[1, i, p:p + lengths[i]] = 1
            for s in segs:
                if isinstance(s, TextSegment):
                    n = int(s.ids.numel())
                    lay[0, i, p:p + n] = np.arange(t_off, t_off + n)
                    if s.is_answer:
                        lay[2, i, p:p + n] = s.ids.cpu().numpy()
                    lay[3, i, p:p + n] = TOKEN_TYPES["text"]
                    t_off += n
                else:
                    n = media_emb[s.modality][s.index].shape[0]
                    st = media_start[s.modality][s.index]
                    lay[0, i, p:p + n] = np.arange(st, st + n)
                    lay[3, i, p:p + n] = TOKEN_TYPES[s.modality]
                p += n
        ans = np.nonzero(lay[2, :, 1:] != -100)  # positions whose next token is an answer token, row-major
        host = torch.from_numpy(np.concatenate([lay.reshape(-1), ans[0], ans[1]]))
        flat = to_device(host, dev)
        src_idx, attn, labels, types = flat[: 4 * B * L].view(4, B, L).unbind(0)
        answer_pos = flat[4 * B * L:].view(2, -1)
        media = [e for items in media_emb.values() for e in items]
        text_emb = embed(to_device(torch.cat(text_ids), dev)) if text_ids else None
        dtype = text_emb.dtype if text_emb is not None else media[0].dtype
        d = text_emb.shape[1] if text_emb is not None else media[0].shape[1]
        src = torch.cat([torch.zeros(1, d, dtype=dtype, device=dev)]
                        + ([text_emb] if text_emb is not None else []) + [e.to(dtype) for e in media])
        x = src.index_select(0, src_idx.reshape(-1)).view(B, L, d)
        return Assembled(x, attn, labels, types, answer_pos)

    # ------------------------------------------------------------------ routing
    def routing_plan(self, token_types: Tensor, rates: dict[str, int] | list[dict[str, int]] | None = None
                     ) -> RoutingPlan:
        """The plan for one forward, from the token types ``[B, L]`` and the rate pair (or, for the
        scale router, one rate pair per row)."""
        r = self.cfg.router
        if r.kind == "none" or not self.cfg.adapters:
            return RoutingPlan.none()
        if r.kind == "single":
            return RoutingPlan.single(r.adapter)
        if r.kind == "token_type":
            names = list(dict.fromkeys(v for v in r.token_map.values() if v is not None))
            lut = torch.full((len(TOKEN_TYPES),), -1, dtype=torch.int32)
            for ttype, ad in r.token_map.items():
                if ad is not None:
                    lut[TOKEN_TYPES[ttype] + 1] = names.index(ad)
            ids = lut[(token_types.cpu() + 1)]
            text = r.token_map.get("text")
            return RoutingPlan.by_token(ids, names, fill=names.index(text) if text is not None else -1)
        if r.kind == "sample_mode":
            return RoutingPlan.by_sample([self._mode_adapter(t) for t in token_types.cpu()])
        # scale (Matryoshka)
        specific = [scale_adapter_name(p) for p in rates] if isinstance(rates, list) else scale_adapter_name(rates or {})
        if r.bank == "ms":
            return RoutingPlan.shared_specific(r.shared, None)
        if r.bank == "ss":
            return RoutingPlan.shared_specific((), specific)
        return RoutingPlan.shared_specific(r.shared, specific)

    def _mode_adapter(self, types_row: Tensor) -> str | None:
        present = sorted(m for m in ("audio", "video", "image") if bool((types_row == TOKEN_TYPES[m]).any()))
        mode_map = self.cfg.router.mode_map
        key = "+".join(present) if present else "text"
        if key in mode_map:
            return mode_map[key]
        if any(m in _VISUAL for m in present):
            return mode_map.get("vision")
        return mode_map.get("audio") if "audio" in present else mode_map.get("text")

    def rate_pairs(self) -> list[dict[str, int]]:
        """Every combination of rates, one per modality (one pair without a bank)."""
        choices = self.rate_choices()
        mods = sorted(choices)
        return [dict(zip(mods, combo)) for combo in itertools.product(*(choices[m] for m in mods))]

    # ------------------------------------------------------------------ forward
    @_in_attention_backends
    def forward(self, batch: dict, return_logits: bool = False) -> dict[str, Tensor]:
        """Mean cross-entropy over answer tokens (averaged over rate pairs with a Matryoshka
        bank and ``batch["rates"]`` unset). Returns ``{"loss", "num_tokens"[, "logits"]}``."""
        feats = self.encode_media(batch.get("media") or {})
        rates = batch.get("rates")
        al = self.cfg.align
        align = self.align_loss(feats, rates) if self.training and al.source else None
        if align is not None and not al.lm:  # alignment only: no LLM pass
            out = {"loss": align[0], "num_tokens": align[1], "metrics": {"align_loss": align[0].detach()}}
            if return_logits:
                out["logits"] = None
            return out
        pairs = [rates] if rates else self.rate_pairs()
        pairs = [{m: r for m, r in p.items() if m in feats} for p in pairs]
        pairs = list({tuple(sorted(p.items())): p for p in pairs}.values())
        if len(pairs) > 1 and self.cfg.router.kind in ("scale", "single", "none"):
            loss, n_tok, out_logits, used = self._pairs_in_one_pass(batch["segments"], feats, pairs, return_logits)
        else:
            total, n_tok, out_logits, used = 0.0, None, None, set()
            for pair in pairs:
                media_emb = self.project(feats, pair)
                a = self.assemble(batch["segments"], media_emb)
                plan = self.routing_plan(a.types, pair)
                used |= plan.used_names()
                loss, n, logits = self._lm_loss(a, plan, return_logits)
                total = total + loss
                n_tok = n
                out_logits = logits
            loss = total / len(pairs)
        if self.training:
            loss = loss + self._dummy_terms(feats, used)
        out = {"loss": loss, "num_tokens": n_tok, "metrics": {}}
        if self.training and self.cfg.ctc.modality:
            ctc = self.ctc_loss(feats, batch)
            out["metrics"]["ctc_loss"] = ctc.detach()
            out["loss"] = out["loss"] + self.cfg.ctc.weight * ctc
        if align is not None:
            out["metrics"]["align_loss"] = align[0].detach()
            out["loss"] = loss + al.weight * align[0]
        if self.feature_cache is not None:
            st = self.feature_cache.stats
            out["metrics"].update(feature_cache_hits=float(st.hits), feature_cache_misses=float(st.misses))
        if return_logits:
            out["logits"] = out_logits
        return out

    def ctc_loss(self, feats: dict, batch: dict) -> Tensor:
        """``model.ctc``'s loss (:func:`mmlora.ctc.ctc_loss`) on the encoder features of its modality, against each
        sample's answer (``batch["answers"]``, from :func:`mmlora.data.collate.collate_samples`); every sample must
        carry exactly one item of that modality and an answer."""
        from .ctc import ctc_loss, run_ctc_head

        mod = self.cfg.ctc.modality
        answers = batch.get("answers")
        if mod not in feats:
            raise ValueError(f"model.ctc needs {mod} in every training batch; this one has {sorted(feats)}")
        f = feats[mod]
        if answers is None or any(a is None for a in answers) or len(answers) != f.x.shape[0]:
            n_ans = 0 if answers is None else sum(a is not None for a in answers)
            raise ValueError(f"model.ctc needs one {mod} item and one answer per sample; this batch has "
                             f"{f.x.shape[0]} {mod} item(s) and {n_ans} answer(s) for {len(answers or [])} sample(s)")
        if f.tokens_per_step != 1:
            raise ValueError(f"model.ctc: the {mod} encoder gives {f.tokens_per_step} tokens per time step; CTC needs one")
        return ctc_loss(run_ctc_head(self.projectors[mod].ctc_head, f.x, f.mask), f.mask, answers)

    def align_loss(self, feats: dict, rates: dict[str, int] | None = None) -> tuple[Tensor, Tensor]:
        """``model.align``'s loss (see :class:`AlignConfig`) and the number of aligned tokens, from the
        encoded features of a batch whose items all carry both modalities."""
        src, tgt = self.cfg.align.source, self.cfg.align.target
        missing = [m for m in (src, tgt) if m not in feats]
        if missing:
            raise ValueError(f"model.align needs {src} and {tgt} in every batch; this one has no {missing[0]}")
        r = {m: (rates or {}).get(m, self.rate_choices()[m][0]) for m in (src, tgt)}
        hz = {m: feats[m].rate_hz and feats[m].rate_hz * (feats[m].tokens_per_step or 1) / r[m] for m in (src, tgt)}
        if hz[src] and hz[tgt] and abs(hz[src] - hz[tgt]) > 1e-6:
            raise ValueError(f"model.align: {src} gives {hz[src]:g} tokens/s at rate {r[src]} but {tgt} "
                             f"{hz[tgt]:g} at rate {r[tgt]}; choose rates with equal tokens per second")
        s_emb = self.project({src: feats[src]}, r)[src]
        with torch.no_grad():
            t_emb = self.project({tgt: feats[tgt]}, r, augment=False)[tgt]
        if len(s_emb) != len(t_emb):
            raise ValueError(f"model.align: {len(s_emb)} {src} items but {len(t_emb)} {tgt} items in a batch")
        err = den = 0.0
        n = 0
        for s, t in zip(s_emb, t_emb):
            k = min(s.shape[0], t.shape[0])
            s, t = s[:k].float(), t[:k].float()
            err = err + (s - t).pow(2).sum()
            den = den + t.pow(2).sum()
            n += k
        loss = err / torch.as_tensor(den, device=self.device).clamp(min=1e-12)
        return loss, torch.tensor(n, device=self.device)

    def _pairs_in_one_pass(self, segments, feats: dict, pairs: list[dict[str, int]], return_logits: bool):
        """All Matryoshka rate pairs as one LLM pass over ``P · B`` rows (pair-major), each row routed
        to its pair's adapters, instead of P passes over B rows: the same mean of per-pair losses
        with P times fewer, larger kernels. Used for routers whose plan is per sample (scale,
        single, none)."""
        rows = [self.assemble(segments, self.project(feats, pair)) for pair in pairs]
        B = rows[0].x.shape[0]
        L = max(r.x.shape[1] for r in rows)

        def pad(t: Tensor, value) -> Tensor:  # right padding to L (training assembles right-padded rows)
            extra = L - t.shape[1]
            if not extra:
                return t
            return torch.cat([t, t.new_full((t.shape[0], extra, *t.shape[2:]), value)], dim=1)

        # answer positions keep their column; pair k's rows come after k * B others
        answer_pos = torch.cat([torch.stack([r.answer_pos[0] + k * B, r.answer_pos[1]]) for k, r in enumerate(rows)], dim=1)
        a = Assembled(torch.cat([pad(r.x, 0.0) for r in rows]), torch.cat([pad(r.attn, 0) for r in rows]),
                      torch.cat([pad(r.labels, -100) for r in rows]),
                      torch.cat([pad(r.types, TOKEN_TYPES["pad"]) for r in rows]), answer_pos)
        plan = self.routing_plan(a.types, [pair for pair in pairs for _ in range(B)])
        row_loss, row_tok, logits = self._lm_loss(a, plan, return_logits, per_row=True)
        per_pair = row_loss.view(len(pairs), B).sum(1) / row_tok.view(len(pairs), B).sum(1).clamp(min=1)
        n_tok = row_tok[:B].sum()
        out_logits = logits[-B:, : rows[-1].x.shape[1]] if logits is not None else None
        return per_pair.mean(), n_tok, out_logits, plan.used_names()

    def _lm_loss(self, a: "Assembled", plan: RoutingPlan, return_logits: bool, per_row: bool = False):
        """Mean cross-entropy over answer tokens, the answer-token count and optional logits;
        ``per_row``: the summed cross-entropy and token count of every row instead."""
        install_plan(self.llm, plan)  # stays installed for backward (activation recomputation)
        decoder = self.llm.get_decoder()
        hidden = decoder(inputs_embeds=a.x, attention_mask=a.attn).last_hidden_state
        B, L = a.labels.shape
        row, col = a.answer_pos
        flat = row * L + col  # answer positions (whose next token is an answer token), row-major
        head = self.llm.get_output_embeddings()
        logits = head(hidden.reshape(B * L, -1).index_select(0, flat)).float()  # only they reach the vocab
        target = a.labels.reshape(-1).index_select(0, flat + 1)
        full = head(hidden).float() if return_logits else None
        counts = (a.labels[:, 1:] != -100).sum(1)
        if per_row:
            ce = F.cross_entropy(logits, target, reduction="none")
            sums = torch.zeros(B, dtype=ce.dtype, device=ce.device).index_add(0, row, ce)
            return sums, counts, full
        n = counts.sum()
        loss = F.cross_entropy(logits, target, reduction="sum") / n.clamp(min=1)
        return loss, n, full

    def _dummy_terms(self, feats: dict, used_adapters: set[str]) -> Tensor:
        """Zero-weighted terms that keep the trainable parameters this forward did not use in the
        graph (DDP): projectors of absent modalities, adapters no token was routed to."""
        used_proj = set(feats)
        zero = 0.0
        for mod, proj in self.projectors.items():
            if mod not in used_proj:
                zero = zero + sum(p.sum() for p in proj.parameters() if p.requires_grad) * 0.0
        if self.cfg.adapters and self.cfg.train_adapters:
            for name in sorted(set(self.cfg.adapters) - used_adapters):  # e.g. no image in a Phi-4-MM batch
                zero = zero + sum(p.sum() for p in adapter_parameters(self.llm, name)) * 0.0
        return zero if isinstance(zero, Tensor) else torch.zeros((), device=self.device)

    # ------------------------------------------------------------------ generation
    @_in_attention_backends
    @torch.no_grad()
    def generate(self, batch: dict, rates: dict[str, int] | None = None, **gen_kwargs) -> list[str]:
        """Greedy / beam / sampled decoding for each sample's prompt (answers in the batch are
        ignored). Each sample is routed at prefill and at every decode step. ``stop_strings``
        (e.g. ``["\\n"]``) end a sample's answer where its text first contains one of them;
        ``ascii_only=True`` suppresses every token whose text is not pure ASCII (another script's
        letters, a piece of a multi-byte character: an English transcript needs none of them).
        ``ctc_weight=w`` (0 < w <= 1, with ``num_beams`` > 1) rescores each sample's beams with ``model.ctc``'s head:
        every finished beam is kept and the one with the best ``(1 - w) * LLM log-probability + w * CTC
        log-probability`` of its normalized characters is returned (:func:`mmlora.ctc.rescore_with_ctc`). A list of
        weights (each in [0, 1]) searches once and returns one list of texts per weight, in order (0: the search's own
        best beam), for tuning the weight on a validation set. ``whisper_weight=w`` does the same with Whisper's own
        decoder as the second scorer (:meth:`whisper_judge`); with ``whisper_proposal=True`` Whisper's own greedy
        transcript of each clip (``WhisperJudge.propose``) joins that clip's beams as one more candidate, scored by
        the LLM (:meth:`_answer_logp`, as the search scores a beam), the CTC head and Whisper alike;
        ``whisper_proposal=n`` (n > 1) adds Whisper's ``n`` best transcripts by its own beam search instead
        (``WhisperJudge.propose_beams``). ``whisper_both=True``, for a model folder with a trained decoder
        (:data:`WHISPER_DECODER`) or a judge encoder LoRA (:data:`WHISPER_ENCODER`): Whisper's own decoder, reading
        the model's encoder, proposes and judges beside it, each candidate scored by the mean of the two
        (:meth:`whisper_judges`, :meth:`judge_encoders`); ``whisper_both=s`` (in [0, 1]) weighs them ``s`` (Whisper's
        own) and ``1 - s`` (the folder's), and a list of shares sweeps them from one search;
        ``whisper_own_encoder="base"`` has Whisper's own decoder read the audio encoder without its LoRA.
        ``second_judge_weight=v`` (in (0, 1), with ``whisper_weight``) ranks by ``(1 - v) * total + v * second``,
        ``second`` the mean score of the model folder's second judges (:meth:`second_judges`: other trainings' judges,
        each reading its own encoder LoRA; a score ensemble, session 66) and ``total`` the score above.
        ``confidence_gate={"judge": "trained", "below": t, ...weights}`` (with ``whisper_both``) ranks a sample whose
        judge is unsure of it (its best candidate's log-probability a word below ``t``; or sure: ``above``) with those
        weights instead (:class:`mmlora.ctc.ConfidenceGate`, session 68).
        ``candidates=[]`` (with rescoring) appends each sample's candidates and their scores to that list
        (:func:`mmlora.ctc.candidate_rows`; :func:`mmlora.ctc.rescore_rows` picks from them again). Beam search
        prefills each prompt once, not once a beam (:meth:`_prompt_cache`; ``share_prefill=False`` leaves that to
        transformers)."""
        feats = self.encode_media(batch.get("media") or {})
        rates = rates or batch.get("rates") or self.default_rates()
        pair = {m: r for m, r in rates.items() if m in feats}
        segments = [[s for s in segs if not (isinstance(s, TextSegment) and s.is_answer)]
                    for segs in batch["segments"]]
        a = self.assemble(segments, self.project(feats, pair), left_pad=True)
        x, attn = a.x, a.attn
        plan = self.routing_plan(a.types, pair)
        kw = {"max_new_tokens": 64, "do_sample": False, "num_beams": 1,
              "pad_token_id": self.tokenizer.pad_token_id, "eos_token_id": self.tokenizer.eos_token_id}
        kw.update(gen_kwargs)
        candidates = kw.pop("candidates", None)  # a list: each sample's candidates and scores appended (ctc.py)
        sweep, judge_sweep = kw.pop("ctc_weight", 0.0), kw.pop("whisper_weight", 0.0)
        weights, ctc_weight = _weights("ctc_weight", sweep)
        judge_weights, judge_weight = _weights("whisper_weight", judge_sweep)
        shares, own_share = _both_share(kw.pop("whisper_both", False))  # Whisper's own decoder's (whisper_judges)
        second_weight = float(kw.pop("second_judge_weight", 0.0) or 0.0)  # the second judges' (second_judges)
        from .ctc import ConfidenceGate

        gate = ConfidenceGate.parse(kw.pop("confidence_gate", None))  # other weights where a judge is (un)sure
        if second_weight and not (0.0 < second_weight < 1.0 and judge_weight):
            raise ValueError(f"second_judge_weight ({second_weight}) weighs the second judges beside whisper_weight's "
                             "judge: it must be in (0, 1), with whisper_weight set")
        if sum(w is not None for w in (weights, judge_weights, shares)) > 1:
            raise ValueError("sweep one of ctc_weight, whisper_weight and whisper_both at a time")
        if gate is not None and not (judge_weight and own_share > 0):
            raise ValueError("confidence_gate reads Whisper's own decoder and the folder's judge: set whisper_weight "
                             "and whisper_both")
        if gate is not None and any(w is not None for w in (weights, judge_weights, shares)):
            raise ValueError("confidence_gate: one decoding's weights, not a sweep (rescore_candidates.py sweeps)")
        if candidates is not None and not (ctc_weight or judge_weight):
            raise ValueError("candidates: the beams and their scores are kept where they are rescored (ctc_weight or "
                             "whisper_weight)")
        # the CTC head's and the second judges' scores where the decoding's weights or the gate's rank with them
        ctc_rank = ctc_weight or (gate.ctc_weight if gate else 0.0)
        second_asked = bool(second_weight or (gate and gate.second_judge_weight))
        if ctc_rank:
            ctc_logits = self._ctc_rescoring_logits(feats, ctc_rank, kw)
        propose, proposals = _proposal_count(kw.pop("whisper_proposal", False)), None
        if propose and not judge_weight:
            raise ValueError("whisper_proposal adds Whisper's own transcript to the beams that whisper_weight rescores: "
                             "set whisper_weight too")
        both = own_share > 0  # Whisper's own decoder beside a trained one
        own_encoder = kw.pop("whisper_own_encoder", "model")  # what Whisper's own decoder reads beside it
        if judge_weight:
            judges = self.whisper_judges(both)
            judge_frames = self._judge_frames(batch, judge_weight, kw, self.judge_encoders(both, own_encoder))
            if propose:
                proposals = [self._whisper_proposals(f, int(kw["max_new_tokens"]), propose, judges)
                             for f in judge_frames]
                propose *= len(judges)  # proposal slots a sample: each decoder's
        if ctc_weight or judge_weight:
            kw.update(num_return_sequences=kw["num_beams"], return_dict_in_generate=True, output_scores=True)
        if kw.pop("ascii_only", False):
            kw["suppress_tokens"] = sorted(set(kw.get("suppress_tokens") or ()) | set(self.non_ascii_token_ids()))
        if kw.get("stop_strings"):  # transformers matches them on the decoded tokens
            kw["tokenizer"] = self.tokenizer
        else:
            kw.pop("stop_strings", None)
        share = kw.pop("share_prefill", True) and int(kw["num_beams"]) > 1 and x.shape[1] > 1
        install_plan(self.llm, plan)
        try:
            cache = self._prompt_cache(x, attn) if share or proposals else None
            if proposals:  # before the search, which extends the shared cache in place; each prompt once a slot
                answers = [self.prompts._tok(p[j]).tolist() + [self.tokenizer.eos_token_id] if j < len(p) else []
                           for p in proposals for j in range(propose)]
                filled = [i for i, a in enumerate(answers) if a]  # an empty slot scores 0: not run through the LLM
                proposal_logp = torch.zeros(len(answers))
                if filled:
                    rows = torch.tensor([i // propose for i in filled], device=x.device)  # each filled slot's prompt
                    slots = copy.deepcopy(cache) if share else cache
                    slots.reorder_cache(rows)
                    proposal_logp[filled] = self._answer_logp(x[rows], attn[rows], slots, [answers[i] for i in filled])
            if share:
                cache.batch_repeat_interleave(int(kw["num_beams"]))
                kw[_cache_arg(self.llm)] = cache
            out = self.llm.generate(inputs_embeds=x, attention_mask=attn, **kw)
        finally:
            install_plan(self.llm, None)
        swept = weights or judge_weights or shares
        if not (ctc_weight or judge_weight):
            texts = [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]
            return texts if swept is None else [texts for _ in swept]
        from .ctc import candidate_rows, mix_judges, nbest_ctc, rescore_beams, rescore_rows

        texts = [t.strip() for t in self.tokenizer.batch_decode(out.sequences, skip_special_tokens=True)]
        steps = beam_token_logp(out.sequences, out.scores, out.beam_indices)
        llm_logp = steps.masked_fill(~torch.isfinite(steps), 0.0).sum(-1).float()  # padding steps score 0 or -inf
        B, K = len(judge_frames if judge_weight else ctc_logits[0]), kw["num_beams"]
        if proposals:  # each sample's K beams, then its proposals (where new; else its first beam again)
            texts, llm_logp, K = _with_proposals(texts, llm_logp, B, proposals, proposal_logp)
        ctc = nbest_ctc(texts, *ctc_logits) if ctc_rank else None
        parts = None  # [judges, B*K]: each sample's K candidates read by each of Whisper's decoders, from its view
        if judge_weight:
            parts = torch.stack([torch.cat([j.score(f[i], texts[b * K:(b + 1) * K])
                                            for b, f in enumerate(judge_frames)]) for i, j in enumerate(judges)])
        second = None  # [B*K]: the second judges' mean score of each candidate, each reading its own encoder
        if second_asked:  # frames depend on the encoder only: _judge_frames runs each distinct one once
            seconds = self.second_judges()
            views = self._judge_frames(batch, judge_weight, kw, [enc for _, enc in seconds])
            second = torch.stack([torch.cat([j.score(f[i], texts[b * K:(b + 1) * K]) for b, f in enumerate(views)])
                                  for i, (j, _) in enumerate(seconds)]).mean(0)
        rows = candidate_rows(texts, llm_logp, B, ctc, parts, second) if candidates is not None or gate else None
        if candidates is not None:
            candidates.extend(rows)
        if gate is not None:  # each sample ranked with the decoding's weights or, where the gate applies, its own
            return rescore_rows(rows, ctc_weight, judge_weight, own_share, second_weight, gate)

        def pick(c: float, j: float, s: float) -> list[str]:  # the search's order: each sample's first is its best
            return (rescore_beams(texts, llm_logp, B, ctc, c, mix_judges(parts, s), j, second, second_weight)
                    if c or j else texts[::K])
        if weights is not None:
            return [pick(w, judge_weight, own_share) for w in weights]
        if judge_weights is not None:
            return [pick(ctc_weight, w, own_share) for w in judge_weights]
        if shares is not None:
            return [pick(ctc_weight, judge_weight, s) for s in shares]
        return pick(ctc_weight, judge_weight, own_share)

    def _whisper_proposals(self, frames: Tensor | list[Tensor], max_tokens: int, n: int, judges: list | None = None
                           ) -> list[str]:
        """Whisper's own transcripts of one clip for ``generate(whisper_proposal=n)``: its greedy one where ``n`` is 1
        (none where it did not end), else its ``n`` best by beam search (:meth:`WhisperJudge.propose_beams`); with
        several ``judges`` (``whisper_both``) each one's in turn, those already proposed left out. ``frames``: the
        clip's, or a list of them, one for each judge (:meth:`judge_encoders`)."""
        out: list[str] = []
        judges = judges or [self.whisper_judge()]
        views = frames if isinstance(frames, list) else [frames] * len(judges)
        for judge, view in zip(judges, views):
            if n == 1:
                text = judge.propose(view, max_tokens)
                texts = [] if text is None else [text]
            else:
                texts = judge.propose_beams(view, max_tokens, n)
            out += [t for t in texts if t not in out]
        return out

    def whisper_judges(self, both: bool = False) -> list:
        """The decoders that propose and judge in ``generate``: :meth:`whisper_judge`, and with ``both``
        (``generate(whisper_both=True)``) Whisper's own packaged decoder before it, loaded once, where the model folder
        carries a trained one (:data:`WHISPER_DECODER`) or a judge encoder (:data:`WHISPER_ENCODER`): each proposes
        its transcripts, and a candidate's score is the mean of the two decoders' (a trained decoder reads the voices
        it was trained on better and others worse; session 50, docs/ASR.md), or their mix by ``whisper_both=s``."""
        judge = self.whisper_judge()
        if not both:
            return [judge]
        if not (self.whisper_decoder_state or self.whisper_encoder_lora):
            raise ValueError(f"whisper_both asks Whisper's own decoder beside a trained one ({WHISPER_DECODER}, or "
                             f"an encoder LoRA of the judge's own, {WHISPER_ENCODER}), and this model has neither")
        if getattr(self, "_own_whisper_judge", None) is None:
            from .encoders.whisper_judge import WhisperJudge

            # it only proposes and scores from the frames judge.frames reads: it needs no padded encoder of its own
            self._own_whisper_judge = WhisperJudge.load(judge.name or (self.cfg.media["audio"].encoder or {})["preset"])
        return [self._own_whisper_judge, judge]

    def _prompt_cache(self, x: Tensor, attn: Tensor):
        """The KV cache of each prompt but its last token, for beam search's shared prefill: transformers' beam search
        repeats the prompt before its first forward, so each beam would prefill the same prompt again (on the CPU
        most of a 4-beam decode of a short clip); ``generate`` repeats this cache for the beams instead and passes it
        as its cache argument. All but the last prompt token go in here, with generate's own positions (left padding
        skipped); generate, restarting from a cache, forwards only the last one, at the plan's offset read from the
        cache. In float32 the same answers and scores as without (``share_prefill=False``; tests/test_model.py); in
        bfloat16 that last token rounds differently (docs/PERFORMANCE.md), which can change an answer whose beams are
        close."""
        pos = (attn.long().cumsum(-1) - 1).masked_fill(attn == 0, 0)
        out = self.llm(inputs_embeds=x[:, :-1], attention_mask=attn[:, :-1], position_ids=pos[:, :-1],
                       use_cache=True, logits_to_keep=1)
        return getattr(out, _cache_arg(self.llm))

    def _answer_logp(self, x: Tensor, attn: Tensor, cache, answers: list[list[int]]) -> Tensor:
        """``[B]`` (on the CPU): the LLM's summed log-probability of each row's answer token ids after its prompt
        (``x``, ``attn``: generate's left-padded prompts; ``cache``: their :meth:`_prompt_cache`, extended here), the
        log-softmax of each step's logits, as beam search scores a beam; an empty answer 0. The routing plan the
        caller installed applies, its offset read from the cache as in generate."""
        B, L = attn.shape
        n = max((len(a) for a in answers), default=0)
        if n == 0:
            return torch.zeros(B)
        ids = torch.zeros(B, n, dtype=torch.long)
        mask = torch.zeros(B, n, dtype=attn.dtype)
        for i, a in enumerate(answers):
            ids[i, :len(a)], mask[i, :len(a)] = torch.tensor(a, dtype=torch.long), 1
        ids, mask = ids.to(x.device), mask.to(attn.device)
        emb = self.llm.get_input_embeddings()(ids).to(x.dtype)
        full = torch.cat([attn, mask[:, :-1]], 1)  # the prompt, then each answer but its last token
        pos = (full.long().cumsum(-1) - 1).masked_fill(full == 0, 0)[:, L - 1:]
        with torch.no_grad():
            logits = self.llm(inputs_embeds=torch.cat([x[:, -1:], emb[:, :-1]], 1), attention_mask=full,
                              position_ids=pos, use_cache=True, **{_cache_arg(self.llm): cache}).logits
        logp = torch.log_softmax(logits.float(), -1).gather(2, ids[..., None])[..., 0]
        return (logp * mask).sum(1).cpu()

    def _ctc_rescoring_logits(self, feats: dict, weight: float, kw: dict) -> tuple[Tensor, Tensor]:
        """``generate(ctc_weight=…)``'s checks, and the CTC head's ``(logits [B, T, C], mask [B, T])`` on the batch's
        features of ``model.ctc.modality``."""
        from .ctc import run_ctc_head

        mod = self.cfg.ctc.modality
        _check_rescoring("ctc_weight", weight, kw)
        if not mod:
            raise ValueError("ctc_weight needs a model with a CTC head (model.ctc.modality is not set)")
        if mod not in feats:
            raise ValueError(f"ctc_weight: the CTC head reads {mod}, and this batch has only {sorted(feats)}")
        f = feats[mod]
        if f.tokens_per_step != 1:
            raise ValueError(f"ctc_weight: the {mod} encoder gives {f.tokens_per_step} tokens per time step; CTC needs one")
        with torch.no_grad():
            return run_ctc_head(self.projectors[mod].ctc_head, f.x, f.mask), f.mask

    def whisper_judge(self):
        """The Whisper decoder that ``generate(whisper_weight=…)`` asks (:class:`mmlora.encoders.whisper_judge.
        WhisperJudge`), of the Whisper the audio encoder is (``model.media.audio.encoder.preset``), loaded once; with the
        weights of the model folder's trained decoder where it has one (:data:`WHISPER_DECODER`, read by
        :meth:`load_trainable` into ``whisper_decoder_state`` and written back by :meth:`save_pretrained`)."""
        if getattr(self, "_whisper_judge", None) is None:
            from .encoders.whisper_judge import PROMPTS, WhisperJudge

            name = (self.cfg.media["audio"].encoder or {}).get("preset") if "audio" in self.cfg.media else None
            if name not in PROMPTS:
                raise ValueError(f"whisper_weight asks a packaged Whisper's own decoder ({sorted(PROMPTS)}), and this "
                                 f"model's audio encoder is {name or 'not one of them'}")
            judge = WhisperJudge.load(name)
            if self.whisper_decoder_state:  # the model folder's trained decoder (WHISPER_DECODER)
                judge.load_decoder(self.whisper_decoder_state, WHISPER_DECODER)
            self._whisper_judge = judge
        return self._whisper_judge

    def _judge_frames(self, batch: dict, weight: float, kw: dict, encoders: list | None = None
                      ) -> list[list[Tensor]]:
        """``generate(whisper_weight=…)``'s checks, and each sample's frames for the judges, one for each of
        ``encoders`` (:meth:`judge_encoders`; by default the judge's alone): the encoder (its LoRA included) over the
        clip, Whisper's padded run after it (``WhisperJudge.frames``), each encoder run once."""
        from .encoders.base import Features

        _check_rescoring("whisper_weight", weight, kw)
        items = (batch.get("media") or {}).get("audio")
        if items is None:
            raise ValueError("whisper_weight: Whisper's decoder reads speech, and this batch has no audio")
        if isinstance(items, Features) or not all(isinstance(i, Tensor) for i in items):
            raise ValueError("whisper_weight needs the batch's waveforms (not file paths or encoded features)")
        judge, encoders = self.whisper_judge(), encoders or [self.judge_encoder()]
        views = {}
        for enc in encoders:
            if id(enc) not in views:  # the judge runs on the CPU
                views[id(enc)] = [judge.frames(w.cpu(), enc) for w in items]
        return [[views[id(enc)][b] for enc in encoders] for b in range(len(items))]

    def judge_encoders(self, both: bool = False, own: str = "model") -> list[nn.Module]:
        """The audio encoder each decoder of :meth:`whisper_judges` reads: the judge's (:meth:`judge_encoder`), and with
        ``both`` Whisper's own decoder, before it, the model's encoder (the frames the release of session 51 judged
        with), so that a judge encoder of the folder's own changes only the trained judge's view; ``own="base"``
        (``generate(whisper_own_encoder="base")``) gives Whisper's own decoder the packaged encoder without any LoRA
        instead (:meth:`base_audio_encoder`: the features it was trained with)."""
        if own not in ("model", "base"):
            raise ValueError(f"whisper_own_encoder is 'model' (the model's audio encoder) or 'base' (without its LoRA), "
                             f"got {own!r}")
        if not both:
            return [self.judge_encoder()]
        return [self.base_audio_encoder() if own == "base" else self.encoders["audio"], self.judge_encoder()]

    def base_audio_encoder(self) -> nn.Module:
        """A float32 copy of the audio encoder without any LoRA (:func:`mmlora.lora.detach`): the packaged Whisper's
        own encoder, built once and kept outside the module's parameters, as :meth:`judge_encoder` is."""
        if self.__dict__.get("_base_audio_encoder") is None:
            self.__dict__["_base_audio_encoder"] = self._plain_audio_encoder().requires_grad_(False)
        return self.__dict__["_base_audio_encoder"]

    def _plain_audio_encoder(self) -> nn.Module:
        """A fresh float32 copy of the audio encoder with every adapter taken off (:func:`mmlora.lora.detach`), for
        :meth:`base_audio_encoder` and :meth:`judge_encoder`; the model's own encoder keeps its LoRA."""
        from .lora import detach

        return detach(copy.deepcopy(self.encoders["audio"]).float())

    def judge_encoder(self) -> nn.Module:
        """The audio encoder whose frames Whisper's judge reads (every decoder of :meth:`whisper_judges`): the model's
        own, or, where the model folder carries :data:`WHISPER_ENCODER`, a float32 copy of it with that LoRA, as the
        folder describes it (its layers and ranks: a mix of two, :func:`mmlora.lora.mix_adapter_folders`, has twice
        the rank), in place of its own (built once, kept outside the module's parameters): the LLM's frames stay the
        model encoder's."""
        if not self.whisper_encoder_lora:
            return self.encoders["audio"]
        if self.__dict__.get("_judge_encoder") is None:
            self.__dict__["_judge_encoder"] = self._encoder_with_lora(self.whisper_encoder_lora, WHISPER_ENCODER)
        return self.__dict__["_judge_encoder"]

    def _encoder_with_lora(self, lora: tuple[dict, dict[str, Tensor]], where: str) -> nn.Module:
        """A float32 copy of the audio encoder with this adapter folder's LoRA (``(config, tensors)`` as
        :func:`mmlora.lora.read_adapter_folder` gives them; ``where`` names it in errors), every frame through every
        adapter, frozen and kept outside the module's parameters by the caller."""
        from .lora import apply_adapter_folder

        enc = self._plain_audio_encoder()  # the folder's LoRA, whatever its ranks
        config, tensors = lora
        apply_adapter_folder(enc, config, tensors, where)
        names = tuple(sorted({a for specs in config["layers"].values() for a in specs}))
        install_plan(enc, RoutingPlan(names=names, shared=names))  # every frame through every adapter
        return enc.requires_grad_(False)  # not a submodule: never saved or trained

    def second_judges(self) -> list[tuple]:
        """``generate(second_judge_weight=…)``'s judges, built once from :data:`SECOND_JUDGES`: for each, (the
        packaged Whisper's decoder with that folder's trained weights, the audio encoder it reads: a copy with the
        folder's own encoder LoRA, or the model's encoder where it has none)."""
        if not self.second_judge_states:
            raise ValueError(f"second_judge_weight asks the model folder's second judges ({SECOND_JUDGES}/NAME/"
                             f"{WHISPER_DECODER}), and this model has none")
        if self.__dict__.get("_second_judges") is None:
            from .encoders.whisper_judge import WhisperJudge

            name = self.whisper_judge().name or (self.cfg.media["audio"].encoder or {})["preset"]
            built = []
            for folder, dec, lora in self.second_judge_states:
                judge = WhisperJudge.load(name)
                judge.load_decoder(dec, f"{SECOND_JUDGES}/{folder}/{WHISPER_DECODER}")
                enc = (self._encoder_with_lora(lora, f"{SECOND_JUDGES}/{folder}/{WHISPER_ENCODER}") if lora
                       else self.encoders["audio"])
                built.append((judge, enc))
            self.__dict__["_second_judges"] = built
        return self.__dict__["_second_judges"]

    def non_ascii_token_ids(self) -> list[int]:
        """Ids of the tokens whose decoded text holds a character outside ASCII (a partial UTF-8
        byte decodes to U+FFFD, so it counts); special tokens are never listed. Cached."""
        if getattr(self, "_non_ascii_ids", None) is None:
            tok = self.tokenizer
            texts = tok.batch_decode([[i] for i in range(len(tok))])
            special = set(tok.all_special_ids)
            self._non_ascii_ids = [i for i, t in enumerate(texts) if i not in special and not t.isascii()]
        return self._non_ascii_ids

    def default_rates(self) -> dict[str, int]:
        """The first (finest) rate of each modality."""
        return {m: r[0] for m, r in self.rate_choices().items()}

    # ------------------------------------------------------------------ save / load
    def save_pretrained(self, out_dir: str | os.PathLike, pipeline: dict | None = None,
                        state_dict: Mapping[str, Tensor] | None = None) -> Path:
        """config.json + projectors.safetensors + adapters (safetensors/JSON); base weights
        are referenced by the config, never copied. Written atomically. ``pipeline`` (task,
        instruction, modalities, …) is stored for :func:`mmlora.pipelines.load_pipeline`.
        ``state_dict``: whole tensors by this module's names (``projectors.…``, ``llm.…``), e.g.
        gathered under FSDP, where the module's own parameters are shards; the saved weights
        then come from there, and a missing entry is a ``KeyError``."""
        pipeline = pipeline if pipeline is not None else self.pipeline_info
        from safetensors.torch import save_file

        def pick(prefix: str, own: Mapping[str, Tensor]) -> dict[str, Tensor]:
            if state_dict is None:
                return dict(own)
            missing = [f"{prefix}{k}" for k in own if f"{prefix}{k}" not in state_dict]
            if missing:
                raise KeyError(f"state_dict lacks {missing[:3]}")
            return {k: state_dict[f"{prefix}{k}"] for k in own}

        proj_state = {k: v.detach().contiguous().cpu()
                      for k, v in pick("projectors.", self.projectors.state_dict()).items()}

        def sub(prefix: str) -> dict[str, Tensor] | None:
            return None if state_dict is None else {k[len(prefix):]: v for k, v in state_dict.items()
                                                    if k.startswith(prefix)}

        def write(tmp: Path) -> None:
            (tmp / "config.json").write_text(json.dumps({"format": "mmlora-model", "version": 1,
                                                         "model": self.cfg.to_dict(), "pipeline": pipeline},
                                                        indent=2))
            if proj_state:
                save_file(proj_state, str(tmp / "projectors.safetensors"))
            if adapter_names(self.llm):
                save_adapters(self.llm, tmp / "adapters", sub("llm."))
            for mod, enc in self.encoders.items():  # media.<m>.encoder_lora: encoder_adapters/<m>/
                if adapter_names(enc):
                    save_adapters(enc, tmp / ENCODER_ADAPTERS / mod, sub(f"encoders.{mod}."))
            if self.whisper_decoder_state:  # a trained decoder for whisper_weight's judge, in its own dtypes (packed
                # weights are integers: whisper_judge.pack_decoder_delta)
                save_file({k: v.detach().contiguous().cpu() for k, v in self.whisper_decoder_state.items()},
                          str(tmp / WHISPER_DECODER))
            if self.whisper_encoder_lora:  # the judge's own encoder LoRA, as read
                write_adapter_folder(tmp / WHISPER_ENCODER, *self.whisper_encoder_lora)
            for name, dec, lora in self.second_judge_states:  # as read
                (tmp / SECOND_JUDGES / name).mkdir(parents=True)
                save_file({k: v.detach().contiguous().cpu() for k, v in dec.items()},
                          str(tmp / SECOND_JUDGES / name / WHISPER_DECODER))
                if lora:
                    write_adapter_folder(tmp / SECOND_JUDGES / name / WHISPER_ENCODER, *lora)

        return _atomic_dir(out_dir, write)

    @classmethod
    def from_pretrained(cls, in_dir: str | os.PathLike, encoders: dict[str, nn.Module] | None = None,
                        llm_instance: tuple[nn.Module, object] | None = None, **overrides) -> "MultimodalLM":
        """Rebuild from :meth:`save_pretrained`'s folder (no pickle, no remote code).

        ``overrides`` update top-level config fields; a dict updates the saved dict key by key
        (``llm={"dtype": "float32"}`` keeps the saved path);
        ``encoders`` / ``llm_instance`` pass ready-made parts to :meth:`build`."""
        in_dir = Path(in_dir)
        cfg_path = _model_config(in_dir)
        raw = json.loads(cfg_path.read_text())
        if raw.get("format") != "mmlora-model":
            raise ValueError(f"{cfg_path}: not an mmlora model config")
        d = raw["model"]
        for k, v in overrides.items():
            d[k] = {**d[k], **v} if isinstance(v, dict) and isinstance(d.get(k), dict) else v
        cfg = ModelConfig.from_dict(d)
        model = cls.build(cfg, encoders=encoders, llm=llm_instance)
        model.pipeline_info = dict(raw.get("pipeline") or {})
        model.load_trainable(in_dir)
        return model

    def load_trainable_renamed(self, in_dir: str | os.PathLike, rename: Mapping[str, str | None],
                               grow_rank: bool = False) -> list[str]:
        """Load :meth:`save_pretrained`'s weights under other names, into part of this model:
        ``rename`` maps a substring of the saved names (``projectors.<modality>.…``,
        ``llm.<layer>.adapters.<adapter>.<A|B>``) to its replacement (first occurrence, entries in
        order), e.g. an ASR model's ``default`` adapter and rate-4 projector into a Matryoshka
        model's ``shared`` adapter and ``projectors.4``; a replacement ``None`` leaves the saved
        weights whose names hold that key unloaded (e.g. an adapter the model has no place for).
        Every renamed weight must exist here with
        its shape (and an adapter its rank and alpha), else ``ValueError`` names it; the model's
        weights not covered keep their values. Returns the names of those (fresh) weights.
        With ``grow_rank`` a saved adapter of lower rank than its place here fills the first ranks
        (``A[:r]``, ``B[:, :r]`` rescaled by the ratio of the two scalings, so the adapter's output is
        unchanged) and the added ranks keep their fresh values (``B`` = 0: they start silent). Encoder LoRA
        (``media.<m>.encoder_lora``) is not renamed: it loads as :meth:`load_trainable` loads it."""
        from safetensors.torch import load_file

        from .lora import lora_layers, read_adapter_folder

        in_dir = Path(in_dir)
        _model_config(in_dir)
        saved: dict[str, Tensor] = {}
        specs: dict[str, dict] = {}  # renamed adapter weight -> its saved LoRA spec
        if (in_dir / "projectors.safetensors").is_file():
            saved.update({f"projectors.{k}": v for k, v in load_file(str(in_dir / "projectors.safetensors")).items()})
        if (in_dir / "adapters").is_dir():
            config, tensors = read_adapter_folder(in_dir / "adapters")
            for key, v in tensors.items():
                layer, ad_name, part = key.rsplit(".", 2)
                name = f"llm.{layer}.adapters.{ad_name}.{part}"
                saved[name], specs[name] = v, config["layers"][layer][ad_name]

        skip = [old for old, new in rename.items() if new is None]
        moves = {old: new for old, new in rename.items() if new is not None}
        saved = {k: v for k, v in saved.items() if not any(old in k for old in skip)}
        specs = {k: v for k, v in specs.items() if k in saved}

        def renamed(name: str) -> str:
            for old, new in moves.items():
                name = name.replace(old, new, 1)
            return name

        # projector and adapter weights, also those a run keeps frozen (align lm: false trains one projector)
        own = {n: p for n, p in self.named_parameters()  # (encoder LoRA: loaded by name below, never renamed)
               if n.startswith("projectors.") or ".adapters." in n and not n.startswith("encoders.")}
        target = {renamed(k): v for k, v in saved.items()}
        target = _without_unplaced_ctc_heads(target, own, in_dir, prefix="projectors.")
        ads = {f"llm.{path}.adapters.{a}": ad for path, layer in lora_layers(self.llm) for a, ad in layer.adapters.items()}
        problems: list[str] = []
        grown: dict[str, float] = {}  # adapter weight -> factor on its saved values (B: saved scaling / scaling here)
        for old_name, spec in specs.items():
            k = renamed(old_name)
            ad = ads.get(k.rsplit(".", 1)[0])
            if ad is None or (spec["rank"], spec["alpha"]) == (ad.spec.rank, ad.spec.alpha):
                continue
            if grow_rank and spec["rank"] <= ad.spec.rank:
                saved_scaling = LoRASpec(rank=spec["rank"], alpha=spec["alpha"],
                                         use_rslora=spec.get("use_rslora", False)).scaling
                grown[k] = saved_scaling / ad.spec.scaling if k.endswith(".B") else 1.0
            else:
                problems.append(f"{k} (saved rank/alpha {spec['rank']}/{spec['alpha']}, here {ad.spec.rank}/{ad.spec.alpha}"
                                + ("" if grow_rank else "; train.init_grow_rank=true loads a lower rank into a higher one")
                                + ")")

        def fits(k: str, v: Tensor) -> bool:
            if k not in grown:
                return v.shape == own[k].shape
            here = own[k].shape  # A [R, d_in] takes [r, d_in]; B [d_out, R] takes [d_out, r]
            return (v.shape[1] == here[1] and v.shape[0] <= here[0]) if k.endswith(".A") else \
                (v.shape[0] == here[0] and v.shape[1] <= here[1])

        problems += [f"{k} (no such trainable weight here)" for k in target if k not in own]
        problems += [f"{k} (saved {tuple(v.shape)}, here {tuple(own[k].shape)})" for k, v in target.items()
                     if k in own and not fits(k, v)]
        if problems:
            raise ValueError(f"{in_dir}: weights renamed by {moves} do not fit this model: "
                             + "; ".join(sorted(set(problems))[:5]))
        with torch.no_grad():
            for k, v in target.items():
                if k in grown:  # the leading ranks: A's rows, B's columns
                    r = v.shape[0] if k.endswith(".A") else v.shape[1]
                    (own[k][:r] if k.endswith(".A") else own[k][:, :r]).copy_(v * grown[k])
                else:
                    own[k].copy_(v)
        fresh = [n for n in own if n not in target]
        return fresh + self._load_encoder_adapters(in_dir, missing_ok=True)

    def load_projector(self, modality: str, in_dir: str | os.PathLike) -> None:
        """Load one modality's projector from :meth:`save_pretrained`'s folder into this model, whose projector
        for it must have the same weights and shapes (``train.init_projectors``: the lip side of an AVSR run from
        a VSR model, the audio side from an ASR model); every other weight keeps its value. The folder's LoRA inside
        that modality's encoder (``encoder_adapters/<m>/``), which the projector was trained on, loads with it: the
        config must have ``media.<m>.encoder_lora`` then (``mmlora train`` takes it from the folder)."""
        from safetensors.torch import load_file

        in_dir = Path(in_dir)
        _model_config(in_dir)
        if modality not in self.projectors:
            raise ValueError(f"{in_dir}: no {modality} projector to load into: this model has "
                             f"{', '.join(self.projectors) or 'none'}")
        proj_file = in_dir / "projectors.safetensors"
        saved = load_file(str(proj_file)) if proj_file.is_file() else {}
        state = {k: v for k, v in saved.items() if k.split(".", 1)[0] == modality}
        if not state:
            raise ValueError(f"{proj_file}: holds no {modality} projector (it has "
                             f"{', '.join(sorted({k.split('.', 1)[0] for k in saved})) or 'none'})")
        state = {k.split(".", 1)[1]: v for k, v in self._ctc_head_state(state, proj_file, modality).items()}
        mismatch = _state_mismatch(self.projectors[modality].state_dict(), state)
        if mismatch:
            raise ValueError(f"{proj_file}: the {modality} projector does not match the config: {mismatch}")
        enc_dir = in_dir / ENCODER_ADAPTERS / modality  # the projector learned on this encoder LoRA's output
        if enc_dir.is_dir() and not (modality in self.encoders and adapter_names(self.encoders[modality])):
            raise ValueError(f"{enc_dir}: the {modality} projector was trained with LoRA inside its encoder, which "
                             f"this model's config has none for: set model.media.{modality}.encoder_lora as in "
                             f"{in_dir / 'config.json'}")
        self.projectors[modality].load_state_dict(state)
        if enc_dir.is_dir():
            load_adapters(self.encoders[modality], enc_dir)
        self._freeze()

    def load_trainable(self, in_dir: str | os.PathLike, new_modalities: bool = False) -> list[str]:
        """Load the trained weights (projectors, LoRA adapters) of :meth:`save_pretrained`'s folder
        into this model, which must have the same shapes (e.g. ``train.init_from``: continue
        training a released model on new data). The saved LoRA specs (alpha, dropout) are taken
        over with the weights. With ``new_modalities`` the projector of a modality the folder
        lacks keeps its fresh weights (an ASR model starting an AVSR run; returned), and the saved
        projector of a modality this model lacks is left out (an ASR model starting a VSR run: its
        LoRA loads, its audio projector and audio encoder LoRA do not; logged), and encoder LoRA
        (``media.<m>.encoder_lora``) the folder lacks keeps its fresh weights (returned as ``"encoder:<m>"``)."""
        from safetensors.torch import load_file

        in_dir = Path(in_dir)
        _model_config(in_dir)
        proj_file = in_dir / "projectors.safetensors"
        fresh: list[str] = []
        if proj_file.is_file():
            state = load_file(str(proj_file))
            if new_modalities:
                fresh = [m for m in self.projectors if not any(k.startswith(f"{m}.") for k in state)]
                unused = sorted({k.split(".", 1)[0] for k in state} - set(self.projectors))
                if unused:
                    import logging

                    logging.getLogger("mmlora.model").info("%s: projector(s) of %s left out (this model has no such "
                                                           "modality)", proj_file, ", ".join(unused))
                    state = {k: v for k, v in state.items() if k.split(".", 1)[0] not in unused}
                state = {**state, **{k: v for k, v in self.projectors.state_dict().items()
                                     if k.split(".", 1)[0] in fresh}}
            state = self._ctc_head_state(state, proj_file)
            mismatch = _state_mismatch(self.projectors.state_dict(), state)
            if mismatch:
                raise ValueError(f"{proj_file}: projector weights do not match the config: {mismatch}")
            self.projectors.load_state_dict(state)
        if (in_dir / "adapters").is_dir():
            load_adapters(self.llm, in_dir / "adapters")
        fresh += self._load_encoder_adapters(in_dir, missing_ok=new_modalities)
        judge_file, judge_enc = in_dir / WHISPER_DECODER, in_dir / WHISPER_ENCODER
        # the Whisper judges score audio: a model without it (a lip reader from the ASR release, train_grid.sh's GV)
        # leaves them out, as it does the audio projector, instead of carrying them into every folder it saves
        hears = "audio" in self.encoders
        if not hears and (judge_file.is_file() or judge_enc.is_dir() or (in_dir / SECOND_JUDGES).is_dir()):
            import logging

            logging.getLogger("mmlora.model").info("%s: Whisper judge(s) left out (this model reads no audio)", in_dir)
        self.whisper_decoder_state = load_file(str(judge_file)) if hears and judge_file.is_file() else None
        self._whisper_judge = None  # built again, with these weights, when generate next asks it
        self.whisper_encoder_lora = read_adapter_folder(judge_enc) if hears and judge_enc.is_dir() else None
        self.__dict__["_judge_encoder"] = None  # built again from these weights and this encoder when asked
        self.second_judge_states = _read_second_judges(in_dir / SECOND_JUDGES) if hears else []
        self.__dict__["_second_judges"] = None  # built again when generate next asks them
        self._freeze()
        return fresh

    def _ctc_head_state(self, state: dict[str, Tensor], proj_file: Path, modality: str | None = None) -> dict[str, Tensor]:
        """``model.ctc``'s head is optional in a saved folder: a model with it keeps its fresh head where the folder
        has none (``train.init_from`` a model trained without CTC), and a saved head this model has no place for is
        left out (inference never uses it); both logged."""
        import logging

        own = {k: v for k, v in self.projectors.state_dict().items()
               if ".ctc_head." in k and (modality is None or k.startswith(f"{modality}."))}  # one projector's only
        state = _without_unplaced_ctc_heads(state, own, proj_file)  # e.g. the ASR release's audio head
        missing = {k: v for k, v in own.items() if k not in state}
        if missing:
            logging.getLogger("mmlora.model").info("%s: no CTC head saved for %s; model.ctc's head starts fresh",
                                                   proj_file, ", ".join(sorted({k.split(".", 1)[0] for k in missing})))
            state = {**state, **missing}
        return state

    def _load_encoder_adapters(self, in_dir: Path, missing_ok: bool) -> list[str]:
        """Load ``encoder_adapters/<m>/`` into the encoders with ``media.<m>.encoder_lora``. A folder without
        them for such an encoder is an error unless ``missing_ok`` (``train.init_from`` a model trained without
        encoder LoRA: they keep their fresh weights, which leave the encoder's output unchanged; returned as
        ``"encoder:<m>"``). With ``missing_ok`` the saved adapters of a modality this model lacks altogether are
        left out, as its projector is (an ASR model starting a VSR run; logged); saved adapters for an encoder
        this model has without ``encoder_lora`` are an error either way (it would read its input differently)."""
        saved = sorted(p.name for p in (in_dir / ENCODER_ADAPTERS).iterdir() if p.is_dir()) \
            if (in_dir / ENCODER_ADAPTERS).is_dir() else []
        absent = [m for m in saved if m not in self.encoders]
        if absent and missing_ok:
            import logging

            logging.getLogger("mmlora.model").info("%s: encoder LoRA of %s left out (this model has no such modality)",
                                                   in_dir / ENCODER_ADAPTERS, ", ".join(absent))
            saved = [m for m in saved if m not in absent]
        extra = [m for m in saved if m not in self.encoders or not adapter_names(self.encoders[m])]
        if extra:
            raise ValueError(f"{in_dir / ENCODER_ADAPTERS}: holds encoder LoRA for {', '.join(extra)}, which this "
                             f"model's config has none for (model.media.<m>.encoder_lora)")
        fresh = []
        for mod, enc in self.encoders.items():
            if not adapter_names(enc):
                continue
            if mod in saved:
                load_adapters(enc, in_dir / ENCODER_ADAPTERS / mod)
            elif missing_ok:
                fresh.append(f"encoder:{mod}")
            else:
                raise ValueError(f"{in_dir}: no {ENCODER_ADAPTERS}/{mod}/ although the config has "
                                 f"model.media.{mod}.encoder_lora")
        return fresh
