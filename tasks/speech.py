"""Speech recognition tasks (ASR / VSR / AVSR / Matryoshka AVSR): manifests, datasets, prompts.

Llama-AVSR's prompt (SYSTEMS.md §2) is ``<audio> A </audio> <video> V </video> instruction``
with the transcript as the assistant's answer; the loss is on the transcript only. The four
speech tasks registered here (``asr``, ``vsr``, ``avsr``, ``avsr_matryoshka``) share this
module: they differ only in the modalities they feed (and, for Matryoshka, in the model's
rate banks and router, set by the recipe).

Manifest lines (JSONL), paths relative to the manifest's folder; either the short form
``{"id", "audio", "video", "text"}`` (+ optional ``voice``, ``split``, ``duration``) or the
canonical chat form with ``messages`` / ``audios`` / ``videos``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from mmlora.data.errors import SampleError
from mmlora.fsutil import replace_text

INSTRUCTION = "Transcribe the speech."
AUDIO_HZ, VIDEO_FPS = 50, 25  # Whisper frames / lip-video frames per second


@dataclass
class SpeechDataConfig:
    """Where the data is and what a sample holds. Batch sizes live in ``train``: ``batch_size``
    samples, or ``batch_budget`` frames per batch (50 Hz, from each record's duration)."""

    train_manifest: str = ""                 # JSONL (short or chat form)
    val_manifest: str | None = None          # evaluated every train.eval_every steps (WER on a few)
    instruction: str = INSTRUCTION           # the user's text after the media slots
    max_samples: int | None = None           # use only the first N training samples
    noise_snrs: list[float] = field(default_factory=list)  # training noise SNRs (dB) to sample from; [] = clean
    noise_prob: float = 0.0                  # probability a training sample gets noise
    noise_kind: str = "babble"               # babble (other utterances) | white
    noise_talkers: list[int] = field(default_factory=lambda: [3, 6])  # babble: [lo, hi] other utterances summed
    # (k ~ U{lo..hi}); [1, 1] = one competing talker, where lips can tell which voice is the speaker's
    noise_white_prob: float = 0.0            # with noise_kind babble: the fraction of noisy training clips that get
    # white noise instead (drawn from its own stream: 0 leaves every draw as it was); several kinds in one training
    speed_range: list[float] = field(default_factory=list)  # [lo, hi]: training clips played faster/slower by a
    # factor ~ U(lo, hi) in steps of 0.01 (tempo and pitch, Kaldi-style); [] = off
    speed_prob: float = 1.0                  # probability a training sample is speed-perturbed (with speed_range)
    pad_seconds: list[float] = field(default_factory=list)  # [lo, hi]: each end of a training clip padded with
    # U(lo, hi) s of quiet room tone (white noise 35-60 dB below the speech), before any noise is mixed in; TTS clips
    # start at the voice, human recordings after ~0.2-1.3 s of room (ASR.md); [] = off; audio-only tasks
    pad_prob: float = 1.0                    # probability a training sample is padded (with pad_seconds)
    concat_prob: float = 0.0                 # probability a training sample joins 2..concat_max utterances of its
    concat_max: int = 3                      # voice (0.15-0.6 s of silence between them, texts joined by a space),
    concat_max_seconds: float = 28.0         # at most this long: longer clips than the corpus has (audio-only tasks)
    val_samples: int = 64                    # val utterances decoded at each evaluation
    val_snr: float | None = None             # validate with noise mixed in at this SNR (dB), drawn per utterance as
    # `mmlora evaluate --snr` does: best/ then holds the weights that read noisy speech best (AVSR, whose lips
    # matter only in noise; best-on-clean picked early steps in GPU run 17); null = clean
    val_noise_kind: str = "babble"           # with val_snr: babble (other val utterances) | white
    val_noise_talkers: list[int] = field(default_factory=lambda: [3, 6])  # with val_snr, babble: [lo, hi] talkers
    feature_cache: str | None = None         # folder for cached encoder outputs (needs noise_prob 0): a second
    # epoch runs no encoder; samples then carry file paths, decoded and encoded in the main process on a miss
    feature_cache_modalities: list[str] = field(default_factory=list)  # cache only these ([] = all the task's):
    # e.g. [video] for AVSR with online audio noise/speed/warp (they change only the audio; the lip features are fixed)


@dataclass
class Record:
    id: str
    text: str
    audio: Path | None
    video: Path | None
    frames: int  # cost in 50 Hz frames (for the batch budget)
    line: int
    voice: str | None = None  # the speaker / TTS voice, when the manifest names it (per-voice WER in evaluate)


def read_manifest(path: str | Path, need: tuple[str, ...] = ("audio",)) -> list[Record]:
    """Read a speech manifest; a line lacking a needed field is named in the error."""
    from mmlora.data.jsonl import iter_jsonl

    path = Path(path)
    root = path.parent
    out = []
    for no, d in iter_jsonl(path):
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
                          frames=frames, line=no, voice=None if d.get("voice") is None else str(d["voice"])))
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
    """Records → chat samples with decoded media for :func:`mmlora.data.collate.collate_samples`.

    Training noise (``noise_snrs`` with probability ``noise_prob``) is drawn per (seed, epoch,
    index), so a resumed run sees the same noise; babble is made from other utterances."""

    def __init__(self, records: list[Record], modalities: tuple[str, ...], instruction: str = INSTRUCTION,
                 noise_snrs: list[float] | None = None, noise_prob: float = 0.0, noise_kind: str = "babble",
                 seed: int = 0, with_answer: bool = True, paths_only: bool | Iterable[str] = False,
                 speed_range: list[float] | None = None, speed_prob: float = 1.0,
                 concat_prob: float = 0.0, concat_max: int = 3, concat_max_seconds: float = 28.0,
                 noise_talkers: tuple[int, int] | list[int] = (3, 6), pad_seconds: list[float] | None = None,
                 pad_prob: float = 1.0, noise_white_prob: float = 0.0):
        self.records = records
        # modalities handed over as file paths (for the model's feature cache): True = all, False = none
        self.path_mods = frozenset(modalities if paths_only is True else (paths_only or ()))
        self.modalities = modalities
        self.instruction = instruction
        self.noise_snrs = list(noise_snrs or [])
        self.noise_prob = noise_prob
        self.noise_kind = noise_kind
        self.noise_talkers = check_noise(noise_kind, noise_talkers, kind_name="noise_kind")
        if not 0.0 <= noise_white_prob <= 1.0:
            raise ValueError(f"data.noise_white_prob must be in [0, 1], got {noise_white_prob}")
        if noise_white_prob > 0 and noise_kind != "babble":
            raise ValueError(f"data.noise_white_prob mixes white noise into babble training; data.noise_kind is "
                             f"{noise_kind!r}")
        self.noise_white_prob = noise_white_prob
        from mmlora.data.speech_augment import bounded_range, factor_range

        self.speed_range = factor_range(speed_range, "data.speed_range")
        if not 0.0 <= speed_prob <= 1.0:
            raise ValueError(f"data.speed_prob must be in [0, 1], got {speed_prob}")
        self.speed_prob = speed_prob
        if not 0.0 <= concat_prob <= 1.0 or concat_max < 2 or concat_max_seconds <= 0:
            raise ValueError(f"data.concat_prob must be in [0, 1], concat_max >= 2 and concat_max_seconds > 0, got "
                             f"{concat_prob}, {concat_max}, {concat_max_seconds}")
        if concat_prob > 0 and tuple(modalities) != ("audio",):
            raise ValueError(f"data.concat_prob joins audio clips only; this task reads {', '.join(modalities)}")
        self.concat_prob, self.concat_max, self.concat_max_seconds = concat_prob, int(concat_max), concat_max_seconds
        self.pad_seconds = bounded_range(pad_seconds, "data.pad_seconds", 0.0, 5.0)
        if not 0.0 <= pad_prob <= 1.0:
            raise ValueError(f"data.pad_prob must be in [0, 1], got {pad_prob}")
        if self.pad_seconds and tuple(modalities) != ("audio",):
            raise ValueError(f"data.pad_seconds pads audio clips only (it would move them against the video); this "
                             f"task reads {', '.join(modalities)}")
        self.pad_prob = pad_prob
        self._by_voice: dict[str | None, list[int]] | None = None
        self.seed = seed
        self.with_answer = with_answer
        self.epoch = 0
        self._talkers: list[tuple[int, np.ndarray]] | None = None  # decoded once, see _babble_talkers

    BABBLE_POOL = 40  # utterances decoded once per dataset (per worker) to make babble from

    def _babble_talkers(self, load_audio) -> list[tuple[int, np.ndarray]]:
        """``(index, waveform)`` of up to BABBLE_POOL utterances of this set, chosen by the seed
        and decoded once, instead of decoding new files for every noisy sample."""
        if self._talkers is None:
            rng = np.random.default_rng([self.seed, 0xBABB1E])
            chosen = rng.choice(len(self.records), size=min(self.BABBLE_POOL, len(self.records)), replace=False)
            self._talkers = []
            for j in sorted(int(j) for j in chosen):
                if self.records[j].audio is not None:
                    try:
                        self._talkers.append((j, load_audio(self.records[j].audio).numpy()))
                    except Exception:  # noqa: BLE001 - an unreadable talker is left out of the babble
                        continue
        return self._talkers

    def __len__(self) -> int:
        return len(self.records)

    def lengths(self) -> list[int]:
        """Per-sample cost in 50 Hz frames (video at 25 fps costs the same per second); with ``pad_seconds`` the
        most padding a clip can get is counted, so a frame budget is never exceeded by it."""
        extra = int(round(2 * self.pad_seconds[1] * AUDIO_HZ)) if self.pad_seconds else 0
        return [record_frames(r) + extra for r in self.records]

    def prompt(self) -> str:
        return "".join(f"<{m}>" for m in self.modalities) + self.instruction

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def noisy(self, wav: torch.Tensor, idx: int, snr_db: float, rng: np.random.Generator,
              kind: str | None = None) -> torch.Tensor:
        """``wav`` mixed with babble (other utterances of this set) or white noise at ``snr_db``; ``kind``
        overrides the set's ``noise_kind`` for this clip."""
        from mmlora.data.media import load_audio
        from mmlora.data.speech_augment import babble_noise, mix_at_snr, white_noise

        n = wav.shape[-1]
        if (kind or self.noise_kind) == "white":
            noise = white_noise(n, rng)
        else:
            pool = [w for j, w in self._babble_talkers(load_audio) if j != idx]
            noise = babble_noise(pool, n, rng, self.noise_talkers) if pool else white_noise(n, rng)
        return torch.from_numpy(mix_at_snr(wav.numpy(), noise, snr_db))

    @staticmethod
    def speed(wav: torch.Tensor, factor: float) -> torch.Tensor:
        """``wav`` played ``factor`` times faster (rounded to 0.01: the resampler's kernel stays small)."""
        from mmlora.data.media import SAMPLE_RATE
        from mmlora.data.speech_augment import speed_perturb

        f = round(factor, 2)
        return wav if f == 1.0 else torch.from_numpy(speed_perturb(wav.numpy(), SAMPLE_RATE, f))

    PAD_LEVEL_DB = (-60.0, -35.0)  # room tone below the speech's RMS

    def padded(self, wav: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """``wav`` with U(pad_seconds) s of quiet room tone before and after it (``PAD_LEVEL_DB`` below its RMS)."""
        from mmlora.data.media import SAMPLE_RATE
        from mmlora.data.speech_augment import pad_with_room_tone

        lead, trail = (int(round(rng.uniform(*self.pad_seconds) * SAMPLE_RATE)) for _ in range(2))
        level = float(rng.uniform(*self.PAD_LEVEL_DB))
        return torch.from_numpy(pad_with_room_tone(wav.numpy(), lead, trail, level, rng))

    CONCAT_GAP = (0.15, 0.6)  # seconds of silence between joined utterances

    def joined(self, idx: int, wav: torch.Tensor) -> tuple[torch.Tensor, str]:
        """Item ``idx``'s audio and text, joined (with probability ``concat_prob``) with 1 to ``concat_max - 1``
        other utterances of the same voice (any voice when the manifest names none), as one longer recording.
        Drawn per (seed, epoch, index) from its own stream; an unreadable partner is left out."""
        from mmlora.data.media import SAMPLE_RATE, load_audio

        text = self.records[idx].text
        rng = np.random.default_rng([self.seed, self.epoch, idx, 7])
        if self.concat_prob <= 0 or rng.random() >= self.concat_prob:
            return wav, text
        if self._by_voice is None:
            self._by_voice = {}
            for j, r in enumerate(self.records):
                self._by_voice.setdefault(r.voice, []).append(j)
        pool = [j for j in self._by_voice[self.records[idx].voice] if j != idx]
        k = min(int(rng.integers(2, self.concat_max + 1)) - 1, len(pool))
        parts, texts, total = [wav], [text], wav.numel()
        limit = int(self.concat_max_seconds * SAMPLE_RATE)
        for j in rng.choice(pool, size=k, replace=False) if k > 0 else []:
            gap = int(rng.uniform(*self.CONCAT_GAP) * SAMPLE_RATE)
            try:
                w = load_audio(self.records[int(j)].audio)
            except Exception:  # noqa: BLE001 - a partner that cannot be read is left out
                continue
            if total + gap + w.numel() > limit:
                break
            parts += [wav.new_zeros(gap), w]
            texts.append(self.records[int(j)].text)
            total += gap + w.numel()
        return torch.cat(parts), " ".join(texts)

    def eval_noisy(self, wav: torch.Tensor, idx: int, snr_db: float) -> torch.Tensor:
        """The evaluation's noise for item ``idx``: drawn from ``(seed, idx)`` alone, so that every
        model scored on a manifest (and the Whisper reference) hears the same mixture."""
        return self.noisy(wav, idx, snr_db, np.random.default_rng([self.seed, idx]))

    def __getitem__(self, idx: int) -> dict[str, Any]:
        from mmlora.data.media import load_audio, load_video

        rec = self.records[idx]
        sample: dict[str, Any] = {"id": rec.id, "messages": [{"role": "user", "content": self.prompt()}]}
        if self.with_answer:
            sample["messages"].append({"role": "assistant", "content": rec.text})
        for mod, path in (("audio", rec.audio), ("video", rec.video)):
            if mod in self.modalities and mod in self.path_mods:
                if path is None or not path.is_file():
                    raise SampleError(f"{path}: {mod} file not found for sample {rec.id!r}", index=idx,
                                      path=str(path))
                sample[mod + "s"] = [str(path)]
        if self.path_mods >= set(self.modalities):
            return sample
        try:
            if "audio" in self.modalities and "audio" not in self.path_mods:
                wav = load_audio(rec.audio)
                if self.concat_prob > 0:
                    wav, text = self.joined(idx, wav)
                    if self.with_answer:
                        sample["messages"][-1]["content"] = text
                rng = np.random.default_rng([self.seed, self.epoch, idx])
                if self.speed_range:  # drawn from its own stream: switching it on leaves the noise draws as they were
                    srng = np.random.default_rng([self.seed, self.epoch, idx, 5])
                    if srng.random() < self.speed_prob:
                        wav = self.speed(wav, float(srng.uniform(*self.speed_range)))
                if self.pad_seconds:  # its own stream too; before the noise, which then covers the room tone
                    prng = np.random.default_rng([self.seed, self.epoch, idx, 7])
                    if prng.random() < self.pad_prob:
                        wav = self.padded(wav, prng)
                if self.noise_snrs and rng.random() < self.noise_prob:
                    snr = float(rng.choice(self.noise_snrs))
                    kind = None  # the kind's own stream: the noise itself is drawn from rng as without the option
                    if self.noise_white_prob and np.random.default_rng([self.seed, self.epoch, idx, 11]).random() \
                            < self.noise_white_prob:
                        kind = "white"
                    wav = self.noisy(wav, idx, snr, rng, kind)
                sample["audios"] = [wav]
            if "video" in self.modalities and "video" not in self.path_mods:
                sample["videos"] = [load_video(rec.video)]
        except Exception as e:  # noqa: BLE001 - any decode failure is a bad sample, named
            path = rec.audio if "audio" in self.modalities and "audio" not in self.path_mods else rec.video
            raise SampleError(f"{path}: cannot read sample {rec.id!r} ({e})", index=idx, path=str(path)) from e
        return sample


# ------------------------------------------------------------------------------ task hooks
def build_speech_data(run_cfg, model) -> tuple[SpeechDataset, list[Record] | None]:
    """Training dataset and validation records for a speech run config."""
    from . import get_task

    mods = get_task(run_cfg.task).modalities
    d: SpeechDataConfig = run_cfg.data
    if not d.train_manifest:
        raise ValueError("data.train_manifest is not set (give it in the recipe or as data.train_manifest=PATH)")
    records = read_manifest(d.train_manifest, need=mods)
    if d.max_samples:
        records = records[: d.max_samples]
    cached = cached_modalities(d, mods)
    if d.feature_cache:
        # (setting that turns it off, what it does): each changes the audio encoder's input every epoch or step
        online = [("data.noise_prob=0", "online noise") if d.noise_snrs and d.noise_prob > 0 else None,
                  ("data.speed_range=[]", "online speed perturbation") if d.speed_range else None,
                  ("data.concat_prob=0", "joining clips") if d.concat_prob > 0 else None,
                  ("data.pad_seconds=[]", "padding with room tone") if d.pad_seconds else None,
                  *((f"model.media.{m}.vtlp=[]", "warping the spectrogram") for m, mc in model.cfg.media.items()
                    if mc.vtlp and m in cached)]
        online = [o for o in online if o and "audio" in cached]
        from mmlora.model import check_uncached_encoder_lora

        check_uncached_encoder_lora(model.cfg.media, cached)
        if online:
            off, what = online[0]
            raise ValueError(f"data.feature_cache needs fixed inputs: set {off} ({what} changes the audio every "
                             "epoch), data.feature_cache_modalities to the others (e.g. [video]) or "
                             "data.feature_cache=null")
        from mmlora.data.feature_cache import FeatureCache

        model.feature_cache = FeatureCache(d.feature_cache)
    train = SpeechDataset(records, mods, d.instruction, d.noise_snrs, d.noise_prob, d.noise_kind,
                          seed=run_cfg.train.seed, paths_only=cached if d.feature_cache else False,
                          speed_range=d.speed_range,
                          speed_prob=d.speed_prob, concat_prob=d.concat_prob, concat_max=d.concat_max,
                          concat_max_seconds=d.concat_max_seconds, noise_talkers=d.noise_talkers,
                          pad_seconds=d.pad_seconds, pad_prob=d.pad_prob, noise_white_prob=d.noise_white_prob)
    if d.val_snr is not None:
        check_noise(d.val_noise_kind, d.val_noise_talkers, kind_name="data.val_noise_kind",
                    talkers_name="data.val_noise_talkers")
        if not d.val_manifest:
            raise ValueError("data.val_snr needs data.val_manifest (the utterances to validate on)")
    val = read_manifest(d.val_manifest, need=mods)[: d.val_samples] if d.val_manifest else None
    return train, val


def check_noise(kind: str, talkers, kind_name: str, talkers_name: str = "data.noise_talkers") -> tuple[int, int]:
    """``(lo, hi)`` of a babble talker range after checking both noise options; ValueError names the field."""
    if kind not in ("babble", "white"):
        raise ValueError(f"{kind_name} must be babble or white, got {kind!r}")
    lo_hi = tuple(int(t) for t in talkers)
    if len(lo_hi) != 2 or not 1 <= lo_hi[0] <= lo_hi[1]:
        raise ValueError(f"{talkers_name} must be [lo, hi] with 1 <= lo <= hi, got {list(talkers)}")
    return lo_hi


def validation_noise(d) -> dict:
    """The noise options of ``evaluate_speech`` for training's validation (``data.val_snr``); {} = clean."""
    if getattr(d, "val_snr", None) is None:
        return {}
    return {"snr": float(d.val_snr), "noise_kind": d.val_noise_kind, "noise_talkers": tuple(d.val_noise_talkers)}


def cached_modalities(d: "SpeechDataConfig", mods: Sequence[str]) -> frozenset[str]:
    """The modalities ``data.feature_cache`` holds: ``data.feature_cache_modalities``, or all of ``mods``."""
    bad = [m for m in d.feature_cache_modalities if m not in mods]
    if bad:
        raise ValueError(f"data.feature_cache_modalities: {', '.join(bad)} is not a modality of this task "
                         f"({', '.join(mods)})")
    return frozenset(d.feature_cache_modalities or mods)


def speech_media_paths(manifests, modalities) -> dict[str, list[Path]]:
    """Every media file the manifests name, per modality, in manifest order (``mmlora cache-features``)."""
    out: dict[str, list[Path]] = {m: [] for m in modalities}
    for manifest in manifests:
        for rec in read_manifest(manifest, need=tuple(modalities)):
            for m in modalities:
                out[m].append(getattr(rec, m))
    return out


def evaluate_speech(pipeline, manifest: str | Path, rates: dict[str, int] | None = None, snr: float | None = None,
                    noise_kind: str = "babble", max_samples: int | None = None, seed: int = 0,
                    records: list[Record] | None = None, zero: tuple[str, ...] = (),
                    noise_talkers: tuple[int, int] = (3, 6), candidates_out: str | Path | None = None,
                    **gen) -> dict | list[dict]:
    """Decode every utterance of ``manifest`` and score it (corpus WER with jiwer on
    normalized text, CER, S/D/I, per-utterance hypotheses). Unreadable files are skipped,
    counted and named. A list ``ctc_weight``, ``whisper_weight`` or ``whisper_both`` (a sweep: ``mmlora evaluate
    --ctc-weight 0,0.05,0.1``) decodes once and returns one report per weight, in order. ``snr`` mixes noise into the audio (babble of ``noise_talkers``
    [lo, hi] other utterances of the same manifest, or white noise). ``zero``: modalities whose tokens are zeroed
    (an AVSR model trained with modality dropout read as VSR: ``zero=("audio",)``); the media are still read.
    ``candidates_out``: a JSON file of every utterance's candidates (each piece's, where decoded in pieces) with the
    scores that rescoring weighs (:func:`mmlora.ctc.candidate_rows`; needs ``ctc_weight`` or ``whisper_weight``), for
    ``scripts/rescore_candidates.py`` to choose weights from one decoding."""
    model = pipeline.model
    mods = tuple(m for m in pipeline.modalities if m in model.encoders)
    bad = [m for m in zero if m not in mods]
    if bad:
        raise ValueError(f"cannot zero {', '.join(bad)}: the model reads {', '.join(mods)}")
    if set(zero) >= set(mods):
        raise ValueError(f"zeroing {', '.join(zero)} leaves the model no input")
    before, model.zeroed_modalities = model.zeroed_modalities, frozenset(zero)
    try:
        if records is None:
            records = read_manifest(manifest, need=mods)
        if max_samples:
            records = records[:max_samples]
        ds = SpeechDataset(records, mods, pipeline.instruction, noise_kind=noise_kind, seed=seed, with_answer=False,
                           noise_talkers=noise_talkers)
        result = _evaluate_speech(pipeline, model, mods, manifest, ds, rates, snr, candidates_out, **gen)
    finally:
        model.zeroed_modalities = before
    reports = result if isinstance(result, list) else [result]
    for report in reports:
        if snr is not None and noise_kind == "babble":
            report["noise_talkers"] = list(ds.noise_talkers)
        if zero:
            report["zeroed"] = sorted(zero)
    return result


def _evaluate_speech(pipeline, model, mods, manifest, ds: "SpeechDataset", rates, snr, candidates_out=None,
                     **gen) -> dict | list[dict]:
    from mmlora.data.collate import collate_samples

    records, noise_kind = ds.records, ds.noise_kind
    rates = dict(rates or model.default_rates())
    samples, skipped = [], []
    for i, rec in enumerate(records):
        try:
            s = ds[i]
        except SampleError as e:
            skipped.append({"id": rec.id, "line": rec.line, "error": str(e)})
            continue
        if snr is not None and "audio" in mods:
            s["audios"] = [ds.eval_noisy(s["audios"][0], i, snr)]
        samples.append((rec, s))
    # audio-only models decode long clips in pieces cut at pauses, as MediaPipeline.transcribe does
    from mmlora.pipelines import cut_long_audio, join_pieces

    limit = pipeline.piece_limit() if mods == ("audio",) else None
    pieces, owner = [s for _, s in samples], list(range(len(samples)))
    if limit:
        waves, owner = cut_long_audio([s["audios"][0] for s in pieces], limit)
        pieces = [{**pieces[o], "audios": [w]} for w, o in zip(waves, owner)]
    bs = pipeline.batch_size
    kw = pipeline.generation_for(gen)
    from mmlora.model import SWEEPS

    key = next((k for k in SWEEPS if isinstance(kw.get(k), (list, tuple))), None)  # generate refuses two at once
    sweep = kw[key] if key else None
    hyps: list[list[str]] = [[] for _ in (sweep or [None])]  # one list per weight of a sweep
    rows: list[dict] | None = [] if candidates_out else None  # each piece's candidates and scores, in order
    for start in range(0, len(pieces), bs):
        batch = collate_samples(pieces[start:start + bs], model.prompts, with_answer=False)
        out = model.generate(batch, rates=rates, **kw, **({} if rows is None else {"candidates": rows}))
        for h, o in zip(hyps, out if sweep else [out]):
            h.extend(o)
    if rows is not None:
        _write_candidates(Path(candidates_out), manifest, kw, [r for r, _ in samples], rows, owner)
    reports = []
    for w, h in zip(sweep or [None], hyps):
        decoding = {**kw, **({key: w} if sweep else {}),
                    **({"piece_seconds": pipeline.piece_seconds} if pipeline.piece_seconds else {}),
                    **({"piece_samples": limit} if limit else {}),  # the cut exactly (picker_probe.py cuts again)
                    "llm_dtype": str(model.llm.dtype).removeprefix("torch.")}
        report = {"manifest": str(manifest), "task_modalities": list(mods), "rates": rates, "snr_db": snr,
                  "noise": noise_kind if snr is not None else None, "decoding": decoding,
                  "tokens_per_second": {m: (AUDIO_HZ if m == "audio" else VIDEO_FPS) / rates[m] for m in rates}}
        reports.append({**report, **score_transcripts([r for r, _ in samples], join_pieces(h, owner, len(samples)),
                                                      skipped)})
    return reports if sweep else reports[0]


def _write_candidates(path: Path, manifest, decoding: dict, records: list[Record], rows: list[dict],
                      owner: list[int]) -> None:
    """``evaluate --candidates``: each record's id, reference and its pieces' candidate rows, with the decoding."""
    if len(rows) != len(owner):
        raise ValueError(f"{len(rows)} candidate rows for {len(owner)} pieces")
    pieces: list[list[dict]] = [[] for _ in records]
    for row, o in zip(rows, owner):
        pieces[o].append(row)
    doc = {"manifest": str(manifest), "decoding": decoding,
           "utterances": [{"id": r.id, "reference": r.text, "voice": r.voice, "pieces": p}
                          for r, p in zip(records, pieces)]}
    replace_text(path, json.dumps(doc))


def score_transcripts(records: list[Record], hypotheses: list[str], skipped: list[dict] | None = None) -> dict:
    """The scoring part of an evaluation report: corpus WER/CER and S/D/I (jiwer, normalized text),
    per-utterance hypotheses, ``by_voice`` when the records name voices, ``n``, ``skipped`` and
    ``n_skipped``. Shared by :func:`evaluate_speech` and ``scripts/whisper_reference_wer.py``."""
    from mmlora.metrics.wer import compute_wer, group_wer

    if len(records) != len(hypotheses):
        raise ValueError(f"{len(records)} records but {len(hypotheses)} hypotheses")
    skipped = list(skipped or [])
    report: dict = {"skipped": skipped}
    if records:
        result = compute_wer([r.text for r in records], hypotheses, ids=[r.id for r in records])
        report.update(result.to_dict())
        if any(r.voice for r in records):
            report["by_voice"] = group_wer(result.utterances, [r.voice for r in records])
    report["n"] = len(records)
    report["n_skipped"] = len(skipped)
    return report


# ------------------------------------------------------------------------------ registration
def _register() -> None:
    from . import register
    from .base import TaskSpec, run_config_class

    for name, mods, doc in [
        ("asr", ("audio",), "audio-only speech recognition (Whisper features, stack-4 projector, LoRA)"),
        ("vsr", ("video",), "visual speech recognition (lip reading) from lip-video frame features"),
        ("avsr", ("audio", "video"), "audio-visual speech recognition (Llama-AVSR): one projector per modality"),
        ("avsr_matryoshka", ("audio", "video"),
         "Llama-MTSK: rate banks, every rate pair per step, LoRA banks MS/SS/MSS, rates chosen at inference"),
    ]:
        cls_name = "".join(w.capitalize() for w in name.split("_")) + "RunConfig"
        register(TaskSpec(name=name, modalities=mods, run_config=run_config_class(cls_name, SpeechDataConfig, name),
                          build_data=build_speech_data, evaluate=evaluate_speech, description=doc,
                          media_paths=speech_media_paths))
