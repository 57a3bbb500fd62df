"""``scripts/picker_probe.py``: other pickers over kept candidates, checked against the decoding's own picks
(every extra at 0), a direct minimum-Bayes-risk sum, and the scores store."""
import json
import sys
from pathlib import Path

import jiwer
import pytest
import torch

from mmlora.ctc import candidate_rows
from mmlora.metrics.wer import normalize_text

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import picker_probe  # noqa: E402
import rescore_candidates  # noqa: E402


def _doc(B=6, K=5, seed=0) -> dict:
    torch.manual_seed(seed)
    words = ["the", "lord", "said", "set", "unto", "me", "thus", "this"]
    texts = [" ".join(words[int(i)] for i in torch.randint(0, len(words), (int(torch.randint(2, 6, ())),)))
             for _ in range(B * K)]
    texts[1] = texts[2] = texts[3]  # a text read by several candidates of one clip
    rows = candidate_rows(texts, torch.randn(B * K) * 3, B, torch.randn(B * K) * 5, torch.randn(2, B * K) * 4)
    rows = json.loads(json.dumps(rows))
    utts = [{"id": f"u{b}", "reference": texts[b * K + 2], "pieces": [rows[b]]} for b in range(B)]
    return {"decoding": {"ctc_weight": 0.1, "whisper_weight": 0.6, "whisper_both": 0.5}, "utterances": utts}


def test_every_extra_at_zero_picks_as_the_decoding():
    doc = _doc()
    for w in [(0.1, 0.6, 0.5), (0.0, 0.9, 0.2), (0.3, 0.0, 0.5)]:
        assert picker_probe.hypotheses(doc, w) == rescore_candidates.hypotheses(doc, *w)


def test_mbr_is_the_least_expected_word_errors():
    doc = _doc(seed=1)
    w, T = (0.1, 0.6, 0.5), 8.0
    got = picker_probe.hypotheses(doc, w, mbr=T)
    changed = 0
    for u, mine in zip(doc["utterances"], got):
        row = u["pieces"][0]
        p = torch.softmax(picker_probe.base_total(row, *w) / T, 0).tolist()
        norm = [normalize_text(t) for t in row["texts"]]
        risk = [sum(pj * (jiwer.process_words(a, b).wer * len(a.split())) for pj, b in zip(p, norm)) for a in norm]
        best = min(range(len(risk)), key=lambda i: risk[i])
        assert normalize_text(mine) == norm[best]
        changed += mine != rescore_candidates.hypotheses(doc, *w)[doc["utterances"].index(u)]
    assert changed  # the risk chooses otherwise than the best total somewhere here


def test_vote_length_and_extra_scores_move_the_pick():
    doc = _doc(seed=2)
    row = doc["utterances"][0]["pieces"][0]
    rows, _ = picker_probe.rows_of(doc)
    for r in rows:
        r["lm"] = [0.0] * len(r["texts"])
        r["judge"] = [0.0] * len(r["texts"])
    row["lm"][4] = 100.0
    row["judge"][0] = 100.0
    w = (0.1, 0.6, 0.5)
    assert picker_probe.hypotheses(doc, w, lm=1.0)[0] == row["texts"][4]
    assert picker_probe.hypotheses(doc, w, judge=1.0)[0] == row["texts"][0]
    assert picker_probe.hypotheses(doc, w, vote=1e3)[0] == row["texts"][1]  # the text three candidates read
    longest = max(row["texts"], key=lambda t: len(t.split()))
    assert len(picker_probe.hypotheses(doc, w, lb=1e3)[0].split()) == len(longest.split())


def test_the_store_is_read_and_missing_scores_are_named(tmp_path):
    doc = _doc()
    rows, _ = picker_probe.rows_of(doc)
    store = tmp_path / "scores.json"
    store.write_text(json.dumps({"lm": [[float(k) for k in range(len(r["texts"]))] for r in rows]}))
    args = picker_probe.argparse.Namespace(text_lm=True, judge=[], threads=1)
    picker_probe.add_scores(doc, args, None, store)  # read, not computed: no LLM is loaded here
    assert picker_probe.hypotheses(doc, (0.1, 0.6, 0.5), lm=1.0) == [u["pieces"][0]["texts"][-1]
                                                                   for u in doc["utterances"]]
    with pytest.raises(SystemExit, match="no 'judge' scores"):
        picker_probe.hypotheses(doc, (0.1, 0.6, 0.5), judge=0.5)
    with pytest.raises(SystemExit, match="--judge reads the clips"):
        picker_probe.add_scores(doc, picker_probe.argparse.Namespace(text_lm=False, judge=["whisper-base"], threads=1),
                                None, None)


def test_several_judges_are_stored_by_name_and_weighed_as_their_mean(tmp_path, monkeypatch):
    """``--judge A --judge B``: each judge's scores kept under its own name (a store made with one judge never
    answers for another), and ``judge`` is their mean."""
    doc = _doc()
    rows, _ = picker_probe.rows_of(doc)
    store = tmp_path / "scores.json"
    made = []

    def fake(doc, manifest, name, threads=1, key="judge", piece_seconds=None, piece_samples=None):
        made.append(name)
        for i, row in enumerate(picker_probe.rows_of(doc)[0]):
            row[key] = [float(len(name) * (i + 1) + k) for k in range(len(row["texts"]))]

    monkeypatch.setattr(picker_probe, "judge_scores", fake)
    args = picker_probe.argparse.Namespace(text_lm=False, judge=["aa"], threads=1)
    picker_probe.add_scores(doc, args, tmp_path / "m.jsonl", store)
    args.judge = ["aa", "bbbb"]
    picker_probe.add_scores(doc, args, tmp_path / "m.jsonl", store)
    picker_probe.add_scores(doc, args, tmp_path / "m.jsonl", store)
    assert made == ["aa", "bbbb"]  # each computed once, then read from the store by its name
    assert sorted(json.loads(store.read_text())) == ["judge:aa", "judge:bbbb", picker_probe.PIECES_SCORED]
    for i, row in enumerate(rows):
        assert row["judge"] == [3.0 * (i + 1) + k for k in range(len(row["texts"]))]  # mean of 2(i+1)+k, 4(i+1)+k


def test_cli_prints_one_line_a_combination_and_names_a_judge_weight_without_a_judge(tmp_path, capsys):
    doc = _doc()
    f = tmp_path / "c.json"
    f.write_text(json.dumps(doc))
    rows, _ = picker_probe.rows_of(doc)
    store = tmp_path / "s.json"
    store.write_text(json.dumps({"lm": [[0.0] * len(r["texts"]) for r in rows]}))
    assert picker_probe.main([str(f), "--scores", str(store), "--lm-weight", "0,0.5", "--mbr", "0,1"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(x["lm_weight"], x["mbr"]) for x in lines] == [(0.0, 0.0), (0.0, 1.0), (0.5, 0.0), (0.5, 1.0)]
    e, n = rescore_candidates.errors(doc, rescore_candidates.hypotheses(doc, 0.1, 0.6, 0.5))
    assert lines[0]["errors"] == e and lines[0]["ref_words"] == n  # every extra at 0: the decoding's own picks
    with pytest.raises(SystemExit, match="name it with --judge"):
        picker_probe.main([str(f), "--judge-weight", "0.2"])


def test_a_model_folders_trained_judge_scores_each_clip_through_its_own_encoder(tmp_path, monkeypatch):
    """``--judge MODEL_DIR``: the folder's judge (``whisper_judge()``) reads frames of the folder's judge encoder;
    a folder without a trained decoder is refused by name."""
    import numpy as np
    import soundfile as sf

    from mmlora.model import MultimodalLM

    doc = _doc(B=3)
    (tmp_path / "clips").mkdir()
    lines = []
    for k, u in enumerate(doc["utterances"]):
        sf.write(tmp_path / "clips" / f"{u['id']}.wav", np.full(160 * (k + 1), 0.1, dtype="float32"), 16000)
        lines.append(json.dumps({"id": u["id"], "audio": f"clips/{u['id']}.wav", "text": u["reference"]}))
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    seen = []

    class Judge:
        def frames(self, wave, encoder=None):
            seen.append((len(wave), encoder))
            return wave

        def score(self, frames, texts):
            return torch.tensor([float(len(frames)) + i for i in range(len(texts))])

    class Model:
        whisper_decoder_state = {"w": torch.zeros(1)}

        def whisper_judge(self):
            return Judge()

        def judge_encoder(self):
            return "the folder's judge encoder"

    monkeypatch.setattr(MultimodalLM, "from_pretrained", classmethod(lambda cls, path, **kw: Model()))
    picker_probe.judge_scores(doc, manifest, str(folder))
    assert seen == [(160, "the folder's judge encoder"), (320, "the folder's judge encoder"),
                    (480, "the folder's judge encoder")]
    for k, u in enumerate(doc["utterances"]):
        row = u["pieces"][0]
        assert row["judge"] == [160.0 * (k + 1) + i for i in range(len(row["texts"]))]
    Model.whisper_decoder_state = None
    with pytest.raises(SystemExit, match="no trained judge"):
        picker_probe.judge_scores(doc, manifest, str(folder))


def test_write_second_gives_rescore_candidates_the_judges_mean_as_the_second_judges(tmp_path, monkeypatch):
    """``--write-second DIR``: each file again with ``second`` the mean of the named judges' scores, so that
    rescore_candidates weighs them as a decoding with those second judges would (``with_second``'s formula), and
    the report beside it copied so that ``--reports`` reads it; without a judge it is refused."""
    doc = _doc()
    f = tmp_path / "st_val_beams8_float32.cands.json"
    f.write_text(json.dumps(doc))
    (tmp_path / "st_val_beams8_float32.json").write_text('{"wer": 0.5}')
    judged = {}

    def fake(doc, manifest, name, threads=1, key="judge", piece_seconds=None, piece_samples=None):
        for row in picker_probe.rows_of(doc)[0]:
            row[key] = torch.randn(len(row["texts"])).mul(4).tolist()
        judged[name] = [r[key] for r in picker_probe.rows_of(doc)[0]]

    monkeypatch.setattr(picker_probe, "judge_scores", fake)
    out = tmp_path / "s5"
    store = tmp_path / "scores.json"
    assert picker_probe.main([str(f), "--manifest", str(tmp_path / "m.jsonl"), "--scores", str(store),
                              "--judge", "a", "--judge", "b", "--judge", "c", "--write-second", str(out)]) == 0
    new = rescore_candidates.load(out / f.name)
    assert new["decoding"]["second_judges"] == ["a", "b", "c"]
    assert (out / "st_val_beams8_float32.json").read_text() == '{"wer": 0.5}'
    for i, (old, row) in enumerate(zip(picker_probe.rows_of(doc)[0], picker_probe.rows_of(new)[0])):
        mean = (torch.tensor(judged["a"][i]) + torch.tensor(judged["b"][i]) + torch.tensor(judged["c"][i])) / 3
        assert torch.allclose(torch.tensor(row["second"]), mean, atol=1e-6)
        assert row["texts"] == old["texts"] and row["llm"] == old["llm"] and "judge" not in row
        want = 0.6 * picker_probe.row_totals(old, 0.1, 0.6, 0.5) + 0.4 * torch.tensor(row["second"])
        got = picker_probe.row_totals(row, 0.1, 0.6, 0.5, second_weight=0.4)
        assert torch.allclose(got, want)
    hyps = rescore_candidates.hypotheses(new, 0.1, 0.6, 0.5, second=0.4)
    assert len(hyps) == len(doc["utterances"])
    with pytest.raises(SystemExit, match="name the second judges"):
        picker_probe.main([str(f), "--write-second", str(out)])


def test_a_clip_decoded_in_pieces_is_cut_again_and_each_piece_scored_on_its_own_audio(tmp_path, monkeypatch):
    """A clip the decoding cut into pieces (``piece_seconds`` in the report beside its candidates file) is cut again
    as ``cut_long_audio`` cut it, and each piece's candidates scored on that piece (until session 70 they got 0,
    which ``--write-second`` passed on as no second judges there); a cut that does not match is refused, and a
    store without the pieces mark has its judges scored again."""
    import numpy as np
    import soundfile as sf

    from mmlora.encoders.whisper_judge import WhisperJudge
    from mmlora.pipelines import cut_long_audio

    doc = _doc(B=2)
    second = picker_probe.rows_of(_doc(B=3, seed=3))[0]
    doc["utterances"][1]["pieces"] = second[:3]  # clip u1: three pieces
    (tmp_path / "clips").mkdir()
    rng = np.random.default_rng(0)
    long_ = rng.normal(0, 0.1, 16000 * 5).astype("float32")
    long_[16000 * 2 - 800:16000 * 2 + 800] = 0  # pauses where the cuts fall
    long_[16000 * 4 - 800:16000 * 4 + 800] = 0
    sf.write(tmp_path / "clips" / "u0.wav", np.full(8000, 0.1, dtype="float32"), 16000)
    sf.write(tmp_path / "clips" / "u1.wav", long_, 16000)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"id": f"u{k}", "audio": f"clips/u{k}.wav", "text": "x"}) + "\n"
                                for k in range(2)))
    want = [p.numel() for p in cut_long_audio([torch.from_numpy(long_)], int(2.2 * 16000))[0]]
    assert len(want) == 3

    class Judge:
        def frames(self, wave, encoder=None):
            return wave

        def score(self, frames, texts):
            return torch.tensor([float(len(frames)) + i for i in range(len(texts))])

        def padded_encoder(self):  # Whisper's 30 s window
            return type("Encoder", (), {"max_samples": 30 * 16000})()

    monkeypatch.setattr(WhisperJudge, "load", staticmethod(lambda name: Judge()))
    f = tmp_path / "st_val.cands.json"
    f.write_text(json.dumps(doc))
    (tmp_path / "st_val.json").write_text(json.dumps({"decoding": {"piece_seconds": 2.2}}))
    store = tmp_path / "scores.json"
    store.write_text(json.dumps({"judge:j": [[0.0] * len(r["texts"]) for r in picker_probe.rows_of(doc)[0]]}))
    out = tmp_path / "out"
    assert picker_probe.main([str(f), "--manifest", str(manifest), "--scores", str(store), "--judge", "j",
                              "--write-second", str(out)]) == 0
    new = rescore_candidates.load(out / f.name)
    lens = [row["second"][0] for row in new["utterances"][1]["pieces"]]
    assert lens == [float(n) for n in want]  # each piece on its own audio, not 0, not the whole clip
    assert new["utterances"][0]["pieces"][0]["second"][0] == 8000.0
    assert json.loads(store.read_text())[picker_probe.PIECES_SCORED] is True
    (tmp_path / "st_val.json").write_text(json.dumps({"decoding": {"piece_seconds": 30.0}}))
    store.unlink()
    with pytest.raises(SystemExit, match="cut into 1 pieces at 30 s, the decoding into 3"):
        picker_probe.main([str(f), "--manifest", str(manifest), "--judge", "j", "--write-second", str(out)])
    # a report since session 71 records the cut exactly (piece_samples): that is what cuts, not piece_seconds
    (tmp_path / "st_val.json").write_text(json.dumps({"decoding": {"piece_seconds": 30.0,
                                                                   "piece_samples": int(2.2 * 16000)}}))
    assert picker_probe.main([str(f), "--manifest", str(manifest), "--judge", "j", "--write-second", str(out)]) == 0
    assert [row["second"][0] for row in rescore_candidates.load(out / f.name)["utterances"][1]["pieces"]] == [
        float(n) for n in want]
    (tmp_path / "st_val.json").unlink()
    with pytest.raises(SystemExit, match="give --piece-seconds"):
        picker_probe.main([str(f), "--manifest", str(manifest), "--judge", "j", "--write-second", str(out)])
