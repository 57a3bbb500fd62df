"""The optional SVOX Pico voices (``pico:en-US``, ``pico:en-GB``; PyPI py-nanotts).

Engine tests skip when py-nanotts is missing (``bash scripts/setup_tts.sh --natural`` installs it);
the listing and missing-package tests run everywhere."""
from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

from mmlora.data import speech_tts as T

SENT = "Please call Stella and ask her to bring these things with her from the store."  # 15 words
VOICES = ["pico:en-US", "pico:en-GB"]


@pytest.fixture
def pico():  # noqa: ANN201
    pytest.importorskip("py_nanotts", reason=f"py-nanotts missing ({T.NATURAL_SETUP})")


def _f0(x: np.ndarray, sr: int = 16000) -> float:
    """Median autocorrelation pitch (Hz) of the loudest 40 % of 40 ms frames."""
    fr = x[: len(x) // 640 * 640].reshape(-1, 640)
    fr = fr[(fr**2).mean(1) >= np.percentile((fr**2).mean(1), 60)]
    lo, hi = sr // 400, sr // 70
    return float(np.median([sr / (lo + np.argmax(np.correlate(w, w, "full")[639 + lo : 639 + hi])) for w in fr]))


@pytest.mark.parametrize("voice", VOICES)
def test_pico_voice_gives_16k_float_audio_without_clipping(pico, voice):
    s = T.synthesize(voice, SENT)
    assert s.sr == 16000 and s.audio.dtype == np.float32 and s.audio.ndim == 1
    assert s.phones == []  # no phone timings: audio-only clips
    assert 2.0 < s.duration < 9.0, s.duration  # 15 words at 2-7 words per second
    peak = float(np.max(np.abs(s.audio)))
    assert np.all(np.isfinite(s.audio)) and 0.1 < peak < 0.95, peak  # volume 50 %: no sample near full scale
    assert float(np.sqrt(np.mean(s.audio**2))) > 0.01
    frames = s.audio[: len(s.audio) // 400 * 400].reshape(-1, 400)  # speech has loud and quiet frames
    e = np.sqrt((frames**2).mean(1))
    assert e.max() > 10 * np.percentile(e, 5) + 1e-6
    assert T.voice_available(voice)


@pytest.mark.parametrize("voice", VOICES)
def test_pico_is_deterministic_whatever_ran_before(pico, voice):
    a = T.synthesize(voice, SENT)
    from py_nanotts import NanoTTS

    NanoTTS().speak("Something else entirely.", voice="en-GB")  # its own speak() leaves Pico's pool in the heap
    T.synthesize(VOICES[1 - VOICES.index(voice)], "Another voice reads another sentence.", rate=1.2, pitch=30)
    b = T.synthesize(voice, SENT)
    assert np.array_equal(a.audio, b.audio)
    (x, sr, phones), = T.synth_batch_subprocess(voice, [(SENT, 1.0, None, 7)])  # a fresh process: the same samples
    assert sr == 16000 and phones == [] and np.array_equal(x, a.audio)


def test_pico_rate_sets_duration_and_pitch_sets_f0(pico):
    slow, mid, fast = (T.synthesize("pico:en-US", SENT, rate=r) for r in (0.8, 1.0, 1.25))
    assert slow.duration > mid.duration * 1.1 and fast.duration < mid.duration / 1.1, (slow.duration, fast.duration)
    assert np.array_equal(T.synthesize("pico:en-US", SENT, pitch=50).audio, mid.audio)  # 50: the voice's own pitch
    high = T.synthesize("pico:en-US", SENT, pitch=80)  # factor 2 ** 0.3 = 1.23
    assert high.duration == mid.duration and 1.1 < _f0(high.audio) / _f0(mid.audio) < 1.4
    with pytest.raises(T.TTSError, match="speed range"):
        T.synthesize("pico:en-US", "Hello.", rate=6.0)


def test_unknown_pico_voice_names_the_known_ones(pico):
    with pytest.raises(T.TTSError, match="known: en-US, en-GB"):
        T.synthesize("pico:de-DE", "Hallo.")  # in the package, but not English: not offered
    assert not T.voice_available("pico:en-AU")


def test_pico_voices_are_parsed_and_listed_as_natural_voices():
    assert T.parse_voice("pico:en-US") == ("pico", "en-US") and T.parse_voice("pico:en-GB") == ("pico", "en-GB")
    assert [v for v in T.all_voices(natural=True) if v.startswith("pico:")] == VOICES
    assert not any(v.startswith("pico:") for v in T.all_voices())  # no phone timings: not in the default pool
    status = T.natural_voices_status()
    assert all(v in status for v in VOICES)
    if importlib.util.find_spec("py_nanotts") is not None:
        assert [status[v] for v in VOICES] == ["ok", "ok"]
        assert set(VOICES) <= set(T.available_voices(natural=True))


def test_missing_py_nanotts_names_the_setup_command(monkeypatch):
    monkeypatch.setattr(T, "_ENGINES", {})
    monkeypatch.setitem(sys.modules, "py_nanotts", None)  # import py_nanotts -> ImportError
    assert T.natural_voices_status()["pico:en-US"] == "pip package py-nanotts missing"
    assert not T.voice_available("pico:en-US")
    with pytest.raises(T.TTSError, match="setup_tts.sh --natural"):
        T.synthesize("pico:en-US", "Hello.")
