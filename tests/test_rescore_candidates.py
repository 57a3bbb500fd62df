"""``generate(candidates=[])`` / ``mmlora evaluate --candidates`` and ``scripts/rescore_candidates.py``: the kept
candidates picked again with other weights give what decoding with those weights gives."""
import itertools
import json
import sys
from pathlib import Path

import pytest
import torch

from mmlora.ctc import candidate_rows, mix_judges, rescore_beams, rescore_rows

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import rescore_candidates  # noqa: E402


def test_rows_pick_what_rescore_beams_picks_with_every_weight():
    torch.manual_seed(3)
    B, K = 5, 4
    texts = [f"t{b} c{k}" for b in range(B) for k in range(K)]
    llm = torch.randn(B * K) * 3
    ctc = torch.randn(B * K) * 5
    ctc[2] = float("-inf")  # a text that cannot fit its frames
    parts = (torch.randn(2, B * K) * 4).to(torch.float16)  # a judge's dtype kept through JSON
    rows = json.loads(json.dumps(candidate_rows(texts, llm, B, ctc, parts)))
    assert rows[0]["texts"] == texts[:K] and rows[0]["dtypes"] == {"llm": "float32", "ctc": "float32",
                                                                 "judges": "float16"}
    picks = set()
    for c, j, s in itertools.product((0.0, 0.07, 0.5), (0.0, 0.3, 0.9, 1.0), (0.0, 0.2, 0.5, 1.0)):
        want = rescore_beams(texts, llm, B, ctc, c, mix_judges(parts, s), j) if c or j else texts[::K]
        got = rescore_rows(rows, c, j, s)
        assert got == want, (c, j, s)
        picks.add(tuple(got))
    assert len(picks) > 3  # the weights do change the choice here
    one = candidate_rows(texts, llm, B, None, parts[:1])
    assert "ctc" not in one[0] and len(one[0]["judges"]) == 1
    assert rescore_rows(one, 0.0, 1.0, 0.7) == rescore_rows(one, 0.0, 1.0, 0.1)  # one judge: no share to weigh
    with pytest.raises(ValueError, match="candidate row 0: no ctc scores"):
        rescore_rows(one, 0.1, 0.5)
    llm_only = candidate_rows(texts, llm, B)  # the missing scores named, not the other kind
    with pytest.raises(ValueError, match=r"candidate row 0: no judges scores"):
        rescore_rows(llm_only, 0.0, 0.5)
    with pytest.raises(ValueError, match=r"candidate row 0: no ctc or judges scores"):
        rescore_rows(llm_only, 0.1, 0.5)


def _saved_model(tmp_path, monkeypatch):
    from mmlora.model import MultimodalLM

    sys.path.insert(0, str(REPO / "tests" / "encoders"))
    from test_whisper_judge import _asr_with_judge

    judge = _asr_with_judge()._whisper_judge
    monkeypatch.setattr(MultimodalLM, "whisper_judge", lambda self: judge)  # the saved model reloads without it
    model = _asr_with_judge("model.ctc={modality: audio, weight: 0.5}")
    model.save_pretrained(tmp_path / "m", pipeline={
        "task": "asr", "instruction": "Transcribe the audio.", "modalities": ["audio"],
        "generation": {"num_beams": 4, "max_new_tokens": 6, "whisper_weight": 0.5, "ctc_weight": 0.3}})
    return model


def test_generate_keeps_candidates_only_where_it_rescores(tmp_path, monkeypatch):
    sys.path.insert(0, str(REPO / "tests" / "encoders"))
    from test_whisper_judge import _batch

    model = _saved_model(tmp_path, monkeypatch)
    batch, rows = _batch(model, 2), []
    got = model.generate(batch, max_new_tokens=6, num_beams=3, whisper_weight=0.5, ctc_weight=0.3, candidates=rows)
    assert len(rows) == 2 and all(len(r["texts"]) == 3 and len(r["judges"]) == 1 for r in rows)
    assert rescore_rows(rows, 0.3, 0.5) == got
    with pytest.raises(ValueError, match="candidates: the beams and their scores are kept where they are rescored"):
        model.generate(batch, max_new_tokens=6, num_beams=3, candidates=[])


def test_evaluate_candidates_then_the_script_gives_each_sweep_report_again(tmp_path, monkeypatch, capsys):
    from mmlora.cli import main

    _saved_model(tmp_path, monkeypatch)
    common = ["evaluate", "--model", str(tmp_path / "m"), "--manifest", "tests/data/speech/test.jsonl",
              "--max-samples", "4", "--device", "cpu", "--batch-size", "3"]
    assert main(common + ["--whisper-weight", "0,0.5,1", "--out", str(tmp_path / "r.json"),
                          "--candidates", str(tmp_path / "c.json")]) == 0
    doc = json.loads((tmp_path / "c.json").read_text())
    assert len(doc["utterances"]) == 4 and doc["decoding"]["whisper_weight"] == [0.0, 0.5, 1.0]
    assert doc["utterances"][0]["reference"] and all(len(u["pieces"]) == 1 for u in doc["utterances"])
    capsys.readouterr()
    assert rescore_candidates.main([str(tmp_path / "c.json"), "--whisper-weight", "0,0.5,1", "--oracle"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["whisper_weight"] for line in lines[:3]] == [0.0, 0.5, 1.0]
    assert all(line["ctc_weight"] == 0.3 for line in lines[:3])  # unset: the decoding's own
    for w, line in zip(("0", "0.5", "1"), lines):
        report = json.loads((tmp_path / f"r_whisper{w}.json").read_text())
        assert line["errors"] == report["substitutions"] + report["deletions"] + report["insertions"]
        assert line["ref_words"] == report["ref_words"]
        hyps = rescore_candidates.hypotheses(doc, 0.3, float(w), 0.0)
        assert hyps == [u["hypothesis"] for u in report["utterances"]]
    assert lines[3]["oracle"] and lines[3]["errors"] <= min(line["errors"] for line in lines[:3])
    # each clip's oracle pick is its candidate with the fewest errors, by jiwer on each candidate alone
    best, pieced = rescore_candidates.oracle(doc, rescore_candidates.hypotheses(doc, 0.3, 1.0, 0.0))
    assert pieced == 0
    for u, b in zip(doc["utterances"], best):
        errs = [rescore_candidates.errors({"utterances": [u]}, [t])[0] for t in u["pieces"][0]["texts"]]
        assert rescore_candidates.errors({"utterances": [u]}, [b])[0] == min(errs)
    assert main(common + ["--candidates", str(tmp_path / "a.json"), "--candidates", str(tmp_path / "b.json")]) == 2
    assert "1 --manifest but 2 --candidates" in capsys.readouterr().err


def test_the_script_names_a_file_that_is_no_candidates_file(tmp_path):
    bad = tmp_path / "report.json"
    bad.write_text(json.dumps({"wer": 0.1}))
    with pytest.raises(SystemExit, match=r"report.json: not a candidates file"):
        rescore_candidates.main([str(bad)])
    with pytest.raises(SystemExit):
        rescore_candidates.main([str(bad), "--whisper-both", "0.2,1.5"])


def _second_doc(seed: int, n: int = 6, k: int = 4) -> dict:
    """A candidates file of ``n`` one-piece clips whose rows carry second judges' scores (ENS-like)."""
    g = torch.Generator().manual_seed(seed)
    utts = []
    for i in range(n):
        texts = [f"w{i} c{j}" for j in range(k)]
        llm, ctc, judge, second = (torch.randn(k, generator=g) * 3 for _ in range(4))
        row = candidate_rows(texts, llm, 1, ctc, judge[None], second)[0]
        utts.append({"id": f"u{i}", "reference": texts[int(second.argmax())], "pieces": [row]})
    return {"decoding": {"ctc_weight": 0.1, "whisper_weight": 0.5, "whisper_both": False, "second_judge_weight": 0.2},
            "utterances": json.loads(json.dumps(utts))}


def test_the_second_judges_weight_is_swept_and_unset_is_each_files_own(tmp_path, capsys):
    f = tmp_path / "ens.json"
    f.write_text(json.dumps(_second_doc(1)))
    assert rescore_candidates.main([str(f), "--second-weight", "0,0.2,1"]) == 0
    assert rescore_candidates.main([str(f)]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    doc = json.loads(f.read_text())
    for line, v in zip(lines, (0.0, 0.2, 1.0)):
        assert line["second_weight"] == v
        assert line["errors"] == rescore_candidates.errors(doc, rescore_candidates.hypotheses(doc, 0.1, 0.5, 0.5, v))[0]
    assert lines[2]["errors"] == 0  # the references are the second judges' favourites: weight 1 reads them all
    assert lines[3]["second_weight"] is None and lines[3]["errors"] == lines[1]["errors"]  # the decoding's 0.2
