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
``scripts/setup_tts.sh --natural`` fetches its voices. The .deb's SHA-256 is checked against the pinned value; its
members are read in one pass from ``dpkg-deb --fsys-tarfile`` (nothing is unpacked), resampled to 16 kHz mono FLAC
(:func:`fetch_human_speech.to_16k_mono`).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import subprocess
import sys
import tarfile
from pathlib import Path

import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fetch_human_speech import FetchError, to_16k_mono, write_clip, write_manifest  # noqa: E402

PACKAGE, VERSION = "tuxpaint-stamps-default", "2022.06.04-1"
DEB = f"{PACKAGE}_{VERSION}_all.deb"
SHA256 = "6db6c1bfc870a47f1499d6203b083522eacb57c5f9c87d468f2e92eb6d9d5f34"
ROOT = "./usr/share/tuxpaint/stamps/"
LICENSE = "GPL-2+ (Debian tuxpaint-stamps-default, copyright file of the package)"
SOURCES = "deb http://deb.debian.org/debian bookworm main\n"


def fetch_deb(apt_dir: Path) -> Path:
    """``apt-get download PACKAGE=VERSION`` into ``apt_dir/debs`` under a private configuration (skipped where the
    file is there already); returns its path."""
    debs, path = apt_dir / "debs", apt_dir / "debs" / DEB
    if path.is_file():
        return path
    for d in ("etc", "lists/partial", "cache/archives/partial", "debs"):
        (apt_dir / d).mkdir(parents=True, exist_ok=True)
    (apt_dir / "etc" / "sources.list").write_text(SOURCES)
    opts = ["-o", f"Dir::Etc::SourceList={apt_dir / 'etc' / 'sources.list'}", "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::State::Lists={apt_dir / 'lists'}", "-o", f"Dir::Cache={apt_dir / 'cache'}"]
    for cmd in (["apt-get", *opts, "update", "-qq"], ["apt-get", *opts, "download", f"{PACKAGE}={VERSION}"]):
        res = subprocess.run(cmd, cwd=debs, capture_output=True, text=True)
        if res.returncode != 0:
            tail = " | ".join((res.stderr or res.stdout).strip().splitlines()[-3:])
            raise FetchError(f"{PACKAGE}={VERSION}: {' '.join(cmd[:1] + cmd[-2:])} failed "
                             f"(exit {res.returncode}): {tail}")
    if not path.is_file():
        raise FetchError(f"{PACKAGE}={VERSION}: apt-get download did not save {DEB} in {debs}")
    return path


def check(deb: Path) -> None:
    """The .deb's SHA-256 must be the pinned one."""
    with open(deb, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    if digest != SHA256:
        raise FetchError(f"{deb}: SHA-256 {digest}, expected {SHA256} ({DEB})")


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


def read_deb(deb: Path) -> dict[str, bytes]:
    """The stamps' ``*.ogg`` members of the .deb, read in one pass of its data archive."""
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    out = {}
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for info in tar:
                if info.isfile() and info.name.startswith(ROOT) and info.name.endswith(".ogg"):
                    out[info.name] = tar.extractfile(info).read()
    except (tarfile.TarError, OSError) as exc:
        raise FetchError(f"{deb}: not a readable .deb ({exc})") from None
    finally:
        proc.stdout.close()
        if proc.wait() != 0:
            raise FetchError(f"{deb}: dpkg-deb --fsys-tarfile failed (exit {proc.returncode})")
    return out


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
        deb = args.deb or fetch_deb(args.apt_dir)
        check(deb)
        records = build(args.out, read_deb(deb), keep=args.keep, seed=args.seed)
    except FetchError as exc:
        print(f"fetch_tuxpaint_speech: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"out": str(args.out), "n": len(records),
                      "seconds": round(sum(r["duration"] for r in records), 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
