#!/usr/bin/env python
"""Unlabelled human speech for ``whisper_decoder_probe.py --anchor``: Tux Paint's spoken stamp descriptions, every
language (session 55).

Debian's ``tuxpaint-stamps-default`` (bookworm, 2022.06.04-1, GPL-2+; 161 MB) ships, beside each stamp's picture,
people reading its description aloud: ``NAME_desc.ogg`` (English) and ``NAME_desc_LL.ogg`` (French, Russian,
Romanian, Catalan, Bulgarian, Spanish, Belarusian, Greek, Danish, Lithuanian, Dutch, Malayalam): 7,418
recordings, 1.1 s at the median, 3.0 h in all (66 of them English). They carry no usable transcripts (decoded, the
English ones say the stamp's bare name, not the first line of its ``.txt``; session 54), so they are no test set;
they are real voices, microphones and rooms, none of them the release rule's (its 40 clips are
``fetch_human_speech.py``'s), and ``--anchor`` needs no text: it holds the trained judge near what Whisper's own
decoder says of them. Each becomes a clip with an empty text::

    python scripts/fetch_tuxpaint_speech.py --out data/anchor_speech         # -> tuxpaint.jsonl, audio/tux-*.flac
    python scripts/fetch_tuxpaint_speech.py --out OUT --deb tuxpaint-stamps-default_2022.06.04-1_all.deb
    python scripts/fetch_tuxpaint_speech.py --out data/anchor_sub --keep 2400 --seed 56   # a part: 67 MB (GPU run 47)

``--keep N`` keeps every English recording and a seeded draw of the others, N in all (a part small enough to travel
to a GPU machine; ``--seed`` picks the draw).

Without ``--deb`` the package is fetched with ``apt-get download`` under a private apt configuration (its own
sources.list naming bookworm, lists and cache in ``--apt-dir``; /etc/apt is never touched), as
``scripts/setup_tts.sh --natural`` fetches its voices and ``fetch_human_speech.py --set val2`` its package (the same
:func:`fetch_human_speech.fetch_deb`). The .deb's SHA-256 is checked against the pinned value; its members are read in
one streaming pass of its data archive (:func:`fetch_human_speech.read_deb`, no ``dpkg``; nothing is unpacked),
resampled to 16 kHz mono FLAC (:func:`fetch_human_speech.to_16k_mono`).
"""
from __future__ import annotations

import argparse
import io
import json
import random
import sys
from pathlib import Path

import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fetch_human_speech import (FetchError, check_sha256, fetch_deb, read_deb, to_16k_mono, write_clip,  # noqa: E402
                                write_manifest)

PACKAGE, VERSION = "tuxpaint-stamps-default", "2022.06.04-1"
DEB = f"{PACKAGE}_{VERSION}_all.deb"
SHA256 = "6db6c1bfc870a47f1499d6203b083522eacb57c5f9c87d468f2e92eb6d9d5f34"
ROOT = "./usr/share/tuxpaint/stamps/"
LICENSE = "GPL-2+ (Debian tuxpaint-stamps-default, copyright file of the package)"


def is_recording(name: str) -> bool:
    """A member of the data archive :func:`read_deb` keeps: a stamp's ``*.ogg`` under :data:`ROOT`."""
    return name.startswith(ROOT) and name.endswith(".ogg")


def check(deb: Path) -> None:
    """The .deb's SHA-256 must be the pinned one."""
    check_sha256(deb, SHA256, f"{PACKAGE}={VERSION}")


def clips_of(members: dict[str, bytes]) -> list[tuple[str, str, bytes]]:
    """``(recording path without .ogg, language, ogg bytes)`` for every ``*_desc.ogg`` (``en``) and ``*_desc_LL.ogg``
    (``LL``), sorted by path. ``members``: a member name (``./usr/share/...``) -> its bytes."""
    out = []
    for name, data in sorted(members.items()):
        stem, _, lang = name[: -len(".ogg")].rpartition("_desc")
        if name.endswith(".ogg") and stem and (lang == "" or lang.startswith("_")):
            out.append((name[: -len(".ogg")], lang[1:] or "en", data))
    return out


def keep_part(clips: list[tuple[str, str, bytes]], keep: int | None, seed: int = 0) -> list[tuple[str, str, bytes]]:
    """``keep`` of :func:`clips_of`'s recordings (all where ``keep`` is None): every English one (``en``, ``en_*``)
    in order, then the others in a ``random.Random(seed)`` shuffle, up to ``keep`` in all."""
    if keep is None:
        return clips
    if keep < 1:
        raise FetchError(f"--keep: a positive count, got {keep}")
    en, rest = [], []
    for c in clips:
        (en if c[1] == "en" or c[1].startswith("en_") else rest).append(c)
    random.Random(seed).shuffle(rest)
    return (en + rest)[:keep]


def build(out: Path, members: dict[str, bytes], manifest: str = "tuxpaint.jsonl", keep: int | None = None,
          seed: int = 0) -> list[dict]:
    """``out/audio/tux-<path>.flac`` and ``out/<manifest>`` (texts empty) for every recording of :func:`clips_of`
    (``keep`` of them: :func:`keep_part`)."""
    (out / "audio").mkdir(parents=True, exist_ok=True)
    records = []
    for stem, lang, data in keep_part(clips_of(members), keep, seed):
        try:
            x, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise FetchError(f"{stem}.ogg: cannot decode audio ({exc})") from None
        cid = "tux-" + stem[len(ROOT):].replace("/", "-")
        rel, seconds = write_clip(out, cid, to_16k_mono(x, int(sr)))
        records.append({"id": cid, "audio": rel, "text": "", "lang": lang, "voice": "tuxpaint", "split": "anchor",
                        "source": f"{PACKAGE}={VERSION}: {stem}.ogg", "license": LICENSE, "duration": seconds})
    write_manifest(out / manifest, records)
    return records


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="output folder (audio/ and tuxpaint.jsonl)")
    ap.add_argument("--deb", type=Path, help=f"a local {DEB} (default: apt-get download it)")
    ap.add_argument("--apt-dir", type=Path, default=Path.home() / ".cache" / "mmlora" / "tuxpaint-apt",
                    help="the private apt configuration, lists and download (kept)")
    ap.add_argument("--keep", type=int, default=None, metavar="N",
                    help="keep N recordings: every English one, then a seeded draw of the others (default: all)")
    ap.add_argument("--seed", type=int, default=0, help="--keep's draw")
    args = ap.parse_args(argv)
    if args.keep is not None and args.keep < 1:  # refused before the package is fetched or read
        ap.error(f"--keep: a positive count, got {args.keep}")
    try:
        deb = args.deb or fetch_deb(PACKAGE, VERSION, args.apt_dir / "debs" / DEB, args.apt_dir)
        check(deb)
        records = build(args.out, read_deb(deb, is_recording)[1], keep=args.keep, seed=args.seed)
    except FetchError as exc:
        print(f"fetch_tuxpaint_speech: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"out": str(args.out), "n": len(records),
                      "seconds": round(sum(r["duration"] for r in records), 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
