"""How many words could lips tell apart? A context-free ceiling for lip reading on the generated lip video.

The corpus draws the mouth from visemes (``mmlora.data.lipvideo``: 13 targets of (open, width, round), blurred and
averaged per 40 ms frame). Each word's visemes come from espeak-ng's phonemes (``espeak-ng -q -x --sep=_``, the
mnemonics ``phone_to_visemes`` reads), repeats and rests dropped. Words with the same viseme string look alike
(homophenes). For each test word the ceiling counts it right when it is the most frequent training word of its
class (a class of words that never occur in training is a tie, counted wrong): a reader that sees every viseme
exactly, knows where each word starts, and uses no context. With
``--merge-below D`` visemes whose (open, width, round) targets lie closer than D are merged first, for a reader that
cannot tell those shapes apart.

    python scripts/viseme_ceiling.py --train data/open/op12/train.jsonl --test data/open/op12/test.jsonl \\
        --merge-below 0.1 0.2
"""
from __future__ import annotations

import argparse
import collections
import itertools
import math
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mmlora.data.jsonl import iter_jsonl  # noqa: E402
from mmlora.data.lipvideo import VISEMES, phone_to_visemes  # noqa: E402
from mmlora.metrics.wer import normalize_text  # noqa: E402


def espeak_phonemes(words: list[str]) -> list[str]:
    """espeak-ng's phoneme mnemonics of each word, phonemes separated by "_" (one word per line in and out)."""
    if not shutil.which("espeak-ng"):
        raise RuntimeError("espeak-ng is not installed (bash scripts/setup_tts.sh installs it)")
    out = subprocess.run(["espeak-ng", "-q", "-x", "--sep=_"], input="\n".join(words), capture_output=True,
                         text=True, check=True).stdout.strip().split("\n")
    if len(out) != len(words):
        raise RuntimeError(f"espeak-ng gave {len(out)} lines for {len(words)} words")
    return [line.strip() for line in out]


def merge_map(below: float) -> dict[str, str]:
    """Each viseme -> the name of its group, visemes closer than ``below`` joined (transitively)."""
    parent = {v: v for v in VISEMES}

    def root(v: str) -> str:
        while parent[v] != v:
            v = parent[v]
        return v

    for a, b in itertools.combinations(VISEMES, 2):
        if math.dist(VISEMES[a], VISEMES[b]) < below:
            parent[root(b)] = root(a)
    return {v: root(v) for v in VISEMES}


def viseme_string(phonemes: str, merge: dict[str, str] | None = None) -> tuple[str, ...]:
    """The visemes of a word's phonemes ("_"-separated), merged, rests dropped, repeats collapsed."""
    merge = merge or {}
    rest = merge.get("sil", "sil")
    out: list[str] = []
    for p in phonemes.replace(" ", "_").split("_"):
        for v in phone_to_visemes(p) if p else ():
            v = merge.get(v, v)
            if v != rest and (not out or out[-1] != v):
                out.append(v)
    return tuple(out)


def ceiling(train: list[list[str]], test: list[list[str]], phonemes: dict[str, str],
            merge: dict[str, str] | None = None) -> dict:
    """Classes of look-alike words and the share of test words a context-free reader of exact visemes gets right."""
    freq = collections.Counter(w for s in train for w in s)
    vis = {w: viseme_string(p, merge) for w, p in phonemes.items()}
    classes: dict[tuple[str, ...], collections.Counter] = collections.defaultdict(collections.Counter)
    for w in phonemes:
        classes[vis[w]][w] += freq.get(w, 0)
    right = alone = total = 0
    for w in (w for s in test for w in s):
        total += 1
        members = classes[vis[w]]
        # the most frequent training word of the class; on a tie (unseen words: 0) the reader cannot know it is w
        top = max(members.values())
        right += members[w] == top and sum(1 for c in members.values() if c == top) == 1
        alone += all(x == w or members[x] == 0 for x in members)
    return {"visemes": len(set((merge or {v: v for v in VISEMES}).values())), "words": len(phonemes),
            "classes": len(classes), "test_words": total, "alone": alone / total, "right": right / total}


def sentences(manifest: Path) -> list[list[str]]:
    """Each line's normalized words (``mmlora.data.jsonl`` reads the lines and names a bad one)."""
    try:
        rows = list(iter_jsonl(manifest))
    except (OSError, ValueError) as e:
        raise ValueError(f"{manifest}: not a manifest with a text field ({e})") from None
    missing = next((n for n, r in rows if not isinstance(r.get("text"), str)), None)
    if missing is not None:
        raise ValueError(f"{manifest}: not a manifest with a text field (line {missing} has none)")
    return [normalize_text(r["text"]).split() for _, r in rows]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", type=Path, required=True, help="manifest whose texts give the words' frequencies")
    p.add_argument("--test", type=Path, required=True)
    p.add_argument("--merge-below", type=float, nargs="*", default=[], help="also with visemes closer than D merged")
    a = p.parse_args(argv)
    try:
        train, test = sentences(a.train), sentences(a.test)
        words = sorted({w for s in train + test for w in s})
        phon = dict(zip(words, espeak_phonemes(words)))
    except (ValueError, RuntimeError, subprocess.CalledProcessError) as e:
        print(f"viseme_ceiling: {e}", file=sys.stderr)
        return 2
    print("| visemes | merged | classes (words) | test words no other training word looks like | right by the class's most frequent word |")
    print("|---|---|---|---|---|")
    for below in [0.0, *a.merge_below]:
        m = merge_map(below)
        r = ceiling(train, test, phon, m)
        groups = collections.defaultdict(list)
        for v, g in m.items():
            groups[g].append(v)
        joined = "; ".join(" + ".join(g) for g in groups.values() if len(g) > 1) or "none"
        print(f"| {r['visemes']} | {joined if below else 'none (as drawn)'} | {r['classes']} ({r['words']}) | "
              f"{100 * r['alone']:.1f} % | {100 * r['right']:.1f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
