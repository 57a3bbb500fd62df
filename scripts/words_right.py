"""Which reference words a model got right: jiwer's word alignment of each clip of ``mmlora evaluate`` reports
(``ref_norm`` against ``hyp_norm``), counting the reference words aligned as equal. The words among the K most
frequent of the first report's references (function words, mostly) are counted apart from the rest, so that a lip
reader that only lines up "the" and "I" in a sentence of the right length can be told from one that reads words.

    python scripts/words_right.py REPORT.json [REPORT.json ...] [--common 40] [--top 15]

One Markdown table row per report: words right (of the references' words), words right outside the K most frequent
(of how many), and the words outside them that were right most often. Reports of the same manifest (the same
clips, e.g. a model with the right lips and with the next clip's lips) are comparable row by row.
"""
from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import jiwer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mmlora.metrics.wer import report_utterances  # noqa: E402


def utterances(path: Path) -> list[dict]:
    try:
        return report_utterances(path)
    except ValueError as e:
        raise SystemExit(str(e)) from None


def words_right(utts: list[dict]) -> tuple[collections.Counter, collections.Counter]:
    """(reference words aligned as equal, all reference words), each a Counter over the words."""
    right, ref = collections.Counter(), collections.Counter()
    for u in utts:
        r = u["ref_norm"].split()
        ref.update(r)
        if not r or not u["hyp_norm"].split():
            continue
        for a in jiwer.process_words(u["ref_norm"], u["hyp_norm"]).alignments[0]:
            if a.type == "equal":
                right.update(r[a.ref_start_idx:a.ref_end_idx])
    return right, ref


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("reports", nargs="+", type=Path)
    p.add_argument("--common", type=int, default=40, help="the K most frequent reference words counted apart")
    p.add_argument("--top", type=int, default=15, help="how many of the other words right to name")
    a = p.parse_args(argv)
    rows = [(path, *words_right(utterances(path))) for path in a.reports]
    common = {w for w, _ in rows[0][2].most_common(a.common)}
    print(f"| report | words right | outside the {a.common} most frequent | right most often (outside them) |")
    print("|---|---|---|---|")
    for path, right, ref in rows:
        other = {w: n for w, n in right.items() if w not in common}
        n_other = sum(n for w, n in ref.items() if w not in common)
        top = ", ".join(f"{w} {n}" for w, n in sorted(other.items(), key=lambda kv: (-kv[1], kv[0]))[:a.top])
        print(f"| {path} | {sum(right.values())} of {sum(ref.values())} | {sum(other.values())} of {n_other} | {top} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
