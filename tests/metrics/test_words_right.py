"""scripts/words_right.py: the reference words aligned as equal, with the most frequent ones counted apart."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def report(path: Path, pairs: list[tuple[str, str]]) -> Path:
    path.write_text(json.dumps({"wer": 0.5, "utterances": [{"ref_norm": r, "hyp_norm": h} for r, h in pairs]}))
    return path


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts/words_right.py"), *args], capture_output=True,
                          text=True, timeout=60)


def test_counts_aligned_words_and_sets_the_most_frequent_apart(tmp_path):
    refs = ["the cat sat on the mat", "the dog ran", "a bird sang"]
    right = report(tmp_path / "right.json", list(zip(refs, [
        "the cat sat in a mat",   # the, cat, sat, mat equal; on→in, the→a substituted
        "dog ran the",            # "the" deleted at the start, "dog ran" equal, "the" inserted
        "",                       # nothing said: no word right
    ])))
    wrong = report(tmp_path / "wrong.json", list(zip(refs, ["a a a a a a", "the cow", "a word"])))
    p = run(str(right), str(wrong), "--common", "1")  # "the" (3 of the 12 reference words) is the most frequent
    assert p.returncode == 0, p.stderr
    rows = {line.split(" | ")[0].lstrip("| "): line for line in p.stdout.splitlines()[2:]}
    # right: the, cat, sat, mat, dog, ran = 6 of 12; outside "the": cat, sat, mat, dog, ran = 5 of 9
    assert " | 6 of 12 | 5 of 9 | " in rows[str(right)]
    assert rows[str(right)].rstrip(" |").endswith("cat 1, dog 1, mat 1, ran 1, sat 1")
    # wrong: none in clip 1 (its reference has no "a"), "the" in clip 2, "a" in clip 3
    assert " | 2 of 12 | 1 of 9 | a 1 |" in rows[str(wrong)]


def test_a_file_that_is_no_report_is_named(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"wer": 0.1}))
    p = run(str(bad))
    assert p.returncode != 0 and "bad.json: not an mmlora evaluate report" in p.stderr
