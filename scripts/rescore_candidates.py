"""Choose rescoring weights from one decoding: the candidates that ``mmlora evaluate --candidates FILE`` kept, picked
again with other weights, and how far the best candidate of each clip would go (the oracle).

    mmlora evaluate --model M --manifest data/speech_release/st/val.jsonl --candidates outputs/st_val_cands.json
    python scripts/rescore_candidates.py outputs/st_val_cands.json --whisper-both 0,0.1,0.2,0.35,0.5 \\
        --whisper-weight 0.8,0.9 --oracle

Every combination of the given weights (each a comma-separated list; unset: the decoding's own) is scored on every
file, as ``mmlora evaluate`` scores a report (pieces joined, jiwer on normalized text): one JSON line each with the
word errors per file and in all. The picks are :func:`mmlora.ctc.rescore_rows`, the same arithmetic as ``generate``,
so the decoding's own weights give its report's hypotheses again. ``--oracle``: each clip's candidate with the
fewest word errors (a clip decoded in pieces keeps the decoding's own pick: its pieces have no references of their
own), an upper bound on what any weights could do with these candidates. Choose weights on validation sets only.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from mmlora.ctc import rescore_rows  # noqa: E402
from mmlora.metrics.wer import compute_wer  # noqa: E402
from mmlora.model import _both_share, _weights  # noqa: E402
from mmlora.pipelines import join_pieces, tidy_text  # noqa: E402


def load(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"{path}: not a candidates file ({e})")
    if not isinstance(doc, dict) or "utterances" not in doc or "decoding" not in doc:
        raise SystemExit(f"{path}: not a candidates file (no 'utterances' / 'decoding'; "
                         "write one with mmlora evaluate --candidates)")
    return doc


def own_weights(decoding: dict) -> tuple[float, float, float]:
    """The decoding's (ctc_weight, whisper_weight, share of Whisper's own decoder) as generate read them (a sweep's
    largest, as its search used)."""
    return (_weights("ctc_weight", decoding.get("ctc_weight", 0.0))[1],
            _weights("whisper_weight", decoding.get("whisper_weight", 0.0))[1],
            _both_share(decoding.get("whisper_both", False))[1])


def rows_of(doc: dict) -> tuple[list[dict], list[int]]:
    """Every piece's candidate row of ``doc`` and the utterance each belongs to."""
    rows, owner = [], []
    for i, u in enumerate(doc["utterances"]):
        rows += u["pieces"]
        owner += [i] * len(u["pieces"])
    return rows, owner


def second_weight(decoding: dict) -> float:
    """The decoding's ``second_judge_weight`` (0 where it asked no second judges): kept as it was in every pick."""
    return float(decoding.get("second_judge_weight") or 0.0)


def hypotheses(doc: dict, ctc: float, judge: float, share: float, second: float | None = None) -> list[str]:
    """Each utterance's transcript with these weights (``second``: the second judges', by default the decoding's
    own :func:`second_weight`): its pieces' picks joined as evaluate joins them."""
    rows, owner = rows_of(doc)
    second = second_weight(doc["decoding"]) if second is None else second
    return join_pieces(rescore_rows(rows, ctc, judge, share, second), owner, len(doc["utterances"]))


def errors(doc: dict, hyps: list[str]) -> tuple[int, int]:
    """(word errors, reference words) of ``hyps`` against the file's references."""
    r = compute_wer([u["reference"] for u in doc["utterances"]], hyps)
    return r.substitutions + r.deletions + r.insertions, r.ref_words


def oracle(doc: dict, own: list[str]) -> tuple[list[str], int]:
    """Each one-piece clip's candidate with the fewest word errors (the first on ties); a clip in pieces keeps
    ``own``; and how many clips were in pieces."""
    out, pieced = [], 0
    for u, mine in zip(doc["utterances"], own):
        if len(u["pieces"]) != 1:
            out.append(mine)
            pieced += 1
            continue
        texts = [tidy_text(t) for t in u["pieces"][0]["texts"]]
        errs = candidate_errors(u["reference"], texts)
        out.append(texts[errs.index(min(errs))])
    return out, pieced


def candidate_errors(reference: str, texts: list[str]) -> list[int]:
    """Each (tidied) candidate text's word errors against ``reference``, as evaluate counts them."""
    return [s.errors for s in compute_wer([reference] * len(texts), texts).utterances]


def _with_totals(line: dict) -> dict:
    """``line`` with its files' word errors and reference words summed, and their WER."""
    line["errors"] = sum(v["errors"] for v in line["files"].values())
    line["ref_words"] = sum(v["ref_words"] for v in line["files"].values())
    line["wer"] = round(line["errors"] / line["ref_words"], 5)
    return line


def _floats(text: str) -> list[float]:
    try:
        ws = [float(w) for w in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated numbers in [0, 1], got {text!r}")
    if not all(0.0 <= w <= 1.0 for w in ws):
        raise argparse.ArgumentTypeError(f"each weight must be in [0, 1], got {text!r}")
    return ws


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", type=Path, help="candidates files (mmlora evaluate --candidates)")
    p.add_argument("--ctc-weight", type=_floats, help="CTC weights (default: the decoding's)")
    p.add_argument("--whisper-weight", type=_floats, help="the Whisper judges' weights (default: the decoding's)")
    p.add_argument("--whisper-both", type=_floats, help="Whisper's own decoder's shares (default: the decoding's)")
    p.add_argument("--second-weight", type=_floats, help="the second judges' weights (a decoding with second "
                   "judges: its candidates carry their scores; default: each file's decoding's, shown as null)")
    p.add_argument("--oracle", action="store_true", help="also each clip's best candidate")
    a = p.parse_args(argv)
    docs = [load(f) for f in a.files]
    own = (*own_weights(docs[0]["decoding"]), None)  # second_weight None: each file's decoding's own
    grid = [ws if ws is not None else [o]
            for ws, o in zip((a.ctc_weight, a.whisper_weight, a.whisper_both, a.second_weight), own)]
    for c, j, s, v in itertools.product(*grid):
        line: dict = {"ctc_weight": c, "whisper_weight": j, "whisper_both": s, "second_weight": v, "files": {}}
        for f, doc in zip(a.files, docs):
            e, n = errors(doc, hypotheses(doc, c, j, s, v))
            line["files"][str(f)] = {"errors": e, "ref_words": n}
        print(json.dumps(_with_totals(line)))
    if a.oracle:
        line = {"oracle": True, "files": {}}
        for f, doc in zip(a.files, docs):
            best, pieced = oracle(doc, hypotheses(doc, *own_weights(doc["decoding"])))
            e, n = errors(doc, best)
            line["files"][str(f)] = {"errors": e, "ref_words": n, "clips_in_pieces": pieced}
        print(json.dumps(_with_totals(line)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
