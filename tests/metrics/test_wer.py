"""WER/CER against jiwer called directly on the same normalized text, against an independent
Levenshtein reference, and the normalization rules (case, punctuation, apostrophes, numbers)."""
from __future__ import annotations

import json
import random

import jiwer
import pytest

from mmlora.metrics.wer import compute_wer, group_wer, normalize_text, number_to_words, ordinal_words

VOCAB = "the a cat dog sat on mat and then ran away quickly over hill don't it's o'clock".split()


def levenshtein(a: list, b: list) -> int:
    """Plain dynamic-programming edit distance (unit costs)."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def random_corpus(seed: int, n: int = 40):
    """References with numbers/punctuation/case, hypotheses = references with random word edits."""
    rng = random.Random(seed)
    refs, hyps = [], []
    for _ in range(n):
        words = [rng.choice(VOCAB) for _ in range(rng.randint(1, 12))]
        if rng.random() < 0.3:
            words.insert(rng.randrange(len(words) + 1), str(rng.randint(0, 3000)))
        ref = " ".join(words)
        ref = ref[0].upper() + ref[1:] + rng.choice([".", "!", "?", ""])
        hyp = list(words)
        for _ in range(rng.randint(0, 3)):
            op = rng.choice("sdi")
            pos = rng.randrange(len(hyp) + (op == "i")) if hyp or op == "i" else None
            if pos is None:
                continue
            if op == "s":
                hyp[pos] = rng.choice(VOCAB)
            elif op == "d":
                del hyp[pos]
            else:
                hyp.insert(pos, rng.choice(VOCAB))
        refs.append(ref)
        hyps.append(" ".join(hyp).upper() if rng.random() < 0.2 else " ".join(hyp))
    return refs, hyps


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_corpus_wer_cer_match_jiwer_on_normalized_text(seed):
    refs, hyps = random_corpus(seed)
    res = compute_wer(refs, hyps)
    r_n = [normalize_text(t) for t in refs]
    h_n = [normalize_text(t) for t in hyps]
    out = jiwer.process_words(r_n, h_n)
    assert res.wer == pytest.approx(jiwer.wer(r_n, h_n), abs=1e-12)
    assert res.cer == pytest.approx(jiwer.cer(r_n, h_n), abs=1e-12)
    assert (res.hits, res.substitutions, res.deletions, res.insertions) == (
        out.hits, out.substitutions, out.deletions, out.insertions)
    assert res.n == len(refs) and res.ref_words == sum(len(t.split()) for t in r_n)
    # independent check of the totals: sum of per-utterance edit distances
    word_edits = sum(levenshtein(r.split(), h.split()) for r, h in zip(r_n, h_n))
    char_edits = sum(levenshtein(list(r), list(h)) for r, h in zip(r_n, h_n))
    assert res.substitutions + res.deletions + res.insertions == word_edits
    assert res.char_edits == char_edits and res.ref_chars == sum(len(r) for r in r_n)
    assert res.wer == pytest.approx(word_edits / res.ref_words)


def test_corpus_wer_is_not_the_mean_of_utterance_wers():
    res = compute_wer(["a b c d e f g h i j", "x"], ["a b c d e f g h i j", "y"])
    assert res.wer == pytest.approx(1 / 11)
    assert [u.wer for u in res.utterances] == [0.0, 1.0]


def test_per_utterance_details_match_jiwer_per_pair():
    refs = ["The cat sat on the mat.", "Hello world", "It's 5 o'clock", "  "]
    hyps = ["the cat sat on mat", "hello there big world", "its five o'clock", "noise"]
    res = compute_wer(refs, hyps, ids=["u1", "u2", "u3", "u4"])
    for u, r, h in zip(res.utterances, refs, hyps):
        rn, hn = normalize_text(r), normalize_text(h)
        assert (u.ref_norm, u.hyp_norm) == (rn, hn) and (u.reference, u.hypothesis) == (r, h)
        o = jiwer.process_words(rn, hn)
        assert (u.hits, u.substitutions, u.deletions, u.insertions) == (o.hits, o.substitutions, o.deletions,
                                                                        o.insertions)
        assert u.errors == o.substitutions + o.deletions + o.insertions
        if rn:
            assert u.wer == pytest.approx(jiwer.wer(rn, hn)) and u.cer == pytest.approx(jiwer.cer(rn, hn))
    assert [u.id for u in res.utterances] == ["u1", "u2", "u3", "u4"]
    assert res.utterances[0].deletions == 1 and res.utterances[1].insertions == 2
    assert res.utterances[2].substitutions == 1  # "it's" vs "its": the apostrophe is kept
    empty = res.utterances[3]
    assert empty.ref_words == 0 and empty.wer is None and empty.insertions == 1
    assert res.insertions == 3  # the empty reference's insertion still counts in the corpus
    json.dumps(res.to_dict())  # the report is plain JSON
    assert set(res.summary()) >= {"wer", "cer", "n", "substitutions", "deletions", "insertions"}


def test_group_wer_equals_jiwer_on_each_group():
    rng = random.Random(3)
    vocab = "the cat sat on a mat and then ran far away".split()
    refs = [" ".join(rng.choices(vocab, k=rng.randint(2, 9))) for _ in range(40)]
    hyps = [" ".join(w for w in r.split() if rng.random() > 0.2) + rng.choice(["", " cat"]) for r in refs]
    groups = [rng.choice(["a", "b", "c", None]) for _ in refs]
    res = compute_wer(refs, hyps)
    by = group_wer(res.utterances, groups)
    assert sorted(by) == sorted({g for g in groups if g is not None})
    for g, row in by.items():
        sel = [i for i, x in enumerate(groups) if x == g]
        assert row["n"] == len(sel)
        assert row["wer"] == pytest.approx(jiwer.wer([refs[i] for i in sel], [hyps[i] for i in sel]))
    with pytest.raises(ValueError, match="3 groups for 40"):
        group_wer(res.utterances, ["a"] * 3)


def test_normalize_false_and_custom_callable():
    res = compute_wer(["Hello, world"], ["hello world"], normalize=False)
    assert (res.substitutions, res.hits) == (1, 1)  # "Hello," != "hello"; "world" matches
    res = compute_wer(["A B"], ["a b"], normalize=str.lower)
    assert res.wer == 0.0


def test_bad_inputs():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        compute_wer(["a", "b"], ["a"])
    with pytest.raises(ValueError, match=r"hypothesis 1 \(id 'x2'\) is NoneType"):
        compute_wer(["a", "b"], ["a", None], ids=["x1", "x2"])
    with pytest.raises(ValueError, match="no words after normalization"):
        compute_wer(["...", ""], ["a", ""])
    with pytest.raises(ValueError, match="ids"):
        compute_wer(["a"], ["a"], ids=["1", "2"])
    with pytest.raises(TypeError, match="string"):
        normalize_text(5)


NORMALIZATION = [
    ("Hello, World!", "hello world"),
    ("  MULTIPLE   spaces\tand\nnewlines ", "multiple spaces and newlines"),
    ("I don't know.", "i don't know"),
    ("I don\u2019t know", "i don't know"),                       # curly apostrophe
    ("'Tis the dogs' bones, 'quoted'", "tis the dogs bones quoted"),
    ("o'clock rock'n'roll", "o'clock rock'n'roll"),
    ("well-known -- state-of-the-art", "well known state of the art"),
    ("U.S.A. e.g.", "u s a e g"),
    ("21", "twenty one"),
    ("He is 21 years old", "he is twenty one years old"),
    ("0 7 13 40 99 100", "zero seven thirteen forty ninety nine one hundred"),
    ("101 110 999", "one hundred one one hundred ten nine hundred ninety nine"),
    ("1998", "one thousand nine hundred ninety eight"),
    ("1,000,000 and 1,234", "one million and one thousand two hundred thirty four"),
    ("2000000000", "two billion"),
    ("1st 2nd 3rd 4th 11th 12th 13th", "first second third fourth eleventh twelfth thirteenth"),
    ("21st 22nd 100th 101st 1000th", "twenty first twenty second one hundredth one hundred first one thousandth"),
    ("20th 90th", "twentieth ninetieth"),
    ("3.14", "three point one four"),
    ("0.5 and 2.05.", "zero point five and two point zero five"),
    ("007", "zero zero seven"),
    ("50% & more", "fifty percent and more"),
    ("mp3 4k", "mp three four k"),
    ("3's", "three's"),
    ("10:30", "ten thirty"),
    ("Café NAÏVE", "café naïve"),
    ("x\u00b2", "x two"),                                        # NFKC superscript
    ("snake_case", "snake case"),
    ("", ""),
]


@pytest.mark.parametrize("raw,expected", NORMALIZATION)
def test_normalize_text_cases(raw, expected):
    assert normalize_text(raw) == expected
    assert normalize_text(expected) == expected  # idempotent


def test_normalize_is_idempotent_on_random_text():
    rng = random.Random(5)
    alphabet = "abcXYZ019 ,.'-!?&%’_\"é"
    for _ in range(300):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        once = normalize_text(s)
        assert normalize_text(once) == once
        assert not any(c.isdigit() for c in once)


@pytest.mark.parametrize("n", [0, 1, 9, 10, 11, 19, 20, 21, 45, 99, 100, 101, 110, 115, 999, 1000, 1001, 1010,
                               1998, 2024, 10000, 12345, 100000, 999999, 1000000, 1000001, 123456789,
                               10 ** 9, 10 ** 12 + 5, 10 ** 18 + 7])
def test_numbers_agree_with_num2words(n):
    num2words = pytest.importorskip("num2words").num2words
    # num2words writes British style ("one hundred and one", "twenty-one", commas): strip those
    def plain(s: str) -> str:
        return " ".join(w for w in s.replace("-", " ").replace(",", " ").split() if w != "and")
    assert number_to_words(n) == plain(num2words(n))
    assert ordinal_words(n) == plain(num2words(n, to="ordinal"))


def test_number_range():
    assert number_to_words(-3) == "minus three"
    with pytest.raises(ValueError, match="10\\*\\*21"):
        number_to_words(10 ** 21)
    assert normalize_text("1" * 22) == " ".join(["one"] * 22)  # too long: digit by digit


# ------------------------------------------------------------------ paired bootstrap (mmlora compare-wer)
def _reference_bootstrap(a, b, n, samples, seed, chunk=1_000):
    """The formula one resample at a time, in plain Python, on the same index draws as the implementation."""
    import numpy as np

    rng, diffs = np.random.default_rng(seed), []
    for start in range(0, samples, chunk):
        for row in rng.integers(0, len(a), size=(min(chunk, samples - start), len(a))):
            diffs.append(sum(b[i] - a[i] for i in row) / sum(n[i] for i in row))
    diffs.sort()
    return diffs


def test_paired_bootstrap_matches_the_formula_resample_by_resample():
    import numpy as np

    from mmlora.metrics.wer import paired_bootstrap

    rnd = random.Random(3)
    n = [rnd.randint(3, 20) for _ in range(40)]
    a = [rnd.randint(0, k) for k in n]
    b = [max(0, e + rnd.randint(-2, 1)) for e in a]
    r = paired_bootstrap(a, b, n, samples=2_500, seed=5)
    ref = _reference_bootstrap(a, b, n, 2_500, 5)
    assert r["ci95"] == pytest.approx(list(np.percentile(ref, [2.5, 97.5])), abs=1e-12)
    below, above = sum(d <= 0 for d in ref) / len(ref), sum(d >= 0 for d in ref) / len(ref)
    assert r["p_two_sided"] == pytest.approx(min(1.0, 2 * min(below, above)))
    assert r["diff"] == pytest.approx((sum(b) - sum(a)) / sum(n)) and r["wer_a"] == pytest.approx(sum(a) / sum(n))
    d = [y - x for x, y in zip(a, b)]
    assert (r["better"], r["worse"], r["equal"]) == (sum(v < 0 for v in d), sum(v > 0 for v in d), d.count(0))


def test_paired_bootstrap_extremes_and_bad_input():
    from mmlora.metrics.wer import paired_bootstrap

    n = [10] * 30
    same = paired_bootstrap([3] * 30, [3] * 30, n, samples=500)
    assert same["diff"] == 0 and same["ci95"] == [0, 0] and same["p_two_sided"] == 1.0 and same["equal"] == 30
    better = paired_bootstrap([4] * 30, [2] * 30, n, samples=500)  # B better on every utterance: never reversed
    assert better["ci95"][1] < 0 and better["p_two_sided"] == 0 and better["better"] == 30
    # a small, noisy difference: the interval covers zero
    noisy = paired_bootstrap([5, 0] * 15, [0, 5] * 14 + [0, 4], n, samples=2_000)
    assert noisy["ci95"][0] < 0 < noisy["ci95"][1] and noisy["p_two_sided"] > 0.5
    with pytest.raises(ValueError, match="equal, non-empty"):
        paired_bootstrap([1, 2], [1], [3, 3])
    with pytest.raises(ValueError, match="no words"):
        paired_bootstrap([0], [0], [0])


def _report(path, utts):
    path.write_text(json.dumps({"wer": 0.0, "utterances": [
        {"index": i, "id": uid, "ref_norm": ref, "ref_words": len(ref.split()), "substitutions": s, "deletions": 0,
         "insertions": ins} for i, (uid, ref, s, ins) in enumerate(utts)]}))
    return path


def test_compare_reports_matches_utterances_by_id_and_names_the_bad_file(tmp_path, capsys):
    from mmlora.cli import main
    from mmlora.metrics.wer import compare_reports

    a = _report(tmp_path / "a.json", [("u1", "one two three", 1, 0), ("u2", "four five", 0, 1), ("u3", "six", 1, 0)])
    b = _report(tmp_path / "b.json", [("u3", "six", 0, 0), ("u1", "one two three", 0, 0), ("u2", "four five", 0, 1)])
    r = compare_reports(a, b, samples=200)
    assert r["wer_a"] == pytest.approx(3 / 6) and r["wer_b"] == pytest.approx(1 / 6)
    assert (r["better"], r["worse"], r["equal"]) == (2, 0, 1)
    other = _report(tmp_path / "c.json", [("u1", "one two three", 1, 0), ("u9", "seven", 0, 0)])
    with pytest.raises(ValueError, match=r"c\.json: not the utterances of .*a\.json \(2 only in the first, 1 only"):
        compare_reports(a, other)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match=r"bad\.json: not an mmlora evaluate report"):
        compare_reports(tmp_path / "bad.json", a)
    assert main(["compare-wer", str(a), str(b), "--samples", "200"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2].startswith("B - A -33.33 points, 95 % CI [") and json.loads(out[-1])["better"] == 2
    assert main(["compare-wer", str(a), str(tmp_path / "missing.json")]) == 2
    assert "missing.json: no such report" in capsys.readouterr().err


def test_compare_reports_joins_pairs_of_reports_as_one_test_set(tmp_path, capsys):
    """Two manifests (the 16 + 24 human clips): A's i-th report pairs with B's i-th, ids may repeat across the pairs,
    and the bootstrap runs on all utterances at once, as paired_bootstrap on the concatenated counts."""
    from mmlora.cli import main
    from mmlora.metrics.wer import compare_reports, paired_bootstrap

    a1 = _report(tmp_path / "a1.json", [("u1", "one two three", 1, 0), ("u2", "four five", 0, 1)])
    b1 = _report(tmp_path / "b1.json", [("u2", "four five", 0, 0), ("u1", "one two three", 2, 0)])
    a2 = _report(tmp_path / "a2.json", [("u1", "six seven", 1, 1)])  # the id u1 again, on another manifest
    b2 = _report(tmp_path / "b2.json", [("u1", "six seven", 0, 0)])
    r = compare_reports([a1, a2], [b1, b2], samples=300, seed=3)
    want = paired_bootstrap([1, 1, 2], [2, 0, 0], [3, 2, 2], samples=300, seed=3)
    assert {k: r[k] for k in want} == want and r["a"] == f"{a1} + {a2}"
    assert r["wer_a"] == pytest.approx(4 / 7) and r["wer_b"] == pytest.approx(2 / 7)
    with pytest.raises(ValueError, match=r"b2\.json: not the utterances of .*a1\.json"):
        compare_reports([a1, a2], [b2, b1])
    with pytest.raises(ValueError, match="2 report.* of A against 1 of B"):
        compare_reports([a1, a2], [b1])
    assert main(["compare-wer", str(a1), str(b1), "--also", str(a2), str(b2), "--samples", "300", "--seed", "3"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["diff"] == pytest.approx(want["diff"])


def test_compare_by_parts_splits_by_a_third_reports_wer_and_bootstraps_each_part(tmp_path, capsys):
    """`mmlora compare-wer A B --by C --parts k`: the utterances sorted by C's WER (best first, ties in C's order) cut
    into k equal shares; each share's WER in C, A and B and paired_bootstrap of B - A on its utterances alone
    (GPU runs 39-40: AVSR against ASR by how well AVSR reads the lips alone)."""
    from mmlora.cli import main
    from mmlora.metrics.wer import compare_by_parts, paired_bootstrap

    rnd = random.Random(7)
    refs = [(f"u{i}", " ".join(["w"] * rnd.randint(2, 9))) for i in range(12)]
    errs_a = [rnd.randint(0, 3) for _ in refs]
    errs_b = [rnd.randint(0, 3) for _ in refs]
    errs_c = [rnd.randint(0, 4) for _ in refs]
    a = _report(tmp_path / "a.json", [(u, r, e, 0) for (u, r), e in zip(refs, errs_a)])
    b = _report(tmp_path / "b.json", [(u, r, 0, e) for (u, r), e in reversed(list(zip(refs, errs_b)))])  # order differs
    c = _report(tmp_path / "c.json", [(u, r, e, 0) for (u, r), e in zip(refs, errs_c)])
    words = [len(r.split()) for _, r in refs]
    order = sorted(range(12), key=lambda i: (errs_c[i] / words[i], i))
    rows = compare_by_parts(a, b, c, parts=3, samples=300, seed=2)
    assert [q["utterances"] for q in rows] == [4, 4, 4]
    for q, idx in zip(rows, (order[:4], order[4:8], order[8:])):
        want = paired_bootstrap([errs_a[i] for i in idx], [errs_b[i] for i in idx], [words[i] for i in idx],
                                samples=300, seed=2)
        assert {k: q[k] for k in want} == want
        assert q["wer_by"] == pytest.approx(sum(errs_c[i] for i in idx) / sum(words[i] for i in idx))
    assert rows[0]["wer_by"] <= rows[1]["wer_by"] <= rows[2]["wer_by"]
    assert main(["compare-wer", str(a), str(b), "--by", str(c), "--parts", "3", "--samples", "300", "--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert "| 1 of 3 | " in out and json.loads(out.splitlines()[-1])["parts"] == rows
    other = _report(tmp_path / "o.json", [(u, r, 0, 0) for u, r in refs[:5]])
    with pytest.raises(ValueError, match=r"o\.json: not the utterances of"):
        compare_by_parts(a, b, other)
    with pytest.raises(ValueError, match="fewer than the 13 parts"):
        compare_by_parts(a, b, c, parts=13)
    with pytest.raises(SystemExit):
        main(["compare-wer", str(a), str(b), "--by", str(c), "--also", str(a), str(b)])
