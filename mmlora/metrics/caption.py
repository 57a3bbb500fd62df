"""Caption scoring: COCO metrics (``coco``) + event-level rates (``event_metric``) in one report.

Python API (what ``mmlora evaluate`` calls for caption tasks)::

    report = score_captions(predictions, samples, CaptionScoreConfig())
    report["summary"]   # corpus numbers;  report["clips"]: per-clip details

CLI (prints a one-line JSON summary last)::

    mmlora score-captions --manifest tests/data/captions/manifest.jsonl \\
        --predictions preds.jsonl --out report.json

``samples`` are manifest lines (DESIGN.md form): the reference captions are the ``references``
field when present (else the assistant message), and the exact events the ``events`` field.
Predictions JSONL: one ``{"id": ..., "prediction": "..."}`` per clip (``caption``, ``text`` or
``response`` are accepted as the text field).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from mmlora.data.caption_events import Event
from mmlora.data.jsonl import read_jsonl

from .coco import CocoConfig, coco_scores
from .event_metric import CaptionJudge, ProceduralJudge, aggregate

TEXT_FIELDS = ("prediction", "caption", "text", "response")


@dataclass(frozen=True)
class CaptionScoreConfig:
    """What to compute and how."""

    coco: bool = True                 # BLEU / METEOR / ROUGE-L / CIDEr-D
    events: bool = True               # missing / hallucination / repetition / error rates
    java: str = "auto"                # COCO tokenizer + METEOR: "auto", "yes" or "no" (see coco.py)
    reference_field: str = "references"  # manifest field with reference captions (else the assistant turn)
    allow_missing: bool = False       # score clips without a prediction as the empty caption


def load_predictions(path: str | Path) -> dict[str, str]:
    """{id: caption} from a predictions JSONL (see the module docstring)."""
    preds: dict[str, str] = {}
    for n, rec in enumerate(read_jsonl(path), 1):
        if "id" not in rec:
            raise ValueError(f"{path}: record {n} has no 'id' field")
        field = next((f for f in TEXT_FIELDS if f in rec), None)
        if field is None or not isinstance(rec[field], str):
            raise ValueError(f"{path}: record {n} (id {rec['id']!r}) needs a string field, one of {TEXT_FIELDS}")
        if str(rec["id"]) in preds:
            raise ValueError(f"{path}: id {rec['id']!r} appears twice")
        preds[str(rec["id"])] = rec[field]
    return preds


def references_of(sample: dict[str, Any], field: str = "references") -> list[str]:
    """Reference captions of a manifest sample: ``field`` if present, else the assistant message(s)."""
    refs = sample.get(field)
    if refs is None:
        refs = [m["content"] for m in sample.get("messages", []) if m.get("role") == "assistant"]
    if isinstance(refs, str):
        refs = [refs]
    if not refs or not all(isinstance(r, str) for r in refs):
        raise ValueError(f"sample {sample.get('id')!r}: no reference captions ('{field}' or an assistant message)")
    return list(refs)


def events_of(sample: dict[str, Any]) -> list[Event] | None:
    if "events" not in sample:
        return None
    if not isinstance(sample["events"], list):
        raise ValueError(f"sample {sample.get('id')!r}: 'events' must be a list")
    return [Event.from_json(e, f"sample {sample.get('id')!r} events[{i}]") for i, e in enumerate(sample["events"])]


def score_captions(predictions: dict[str, str], samples: Sequence[dict[str, Any]],
                   cfg: CaptionScoreConfig | None = None, judge: CaptionJudge | None = None) -> dict[str, Any]:
    """Score ``predictions`` {id: caption} against manifest ``samples``; return the JSON report."""
    cfg = cfg or CaptionScoreConfig()
    judge = judge or ProceduralJudge()
    if any(s.get("id") is None for s in samples):
        raise ValueError("every manifest sample needs an 'id'")
    ids = [str(s["id"]) for s in samples]
    if len(set(ids)) != len(ids):
        raise ValueError(f"manifest ids must be unique; repeated: {sorted(i for i in set(ids) if ids.count(i) > 1)[:3]}")
    unknown = sorted(set(predictions) - set(ids))
    if unknown:
        raise ValueError(f"{len(unknown)} predictions have ids not in the manifest, e.g. {unknown[:3]}")
    absent = [i for i in ids if i not in predictions]
    if absent and not cfg.allow_missing:
        raise ValueError(f"{len(absent)} manifest clips have no prediction, e.g. {absent[:3]} "
                         "(allow_missing / --allow-missing scores them as empty captions)")
    preds = {i: predictions.get(i, "") for i in ids}
    refs = {i: references_of(s, cfg.reference_field) for i, s in zip(ids, samples)}
    clips: list[dict[str, Any]] = [{"id": i, "prediction": preds[i]} for i in ids]
    summary: dict[str, Any] = {"clips": len(ids), "missing_predictions": len(absent)}
    if cfg.coco:
        res = coco_scores(refs, preds, CocoConfig(java=cfg.java))
        summary.update(res.corpus)
        summary["tokenizer"], summary["skipped"] = res.tokenizer, res.skipped
        for c in clips:
            c.update(res.per_clip[c["id"]])
    counts = None
    if cfg.events:
        judgements = []
        for c, s in zip(clips, samples):
            j = judge.judge(preds[c["id"]], events_of(s), refs[c["id"]])
            judgements.append(j)
            c["events"] = j.to_json()
        agg = aggregate(judgements)
        summary.update(agg["global"])
        summary["clip_mean"] = agg["clip_mean"]
        summary["judge"] = judge.name
        counts = agg["counts"]
    return {"summary": summary, "event_counts": counts, "clips": clips}


def main(argv: list[str] | None = None) -> int:
    """``mmlora score-captions``: write the JSON report, print a one-line JSON summary last."""
    p = argparse.ArgumentParser(prog="mmlora score-captions", description=__doc__.split("\n")[0])
    p.add_argument("--manifest", required=True, help="manifest JSONL with references (and events)")
    p.add_argument("--predictions", required=True, help="JSONL of {id, prediction}")
    p.add_argument("--out", help="report JSON path (default: print only the summary)")
    p.add_argument("--java", choices=("auto", "yes", "no"), default="auto",
                   help="PTB tokenizer + METEOR need Java; 'no' uses the Python tokenizer and skips METEOR")
    p.add_argument("--no-coco", action="store_true", help="skip BLEU/METEOR/ROUGE-L/CIDEr-D")
    p.add_argument("--no-events", action="store_true", help="skip the event-level rates")
    p.add_argument("--reference-field", default="references")
    p.add_argument("--allow-missing", action="store_true", help="score clips without a prediction as empty")
    a = p.parse_args(argv)
    cfg = CaptionScoreConfig(coco=not a.no_coco, events=not a.no_events, java=a.java,
                             reference_field=a.reference_field, allow_missing=a.allow_missing)
    samples = read_jsonl(a.manifest)
    report = score_captions(load_predictions(a.predictions), samples, cfg)
    report["manifest"], report["predictions"] = str(a.manifest), str(a.predictions)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in report["summary"].items()
                      if k != "clip_mean"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
