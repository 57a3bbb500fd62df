"""`mmlora score-captions`: report contents, planted errors found end to end, clear input errors."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from mmlora.cli import main as mmlora_main
from mmlora.data.caption_events import Event
from mmlora.data.caption_grammar import perturbed_caption
from mmlora.metrics.caption import CaptionScoreConfig, main, read_jsonl, score_captions

MANIFEST = Path(__file__).parents[1] / "data" / "captions" / "manifest.jsonl"


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Predictions with known numbers of dropped / invented / repeated events."""
    path = tmp_path_factory.mktemp("preds") / "preds.jsonl"
    totals = {"missing": 0, "hallucinated": 0, "repeated": 0, "n_ref": 0}
    with open(path, "w") as f:
        for i, rec in enumerate(read_jsonl(MANIFEST)):
            r = random.Random(100 + i)
            events = [Event.from_json(e) for e in rec["events"]]
            cap, counts = perturbed_caption(events, r, r.randrange(3), r.randrange(3), r.randrange(2))
            for k, v in counts.items():
                totals[k] += v
            totals["n_ref"] += len(events)
            f.write(json.dumps({"id": rec["id"], "prediction": cap.text}) + "\n")
    return path, totals


def test_cli_report_finds_the_planted_errors(planted, tmp_path, capsys):
    preds, totals = planted
    out = tmp_path / "report.json"
    assert mmlora_main(["score-captions", "--manifest", str(MANIFEST), "--predictions", str(preds),
                        "--out", str(out), "--java", "no"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    report = json.loads(out.read_text())
    s = report["summary"]
    assert last["clips"] == s["clips"] == 32 and last["skipped"] == ["METEOR"] and s["METEOR"] is None
    assert s["missing_rate"] == pytest.approx(totals["missing"] / totals["n_ref"])
    assert s["hallucination_rate"] == pytest.approx(totals["hallucinated"] / totals["n_ref"])
    assert s["error_rate"] == pytest.approx((totals["missing"] + totals["hallucinated"]) / totals["n_ref"])
    assert report["event_counts"]["repeated"] == totals["repeated"] > 0
    assert last["error_rate"] == round(s["error_rate"], 4) and "clip_mean" in s
    clip = report["clips"][0]
    assert {"id", "prediction", "BLEU-4", "ROUGE-L", "CIDEr-D", "events"} <= set(clip)
    assert {"missing_events", "hallucinated_events", "repeated_events", "error_rate"} <= set(clip["events"])
    # the Python API gives the same report
    api = score_captions({r["id"]: r["prediction"] for r in read_jsonl(preds)}, read_jsonl(MANIFEST),
                         CaptionScoreConfig(java="no"))
    assert api["summary"] == s and api["clips"] == report["clips"]


def test_references_score_perfectly_on_events(tmp_path, capsys):
    preds = tmp_path / "p.jsonl"
    preds.write_text("".join(json.dumps({"id": r["id"], "caption": r["references"][0]}) + "\n"
                             for r in read_jsonl(MANIFEST)))
    main(["--manifest", str(MANIFEST), "--predictions", str(preds), "--java", "no", "--no-coco"])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["error_rate"] == 0.0 and last["repetition_rate"] == 0.0 and "BLEU-4" not in last


def test_input_errors_name_the_file_and_reason(tmp_path, planted):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "clip_00000", "prediction": "x"}\n{not json\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not valid JSON"):
        main(["--manifest", str(MANIFEST), "--predictions", str(bad)])
    bad.write_text('{"id": "clip_00000", "score": 3}\n')
    with pytest.raises(ValueError, match=r"needs a string field"):
        main(["--manifest", str(MANIFEST), "--predictions", str(bad)])
    bad.write_text('{"id": "nope", "prediction": "x"}\n')
    with pytest.raises(ValueError, match="not in the manifest"):
        main(["--manifest", str(MANIFEST), "--predictions", str(bad)])
    bad.write_text('{"id": "clip_00000", "prediction": "A red circle appears."}\n')
    with pytest.raises(ValueError, match="31 manifest clips have no prediction"):
        main(["--manifest", str(MANIFEST), "--predictions", str(bad), "--java", "no"])
    assert main(["--manifest", str(MANIFEST), "--predictions", str(bad), "--java", "no", "--allow-missing",
                 "--no-coco"]) == 0
    man = tmp_path / "m.jsonl"
    man.write_text(json.dumps({"id": "a", "references": ["x"], "events": [{"action": "fly"}]}) + "\n")
    bad.write_text('{"id": "a", "prediction": "x"}\n')
    with pytest.raises(ValueError, match=r"sample 'a' events\[0\]: 'action' must be one of"):
        main(["--manifest", str(man), "--predictions", str(bad), "--no-coco"])
