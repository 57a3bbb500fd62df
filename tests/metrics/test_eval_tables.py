"""scripts/eval_tables.py: the bench tables of an eval folder, checked against the reports and compare-wer's
own JSON (the line train_grid.sh writes)."""
import json
import runpy
import sys
from pathlib import Path

import pytest

from mmlora.metrics.wer import compare_reports

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "eval_tables.py"


def _report(path, errors, wer):
    utts = [{"index": i, "id": f"u{i}", "ref_norm": "a b c d", "ref_words": 4, "substitutions": e, "deletions": 0,
             "insertions": 0} for i, e in enumerate(errors)]
    s = sum(errors)
    path.write_text(json.dumps({"wer": wer, "substitutions": s - 1, "deletions": 1, "insertions": 0,
                                "utterances": utts}))
    return path


@pytest.fixture
def tables():
    return runpy.run_path(str(SCRIPT))


def test_tables_rows_follow_the_reports_and_the_comparisons(tmp_path, tables):
    a = _report(tmp_path / "AV_b_0.json", [0, 1, 0, 2] * 10, 0.1875)
    b = _report(tmp_path / "AO_b_0.json", [4, 3, 4, 4] * 10, 0.9375)
    c = compare_reports(a, b, samples=500)
    (tmp_path / "compare.txt").write_text(f"AO_b_0 - AV_b_0: {json.dumps(c)}\n")
    md = tables["tables"](tmp_path, "# run")
    lines = md.splitlines()
    assert lines[0] == "# run"
    assert "| AO_b_0 | 93.75 % | 149 / 1 / 0 |" in lines and "| AV_b_0 | 18.75 % | 29 / 1 / 0 |" in lines
    row = next(x for x in lines if x.startswith("| AV_b_0 | AO_b_0 |"))
    lo, hi = (f"{100 * v:+.1f}" for v in c["ci95"])
    # B better on no clip, worse on all 40: the difference is never reversed, p reads below 1 / 500
    assert row == f"| AV_b_0 | AO_b_0 | 18.8 % | 93.8 % | +75.0 | [{lo}, {hi}] | < 2e-03 | 0 / 40 / 0 |"


def test_tables_without_comparisons_and_bad_input_name_the_file(tmp_path, tables, capsys):
    _report(tmp_path / "X.json", [1, 0], 0.125)
    md = tables["tables"](tmp_path)
    assert "Paired bootstrap" not in md and "| X | 12.50 % | 0 / 1 / 0 |" in md
    (tmp_path / "compare.txt").write_text("X - Y: {}\n")
    with pytest.raises(ValueError, match=r"compare\.txt:1: not a 'B - A"):
        tables["tables"](tmp_path)
    (tmp_path / "compare.txt").unlink()
    (tmp_path / "Z.json").write_text("{}")
    assert tables["main"]([str(tmp_path)]) == 2
    assert "Z.json: not an mmlora evaluate report" in capsys.readouterr().err
    assert tables["main"]([str(tmp_path / "nowhere")]) == 2
