"""scripts/viseme_ceiling.py: look-alike word classes from visemes and the context-free ceiling they set, on a small
made-up lexicon (espeak-ng replaced by a table, so the test needs no TTS)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import viseme_ceiling as vc  # noqa: E402

PHON = {"pat": "p_'a_t", "bat": "b_'a_t", "mat": "m_'a_t", "cat": "k_'a_t", "thatch": "T_'a_tS", "fat": "f_'a_t"}


def test_viseme_strings_and_merges():
    assert vc.viseme_string("p_'a_t") == ("bilabial", "open", "alveolar")
    assert vc.viseme_string("p__b_m_'a") == ("bilabial", "open")  # repeats collapse, empty phones are rests
    assert vc.merge_map(0.0) == {v: v for v in vc.VISEMES}
    groups = {g for g in vc.merge_map(0.05).values()}
    assert len(groups) == len(vc.VISEMES) - 1  # dental and alveolar (0.036 apart) are the only pair below 0.05
    m = vc.merge_map(0.05)
    assert m["dental"] == m["alveolar"] and len({m[v] for v in vc.VISEMES if v not in ("dental", "alveolar")}) == 11
    # below 0.1 labiodental joins the rest position too, so f reads as a pause: "fat" looks like "at"
    m = vc.merge_map(0.1)
    assert m["labiodental"] == m["sil"] and vc.viseme_string("f_'a_t", m) == ("open", m["alveolar"])


def test_ceiling_counts_the_most_frequent_word_of_each_class():
    train = [["pat", "pat", "pat", "bat", "cat", "cat"]]
    test = [["pat", "bat", "cat", "mat"]]
    r = vc.ceiling(train, test, {w: PHON[w] for w in ("pat", "bat", "mat", "cat")})
    # pat, bat, mat look alike: pat (3) wins its class; cat is alone in its own
    assert r["classes"] == 2 and r["words"] == 4 and r["test_words"] == 4
    assert r["right"] == pytest.approx(2 / 4) and r["alone"] == pytest.approx(1 / 4)
    # a class whose words never occur in training: a tie the reader cannot break, counted wrong (and no training
    # word looks like pat, so it counts as alone)
    r = vc.ceiling([["cat"]], [["pat"]], {w: PHON[w] for w in ("pat", "bat")})
    assert r["right"] == 0 and r["alone"] == 1
    # merging dental into alveolar makes "thatch" (T a tS) no closer to "cat"; merging below 0.2 joins velar and
    # bilabial with the rest, so pat and cat fall into one class
    assert vc.ceiling(train, test, {w: PHON[w] for w in ("pat", "bat", "mat", "cat")}, vc.merge_map(0.2))["classes"] == 1


def test_cli_table_and_errors(tmp_path, monkeypatch, capsys):
    def manifest(name, texts):
        p = tmp_path / name
        p.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(texts)))
        return p

    train = manifest("train.jsonl", ["Pat, pat the cat.", "A bat."])
    test = manifest("test.jsonl", ["The mat."])
    table = {"pat": "p_'a_t", "the": "D_@", "cat": "k_'a_t", "a": "@", "bat": "b_'a_t", "mat": "m_'a_t"}
    monkeypatch.setattr(vc, "espeak_phonemes", lambda words: [table[w] for w in words])
    assert vc.main(["--train", str(train), "--test", str(test), "--merge-below", "0.2"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert len(rows) == 3 and rows[1].startswith("| 13 | none (as drawn) | 4 (6) |")
    # "the mat": the (alone) is right, mat loses to pat: 50 %
    assert rows[1].endswith("| 50.0 % |") and rows[2].startswith("| 7 |")
    monkeypatch.undo()  # the real espeak_phonemes, which finds no espeak-ng
    monkeypatch.setattr(vc.shutil, "which", lambda name: None)
    assert vc.main(["--train", str(train), "--test", str(test)]) == 2
    assert "espeak-ng is not installed" in capsys.readouterr().err
    assert vc.main(["--train", str(tmp_path / "none.jsonl"), "--test", str(test)]) == 2
    assert "none.jsonl: not a manifest" in capsys.readouterr().err
