#!/usr/bin/env python
"""A third, separate set of real human English speech: Tux Paint's spoken stamp descriptions (session 54).

Debian's ``tuxpaint-stamps-default`` (bookworm, 2022.06.04-1, GPL-2+; 161 MB) ships, beside each stamp's picture, a
recording of a person reading its English description (``NAME_desc.ogg``; other languages are ``NAME_desc_LL.ogg``)
and the description's text as the first line of ``NAME.txt``. Every English recording with such a text becomes a
clip: 65 of them (``wallaby_desc.ogg`` has no text), "A wombat.", "Two wild boars.", 0.5–1.6 s each, one or two words
beside the article. They are short and name one thing each, so they test rare words more than running speech; they
are human speech that no choice of ours has been made on (the release rule's 40 clips are ``fetch_human_speech.py``'s),
for choosing a decoding setting before the rule is asked::

    python scripts/fetch_tuxpaint_speech.py --out data/human_speech            # -> tuxpaint.jsonl, audio/tux-*.flac
    python scripts/fetch_tuxpaint_speech.py --out OUT --deb tuxpaint-stamps-default_2022.06.04-1_all.deb

Without ``--deb`` the package is fetched with ``apt-get download`` under a private apt configuration (its own
sources.list naming bookworm, lists and cache in ``--apt-dir``; /etc/apt is never touched), as
``scripts/setup_tts.sh --natural`` fetches its voices. The .deb's SHA-256 is checked against the pinned value; its
members are read in one pass from ``dpkg-deb --fsys-tarfile`` (nothing is unpacked), resampled to 16 kHz mono FLAC
(:func:`fetch_human_speech.to_16k_mono`). Texts are kept as the package gives them ("A mountaingoat.",
"An hippopotamus."); our WER normalises case and punctuation.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fetch_human_speech import SR, FetchError, to_16k_mono  # noqa: E402

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
            raise FetchError(f"{PACKAGE}={VERSION}: {' '.join(cmd[:1] + cmd[-2:])} failed (exit {res.returncode}): {tail}")
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
    """``(stamp path without suffix, English text, ogg bytes)`` for every ``*_desc.ogg`` whose ``.txt`` is there and
    has a first line, sorted by path. ``members``: a member name (``./usr/share/...``) -> its bytes."""
    out = []
    for name, data in sorted(members.items()):
        if not name.endswith("_desc.ogg"):
            continue
        stem = name[: -len("_desc.ogg")]
        lines = members.get(stem + ".txt", b"").decode("utf-8", "replace").splitlines()
        if lines and lines[0].strip():
            out.append((stem, lines[0].strip(), data))
    return out


def read_deb(deb: Path) -> dict[str, bytes]:
    """The stamps' ``*_desc.ogg`` and ``*.txt`` members of the .deb, read in one pass of its data archive."""
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    out = {}
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for info in tar:
                if info.isfile() and info.name.startswith(ROOT) and info.name.endswith(("_desc.ogg", ".txt")):
                    out[info.name] = tar.extractfile(info).read()
    except (tarfile.TarError, OSError) as exc:
        raise FetchError(f"{deb}: not a readable .deb ({exc})") from None
    finally:
        proc.stdout.close()
        if proc.wait() != 0:
            raise FetchError(f"{deb}: dpkg-deb --fsys-tarfile failed (exit {proc.returncode})")
    return out


def build(out: Path, members: dict[str, bytes], manifest: str = "tuxpaint.jsonl") -> list[dict]:
    """``out/audio/tux-<stamp>.flac`` and ``out/<manifest>`` for every clip of :func:`clips_of`."""
    (out / "audio").mkdir(parents=True, exist_ok=True)
    records = []
    for stem, text, data in clips_of(members):
        try:
            x, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise FetchError(f"{stem}_desc.ogg: cannot decode audio ({exc})") from None
        x = to_16k_mono(x, int(sr))
        cid = "tux-" + stem[len(ROOT):].replace("/", "-")
        rel = f"audio/{cid}.flac"
        sf.write(str(out / rel), x, SR, subtype="PCM_16")
        records.append({"id": cid, "audio": rel, "text": text, "voice": "tuxpaint", "split": "test",
                        "source": f"{PACKAGE}={VERSION}: {stem}_desc.ogg; text: first line of {stem}.txt",
                        "license": LICENSE, "duration": round(len(x) / SR, 3)})
    with open(out / manifest, "w") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    return records


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="output folder (audio/ and tuxpaint.jsonl)")
    ap.add_argument("--deb", type=Path, help=f"a local {DEB} (default: apt-get download it)")
    ap.add_argument("--apt-dir", type=Path, default=Path.home() / ".cache" / "mmlora" / "tuxpaint-apt",
                    help="the private apt configuration, lists and download (kept)")
    args = ap.parse_args(argv)
    try:
        deb = args.deb or fetch_deb(args.apt_dir)
        check(deb)
        records = build(args.out, read_deb(deb))
    except FetchError as exc:
        print(f"fetch_tuxpaint_speech: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"out": str(args.out), "n": len(records),
                      "seconds": round(sum(r["duration"] for r in records), 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
