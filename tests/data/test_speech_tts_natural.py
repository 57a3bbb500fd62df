"""The optional natural voices (rhvoice:*, piper:joe) and audio-only clips in the corpus.

Engine tests skip when `bash scripts/setup_tts.sh --natural` has not been run; the corpus test
runs everywhere (the TTS worker is replaced by a fake that returns no phones for some voices)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from mmlora.data import speech_tts as T

SENT = "Please call Stella and ask her to bring these things with her from the store."  # 15 words


def _ok(voice: str) -> bool:
    return T.natural_voices_status().get(voice) == "ok"


def _check_clip(s: T.Synth, sr: int) -> float:
    assert s.sr == sr
    assert s.audio.dtype == np.float32 and s.audio.ndim == 1
    assert s.phones == []
    assert 2.0 < s.duration < 9.0, s.duration  # 15 words at 2-7 words per second
    assert np.all(np.isfinite(s.audio)) and np.max(np.abs(s.audio)) <= 1.0
    rms = float(np.sqrt(np.mean(s.audio**2)))
    assert rms > 0.01, rms
    frames = s.audio[: len(s.audio) // 400 * 400].reshape(-1, 400)  # speech has loud and quiet frames
    e = np.sqrt((frames**2).mean(1))
    assert e.max() > 10 * np.percentile(e, 5) + 1e-6
    return s.duration


@pytest.mark.parametrize("voice,sr", [(f"rhvoice:{v}", 24000) for v in T.RHVOICE_VOICES] + [("piper:joe", 22050)])
def test_natural_voice_synthesizes_and_rate_sets_duration(voice, sr):
    if not _ok(voice):
        pytest.skip(f"{voice}: {T.natural_voices_status().get(voice)} ({T.NATURAL_SETUP})")
    slow, mid, fast = (_check_clip(T.synthesize(voice, SENT, rate=r), sr) for r in (0.8, 1.0, 1.25))
    assert slow > mid * 1.08 and fast < mid / 1.08, (slow, mid, fast)
    assert T.voice_available(voice)
    if voice.startswith("rhvoice:"):
        with pytest.raises(T.TTSError, match="relative_rate"):
            T.synthesize(voice, "Hello.", rate=3.0)


@pytest.mark.parametrize("voice", ["piper:joe", "rhvoice:slt"])
def test_natural_voice_batch_worker_is_reproducible(voice):
    if not _ok(voice):
        pytest.skip(f"{voice}: {T.natural_voices_status().get(voice)}")
    items = [("Hello there, how are you today?", 1.0, None, 1), ("The lazy dog sleeps.", 1.1, None, 2)]
    a, b = T.synth_batch_subprocess(voice, items), T.synth_batch_subprocess(voice, items)
    for (xa, sra, pa), (xb, srb, pb) in zip(a, b):
        assert sra == srb and pa == pb == [] and np.array_equal(xa, xb) and len(xa) > sra


def test_natural_voices_are_listed_but_not_in_the_default_pool():
    natural = [v for v in T.all_voices(natural=True) if v not in T.all_voices()]
    assert natural == ["rhvoice:alan", "rhvoice:bdl", "rhvoice:clb", "rhvoice:slt", "piper:joe", "pico:en-US",
                       "pico:en-GB"]
    assert not any(v.startswith(("rhvoice:", "piper:", "pico:")) for v in T.available_voices())


def test_piper_after_espeak_in_one_process():
    """piper's espeak bridge must not bind to the system libespeak-ng the espeak driver loaded."""
    if not _ok("piper:joe") or not T.voice_available("espeak:en-us"):
        pytest.skip("needs piper:joe and espeak-ng")
    code = ("from mmlora.data import speech_tts as T\n"
            "a = T.synthesize('espeak:en-us', 'The quick brown fox.')\n"
            "b = T.synthesize('piper:joe', 'The quick brown fox.')\n"
            "c = T.synthesize('espeak:en-us', 'The quick brown fox.')\n"
            "print(len(a.phones) == len(c.phones) > 5, 0.8 < b.duration < 3.0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0 and r.stdout.split() == ["True", "True"], (r.returncode, r.stdout, r.stderr[-500:])


def test_non_commercial_rhvoice_voices_are_refused():
    for v in ("rhvoice:evgeniy-eng", "rhvoice:lyubov"):
        assert v not in T.all_voices(natural=True) and not T.voice_available(v)
    if _ok("rhvoice:alan"):
        with pytest.raises(T.TTSError, match="not available"):
            T.synthesize("rhvoice:lyubov", "Hello.")


def test_missing_engines_name_the_setup_command(tmp_path, monkeypatch):
    monkeypatch.setenv("MMLORA_TTS_PREFIX", str(tmp_path / "empty"))
    monkeypatch.setattr(T, "_ENGINES", {})
    assert T.natural_voices_status()["rhvoice:alan"].startswith(("no ", "pip package"))
    assert not T.voice_available("rhvoice:alan")
    with pytest.raises(T.TTSError, match="setup_tts.sh --natural"):
        T.synthesize("rhvoice:alan", "Hello.")
    monkeypatch.setitem(sys.modules, "piper", None)  # import piper -> ImportError
    with pytest.raises(T.TTSError, match="setup_tts.sh --natural"):
        T.synthesize("piper:joe", "Hello.")
    with pytest.raises(ValueError, match="rhvoice:NAME"):
        T.parse_voice("kokoro:af")


# --- corpus: a voice without phone timings gives an audio-only clip ------------------------------
def _fake_batch(voice, items, timeout=0.0):  # noqa: ANN001, ANN202 (stands in for the TTS worker process)
    out = []
    for text, rate, _pitch, seed in items:
        sr = 22050 if voice.startswith("piper:") else 16000
        d = 0.08 * len(text.split()) / rate + 0.3
        t = np.arange(int(d * sr)) / sr
        rng = np.random.default_rng(seed)
        x = (0.3 * np.sin(2 * np.pi * 140 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
             + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
        phones = [] if voice.split(":")[0] in ("rhvoice", "piper") else [("m", 0.0, d / 3), ("aa", d / 3, d)]
        out.append((x, sr, phones))
    return out


def test_corpus_writes_video_null_for_voices_without_phones(tmp_path, monkeypatch):
    from mmlora.data import speech_corpus as C
    from mmlora.data.lipvideo import MouthConfig

    voices = ["flite:slt", "piper:joe", "rhvoice:alan", "rhvoice:bdl"]
    monkeypatch.setattr(T, "synth_batch_subprocess", _fake_batch)
    monkeypatch.setattr(T, "available_voices", lambda natural=False: ["flite:slt"])  # the default pool
    monkeypatch.setattr(T, "voice_available", lambda v: v in voices)  # named voices are checked one by one
    sents = {"fortunes": [f"Sentence number {w} has a few words." for w in
                          "one two three four five six seven eight nine ten eleven twelve".split()] * 1,
             "bible": [f"And the {w} went unto the city of the plain." for w in
                       "man woman king prophet servant child elder priest".split()]}
    sents["fortunes"] += [f"Another {w} line to read aloud today." for w in "red blue green pink gray".split()]
    monkeypatch.setattr(C, "load_sentences", lambda cfg, **kw: {k: list(v) for k, v in sents.items()})
    cfg = C.CorpusConfig(
        out=str(tmp_path / "sc"), seed=3, n={"train": 6, "val": 2, "test": 0},
        voices=("flite:slt", "piper:joe", "rhvoice:alan"), val_voices=("rhvoice:bdl",), test_voices=(),
        mouth=MouthConfig(size=32),
        augment=C.AugmentConfig(babble_pool=2, eval_snrs=(0.0,), noisy_splits=("val",)),
    )
    stats = C.generate(cfg, log=lambda m: None)
    assert stats["counts"]["train"] == 6 and stats["counts"]["val"] == 2 and stats["failed"] == 0
    out = tmp_path / "sc"
    recs = [json.loads(ln) for ln in (out / "manifest.jsonl").read_text().splitlines()]
    noisy = [json.loads(ln) for ln in (out / "val_babble_snr0.jsonl").read_text().splitlines()]
    assert len(recs) == 8 and len(noisy) == 2
    train = {r["voice"] for r in recs if r["split"] == "train"}
    assert "flite:slt" in train and train - {"flite:slt"}, train  # both kinds of clip in one split
    for r in recs + noisy:
        x, sr = sf.read(out / r["audio"], dtype="float32")
        assert sr == 16000 and x.ndim == 1 and abs(len(x) / sr - r["duration"]) < 1e-3
        assert np.sqrt(np.mean(x**2)) > 1e-3
        if r["voice"] == "flite:slt":
            assert r["video"] is not None and (out / r["video"]).is_file() and r["frames"] > 0
        else:
            assert r["video"] is None and r["frames"] is None
    assert not any((out / "video" / f"{r['id']}.mp4").exists() for r in recs if r["video"] is None)
    assert sorted(p.name for p in (out / "video").iterdir()) == sorted(f"{r['id']}.mp4" for r in recs if r["video"])
