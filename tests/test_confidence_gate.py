"""``generate(confidence_gate={...})`` (:class:`mmlora.ctc.ConfidenceGate`, session 68): a sample whose judge (Whisper's
own decoder, or the folder's trained judge) is sure of it (``above``) or unsure (``below``) is ranked with the gate's
weights, every other with the decoding's. Checked against a per-row reference written here from the formula, against
generate with each weight set alone, and through ``scripts/rescore_candidates.py`` (kept candidates, its reports)."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from mmlora.ctc import ConfidenceGate, candidate_rows, judge_confidence, rescore_rows

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import rescore_candidates  # noqa: E402

GATE_WEIGHTS = {"ctc_weight": 0.0, "whisper_weight": 0.9, "whisper_both": 0.5, "second_judge_weight": 0.0}


def _confidence(row: dict, judge: str) -> float:
    """The judge's best candidate's score over its words, written out."""
    scores = row["judges"][0 if judge == "own" else 1]
    k = max(range(len(scores)), key=lambda i: scores[i])
    return scores[k] / max(1, len(row["texts"][k].split()))


def _reference_pick(row: dict, main: tuple, gate: dict) -> str:
    """The gate's choice for one row, from the formula: the judge's confidence decides which weights rank;
    ``(1 - v) * ((1 - j) * ((1 - c) * llm + c * ctc) + j * (s * own + (1 - s) * judge)) + v * second``."""
    conf = _confidence(row, gate.get("judge", "trained"))
    applies = conf >= gate["above"] if "above" in gate else conf < gate["below"]
    w = {**GATE_WEIGHTS, **gate}
    c, j, s, v = ((w["ctc_weight"], w["whisper_weight"], w["whisper_both"], w["second_judge_weight"]) if applies
                  else main)
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


def test_judge_confidence_is_the_best_candidates_score_over_its_words():
    assert judge_confidence(["a b", "c d e f", "g"], torch.tensor([-3.0, -2.0, -5.0])) == pytest.approx(-0.5)
    assert judge_confidence(["", "x"], torch.tensor([-1.0, -4.0])) == pytest.approx(-1.0)  # no words: 1


@pytest.mark.parametrize("judge, bound", [("own", "above"), ("trained", "below"), ("trained", "above")])
def test_rows_pick_by_the_formula_with_each_rows_own_weights(judge, bound):
    rows = _rows(4)
    main = (0.0, 0.8, 0.3, 0.45)
    confs = sorted(_confidence(r, judge) for r in rows)
    gate = {"judge": judge, bound: confs[len(confs) // 2], "ctc_weight": 0.2, "whisper_weight": 0.6,
            "whisper_both": 0.9}
    got = rescore_rows(rows, *main, gate=ConfidenceGate.parse(gate))
    assert got == [_reference_pick(r, main, gate) for r in rows]
    plain, other = rescore_rows(rows, *main), rescore_rows(rows, 0.2, 0.6, 0.9, 0.0)
    assert plain != other  # the two weight sets differ here, so the gate's choice shows
    on = [(_confidence(r, judge) >= gate[bound]) == (bound == "above") for r in rows]
    assert 0 < sum(on) < len(rows)
    assert got == [o if a else p for p, o, a in zip(plain, other, on)]
    never, always = (math.inf, -math.inf) if bound == "above" else (-math.inf, math.inf)
    assert rescore_rows(rows, *main, gate=ConfidenceGate.parse({**gate, bound: never})) == plain
    assert rescore_rows(rows, *main, gate=ConfidenceGate.parse({**gate, bound: always})) == other
    one = [{**rows[0], "judges": rows[0]["judges"][:1]}]
    with pytest.raises(ValueError, match="candidate row 0: confidence_gate reads Whisper's own decoder"):
        rescore_rows(one, *main, gate=ConfidenceGate.parse(gate))


@pytest.mark.parametrize("value, message", [
    ({"whisper_weight": 0.9}, "one of 'above' / 'below'"),
    ({"above": 0, "below": 1}, "one of 'above' / 'below'"),
    (0.5, "one of 'above' / 'below'"),
    ({"below": -0.2, "weight": 1}, "unknown weight"),
    ({"below": -0.2, "judge": "second"}, "judge: one of own, trained"),
    ({"below": -0.2, "whisper_both": 1.5}, r"whisper_both: in \[0, 1\]"),
    ({"below": -0.2, "whisper_weight": 0}, "not 0"),
    ({"below": -0.2, "second_judge_weight": 1.0}, r"second_judge_weight: in \[0, 1\)"),
    ({"above": True}, "above: a number"),
])
def test_bad_gates_name_the_field(value, message):
    with pytest.raises(ValueError, match=message):
        ConfidenceGate.parse(value)
    assert ConfidenceGate.parse(None) is None and ConfidenceGate.parse(False) is None
    assert ConfidenceGate.parse({"below": -1}) == ConfidenceGate(judge="trained", below=-1.0, **GATE_WEIGHTS)


def _both_model(monkeypatch):
    sys.path.insert(0, str(REPO / "tests" / "encoders"))
    from test_second_judges import _lora_of, _with_second_judges

    model = _with_second_judges(monkeypatch)
    model.whisper_encoder_lora = _lora_of(model, 5)  # a judge encoder of its own: whisper_both can run
    return model


def test_generate_ranks_each_sample_as_its_judges_confidence_says(monkeypatch):
    model = _both_model(monkeypatch)
    from test_whisper_judge import _batch

    batch = _batch(model, 3)
    own, trained = model.whisper_judges(True)
    # Whisper's own decoder likes long texts; the folder's judge short ones, surer of some clips than others
    monkeypatch.setattr(own, "score", lambda f, c: 100.0 * torch.tensor([float(len(t)) for t in c]))
    monkeypatch.setattr(trained, "score", lambda f, c: -100.0 * torch.tensor([float(len(t)) for t in c])
                        - 1e4 * f.float().abs().mean())
    gen = {"max_new_tokens": 6, "num_beams": 3, "whisper_weight": 0.5, "whisper_both": 0.3, "whisper_proposal": 2}
    weights = {"whisper_weight": 0.5, "whisper_both": 1.0}
    rows: list = []
    plain = model.generate(batch, candidates=rows, **gen)
    other = model.generate(batch, **{**gen, "whisper_both": 1.0})
    assert plain != other  # the two weight sets pick differently here
    confs = sorted(_confidence(r, "trained") for r in rows)
    assert len(set(confs)) == len(confs)
    mixed = False
    for t in (-math.inf, (confs[0] + confs[1]) / 2, (confs[1] + confs[2]) / 2, math.inf):
        gate = {"judge": "trained", "below": t, **weights}
        kept: list = []
        got = model.generate(batch, candidates=kept, **gen, confidence_gate=gate)
        assert [r["texts"] for r in kept] == [r["texts"] for r in rows]  # the search does not depend on it
        assert got == rescore_rows(kept, 0.0, 0.5, 0.3, 0.0, ConfidenceGate.parse(gate))
        unsure = [_confidence(r, "trained") < t for r in kept]
        assert got == [o if u else p for p, o, u in zip(plain, other, unsure)]
        mixed = mixed or (got != plain and got != other)
    assert mixed  # some bound ranks some clips one way and others the other
    kept = []  # the gate's second judges are asked though the decoding's are not
    gate = {"below": math.inf, "second_judge_weight": 0.6}
    got = model.generate(batch, candidates=kept, **gen, confidence_gate=gate)
    assert all("second" in r for r in kept)
    assert got == rescore_rows(kept, 0.0, 0.5, 0.3, 0.0, ConfidenceGate.parse(gate))
    with pytest.raises(ValueError, match="set whisper_weight and whisper_both"):
        model.generate(batch, **{**gen, "whisper_both": False}, confidence_gate={"below": 0.0})
    with pytest.raises(ValueError, match="not a sweep"):
        model.generate(batch, **{**gen, "whisper_both": [0.3, 0.5]}, confidence_gate={"below": 0.0})


def test_greedy_calls_and_no_judge_drop_a_saved_gate_and_second_judges():
    from mmlora.pipelines import MediaPipeline

    pipe = MediaPipeline.__new__(MediaPipeline)
    pipe.generation = {"num_beams": 4, "whisper_weight": 0.9, "whisper_both": 0.3, "confidence_gate": {"below": -1}}
    pipe.generation["second_judge_weight"] = 0.45
    assert "confidence_gate" not in pipe.generation_for({"num_beams": 1})
    assert pipe.generation_for({})["confidence_gate"] == {"below": -1}
    # no Whisper judge left (--whisper-weight 0, the demo's babble clips): nothing that weighs beside it either
    kw = pipe.generation_for({"whisper_weight": 0})
    assert not {"confidence_gate", "second_judge_weight"} & set(kw) and kw["whisper_weight"] == 0


def _doc(seed: int, gate: dict | None = None) -> dict:
    rows = _rows(seed, n=8)
    utts = [{"id": f"u{i}", "reference": r["texts"][(i * 3) % len(r["texts"])], "voice": "v" + str(i % 2),
             "pieces": [r]} for i, r in enumerate(rows)]
    dec = {"ctc_weight": 0.0, "whisper_weight": 0.8, "whisper_both": 0.3, "second_judge_weight": 0.45,
           **({"confidence_gate": gate} if gate else {})}
    return {"manifest": "m.jsonl", "decoding": dec, "utterances": utts}


def test_the_script_applies_sweeps_and_reports_the_gate(tmp_path, capsys):
    doc = _doc(7, {"below": -0.5, "whisper_weight": 0.6})
    f = tmp_path / "set_beams8_float32.cands.json"
    f.write_text(json.dumps(doc))
    (tmp_path / "set_beams8_float32.json").write_text(json.dumps({"manifest": "m.jsonl", "skipped": [], "rates": {}}))
    main = (0.0, 0.8, 0.3, 0.45)
    rows = [u["pieces"][0] for u in doc["utterances"]]
    # unset: the decoding's own gate; none: without it; a sweep of bounds (of an above gate of Whisper's own)
    assert rescore_candidates.main([str(f)]) == 0
    assert rescore_candidates.main([str(f), "--gate", "none"]) == 0
    assert rescore_candidates.main([str(f), "--gate", '{"judge": "own", "above": 0, "whisper_both": 0.9}',
                                    "--gate-bound=-2,-0.5,1"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    want_own = [_reference_pick(r, main, {"below": -0.5, "whisper_weight": 0.6}) for r in rows]
    assert lines[0]["errors"] == rescore_candidates.errors(doc, want_own)[0] and "gate" not in lines[0]
    assert lines[1]["gate"] is None
    assert lines[1]["errors"] == rescore_candidates.errors(doc, rescore_rows(rows, *main))[0]
    for line, t in zip(lines[2:], (-2.0, -0.5, 1.0)):
        assert line["gate"] == {"judge": "own", "above": t, "whisper_both": 0.9}
        want = [_reference_pick(r, main, line["gate"]) for r in rows]
        assert line["errors"] == rescore_candidates.errors(doc, want)[0]
    # --reports: each file's report with these picks, its settings from the report beside the candidates
    out = tmp_path / "rep"
    assert rescore_candidates.main([str(f), "--gate", '{"below": -0.2}', "--reports", str(out)]) == 0
    line = json.loads(capsys.readouterr().out)
    rep = json.loads((out / "set_beams8_float32.json").read_text())
    want = [_reference_pick(r, main, {"below": -0.2}) for r in rows]
    assert [u["hypothesis"] for u in rep["utterances"]] == want
    assert rep["substitutions"] + rep["deletions"] + rep["insertions"] == line["errors"]
    assert rep["decoding"]["confidence_gate"] == {"below": -0.2} and rep["rescored_from"] == str(f)
    assert set(rep["by_voice"]) == {"v0", "v1"} and rep["manifest"] == "m.jsonl"
    with pytest.raises(SystemExit):
        rescore_candidates.main([str(f), "--whisper-both", "0.3,0.5", "--reports", str(out)])
    with pytest.raises(SystemExit):
        rescore_candidates.main([str(f), "--gate-bound=-1"])
    with pytest.raises(SystemExit):
        rescore_candidates.main([str(f), "--gate", '{"whisper_weight": 0.9}'])
