"""Generate a TTS speech corpus with aligned synthetic lip video (``mmlora make-speech-corpus``).

Pipeline per split (train / val / test, whole voices held out for val and test)::

    sentences (fortunes + KJV, or pools by --text-weights: + WordNet examples, --text-file files;
               cleaned; disjoint between splits)
      → TTS voice (flite / espeak-ng / festival; phone timings from the engine itself;
                   optional rhvoice / piper / pico: no phone timings)
      → 16 kHz mono, augment (train only): speed {0.9,1,1.1}, gain, noise (white | babble) at an SNR
      → audio/<id>.flac|ogg  +  video/<id>.mp4 (mouth drawn from the phone timings, 25 fps)
      → manifest.jsonl (+ train/val/test.jsonl, <split>_babble_snr<S>.jsonl noisy copies)

A clip whose voice gives no phone timings (``rhvoice:*``, ``piper:*``, ``pico:*``; used only when
named in ``--voices``) gets no lip video: ``"video": null, "frames": null`` (audio-only, for ASR), as
every clip does with ``--no-video``.

Manifest lines (short form of DESIGN.md "Data", paths relative to the manifest folder)::

    {"id": "train-00012", "audio": "audio/train-00012.ogg", "video": "video/train-00012.mp4",
     "text": "...", "voice": "flite:awb", "split": "train", "snr": 10.0, "noise": "babble",
     "speed": 1.1, "gain_db": -3.2, "rate": 0.97, "pitch": null, "duration": 2.84, "frames": 72,
     "source": "fortunes", "seed": [1234, 0, 12]}

Reproducible: every random draw of utterance i of split s comes from
``np.random.default_rng([seed, s, i])``; TTS runs in fresh worker processes per (voice, chunk)
so engine state never leaks between runs; Ogg stream serial numbers are fixed. Same seed and
arguments -> byte-identical files.

CPU example (a few seconds)::

    mmlora make-speech-corpus --out /tmp/sc --n-train 8 --n-val 2 --n-test 2 \
        --voices flite:slt,flite:awb --val-voices flite:rms --test-voices flite:kal16
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import sys
import time
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..fsutil import replace_text
from .lipvideo import Appearance, MouthConfig, lip_video
from .speech_augment import (
    add_reverb, apply_gain, babble_noise, mix_at_snr, resample, speed_perturb, synthetic_rir, white_noise,
)
from .speech_text import TextConfig, load_sentences

SR = 16000
SPLITS = ("train", "val", "test")
DEFAULT_VAL_VOICES = ("festival:ked_diphone", "espeak:en-gb-scotland")
DEFAULT_TEST_VOICES = ("flite:rms", "espeak:en-us+f4", "espeak:en-029")


# voices whose engine takes a pitch (0-100, 50 = the voice's own): a pitch is drawn per clip for them only
# (pico since session 19: its two voices become many; no corpus before named a pico voice)
PITCH_VOICES = ("espeak:", "pico:")


@dataclass
class AugmentConfig:
    speeds: tuple[float, ...] = (0.9, 1.0, 1.1)  # speed-perturbation factors (train only)
    speed_probs: tuple[float, ...] = (0.2, 0.6, 0.2)  # probability of each factor
    gain_db: tuple[float, float] = (-6.0, 6.0)  # uniform gain range in dB (train only)
    noise_prob: float = 0.5  # fraction of training clips that get additive noise
    babble_frac: float = 0.6  # among noisy clips, fraction with babble (rest: white)
    train_snrs: tuple[float, ...] = (20.0, 10.0, 5.0, 0.0, -5.0)  # SNRs (dB) drawn uniformly for noisy train clips
    eval_snrs: tuple[float, ...] = (0.0, -5.0)  # babble SNRs of the noisy copies of held-out clips
    noisy_splits: tuple[str, ...] = ("val", "test")  # which held-out splits get noisy copies
    babble_pool: int = 40  # utterances (own sentences) per babble pool; train and eval pools differ
    reverb_prob: float = 0.2  # fraction of training clips convolved with a synthetic room response
    rt60_range: tuple[float, float] = (0.2, 0.7)  # reverberation time (s), uniform
    drr_range: tuple[float, float] = (0.0, 10.0)  # direct-to-reverberant ratio (dB), uniform
    rate_range: tuple[float, float] = (0.9, 1.12)  # TTS speaking-rate factor, uniform
    pitch_range: tuple[int, int] = (35, 65)  # pitch (0-100) of the PITCH_VOICES engines, uniform


@dataclass
class CorpusConfig:
    out: str = "speech_corpus"  # output folder (manifest + audio/ + video/)
    seed: int = 0  # master seed
    n: dict[str, int] = field(default_factory=lambda: {"train": 4000, "val": 200, "test": 400})  # clips per split
    voices: tuple[str, ...] = ()  # all voices to use (empty: every installed voice with phone timings)
    val_voices: tuple[str, ...] = DEFAULT_VAL_VOICES  # voices held out for validation
    test_voices: tuple[str, ...] = DEFAULT_TEST_VOICES  # voices held out for test
    fortune_frac: float = 0.6  # fraction of sentences from fortunes (rest: KJV); used when text_weights is empty
    text_weights: dict[str, float] = field(default_factory=dict)  # share of sentences per pool ("fortunes",
    # "bible", "wordnet" and the names of text.files), e.g. {"wordnet": 0.5, "fortunes": 0.3, "bible": 0.2}
    word_salad_frac: float = 0.0  # fraction of training clips reading a random word sequence (words of the sentence
    # pools, seen >= 3 times) instead of a sentence: no language model can guess those, the audio must carry them
    exclude_texts: frozenset[str] = frozenset()  # sentences never used (compared lower-cased), e.g. the held-out
    # transcripts of another corpus, so that a second run adds training clips without leaking test sentences
    # share of clips per engine, split evenly among that engine's voices
    engine_weights: dict[str, float] = field(default_factory=lambda: {"flite": 1.0, "festival": 1.0, "espeak": 1.0})
    audio_format: str = "flac"  # "flac" (lossless) or "opus" (Ogg/Opus, ~17 kbit/s)
    opus_level: float = 0.96  # libsndfile compression level for Opus (higher = smaller)
    video: bool = True  # write lip videos
    chunk: int = 150  # utterances per TTS worker process (fixed: part of reproducibility)
    workers: int = 1  # parallel TTS worker processes, and as many file-encoding threads
    text: TextConfig = field(default_factory=TextConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    mouth: MouthConfig = field(default_factory=MouthConfig)


# --- TTS in fresh worker processes -------------------------------------------------------------
def _run_tts(jobs: list[tuple[str, list]], workers: int):  # noqa: ANN202 (generator)
    """Yield each job's results in job order, keeping at most `workers + 1` jobs in flight
    (bounded memory: results are consumed as they arrive)."""
    from collections import deque

    from .speech_tts import synth_batch_subprocess

    workers = max(1, workers)
    with cf.ThreadPoolExecutor(max_workers=workers) as ex:
        todo, running = iter(jobs), deque()
        for j in todo:
            running.append(ex.submit(synth_batch_subprocess, *j))
            if len(running) > workers:
                yield running.popleft().result()
        while running:
            yield running.popleft().result()


# --- planning -----------------------------------------------------------------------------------
@dataclass
class _Utt:
    split: str
    index: int
    voice: str
    text: str
    source: str
    rate: float
    pitch: int | None
    seed: list[int]


def _split_voices(cfg: CorpusConfig, installed: list[str]) -> dict[str, list[str]]:
    from .speech_tts import voice_available

    pool = list(cfg.voices) or installed
    # voices beyond the default list (e.g. any espeak-ng "accent+variant") count when the engine has them
    installed = installed + [v for v in dict.fromkeys([*pool, *cfg.val_voices, *cfg.test_voices])
                             if v not in installed and voice_available(v)]
    missing = [v for v in pool if v not in installed]
    if missing:
        raise SystemExit(f"make-speech-corpus: voices not installed: {', '.join(missing)} (run scripts/setup_tts.sh; "
                         "rhvoice/piper/pico voices: scripts/setup_tts.sh --natural)")
    val = [v for v in cfg.val_voices if v in installed]  # held-out voices may be outside `voices`
    test = [v for v in cfg.test_voices if v in installed]
    train = [v for v in pool if v not in val and v not in test]
    out = {"train": train, "val": val, "test": test}
    for s in SPLITS:
        if cfg.n.get(s, 0) > 0 and not out[s]:
            raise SystemExit(f"make-speech-corpus: split {s!r} has {cfg.n[s]} clips but no installed voice")
    if set(train) & (set(val) | set(test)) or set(val) & set(test):
        raise SystemExit("make-speech-corpus: a voice is in two splits")
    return out


def _plan(cfg: CorpusConfig, voices: dict[str, list[str]]) -> tuple[dict[str, list[_Utt]], dict[str, list[_Utt]]]:
    sents = load_sentences(cfg.text, wordnet="wordnet" in cfg.text_weights)
    excluded = dict.fromkeys(sents, 0)
    if cfg.exclude_texts:
        drop = {t.lower() for t in cfg.exclude_texts}
        kept = {k: [t for t in v if t.lower() not in drop] for k, v in sents.items()}
        excluded = {k: len(sents[k]) - len(kept[k]) for k in sents}
        sents = kept
    if not any(sents.values()):
        raise SystemExit("make-speech-corpus: no sentences found (install fortunes and bible-kjv; scripts/setup_tts.sh)")
    rng = np.random.default_rng([cfg.seed, 99])
    queues = {k: [v[i] for i in rng.permutation(len(v))] for k, v in sents.items()}
    ptr = dict.fromkeys(queues, 0)
    if cfg.text_weights:
        unknown = sorted(set(cfg.text_weights) - set(queues))
        if unknown or any(w < 0 for w in cfg.text_weights.values()) or sum(cfg.text_weights.values()) <= 0:
            raise SystemExit(f"make-speech-corpus: --text-weights {cfg.text_weights}: weights must be >= 0 with a "
                             f"positive sum, over the pools {sorted(queues)}" + (f" (unknown: {unknown})" if unknown else ""))

    def out_of_sentences(pools: list[str]) -> SystemExit:  # names what was there, so the fix is plain (session 61)
        have = ", ".join(f"{k}: {len(queues[k]):,}" + (f" ({excluded[k]:,} more excluded)" if excluded[k] else "")
                         for k in pools)
        return SystemExit(f"make-speech-corpus: ran out of sentences after drawing {sum(ptr.values()):,} (the pools "
                          f"drawn from, at most {cfg.text.max_words} words, after --exclude-text: {have}); lower the "
                          f"sizes, raise --max-words or draw from more pools (--text-weights)")

    def take(r: np.random.Generator) -> tuple[str, str]:
        if cfg.text_weights:  # by weight among the pools that still have sentences
            names = [k for k, w in cfg.text_weights.items() if w > 0 and ptr[k] < len(queues[k])]
            if not names:
                raise out_of_sentences([k for k, w in cfg.text_weights.items() if w > 0])
            cdf = np.cumsum([cfg.text_weights[k] for k in names])
            src = names[min(int(np.searchsorted(cdf / cdf[-1], r.random(), side="right")), len(names) - 1)]
        else:
            src = "fortunes" if r.random() < cfg.fortune_frac else "bible"
            if ptr[src] >= len(queues[src]):
                src = "bible" if src == "fortunes" else "fortunes"
            if ptr[src] >= len(queues[src]):
                raise out_of_sentences(["fortunes", "bible"])
        ptr[src] += 1
        return queues[src][ptr[src] - 1], src

    if not 0.0 <= cfg.word_salad_frac <= 1.0:
        raise SystemExit(f"make-speech-corpus: --word-salad-frac must be in [0, 1], got {cfg.word_salad_frac}")
    vocab = _salad_vocabulary(sents) if cfg.word_salad_frac > 0 else []

    def salad(r: np.random.Generator) -> str:
        k = int(r.integers(cfg.text.min_words, cfg.text.max_words + 1))
        words = [vocab[int(i)] for i in r.integers(0, len(vocab), size=k)]
        return words[0][:1].upper() + words[0][1:] + (" " if k > 1 else "") + " ".join(words[1:]) + "."

    a = cfg.augment
    plan: dict[str, list[_Utt]] = {}
    pools: dict[str, list[_Utt]] = {}
    order = [("test", 2), ("val", 1), ("pool_eval", 4), ("pool_train", 3), ("train", 0)]
    for name, code in order:
        n = a.babble_pool if name.startswith("pool") else cfg.n.get(name, 0)
        if name == "pool_eval" and not (cfg.n.get("val", 0) or cfg.n.get("test", 0)):
            n = 0
        if name == "pool_train" and (not cfg.n.get("train", 0) or a.noise_prob <= 0):
            n = 0
        vs = voices["train"] or voices["val"] or voices["test"]
        vs = vs if name.startswith("pool") else voices[name]
        utts = []
        for i in range(n):
            seed = [cfg.seed, code, i]
            r = np.random.default_rng(seed + [1])
            text, src = take(r)
            if name == "train" and cfg.word_salad_frac > 0:  # its own generator: other draws stay as without it
                rs = np.random.default_rng(seed + [2])
                if rs.random() < cfg.word_salad_frac:
                    text, src = salad(rs), "words"
            v = vs[int(r.choice(len(vs), p=_voice_probs(vs, cfg.engine_weights)))]
            pitch = int(r.integers(a.pitch_range[0], a.pitch_range[1] + 1)) if v.startswith(PITCH_VOICES) else None
            utts.append(_Utt(name, i, v, text, src, round(float(r.uniform(*a.rate_range)), 3), pitch, seed))
        (pools if name.startswith("pool") else plan)[name] = utts
    return plan, pools


def _salad_vocabulary(sents: dict[str, list[str]], min_count: int = 3) -> list[str]:
    """Lower-case words (letters, inner ' or -) seen at least ``min_count`` times in the sentence pools, sorted."""
    import re
    from collections import Counter

    counts = Counter(w for v in sents.values() for t in v for w in re.findall(r"[a-z]+(?:['-][a-z]+)*", t.lower()))
    vocab = sorted(w for w, c in counts.items() if c >= min_count and w != "i")
    if not vocab:
        raise SystemExit("make-speech-corpus: no words for --word-salad-frac (the sentence pools are empty)")
    return vocab


def _voice_probs(vs: list[str], weights: dict[str, float]) -> np.ndarray:
    """P(voice) = weight(engine) / #voices of that engine in `vs`, normalized."""
    eng = [v.split(":")[0] for v in vs]
    w = np.array([weights.get(e, 1.0) / eng.count(e) for e in eng], dtype=np.float64)
    if w.sum() <= 0:
        raise SystemExit("make-speech-corpus: engine weights are all zero for the chosen voices")
    return w / w.sum()


def _synthesize(utts: list[_Utt], cfg: CorpusConfig):  # noqa: ANN202 (generator)
    """TTS for a list of utterances, grouped by voice in fixed-size chunks (the grouping is part
    of reproducibility: espeak-ng carries state within a chunk). Yields (index into utts,
    (audio float32 16 kHz, phones) or None) chunk by chunk."""
    by_voice: dict[str, list[int]] = {}
    for k, u in enumerate(utts):
        by_voice.setdefault(u.voice, []).append(k)
    jobs, where = [], []
    for v in sorted(by_voice):
        idx = by_voice[v]
        for c in range(0, len(idx), cfg.chunk):
            part = idx[c : c + cfg.chunk]
            items = [
                (utts[k].text, utts[k].rate, utts[k].pitch, zlib.crc32(json.dumps(utts[k].seed).encode())) for k in part
            ]
            jobs.append((v, items))
            where.append(part)
    for part, res in zip(where, _run_tts(jobs, cfg.workers)):
        for k, r in zip(part, res):
            yield k, (None if r is None else (resample(r[0], r[1], SR), r[2]))


# --- writing ------------------------------------------------------------------------------------
def _ogg_crc(data: bytes) -> int:
    crc = 0
    for b in data:
        crc ^= b << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else (crc << 1)
            crc &= 0xFFFFFFFF
    return crc


_CRC_TABLE: list[int] = []


def _ogg_fix_serial(path: Path, serial: int) -> None:
    """Rewrite the (random) Ogg stream serial number of every page, recomputing page CRCs."""
    global _CRC_TABLE
    if not _CRC_TABLE:
        _CRC_TABLE = [_ogg_crc(bytes([i])) for i in range(256)]
    buf = bytearray(path.read_bytes())
    pos = 0
    while pos + 27 <= len(buf):
        if buf[pos : pos + 4] != b"OggS":
            raise ValueError(f"{path}: not an Ogg page at byte {pos}")
        nseg = buf[pos + 26]
        size = 27 + nseg + sum(buf[pos + 27 : pos + 27 + nseg])
        buf[pos + 14 : pos + 18] = serial.to_bytes(4, "little")
        buf[pos + 22 : pos + 26] = b"\0\0\0\0"
        crc = 0
        for b in buf[pos : pos + size]:
            crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC_TABLE[(crc >> 24) ^ b]
        buf[pos + 22 : pos + 26] = crc.to_bytes(4, "little")
        pos += size
    path.write_bytes(bytes(buf))


def write_audio(path: Path, x: np.ndarray, cfg: CorpusConfig, serial: int = 0x6D6D6C72) -> None:
    import soundfile as sf

    if cfg.audio_format == "opus":
        sf.write(path, x, SR, format="OGG", subtype="OPUS", compression_level=cfg.opus_level)
        _ogg_fix_serial(path, serial)
    else:
        sf.write(path, x, SR, format="FLAC", subtype="PCM_16")


def _augment(
    x: np.ndarray, phones: list, u: _Utt, cfg: CorpusConfig, pool: list[np.ndarray], rng: np.random.Generator
) -> tuple[np.ndarray, list, dict]:
    """Training clips: speed, gain, then noise (white or babble) at an SNR; held-out clips unchanged."""
    a = cfg.augment
    meta = {"speed": 1.0, "gain_db": 0.0, "snr": None, "noise": None, "rt60": None}
    if u.split != "train":
        return x, phones, meta
    f = float(rng.choice(a.speeds, p=np.asarray(a.speed_probs) / np.sum(a.speed_probs)))
    x = speed_perturb(x, SR, f)
    phones = [(p, s / f, e / f) for p, s, e in phones]
    if a.reverb_prob > 0:  # no draw when off
        if rng.random() < a.reverb_prob:
            rt60 = round(float(rng.uniform(*a.rt60_range)), 3)
            x = add_reverb(x, synthetic_rir(SR, rt60, float(rng.uniform(*a.drr_range)), rng))
            meta["rt60"] = rt60
    g = round(float(rng.uniform(*a.gain_db)), 2)
    x = apply_gain(x, g)
    meta.update(speed=f, gain_db=g)
    if rng.random() < a.noise_prob and a.train_snrs:
        snr = float(rng.choice(a.train_snrs))
        kind = "babble" if (pool and rng.random() < a.babble_frac) else "white"
        noise = babble_noise(pool, len(x), rng) if kind == "babble" else white_noise(len(x), rng)
        x = mix_at_snr(x, noise, snr)
        meta.update(snr=snr, noise=kind)
    else:
        m = float(np.max(np.abs(x))) if len(x) else 0.0
        if m > 0.99:
            x = (x * (0.99 / m)).astype(np.float32)
    return x, phones, meta


class _Writer:
    """A bounded pool of file-writing threads: ``submit(slot, fn, *args)`` runs ``fn(*args)`` and, where
    ``slot`` is ``(dict, key)``, stores its result there; ``drain()`` waits for all and re-raises the
    first error. At most ``4 * threads`` writes are pending, so clips in memory stay bounded."""

    def __init__(self, threads: int):
        import concurrent.futures as cf

        self.n = max(1, threads)
        self.pool = cf.ThreadPoolExecutor(max_workers=self.n, thread_name_prefix="corpus-writer")
        self.pending: list = []

    def submit(self, slot, fn, *args) -> None:  # noqa: ANN001
        self.pending.append((slot, self.pool.submit(fn, *args)))
        while len(self.pending) > 4 * self.n:
            self._finish(self.pending.pop(0))

    @staticmethod
    def _finish(item) -> None:  # noqa: ANN001
        slot, fut = item
        value = fut.result()
        if slot is not None:
            slot[0][slot[1]] = value

    def drain(self) -> None:
        while self.pending:
            self._finish(self.pending.pop(0))

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def write_plan(cfg: CorpusConfig) -> dict[str, int]:
    """The sentences a full run of ``cfg`` would read, without synthesizing: ``OUT/plan_<split>.jsonl`` per split (the
    manifest's ``id``, ``text``, ``voice`` and ``source`` of every planned clip). A full run's manifest is the plan less
    the clips whose synthesis failed, so a plan used as ``--exclude-text`` leaves out what the manifest would, and at
    most those few more. Returns the clips planned per split."""
    from . import speech_tts as T

    plan, _ = _plan(cfg, _split_voices(cfg, T.available_voices()))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        rows = [{"id": f"{split}-{u.index:05d}", "text": u.text, "voice": u.voice, "source": u.source}
                for u in plan.get(split, [])]
        replace_text(out / f"plan_{split}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    return {s: len(plan.get(s, [])) for s in SPLITS}


def generate(cfg: CorpusConfig, log=print) -> dict:  # noqa: ANN001
    """Generate the corpus described by `cfg`; returns its statistics (also in corpus.json)."""
    from . import speech_tts as T

    t0 = time.time()
    out = Path(cfg.out)
    installed = T.available_voices()
    voices = _split_voices(cfg, installed)
    plan, pools = _plan(cfg, voices)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    if cfg.video:
        (out / "video").mkdir(parents=True, exist_ok=True)
    ext = "ogg" if cfg.audio_format == "opus" else "flac"

    pool_audio: dict[str, list[np.ndarray]] = {}
    for name, utts in pools.items():
        got = dict(_synthesize(utts, cfg))
        pool_audio[name] = [got[k][0] for k in sorted(got) if got[k] is not None and len(got[k][0])]
    everyone = sorted(set(installed) | {v for vs in voices.values() for v in vs})  # named voices beyond the defaults too
    looks = {v: Appearance.sample(np.random.default_rng([cfg.seed, 7, zlib.crc32(v.encode())])) for v in everyone}

    records: dict[str, list[dict]] = {}
    failed = 0
    # encoding (Opus/FLAC, x264) runs in threads beside the TTS processes: libsndfile and the encoder
    # subprocess release the GIL, and in the main thread alone Opus took 0.16 s a clip, a ceiling of
    # about 6 clips/s whatever --workers says. Each file depends only on its own clip, so the bytes stay
    # the same for any number of threads (tested).
    writer = _Writer(cfg.workers)
    for split in SPLITS:
        utts = plan.get(split, [])
        recs = records.setdefault(split, [])
        if not utts:
            continue
        log(f"[{split}] synthesizing {len(utts)} clips over {len(voices[split])} voices")
        pool = pool_audio.get("pool_train" if split == "train" else "pool_eval", [])
        done: dict[int, dict] = {}
        for k, r in _synthesize(utts, cfg):
            u = utts[k]
            if r is None or len(r[0]) < SR // 10:
                failed += 1
                continue
            rng = np.random.default_rng(u.seed + [2])
            x, phones, meta = _augment(r[0], r[1], u, cfg, pool, rng)
            uid = f"{split}-{u.index:05d}"
            apath = Path("audio") / f"{uid}.{ext}"
            writer.submit(None, write_audio, out / apath, x, cfg, zlib.crc32(uid.encode()))
            dur = len(x) / SR
            rec = {"id": uid, "audio": str(apath), "video": None, "text": u.text, "voice": u.voice, "split": split,
                   "snr": meta["snr"], "noise": meta["noise"], "speed": meta["speed"], "gain_db": meta["gain_db"],
                   "rate": u.rate, "pitch": u.pitch, "duration": round(dur, 3), "frames": None,
                   "rt60": meta["rt60"], "source": u.source, "seed": u.seed}
            if cfg.video and phones:  # no phone timings (rhvoice, piper, pico): audio-only clip, video null
                vpath = Path("video") / f"{uid}.mp4"
                vrng = np.random.default_rng(u.seed + [3])
                writer.submit((rec, "frames"), lip_video, out / vpath, phones, dur, cfg.mouth, looks[u.voice], vrng)
                rec["video"] = str(vpath)
            rec["_clean"] = x if split != "train" else None
            done[k] = rec
            if len(done) % 500 == 0:
                log(f"[{split}] {len(done)} / {len(utts)} ({time.time() - t0:.0f} s)")
        writer.drain()
        recs.extend(done[k] for k in sorted(done))
        log(f"[{split}] wrote {len(recs)} clips ({time.time() - t0:.0f} s)")

    # noisy copies of the held-out splits (same video, babble at fixed SNRs)
    noisy: dict[str, list[dict]] = {}
    for split in cfg.augment.noisy_splits:
        for snr in cfg.augment.eval_snrs:
            name = f"{split}_babble_snr{snr:g}"
            pool = pool_audio.get("pool_eval", [])
            if not records.get(split) or not pool:
                continue
            lst = noisy.setdefault(name, [])
            for rec in records[split]:
                rng = np.random.default_rng(rec["seed"] + [4, int(round(snr * 10)) + 10000])
                x = mix_at_snr(rec["_clean"], babble_noise(pool, len(rec["_clean"]), rng), snr)
                uid = f"{rec['id']}_babble{snr:g}"
                apath = Path("audio") / f"{uid}.{ext}"
                writer.submit(None, write_audio, out / apath, x, cfg, zlib.crc32(uid.encode()))
                base = {k: v for k, v in rec.items() if k != "_clean"}
                lst.append(base | {"id": uid, "audio": str(apath), "snr": snr, "noise": "babble"})
    writer.drain()
    writer.close()
    for recs in records.values():
        for rec in recs:
            rec.pop("_clean", None)

    def dump(name: str, recs: list[dict]) -> None:
        with open(out / name, "w") as f:
            for rec in recs:
                f.write(json.dumps(rec) + "\n")

    dump("manifest.jsonl", [r for s in SPLITS for r in records.get(s, [])])
    for s in SPLITS:
        dump(f"{s}.jsonl", records.get(s, []))
    for name, recs in noisy.items():
        dump(f"{name}.jsonl", recs)

    all_recs = [r for s in SPLITS for r in records.get(s, [])]
    stats = {
        "counts": {s: len(records.get(s, [])) for s in SPLITS} | {k: len(v) for k, v in noisy.items()},
        "hours": {s: round(sum(r["duration"] for r in records.get(s, [])) / 3600, 3) for s in SPLITS},
        "voices": {s: dict(sorted(Counter(r["voice"] for r in records.get(s, [])).items())) for s in SPLITS},
        "failed": failed,
        "mean_words": round(float(np.mean([len(r["text"].split()) for r in all_recs])), 2) if all_recs else 0.0,
        "bytes": sum(p.stat().st_size for p in out.rglob("*") if p.is_file() and p.name != "corpus.json"),
    }
    info = {"config": _jsonable(asdict(cfg)), "stats": stats}
    (out / "corpus.json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
    return stats | {"seconds": round(time.time() - t0, 1)}


def _jsonable(d):  # noqa: ANN001, ANN202
    if isinstance(d, dict):
        return {k: _jsonable(v) for k, v in d.items() if k != "out"}
    if isinstance(d, (list, tuple)):
        return [_jsonable(v) for v in d]
    if isinstance(d, (set, frozenset)):
        return sorted(d)
    return d


def _floats(s: str) -> tuple[float, ...]:
    return tuple(float(v) for v in s.split(",") if v.strip())


def _weights(s: str, flag: str = "--engine-weights") -> dict[str, float]:
    out = {}
    for part in _names(s):
        k, _, v = part.partition("=")
        try:
            out[k.strip()] = float(v)
        except ValueError:
            raise SystemExit(f"make-speech-corpus: {flag} item {part!r} is not NAME=WEIGHT") from None
    return out


def _text_files(items: list[str]) -> tuple[tuple[str, str], ...]:
    out = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise SystemExit(f"make-speech-corpus: --text-file {item!r} is not NAME=PATH")
        if not Path(path.strip()).is_file():
            raise SystemExit(f"make-speech-corpus: --text-file {name.strip()}: no such file {path.strip()}")
        out.append((name.strip(), path.strip()))
    return tuple(out)


def _names(s: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in s.split(",") if v.strip())


def _manifest_texts(paths: tuple[str, ...]) -> frozenset[str]:
    """The ``text`` fields of JSONL manifests (a missing file or a line without text names itself)."""
    from .jsonl import iter_jsonl

    out: set[str] = set()
    for path in paths:
        try:
            for i, rec in iter_jsonl(path):
                if "text" not in rec:
                    raise ValueError(f"{path}:{i}: no 'text' field")
                out.add(str(rec["text"]))
        except (OSError, ValueError) as e:
            raise SystemExit(f"make-speech-corpus: --exclude-text {e}") from None
    return frozenset(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mmlora make-speech-corpus", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-train", type=int, default=4000)
    p.add_argument("--n-val", type=int, default=200)
    p.add_argument("--n-test", type=int, default=400)
    p.add_argument("--voices", default="", help="comma list of engine:name (default: all installed voices with "
                   "phone timings; rhvoice:*/piper:*/pico:* only when named)")
    p.add_argument("--val-voices", default=",".join(DEFAULT_VAL_VOICES))
    p.add_argument("--test-voices", default=",".join(DEFAULT_TEST_VOICES))
    p.add_argument("--audio-format", choices=("flac", "opus"), default="flac")
    p.add_argument("--no-video", action="store_true", help="skip the lip videos")
    p.add_argument("--size", type=int, default=64, help="lip video frame size (pixels)")
    p.add_argument("--crf", type=int, default=36, help="H.264 CRF of the lip videos")
    p.add_argument("--min-words", type=int, default=4)
    p.add_argument("--max-words", type=int, default=20)
    p.add_argument("--noise-prob", type=float, default=0.5, help="fraction of noisy training clips")
    p.add_argument("--reverb-prob", type=float, default=0.2, help="fraction of training clips with room reverb")
    p.add_argument("--train-snrs", default="20,10,5,0,-5", help="SNRs (dB) for noisy training clips")
    p.add_argument("--eval-snrs", default="0,-5", help="babble SNRs of the noisy held-out copies ('' for none)")
    p.add_argument("--noisy-splits", default="val,test", help="held-out splits that get noisy copies")
    p.add_argument("--opus-level", type=float, default=0.96, help="Opus compression level (0.96 ~ 17 kbit/s)")
    p.add_argument("--engine-weights", default="flite=1,festival=1,espeak=1", help="share of clips per TTS engine")
    p.add_argument("--fortune-frac", type=float, default=0.6, help="fraction of sentences from fortunes (rest: KJV)")
    p.add_argument("--text-file", action="append", default=[], metavar="NAME=PATH",
                   help="an extra sentence pool, one sentence per line (repeatable); give its share with --text-weights")
    p.add_argument("--text-weights", default="", metavar="POOL=W,...",
                   help="share of sentences per pool (fortunes, bible, wordnet: WordNet's example sentences, and the "
                        "--text-file names); replaces --fortune-frac")
    p.add_argument("--babble-pool", type=int, default=40, help="utterances per babble pool (train / eval)")
    p.add_argument("--word-salad-frac", type=float, default=0.0,
                   help="fraction of training clips that read a random word sequence instead of a sentence")
    p.add_argument("--exclude-text", default="", help="comma list of JSONL manifests whose 'text' sentences are never "
                   "used (e.g. another corpus's val/test splits)")
    p.add_argument("--workers", type=int, default=1, help="parallel TTS processes (and as many encoding threads)")
    p.add_argument("--list-voices", action="store_true", help="print the installed voices and exit")
    p.add_argument("--plan-only", action="store_true",
                   help="synthesize nothing: write each split's planned sentences to OUT/plan_<split>.jsonl (id, "
                        "text, voice, source; the same draw as a full run) and exit, e.g. to rebuild another "
                        "corpus's --exclude-text in seconds")
    p.add_argument("--overwrite", action="store_true", help="allow writing into a folder that has a manifest")
    args = p.parse_args(argv)

    if args.list_voices:
        from .speech_tts import available_voices

        print("\n".join(available_voices(natural=True)))  # rhvoice/piper/pico too (used only when named)
        return 0
    if (Path(args.out) / "manifest.jsonl").exists() and not args.overwrite:
        print(f"make-speech-corpus: {args.out}/manifest.jsonl exists (use --overwrite)", file=sys.stderr)
        return 2
    cfg = CorpusConfig(
        out=args.out, seed=args.seed, n={"train": args.n_train, "val": args.n_val, "test": args.n_test},
        voices=_names(args.voices), val_voices=_names(args.val_voices), test_voices=_names(args.test_voices),
        audio_format=args.audio_format, video=not args.no_video, workers=args.workers, fortune_frac=args.fortune_frac,
        engine_weights=_weights(args.engine_weights), word_salad_frac=args.word_salad_frac,
        exclude_texts=_manifest_texts(_names(args.exclude_text)), text_weights=_weights(args.text_weights, "--text-weights"),
        text=TextConfig(min_words=args.min_words, max_words=args.max_words, files=_text_files(args.text_file)),
        opus_level=args.opus_level,
        augment=AugmentConfig(
            noise_prob=args.noise_prob, babble_pool=args.babble_pool, reverb_prob=args.reverb_prob, noisy_splits=_names(args.noisy_splits),
            train_snrs=_floats(args.train_snrs), eval_snrs=_floats(args.eval_snrs),
        ),
        mouth=MouthConfig(size=args.size, crf=args.crf),
    )
    if args.plan_only:
        print(json.dumps(write_plan(cfg)))
        return 0
    stats = generate(cfg, log=lambda m: print(m, file=sys.stderr))
    print(json.dumps(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
