"""Merge the training splits of several corpora under one folder into one manifest.

    python scripts/merge_manifests.py DATA OUT.jsonl SUB[xREP] ... [--video] [--drop-voice V ...]

Reads DATA/SUB/train.jsonl for each SUB and writes DATA/OUT.jsonl: media paths made relative to DATA
(``SUB/audio/…``), ids prefixed with ``SUB-`` (and suffixed ``-j`` for the j-th of REP copies when a corpus is listed
REP > 1 times), lip videos kept only with ``--video`` (otherwise ``"video": null``), clips of a ``--drop-voice`` left
out (a voice held out for a test set). The release script (``scripts/train_asr_release.sh``) and the GRID script
(``scripts/train_grid.sh``) build their training manifests with it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mmlora.fsutil import replace_file  # noqa: E402


def parse_part(spec: str) -> tuple[str, int]:
    """``"n15x2"`` -> ``("n15", 2)``; ``"w9"`` -> ``("w9", 1)``."""
    sub, sep, rep = spec.rpartition("x")
    if sep and sub and rep.isdigit():
        if int(rep) < 1:
            raise ValueError(f"{spec}: the repeat count must be at least 1")
        return sub, int(rep)
    return spec, 1


def merge(root: str | Path, name: str, parts: list[tuple[str, int]], keep_video: bool,
          drop_voices: tuple[str, ...] = ()) -> int:
    """Write ``root/name`` from ``root/SUB/train.jsonl`` of each ``(SUB, REP)``; returns the lines written."""
    root = Path(root)
    sources = [root / sub / "train.jsonl" for sub, _ in parts]
    for src in sources:  # all present before anything is written
        if not src.is_file():
            raise FileNotFoundError(f"{src}: no such manifest")
    n = 0
    with replace_file(root / name) as tmp, open(tmp, "w") as out:  # the file closes before it is renamed
        for (sub, rep), src in zip(parts, sources):
            lines = src.read_text().splitlines()
            for k, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    r = json.loads(line)
                    r["audio"], rid = f"{sub}/{r['audio']}", f"{sub}-{r['id']}"
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    raise ValueError(f"{src}:{k}: not a manifest line with 'audio' and 'id' fields ({e})") from None
                if r.get("voice") in drop_voices:
                    continue
                r["video"] = f"{sub}/{r['video']}" if keep_video and r.get("video") else None
                for j in range(rep):
                    out.write(json.dumps({**r, "id": rid + (f"-{j}" if rep > 1 else "")}) + "\n")
                    n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", help="the folder holding the corpora (paths in the output are relative to it)")
    p.add_argument("out", help="the output manifest's name, written inside ROOT")
    p.add_argument("parts", nargs="+", help="corpus folders under ROOT, SUBxREP to list one REP times")
    p.add_argument("--video", action="store_true", help="keep the lip videos (default: audio only)")
    p.add_argument("--drop-voice", action="append", default=[], help="leave out this voice's clips (repeatable)")
    args = p.parse_intermixed_args(argv)
    try:
        n = merge(args.root, args.out, [parse_part(s) for s in args.parts], args.video, tuple(args.drop_voice))
    except (OSError, ValueError) as e:
        print(f"merge_manifests: {e}", file=sys.stderr)
        return 2
    print(f"{Path(args.root) / args.out}: {n} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
