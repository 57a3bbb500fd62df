"""Word errors in the clips whose reference holds the King James Bible's archaic forms (ye, thou, unto, doth, -eth and
-est words, ...), and how many of those archaic words themselves were read wrong (docs/ASR.md "ASR, next (session
59)": 106 of the release's 286 st/test errors were in 66 such clips).

    python scripts/archaic_errors.py REPORT [REPORT ...]

REPORT: an ``mmlora evaluate`` report (``utterances`` with ``ref_norm`` / ``hyp_norm``) or a
``scripts/whisper_decoder_probe.py`` report (``test``: ``ref`` and the ``untrained`` / ``trained`` greedy transcripts,
both counted). One line per transcript set."""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import jiwer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mmlora.metrics.wer import normalize_text  # noqa: E402

ARCH = {"ye", "thee", "thou", "thy", "thine", "doth", "hath", "shew", "unto", "saith", "yea", "art", "wast", "hast",
        "o"}


def archaic_clip(ref: str) -> bool:
    """A reference with an archaic word, or any word ending in -eth or -est."""
    return any(w in ARCH or re.search(r"(eth|est)$", w) for w in ref.split())


def count(pairs: list[tuple[str, str]]) -> dict[str, int]:
    """(normalized reference, normalized hypothesis) pairs -> errors, archaic clips, their errors, archaic words
    wrong (substituted or deleted: ARCH's words and -eth words of more than 4 letters)."""
    out = {"errors": 0, "clips": 0, "clip_errors": 0, "archaic_wrong": 0}
    for ref, hyp in pairs:
        if not ref.split():
            out["errors"] += len(hyp.split())
            continue
        o = jiwer.process_words(ref, hyp)
        e = o.substitutions + o.deletions + o.insertions
        out["errors"] += e
        if archaic_clip(ref):
            out["clips"] += 1
            out["clip_errors"] += e
        out["archaic_wrong"] += sum(w in ARCH or (w.endswith("eth") and len(w) > 4) for a in o.alignments[0]
                                    if a.type not in ("insert", "equal")
                                    for w in o.references[0][a.ref_start_idx:a.ref_end_idx])
    return out


def transcript_sets(report: dict) -> dict[str, list[tuple[str, str]]]:
    if "utterances" in report:
        return {"": [(u["ref_norm"], u.get("hyp_norm") or "") for u in report["utterances"]]}
    if isinstance(report.get("test"), list):
        return {k: [(normalize_text(u["ref"]), normalize_text(u.get(k) or "")) for u in report["test"]]
                for k in ("untrained", "trained")}
    raise ValueError("neither an mmlora evaluate report (utterances) nor a decoder probe's (test)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("reports", nargs="+", type=Path)
    a = p.parse_args(argv)
    for path in a.reports:
        try:
            sets = transcript_sets(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as e:
            print(f"archaic_errors: {path}: {e}", file=sys.stderr)
            return 2
        for name, pairs in sets.items():
            c = count(pairs)
            print(f"{path}{' ' + name if name else ''}: {c['errors']} errors; {c['clips']} clips with archaic forms "
                  f"hold {c['clip_errors']}; {c['archaic_wrong']} archaic words wrong")
    return 0


if __name__ == "__main__":
    sys.exit(main())
