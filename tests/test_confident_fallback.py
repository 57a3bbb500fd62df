"""``generate(confident_fallback={...})`` (:class:`mmlora.ctc.ConfidentFallback`, session 68): a sample whose
Whisper's own decoder is sure of it is ranked with the fallback's weights, every other with the decoding's. Checked
against a per-row reference written here from the formula, against generate with each weight set alone, and through
``scripts/rescore_candidates.py`` (kept candidates, its reports) and ``scripts/ensemble_candidate.py``."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from mmlora.ctc import ConfidentFallback, candidate_rows, own_confidence, rescore_rows

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import rescore_candidates  # noqa: E402


def _reference_pick(row: dict, main: tuple, fb: dict) -> str:
    """The fallback's choice for one row, from the formula: the own decoder's best candidate's score over its words
    decides which weights rank; ``(1 - v) * ((1 - j) * ((1 - c) * llm + c * ctc) + j * (s * own + (1 - s) * judge))
    + v * second``."""
    own = row["judges"][0]
    k = max(range(len(own)), key=lambda i: own[i])
    sure = own[k] / max(1, len(row["texts"][k].split())) >= fb["threshold"]
    c, j, s, v = ((fb.get("ctc_weight", 0.0), fb.get("whisper_weight", 0.9), fb.get("whisper_both", 0.5),
                   fb.get("second_judge_weight", 0.0)) if sure else main)
    totals = []
    for i in range(len(row["texts"])):
        t = (1 - c) * row["llm"][i] + c * row["ctc"][i]
        t = (1 - j) * t + j * (s * row["judges"][0][i] + (1 - s) * row["judges"][1][i])
        totals.append((1 - v) * t + v * row["second"][i])
    return row["texts"][max(range(len(totals)), key=lambda i: (totals[i], -i))]


def _rows(seed: int, n: int = 12, k: int = 5) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    texts = [" ".join(f"w{b}{m}" for m in range(1 + (b + i) % 4)) for b in range(n) for i in range(k)]
    llm, ctc, second = (torch.randn(n * k, generator=g) * 3 for _ in range(3))
    parts = torch.randn(2, n * k, generator=g) * 2 - 1
    return json.loads(json.dumps(candidate_rows(texts, llm, n, ctc, parts, second)))


def test_own_confidence_is_the_own_decoders_best_over_its_words():
    assert own_confidence(["a b", "c d e f", "g"], torch.tensor([-3.0, -2.0, -5.0])) == pytest.approx(-0.5)
    assert own_confidence(["", "x"], torch.tensor([-1.0, -4.0])) == pytest.approx(-1.0)  # no words: 1


def test_rows_pick_by_the_formula_with_each_rows_own_weights():
    rows = _rows(4)
    main = (0.0, 0.8, 0.3, 0.45)
    confs = sorted(own_confidence(r["texts"], torch.tensor(r["judges"][0])) for r in rows)
    fb = {"threshold": confs[len(confs) // 2], "ctc_weight": 0.2, "whisper_weight": 0.6, "whisper_both": 0.9}
    got = rescore_rows(rows, *main, fallback=ConfidentFallback.parse(fb))
    assert got == [_reference_pick(r, main, fb) for r in rows]
    plain, other = rescore_rows(rows, *main), rescore_rows(rows, 0.2, 0.6, 0.9, 0.0)
    assert plain != other  # the two weight sets differ here, so the gate's choice shows
    sure = [own_confidence(r["texts"], torch.tensor(r["judges"][0])) >= fb["threshold"] for r in rows]
    assert 0 < sum(sure) < len(rows)
    assert got == [o if s else p for p, o, s in zip(plain, other, sure)]
    assert rescore_rows(rows, *main, fallback=ConfidentFallback.parse({**fb, "threshold": math.inf})) == plain
    assert rescore_rows(rows, *main, fallback=ConfidentFallback.parse({**fb, "threshold": -math.inf})) == other
    one = [{**rows[0], "judges": rows[0]["judges"][:1]}]
    with pytest.raises(ValueError, match="candidate row 0: confident_fallback reads Whisper's own decoder"):
        rescore_rows(one, *main, fallback=ConfidentFallback.parse(fb))


@pytest.mark.parametrize("value, message", [
    ({"whisper_weight": 0.9}, "a dict with a 'threshold'"),
    (0.5, "a dict with a 'threshold'"),
    ({"threshold": -0.2, "weight": 1}, "unknown weight"),
    ({"threshold": -0.2, "whisper_both": 1.5}, r"whisper_both: in \[0, 1\]"),
    ({"threshold": -0.2, "whisper_weight": 0}, "not 0"),
    ({"threshold": -0.2, "second_judge_weight": 1.0}, r"second_judge_weight: in \[0, 1\)"),
    ({"threshold": True}, "threshold: a number"),
])
def test_bad_fallbacks_name_the_field(value, message):
    with pytest.raises(ValueError, match=message):
        ConfidentFallback.parse(value)
    assert ConfidentFallback.parse(None) is None and ConfidentFallback.parse(False) is None


def _both_model(monkeypatch):
    sys.path.insert(0, str(REPO / "tests" / "encoders"))
    from test_second_judges import _lora_of, _with_second_judges

    model = _with_second_judges(monkeypatch)
    model.whisper_encoder_lora = _lora_of(model, 5)  # a judge encoder of its own: whisper_both can run
    return model


def test_generate_ranks_each_sample_as_its_confidence_says(monkeypatch):
    model = _both_model(monkeypatch)
    from test_whisper_judge import _batch

    batch = _batch(model, 3)
    own, trained = model.whisper_judges(True)
    # Whisper's own decoder likes long texts, surer of some clips than others; the folder's judge likes short ones
    monkeypatch.setattr(own, "score", lambda f, c: 100.0 * torch.tensor([float(len(t)) for t in c])
                        - 1e4 * f.float().abs().mean())
    monkeypatch.setattr(trained, "score", lambda f, c: -100.0 * torch.tensor([float(len(t)) for t in c]))
    gen = {"max_new_tokens": 6, "num_beams": 3, "whisper_weight": 0.5, "whisper_both": 0.3, "whisper_proposal": 2}
    fb = {"whisper_weight": 0.5, "whisper_both": 1.0}
    rows: list = []
    plain = model.generate(batch, candidates=rows, **gen)
    other = model.generate(batch, **{**gen, "whisper_both": 1.0})
    assert plain != other  # the two weight sets pick differently here
    confs = sorted(own_confidence(r["texts"], torch.tensor(r["judges"][0])) for r in rows)
    assert len(set(confs)) == len(confs)
    mixed = None
    for t in (-math.inf, (confs[0] + confs[1]) / 2, (confs[1] + confs[2]) / 2, math.inf):
        kept: list = []
        got = model.generate(batch, candidates=kept, **gen, confident_fallback={"threshold": t, **fb})
        assert [r["texts"] for r in kept] == [r["texts"] for r in rows]  # the search does not depend on it
        assert got == rescore_rows(kept, 0.0, 0.5, 0.3, 0.0, ConfidentFallback.parse({"threshold": t, **fb}))
        sure = [own_confidence(r["texts"], torch.tensor(r["judges"][0])) >= t for r in kept]
        assert got == [o if s else p for p, o, s in zip(plain, other, sure)]
        mixed = mixed or (got != plain and got != other)
    assert mixed  # some threshold ranks some clips one way and others the other
    kept = []  # the fallback's second judges are asked though the decoding's are not
    got = model.generate(batch, candidates=kept, **gen, confident_fallback={"threshold": 0.0,
                                                                           "second_judge_weight": 0.6})
    assert all("second" in r for r in kept)
    assert got == rescore_rows(kept, 0.0, 0.5, 0.3, 0.0, ConfidentFallback.parse({"threshold": 0.0,
                                                                                  "second_judge_weight": 0.6}))
    with pytest.raises(ValueError, match="set whisper_weight and whisper_both"):
        model.generate(batch, **{**gen, "whisper_both": False}, confident_fallback={"threshold": 0.0})
    with pytest.raises(ValueError, match="not a sweep"):
        model.generate(batch, **{**gen, "whisper_both": [0.3, 0.5]}, confident_fallback={"threshold": 0.0})


def test_greedy_calls_drop_a_saved_fallback():
    from mmlora.pipelines import MediaPipeline

    pipe = MediaPipeline.__new__(MediaPipeline)
    pipe.generation = {"num_beams": 4, "whisper_weight": 0.9, "whisper_both": 0.3,
                       "confident_fallback": {"threshold": -0.2}}
    assert "confident_fallback" not in pipe.generation_for({"num_beams": 1})
    assert pipe.generation_for({})["confident_fallback"] == {"threshold": -0.2}


def _doc(seed: int, fallback: dict | None = None) -> dict:
    rows = _rows(seed, n=8)
    utts = [{"id": f"u{i}", "reference": r["texts"][(i * 3) % len(r["texts"])], "voice": "v" + str(i % 2),
             "pieces": [r]} for i, r in enumerate(rows)]
    dec = {"ctc_weight": 0.0, "whisper_weight": 0.8, "whisper_both": 0.3, "second_judge_weight": 0.45,
           **({"confident_fallback": fallback} if fallback else {})}
    return {"manifest": "m.jsonl", "decoding": dec, "utterances": utts}


def test_the_script_applies_sweeps_and_reports_the_fallback(tmp_path, capsys):
    doc = _doc(7, {"threshold": -0.5, "whisper_weight": 0.6})
    f = tmp_path / "set_beams8_float32.cands.json"
    f.write_text(json.dumps(doc))
    (tmp_path / "set_beams8_float32.json").write_text(json.dumps({"manifest": "m.jsonl", "skipped": [], "rates": {}}))
    main = (0.0, 0.8, 0.3, 0.45)
    rows = [u["pieces"][0] for u in doc["utterances"]]
    # unset: the decoding's own fallback; none: without it; a sweep of thresholds
    assert rescore_candidates.main([str(f)]) == 0
    assert rescore_candidates.main([str(f), "--fallback", "none"]) == 0
    assert rescore_candidates.main([str(f), "--fallback", '{"threshold": 0, "whisper_both": 0.9}',
                                    "--fallback-threshold=-2,-0.5,1"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    want_own = [_reference_pick(r, main, {"threshold": -0.5, "whisper_weight": 0.6}) for r in rows]
    assert lines[0]["errors"] == rescore_candidates.errors(doc, want_own)[0] and "fallback" not in lines[0]
    assert lines[1]["fallback"] is None
    assert lines[1]["errors"] == rescore_candidates.errors(doc, rescore_rows(rows, *main))[0]
    for line, t in zip(lines[2:], (-2.0, -0.5, 1.0)):
        assert line["fallback"] == {"threshold": t, "whisper_both": 0.9}
        want = [_reference_pick(r, main, {"threshold": t, "whisper_both": 0.9}) for r in rows]
        assert line["errors"] == rescore_candidates.errors(doc, want)[0]
    # --reports: each file's report with these picks, its settings from the report beside the candidates
    out = tmp_path / "rep"
    assert rescore_candidates.main([str(f), "--fallback", '{"threshold": -0.5}', "--reports", str(out)]) == 0
    line = json.loads(capsys.readouterr().out)
    rep = json.loads((out / "set_beams8_float32.json").read_text())
    want = [_reference_pick(r, main, {"threshold": -0.5}) for r in rows]
    assert [u["hypothesis"] for u in rep["utterances"]] == want
    assert rep["substitutions"] + rep["deletions"] + rep["insertions"] == line["errors"]
    assert rep["decoding"]["confident_fallback"] == {"threshold": -0.5} and rep["rescored_from"] == str(f)
    assert set(rep["by_voice"]) == {"v0", "v1"} and rep["manifest"] == "m.jsonl"
    with pytest.raises(SystemExit):
        rescore_candidates.main([str(f), "--whisper-both", "0.3,0.5", "--reports", str(out)])
    with pytest.raises(SystemExit):
        rescore_candidates.main([str(f), "--fallback-threshold=-1"])
    with pytest.raises(SystemExit):
        rescore_candidates.main([str(f), "--fallback", '{"whisper_weight": 0.9}'])
