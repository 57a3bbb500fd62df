#!/usr/bin/env python
"""Decode the audio of speech manifests once into 16-bit WAV, for training runs whose data loader is bound by
decoding: a 3 s Ogg/Opus clip takes about 5.4 ms to decode on one core, the same clip as WAV 0.4 ms
(docs/TRAINING.md, "Feeding the GPU"). Compressed corpora travel small; decoded, they load fast.

    python scripts/decode_audio.py DATA/train.jsonl [MORE.jsonl ...] --out DIR [--workers N]

Each manifest ``…/NAME/M.jsonl`` is written to ``DIR/NAME/M.jsonl``: every line as it was, its audio path
pointing to a WAV under ``DIR/NAME/audio_wav/`` named after the source's last three path parts (mono, 16 kHz: what the loader makes of any input,
``mmlora.data.media.load_audio``; PCM_16 differs from the decoded float by at most half a step, 1.5e-5) and
other media paths (lip videos) to the original files. A WAV already there and newer than its source is kept,
so a second run only adds what is new. A file that cannot be decoded is named; its line keeps the original
file (a training run then skips it with a counted warning) and the exit status is 1.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmlora.fsutil import replace_file, replace_text  # noqa: E402


def _decode(job: tuple[str, str]) -> str | None:
    """Write ``dst`` (WAV) from ``src``; None, or the reason it failed."""
    import soundfile as sf

    from mmlora.data.media import SAMPLE_RATE, load_audio

    src, dst = job
    try:
        if os.path.exists(dst) and os.path.getmtime(dst) >= os.path.getmtime(src):
            return None
        wav = load_audio(src).numpy()
        with replace_file(dst, suffix=".wav") as tmp:  # never a half-written WAV under the final name
            sf.write(tmp, wav, SAMPLE_RATE, subtype="PCM_16")
        return None
    except Exception as e:  # noqa: BLE001 - any failure is reported with the file's name
        return f"{src}: {e}"


def _media_fields(d: dict) -> tuple[list[tuple[str, int | None]], list[tuple[str, int | None]]]:
    """(audio, other media) locations of a manifest line: ``(key, None)`` for plain form (``audio``, ``video``,
    ``image``), ``(key, i)`` for chat form (``audios``, ... : the collate's MEDIA_KEYS)."""
    from mmlora.data.collate import MEDIA_KEYS

    audio, other = [], []
    for mod, key in MEDIA_KEYS.items():
        if "messages" in d:
            locs = [(key, i) for i, _ in enumerate(d.get(key) or [])]
        else:
            locs = [(mod, None)] if d.get(mod) else []
        (audio if mod == "audio" else other).extend(locs)
    return audio, other


def _get(d: dict, loc: tuple[str, int | None]) -> str:
    key, i = loc
    return d[key] if i is None else d[key][i]


def _set(d: dict, loc: tuple[str, int | None], value: str) -> None:
    key, i = loc
    if i is None:
        d[key] = value
    else:
        d[key] = list(d[key])
        d[key][i] = value


def plan(manifests: list[Path], out: Path):
    """For each output manifest its lines as ``(dict, [(location, source, wav)])`` (other media paths already
    rewritten), and the (source, WAV) pairs to decode."""
    outputs: dict[Path, list[tuple[dict, list]]] = {}
    jobs: dict[str, str] = {}
    from mmlora.data.jsonl import iter_jsonl

    for m in manifests:
        m = m.resolve()
        dst_dir = out / m.parent.name
        dst = dst_dir / m.name
        if dst in outputs:
            raise ValueError(f"{m}: two manifests would be written to {dst} (same folder and file names)")
        rows = []
        for _, d in iter_jsonl(m):  # names the file and line of a bad one
            audio, other = _media_fields(d)
            todo = []
            for loc in audio:
                src = (m.parent / _get(d, loc)).resolve()
                wav = jobs.setdefault(str(src), str(dst_dir / "audio_wav" / _key(src)))
                todo.append((loc, str(src), wav))
            for loc in other:
                _set(d, loc, os.path.relpath((m.parent / _get(d, loc)).resolve(), dst_dir))
            rows.append((d, todo))
        outputs[dst] = rows
    return outputs, list(jobs.items())


def _key(src: Path) -> str:
    """A WAV name unique to ``src``: its last three path parts (corpus/audio/clip) joined, suffix .wav."""
    return "__".join(src.parts[-3:]).rsplit(".", 1)[0] + ".wav"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("manifests", nargs="+", type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = p.parse_args(argv)
    try:
        outputs, jobs = plan(args.manifests, args.out.resolve())
    except (ValueError, FileNotFoundError) as e:
        print(f"decode_audio: error: {e}", file=sys.stderr)
        return 2
    if len({w for _, w in jobs}) != len(jobs):
        print("decode_audio: error: two audio files map to one WAV name", file=sys.stderr)
        return 2
    if args.workers > 1:
        with Pool(args.workers) as pool:
            errors = pool.map(_decode, jobs, chunksize=64)
    else:
        errors = [_decode(j) for j in jobs]
    failed = {src: err for (src, _), err in zip(jobs, errors) if err}
    for dst, rows in outputs.items():
        lines = []
        for d, todo in rows:  # a line whose audio failed keeps its original file
            for loc, src, wav in todo:
                _set(d, loc, os.path.relpath(src if src in failed else wav, dst.parent))
            lines.append(json.dumps(d, ensure_ascii=False) + "\n")
        replace_text(dst, "".join(lines))
    print(json.dumps({"manifests": [str(d) for d in outputs], "files": len(jobs), "failed": len(failed)}))
    for err in list(failed.values())[:20]:
        print(f"decode_audio: cannot decode {err}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
