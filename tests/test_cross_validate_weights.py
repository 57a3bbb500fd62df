"""scripts/cross_validate_weights.py: weights chosen on the other files are scored on each file (leave one out),
by hand-computed sweeps."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import cross_validate_weights as cv  # noqa: E402


def _line(w: float, errs: dict) -> dict:
    files = {f: {"errors": e, "ref_words": 100} for f, e in errs.items()}
    return {"ctc_weight": w, "files": files, "errors": sum(errs.values()), "ref_words": 100 * len(errs)}


SWEEP = [_line(0.07, {"a": 10, "b": 10, "c": 10, "v": 20}),   # the decoding's own
         _line(0.1, {"a": 2, "b": 9, "c": 9, "v": 30}),       # best in sample, worst on the check
         _line(0.2, {"a": 9, "b": 3, "c": 12, "v": 18})]


def _run(tmp_path, capsys, *args) -> dict:
    f = tmp_path / "sweep.jsonl"
    f.write_text("\n".join(json.dumps(x) for x in SWEEP) + '\n{"oracle": true, "files": {}}\n')
    assert cv.main([str(f), *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_each_file_is_scored_with_the_weights_chosen_on_the_others(tmp_path, capsys):
    out = _run(tmp_path, capsys, "--own", "ctc_weight=0.07", "--check", "v")
    folds = out["cross_validated"]["folds"]
    # a: chosen on b+c: 0.07 -> 20, 0.1 -> 18, 0.2 -> 15: 0.2, which reads a with 9
    assert folds["a"] == {"chosen": {"ctc_weight": 0.2}, "errors": 9, "errors_where_chosen": 15, "check": {"v": 18}}
    # b: on a+c: 20, 11, 21 -> 0.1 (9 on b); c: on a+b: 20, 11, 12 -> 0.1 (9 on c)
    assert folds["b"]["chosen"] == {"ctc_weight": 0.1} and folds["b"]["errors"] == 9
    assert folds["c"]["chosen"] == {"ctc_weight": 0.1} and folds["c"]["errors"] == 9
    assert out["cross_validated"]["errors"] == 27 and out["cross_validated"]["ref_words"] == 300
    assert out["own"]["errors"] == 30 and out["own"]["files"]["v"] == 20
    assert out["in_sample_best"] == {"weights": {"ctc_weight": 0.1}, "errors": 20, "check": {"v": 30}}


def test_ties_go_to_the_first_line_and_bad_input_is_named(tmp_path, capsys):
    lines = [_line(0.0, {"a": 5, "b": 5}), _line(0.5, {"a": 5, "b": 5})]
    folds = cv.cross_validate(lines, ["a", "b"])["folds"]
    assert folds["a"]["chosen"] == folds["b"]["chosen"] == {"ctc_weight": 0.0}
    with pytest.raises(SystemExit, match="matches 0 lines"):
        _run(tmp_path, capsys, "--own", "ctc_weight=0.3")
    with pytest.raises(SystemExit, match="--check zz: no such file"):
        _run(tmp_path, capsys, "--check", "zz")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    with pytest.raises(SystemExit, match="bad.jsonl:1: not a JSON line"):
        cv.main([str(bad)])
    with pytest.raises(SystemExit, match="one file to choose on"):
        cv.cross_validate([_line(0.0, {"a": 1})], ["a"])
