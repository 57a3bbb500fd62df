"""espeak-ng accents of our own (mmlora.data.speech_tts.ESPEAK_ACCENTS): a base accent of espeak-ng's with consonant
replacements, served from a private overlay of espeak-ng-data that must leave every voice of espeak-ng's own as it
was."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mmlora.data import speech_tts as T


def _espeak_here() -> bool:
    try:
        return T.voice_available("espeak:en-us")
    except Exception:  # noqa: BLE001 (no library at all)
        return False


needs_espeak = pytest.mark.skipif(not _espeak_here(), reason="espeak-ng not installed (scripts/setup_tts.sh)")

# a few of the wide corpora's voices (scripts/wide_voices.sh) beside the default ones
_OWN = [*T.ESPEAK_VOICES, "en+m3", "en-gb-x-gbclan+Andy", "en-gb-x-gbcwmd+klatt4", "en-us-nyc+f1", "en-gb-x-rp+belinda"]
_PROBE = """
import hashlib, json, sys
from mmlora.data.speech_tts import _Espeak
e = _Espeak(overlay=sys.argv[1] == "1")
out = {}
for v in json.loads(sys.argv[2]):
    s = e.synth(v, "Thus the thirty thieves ran home, thinking of their other brother.", 1.1, 40)
    out[v] = hashlib.sha256(s.audio.tobytes() + repr(s.phones).encode()).hexdigest()
print(json.dumps(out))
"""


def _fresh(code: str, *args: str) -> dict:
    """The JSON that ``code`` prints last, run with ``args`` in a process of its own: espeak-ng's state is the
    process's (its voice, and what it synthesized before)."""
    r = subprocess.run([sys.executable, "-c", code, *args], cwd=Path(__file__).resolve().parents[2],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


@needs_espeak
def test_the_overlay_leaves_every_voice_of_espeak_ngs_own_unchanged():
    with_overlay, without = _fresh(_PROBE, "1", json.dumps(_OWN)), _fresh(_PROBE, "0", json.dumps(_OWN))
    assert list(with_overlay) == _OWN and with_overlay == without


PLAIN = "Our cows eat green grass by a big lake."  # no th, h or -ing
RICH = "This thing is there, his house is running."
_PHONES = """
import json, sys
from mmlora.data.speech_tts import synthesize
print(json.dumps({f"{v}|{t}": [p[0] for p in synthesize("espeak:" + v, t).phones]
                  for v in json.loads(sys.argv[1]) for t in json.loads(sys.argv[2])}))
"""


def _base(accent: str) -> str:
    """espeak-ng's own voice the accent is made from, e.g. en-gb-x-rp"""
    return Path(T.ESPEAK_ACCENT_BASES[T.espeak_accent_parts(accent)[0]]).name.lower()


@pytest.fixture(scope="module")
def phones() -> dict:
    """Each accent's and each base's phones of PLAIN and RICH, read in a fresh process of their own: espeak-ng's
    phone events can depend on what the process synthesized before (seen once in CI: a first phoneme missing)."""
    voices = [*T.ESPEAK_ACCENTS, *dict.fromkeys(_base(a) for a in T.ESPEAK_ACCENTS)]
    return _fresh(_PHONES, json.dumps(voices), json.dumps([PLAIN, RICH]))


@needs_espeak
@pytest.mark.parametrize("accent", T.ESPEAK_ACCENTS)
def test_an_accent_changes_only_its_features_phonemes(accent, phones):
    base, feats = _base(accent), T.espeak_accent_parts(accent)[1]
    assert phones[f"{accent}|{PLAIN}"] == phones[f"{base}|{PLAIN}"]
    mine, theirs = phones[f"{accent}|{RICH}"], phones[f"{base}|{RICH}"]
    assert mine != theirs
    if "thstop" in feats:
        assert "D" not in mine and "T" not in mine and mine.count("d") >= theirs.count("D") > 0
    if "thfront" in feats:
        assert "D" not in mine and "T" not in mine and "f" in mine and "v" in mine
    if "hdrop" in feats:
        assert "h" not in mine
    if "gdrop" in feats:  # "thing" keeps its N, "running" is said runnin (as Lancaster's own already says it)
        assert mine.count("N") == 1 and mine[-3:-1] == ["I", "n"]
    # a variant applies as to any espeak-ng voice
    assert T.voice_available(f"espeak:{accent}+m3") and not T.voice_available(f"espeak:{accent}+nobody")


@needs_espeak
def test_an_accent_voice_file_keeps_its_bases_lines_but_name_and_language():
    data = T._engine("espeak").data_path
    text = T.espeak_accent_file("mm-rp-thfront-hdrop", data)
    lines = text.splitlines()
    assert lines[:2] == ["name mm-rp-thfront-hdrop", "language en-x-mm-rp-thfront-hdrop"]
    assert "phonemes en-rp" in lines and lines[-3:] == ["replace 00 T f", "replace 00 D v", "replace 00 h NULL"]
    assert not [ln for ln in lines[2:] if ln.startswith(("name ", "language "))]


@pytest.mark.parametrize("name", ["mm-us", "mm-us-", "mm-us-rhotic", "mm-fr-thstop", "us-thstop", "mm-us-thstop-"])
def test_a_bad_accent_name_is_a_clear_error(name, tmp_path):
    with pytest.raises(ValueError, match="mm-<base>-<features>"):
        T.espeak_accent_file(name, tmp_path)


def test_every_accent_is_named_from_its_parts():
    n = len(T.ESPEAK_ACCENT_BASES) * len(T.ESPEAK_ACCENT_MIXES)
    assert len(T.ESPEAK_ACCENTS) == n == len(set(T.ESPEAK_ACCENTS))
    assert T.espeak_accent_parts("mm-nyc-thstop-gdrop") == ("nyc", ["thstop", "gdrop"])
    assert T.espeak_accent_parts("mm-en-thfront-hdrop") == ("en", ["thfront", "hdrop"])
    for mix in T.ESPEAK_ACCENT_MIXES:
        assert set(mix.split("-")) <= set(T.ESPEAK_ACCENT_FEATURES)


@needs_espeak
def test_a_voice_name_espeak_ng_could_abort_on_is_refused():
    long = "mm-wmd-thfront-hdrop+" + "H" * 19  # 40 characters
    with pytest.raises(T.TTSError, match="40 characters"):
        T.synthesize(f"espeak:{long}", "Hello.")
    assert not T.voice_available(f"espeak:{long}")
    # every accent with the wide corpora's longest variant stays well inside
    assert max(len(a) for a in T.ESPEAK_ACCENTS) + len("+Henrique") <= 30


@needs_espeak
def test_a_corpus_can_be_read_by_accents_and_a_long_name_is_named_as_missing(tmp_path):
    from mmlora.data import speech_corpus as C

    out = tmp_path / "c"
    voices = "espeak:mm-rp-thstop+m3,espeak:mm-nyc-thfront-hdrop+f2"
    assert C.main(["--out", str(out), "--voices", voices, "--val-voices", "", "--test-voices", "", "--n-train", "4",
                   "--n-val", "0", "--n-test", "0", "--max-words", "6", "--no-video", "--babble-pool", "2"]) == 0
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and {r["voice"] for r in rows} <= set(voices.split(","))
    assert all((out / r["audio"]).is_file() for r in rows)
    long = "espeak:mm-wmd-thfront-hdrop+" + "H" * 19
    with pytest.raises(SystemExit, match="voices not installed: " + long.replace("+", r"\+")):
        C._split_voices(C.CorpusConfig(voices=(long,)), [])
