"""scripts/whisper_proposal_share.py: how often a model's output is one of Whisper's own transcripts (session 48)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf

from conftest import load_script
from mmlora.metrics.wer import compute_wer, paired_bootstrap

ROOT = Path(__file__).resolve().parents[2]
CLIPS = ROOT / "tests" / "data" / "speech" / "test.jsonl"


def test_summary_counts_as_jiwer_does():
    refs = ["the cat sat on the mat", "a dog ran", "it was late"]
    props = [["the cat sat on a mat", "the cat sat on the mat"], ["a fog ran", "a dog ran", "the dog"], []]
    outputs = ["The cat sat on a mat.", "a dog ran", "it was late"]  # Whisper's first, its second, none of them
    s = load_script("whisper_proposal_share").summarize(refs, outputs, props)

    def errs(hyps):
        return [(lambda w: w.substitutions + w.deletions + w.insertions)(compute_wer([r], [h]))
                for r, h in zip(refs, hyps)]
    assert s["picked"] == [0, 1, None]
    assert (s["output_is_a_proposal"], s["output_is_whispers_first"]) == (2, 1)
    assert s["errors"] == {"model": sum(errs(outputs)),
                           "whisper_first": sum(errs(["the cat sat on a mat", "a fog ran", ""])),
                           "oracle": sum(errs(["the cat sat on the mat", "a dog ran", ""]))}
    assert s["errors"] == {"model": 1 + 0 + 0, "whisper_first": 1 + 1 + 3, "oracle": 0 + 0 + 3}
    assert s["wer"]["model"] == pytest.approx(1 / 12, abs=1e-4)
    pb = paired_bootstrap(errs(["the cat sat on a mat", "a fog ran", ""]), errs(outputs), [6, 3, 3])
    assert s["model_minus_whisper_first"] == {k: pb[k] for k in ("diff", "ci95", "p_two_sided", "better", "worse")}


class _Stub:
    """load_pipeline's stand-in: its model proposes, for each clip, the texts PROPS gives for the clip's length."""

    def __init__(self, props):
        self.props, self.asked, self.limit = props, [], None
        self.model = self
        self.encoders = {"audio": "the model's"}

    def whisper_judge(self):
        return self

    def piece_limit(self):  # the pipeline's cut (samples), --max-seconds's default
        return self.limit

    def judge_encoder(self):  # a folder's judge encoder (whisper_encoder_adapters/): the frames the judge reads
        return "the judge's"

    def frames(self, wave, enc):
        assert enc == "the judge's"
        return wave

    def _whisper_proposals(self, frames, max_tokens, n):
        self.asked.append((len(frames), max_tokens, n))
        return self.props[len(frames)]


def test_main_reads_the_report_and_leaves_long_clips_out(tmp_path, monkeypatch, capsys):
    rows = [json.loads(x) for x in CLIPS.read_text().splitlines()][:4]
    lengths = [sf.info(CLIPS.parent / r["audio"]).frames for r in rows]
    assert len(set(lengths)) == 4
    limit = sorted(lengths)[2] / 16000  # the longest clip is left out
    props = {n: [f"proposal {i} of {n}" for i in range(3)] for n in lengths}
    short = [r for r, n in zip(rows, lengths) if n <= limit * 16000]
    props[lengths[rows.index(short[0])]][1] = short[0]["text"]  # the output of the first short clip: Whisper's second
    utts = [{"id": r["id"], "reference": r["text"], "hypothesis": r["text"] if r is short[0] else "something else",
             "hyp_norm": ""} for r in rows]
    (tmp_path / "report.json").write_text(json.dumps({"utterances": utts}))
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"pipeline": {"generation": {"whisper_proposal": 3,
                                                                               "max_new_tokens": 40}}}))
    stub = _Stub(props)
    monkeypatch.setattr("mmlora.load_pipeline", lambda path, device: stub)
    out = tmp_path / "share.json"
    args = ["--model", str(model), "--report", str(tmp_path / "report.json"), "--manifest", str(CLIPS),
            "--max-seconds", str(limit), "--out", str(out)]
    assert load_script("whisper_proposal_share").main(args) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert got["clips"] == 3 and got[f"longer_than_{limit:g}s"] == 1
    assert (got["output_is_a_proposal"], got["output_is_whispers_first"]) == (1, 0)
    assert sorted(a for a, _, _ in stub.asked) == sorted(n for n in lengths if n <= limit * 16000)
    assert {(m, k) for _, m, k in stub.asked} == {(40, 3)}
    saved = json.loads(out.read_text())
    assert saved["summary"] == got and [c["output_is_proposal"] for c in saved["clips"]].count(1) == 1
    stub.limit = round(limit * 16000)  # without --max-seconds: the pipeline's piece length, the same clips left out
    assert load_script("whisper_proposal_share").main([a for a in args if a not in ("--max-seconds", str(limit))]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == got


def test_a_model_without_proposals_is_refused(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"pipeline": {"generation": {"num_beams": 4}}}))
    (tmp_path / "r.json").write_text(json.dumps({"utterances": [{"id": "a"}]}))
    with pytest.raises(SystemExit, match="give --proposals N"):
        load_script("whisper_proposal_share").main(["--model", str(model), "--report", str(tmp_path / "r.json"),
                                                    "--manifest", str(CLIPS)])
