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
for _p in (REPO, REPO / "scripts"):  # mmlora; release_rule's report names
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from mmlora.ctc import ConfidenceGate, rescore_rows  # noqa: E402
from mmlora.fsutil import replace_text  # noqa: E402
from mmlora.metrics.wer import compute_wer  # noqa: E402
from mmlora.model import _both_share, _weights  # noqa: E402
from mmlora.pipelines import join_pieces, tidy_text  # noqa: E402
from release_rule import report_of  # noqa: E402


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


OWN = object()  # hypotheses' gate: the decoding's own


def gate_of(decoding: dict) -> ConfidenceGate | None:
    """The decoding's ``confidence_gate`` (None where it had none)."""
    return ConfidenceGate.parse(decoding.get("confidence_gate"))


def hypotheses(doc: dict, ctc: float, judge: float, share: float, second: float | None = None,
               gate: ConfidenceGate | None | object = OWN) -> list[str]:
    """Each utterance's transcript with these weights (``second``: the second judges', by default the decoding's
    own :func:`second_weight`; ``gate``: a :class:`ConfidenceGate` or None, by default the decoding's own):
    its pieces' picks joined as evaluate joins them."""
    rows, owner = rows_of(doc)
    second = second_weight(doc["decoding"]) if second is None else second
    gate = gate_of(doc["decoding"]) if gate is OWN else gate
    return join_pieces(rescore_rows(rows, ctc, judge, share, second, gate), owner, len(doc["utterances"]))


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


def _gate(text: str) -> dict | None:
    if text == "none":
        return None
    try:
        value = json.loads(text)
        ConfidenceGate.parse(value)
    except (json.JSONDecodeError, ValueError) as e:
        raise argparse.ArgumentTypeError(f"a JSON object of confidence_gate's fields, or none ({e})") from None
    return value


def _thresholds(text: str) -> list[float]:
    try:
        return [float(w) for w in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated numbers, got {text!r}") from None


def write_report(cands: Path, doc: dict, hyps: list[str], decoding: dict, out: Path) -> Path:
    """``out/<report's name>``: the report beside ``cands`` (its settings and skipped clips) with ``hyps`` scored
    as evaluate scores them and ``decoding`` as the weights that picked them; the reports of
    ``scripts/release_rule.py``, so that a rule can be read from a decoding's kept candidates."""
    from tasks.speech import Record, score_transcripts

    src = report_of(cands)
    try:
        base = json.loads(src.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"{src}: the report beside {cands} cannot be read ({e})")
    records = [Record(u["id"], u["reference"], None, None, 0, i, u.get("voice"))
               for i, u in enumerate(doc["utterances"])]
    keep = {k: base[k] for k in ("manifest", "task_modalities", "rates", "snr_db", "noise", "tokens_per_second")
            if k in base}
    report = {**keep, "decoding": decoding, "rescored_from": str(cands),
              **score_transcripts(records, hyps, base.get("skipped"))}
    out.mkdir(parents=True, exist_ok=True)
    replace_text(out / src.name, json.dumps(report))
    return out / src.name


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", type=Path, help="candidates files (mmlora evaluate --candidates)")
    p.add_argument("--ctc-weight", type=_floats, help="CTC weights (default: the decoding's)")
    p.add_argument("--whisper-weight", type=_floats, help="the Whisper judges' weights (default: the decoding's)")
    p.add_argument("--whisper-both", type=_floats, help="Whisper's own decoder's shares (default: the decoding's)")
    p.add_argument("--second-weight", type=_floats, help="the second judges' weights (a decoding with second "
                   "judges: its candidates carry their scores; default: each file's decoding's, shown as null)")
    p.add_argument("--gate", type=_gate, default=OWN, metavar="JSON",
                   help="confidence_gate's fields as a JSON object (e.g. '{\"judge\": \"trained\", \"below\": "
                   "-0.8, \"whisper_weight\": 1.0}'), or none "
                   "(default: each file's decoding's)")
    p.add_argument("--gate-bound", type=_thresholds,
                   help="the gate's bound (its above / below) to sweep (comma-separated, e.g. --gate-bound=-0.8,-0.5; "
                   "with --gate)")
    p.add_argument("--oracle", action="store_true", help="also each clip's best candidate")
    p.add_argument("--reports", type=Path, metavar="DIR",
                   help="one setting only: write each file's report with these picks into DIR (the report beside "
                   "each candidates file gives the rest), as scripts/release_rule.py reads reports")
    a = p.parse_args(argv)
    if a.gate_bound and not isinstance(a.gate, dict):
        p.error("--gate-bound sweeps the bound of a --gate")
    docs = [load(f) for f in a.files]
    own = (*own_weights(docs[0]["decoding"]), None)  # second_weight None: each file's decoding's own
    grid = [ws if ws is not None else [o]
            for ws, o in zip((a.ctc_weight, a.whisper_weight, a.whisper_both, a.second_weight), own)]
    bound = "above" if isinstance(a.gate, dict) and "above" in a.gate else "below"
    gates = [{**a.gate, bound: t} for t in a.gate_bound] if a.gate_bound else [a.gate]
    settings = list(itertools.product(*grid, gates))
    if a.reports and len(settings) != 1:
        p.error(f"--reports writes one setting's reports; these weights make {len(settings)}")
    for c, j, s, v, g in settings:
        line: dict = {"ctc_weight": c, "whisper_weight": j, "whisper_both": s, "second_weight": v,
                      **({} if g is OWN else {"gate": g}), "files": {}}
        gate = g if g is OWN else ConfidenceGate.parse(g)  # a JSON object as given, parsed once a setting
        for f, doc in zip(a.files, docs):
            hyps = hypotheses(doc, c, j, s, v, gate)
            e, n = errors(doc, hyps)
            line["files"][str(f)] = {"errors": e, "ref_words": n}
            if a.reports:
                dec = {**doc["decoding"], "ctc_weight": c, "whisper_weight": j, "whisper_both": s,
                       "second_judge_weight": second_weight(doc["decoding"]) if v is None else v}
                if g is not OWN:
                    dec.pop("confidence_gate", None)
                    dec.update({"confidence_gate": g} if g else {})
                line["files"][str(f)]["report"] = str(write_report(f, doc, hyps, dec, a.reports))
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
