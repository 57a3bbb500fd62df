"""Word and character error rates on normalized text (jiwer does the alignment).

Corpus-level WER, as Llama-AVSR reports it: total word edits over total reference words,

    WER = (S + D + I) / (S + D + H)          summed over all utterances (not a mean of per-utterance WERs)

and likewise CER over characters of the normalized text (spaces between words count as
characters). Both sides pass through :func:`normalize_text` first (unless ``normalize=False``
or another callable is given).

Public API: :func:`normalize_text`, :func:`number_to_words`, :func:`ordinal_words`,
:func:`compute_wer` → :class:`WERResult` (with per-utterance :class:`UtteranceScore`).
"""
from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import jiwer
import numpy as np

__all__ = ["normalize_text", "number_to_words", "ordinal_words", "compute_wer", "group_wer", "WERResult", "UtteranceScore",
           "paired_bootstrap", "compare_reports"]

# ------------------------------------------------------------------ numbers as words (US English, no "and")
_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
         "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = ["", "thousand", "million", "billion", "trillion", "quadrillion", "quintillion"]
_MAX = 1000 ** len(_SCALES)  # 10^21: larger integers are read digit by digit
_ORDINAL_IRREGULAR = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                      "nine": "ninth", "twelve": "twelfth"}


def _below_thousand(n: int) -> list[str]:
    words: list[str] = []
    if n >= 100:
        words += [_ONES[n // 100], "hundred"]
        n %= 100
    if n >= 20:
        words.append(_TENS[n // 10])
        n %= 10
        if n:
            words.append(_ONES[n])
    elif n or not words:
        words.append(_ONES[n])
    return words


def number_to_words(n: int) -> str:
    """Cardinal in words: ``21 -> "twenty one"``, ``1005 -> "one thousand five"``,
    ``1998 -> "one thousand nine hundred ninety eight"`` (American style: no "and", no hyphens,
    no commas; years are not read as "nineteen ninety eight"). ``0 <= n < 10**21``; negative
    numbers get a leading "minus".
    """
    n = int(n)
    if n < 0:
        return "minus " + number_to_words(-n)
    if n >= _MAX:
        raise ValueError(f"number_to_words handles integers below 10**21, got {n}")
    if n == 0:
        return "zero"
    words: list[str] = []
    for i in range(len(_SCALES) - 1, -1, -1):
        group = (n // 1000 ** i) % 1000
        if group:
            words += _below_thousand(group) + ([_SCALES[i]] if i else [])
    return " ".join(words)


def ordinal_words(n: int) -> str:
    """Ordinal in words: ``1 -> "first"``, ``21 -> "twenty first"``, ``100 -> "one hundredth"``."""
    head, _, last = number_to_words(n).rpartition(" ")
    if last in _ORDINAL_IRREGULAR:
        last = _ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return f"{head} {last}" if head else last


def _digits(s: str) -> str:
    return " ".join(_ONES[int(c)] for c in s)


# an integer (optionally with 3-digit thousands groups), then a decimal part or an ordinal suffix
_NUMBER = re.compile(r"(?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.(?P<frac>\d+)|(?P<ord>st|nd|rd|th)(?![^\W\d_]))?")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u2032": "'", "`": "'"})


def _number_words(m: re.Match) -> str:
    digits = m.group("int").replace(",", "")
    if len(digits) > 1 and digits[0] == "0" or int(digits) >= _MAX:
        words = _digits(digits)  # "007" -> "zero zero seven"; huge numbers digit by digit
    elif m.group("ord"):
        words = ordinal_words(int(digits))
    else:
        words = number_to_words(int(digits))
    if m.group("frac"):
        words += " point " + _digits(m.group("frac"))
    after = m.string[m.end():m.end() + 1]
    return f" {words}" + ("" if after == "'" else " ")  # "3's" -> "three's"


def normalize_text(text: str) -> str:
    """Normalize a transcript for WER. The steps, in order:

    1. Unicode NFKC (``"ﬁ" -> "fi"``, ``"²" -> "2"``); curly/modifier apostrophes and backticks
       become ``'``; then lower-case (``str.lower``).
    2. ``&`` -> `` and ``, ``%`` -> `` percent``.
    3. Numbers become words (:func:`number_to_words`): ``"21" -> "twenty one"``;
       thousands separators ``"1,000,000" -> "one million"``; ordinals ``"21st" -> "twenty first"``
       (any of st/nd/rd/th); decimals ``"3.14" -> "three point one four"``; a digit string with a
       leading zero or of 22+ digits is read digit by digit (``"007" -> "zero zero seven"``).
       Digits glued to letters are split off (``"mp3" -> "mp three"``). Signs and currency
       symbols are not spoken (``"-5" -> "five"``, ``"$5" -> "five"``).
    4. Punctuation and symbols (anything not a letter, digit, apostrophe or space; also ``_``)
       become spaces: ``"well-known" -> "well known"``, ``"U.S." -> "u s"``.
    5. Apostrophes are kept inside words (``"don't"``, ``"o'clock"``, ``"rock'n'roll"``) and
       dropped elsewhere (``"'tis" -> "tis"``, ``"dogs'" -> "dogs"``, quotes ``'hi' -> "hi"``).
    6. Whitespace runs collapse to one space; leading/trailing space removed.

    Letters of any script are kept, accents included (``"café"``). The function is idempotent.
    """
    if not isinstance(text, str):
        raise TypeError(f"normalize_text expects a string, got {type(text).__name__}")
    s = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).lower()
    s = s.replace("&", " and ").replace("%", " percent ")
    s = _NUMBER.sub(_number_words, s)
    s = re.sub(r"[^\w\s']|_", " ", s)
    s = re.sub(r"(?<!\w)'+|'+(?!\w)", " ", s)
    return " ".join(s.split())


# ------------------------------------------------------------------ scoring
@dataclass
class UtteranceScore:
    """One utterance: raw and normalized texts and its edit counts."""

    index: int                  # position in the input lists
    id: str | None              # caller's utterance id (None when not given)
    reference: str              # raw reference
    hypothesis: str             # raw hypothesis
    ref_norm: str               # normalized reference (what was scored)
    hyp_norm: str               # normalized hypothesis
    ref_words: int              # N = S + D + H
    hits: int                   # H: words matched
    substitutions: int          # S
    deletions: int              # D: reference words missing from the hypothesis
    insertions: int             # I: hypothesis words not in the reference
    wer: float | None           # (S+D+I)/N; None when the normalized reference is empty
    ref_chars: int              # characters of ref_norm (spaces included)
    char_edits: int             # character-level S+D+I
    cer: float | None           # char_edits/ref_chars; None when ref_chars is 0

    @property
    def errors(self) -> int:
        """S + D + I: the utterance's word errors (not in the report: derived)."""
        return self.substitutions + self.deletions + self.insertions


@dataclass
class WERResult:
    """Corpus totals plus per-utterance details."""

    wer: float                  # (S+D+I)/N over the corpus
    cer: float                  # character edits / reference characters over the corpus
    n: int                      # utterances scored
    ref_words: int              # N = S + D + H
    hits: int
    substitutions: int
    deletions: int
    insertions: int
    ref_chars: int
    char_edits: int
    utterances: list[UtteranceScore] = field(default_factory=list)

    def summary(self) -> dict:
        """Corpus numbers only (for the one-line JSON summary)."""
        return {"wer": self.wer, "cer": self.cer, "n": self.n, "ref_words": self.ref_words, "hits": self.hits,
                "substitutions": self.substitutions, "deletions": self.deletions, "insertions": self.insertions,
                "ref_chars": self.ref_chars, "char_edits": self.char_edits}

    def to_dict(self) -> dict:
        return {**self.summary(), "utterances": [asdict(u) for u in self.utterances]}


def _counts(alignment) -> tuple[int, int, int, int]:
    """(hits, substitutions, deletions, insertions) from one jiwer alignment."""
    h = s = d = i = 0
    for c in alignment:
        n_ref, n_hyp = c.ref_end_idx - c.ref_start_idx, c.hyp_end_idx - c.hyp_start_idx
        if c.type == "equal":
            h += n_ref
        elif c.type == "substitute":
            s += n_ref
        elif c.type == "delete":
            d += n_ref
        elif c.type == "insert":
            i += n_hyp
        else:  # pragma: no cover - jiwer's alignment types are fixed
            raise RuntimeError(f"unknown jiwer alignment chunk type {c.type!r}")
    return h, s, d, i


def compute_wer(references: Sequence[str], hypotheses: Sequence[str], ids: Sequence[str] | None = None,
                normalize: bool | Callable[[str], str] = True) -> WERResult:
    """Corpus WER/CER of ``hypotheses`` against ``references`` (same order, one string each).

    ``normalize``: True -> :func:`normalize_text`; False -> whitespace split only; or any
    ``str -> str`` callable. Utterances whose normalized reference is empty still count their
    insertions in the corpus totals (their own ``wer`` is None). Raises ValueError when the lists
    differ in length, an entry is not a string, or no reference word is left to score.
    """
    refs, hyps = list(references), list(hypotheses)
    if len(refs) != len(hyps):
        raise ValueError(f"compute_wer: {len(refs)} references but {len(hyps)} hypotheses")
    if ids is not None and len(ids) != len(refs):
        raise ValueError(f"compute_wer: {len(ids)} ids for {len(refs)} references")
    for name, seq in (("reference", refs), ("hypothesis", hyps)):
        for i, t in enumerate(seq):
            if not isinstance(t, str):
                who = f" (id {ids[i]!r})" if ids is not None else ""
                raise ValueError(f"compute_wer: {name} {i}{who} is {type(t).__name__}, not a string")
    norm = normalize_text if normalize is True else (normalize or (lambda t: t))
    ref_n = [" ".join(norm(t).split()) for t in refs]
    hyp_n = [" ".join(norm(t).split()) for t in hyps]
    total_ref = sum(len(t.split()) for t in ref_n)
    if total_ref == 0:
        raise ValueError("compute_wer: the references contain no words after normalization; WER is undefined")
    words = jiwer.process_words(ref_n, hyp_n)
    chars = jiwer.process_characters(ref_n, hyp_n)
    utts: list[UtteranceScore] = []
    for i, (r, h) in enumerate(zip(ref_n, hyp_n)):
        H, S, D, I = _counts(words.alignments[i])
        _, cs, cd, ci = _counts(chars.alignments[i])
        n_ref, n_chars, c_edits = H + S + D, len(r), cs + cd + ci
        utts.append(UtteranceScore(
            index=i, id=None if ids is None else str(ids[i]), reference=refs[i], hypothesis=hyps[i],
            ref_norm=r, hyp_norm=h, ref_words=n_ref, hits=H, substitutions=S, deletions=D, insertions=I,
            wer=(S + D + I) / n_ref if n_ref else None, ref_chars=n_chars, char_edits=c_edits,
            cer=c_edits / n_chars if n_chars else None))
    S, D, I, H = (sum(getattr(u, k) for u in utts) for k in ("substitutions", "deletions", "insertions", "hits"))
    n_chars, c_edits = sum(u.ref_chars for u in utts), sum(u.char_edits for u in utts)
    return WERResult(wer=(S + D + I) / (S + D + H), cer=c_edits / n_chars, n=len(utts), ref_words=S + D + H,
                     hits=H, substitutions=S, deletions=D, insertions=I, ref_chars=n_chars, char_edits=c_edits,
                     utterances=utts)


def group_wer(utterances: Sequence[UtteranceScore], groups: Sequence[str | None]) -> dict[str, dict]:
    """Corpus WER within each group (e.g. the voice of each utterance): ``{group: {wer, n, ref_words,
    substitutions, deletions, insertions}}``, sorted by group; utterances whose group is None are left out."""
    if len(groups) != len(utterances):
        raise ValueError(f"group_wer: {len(groups)} groups for {len(utterances)} utterances")
    acc: dict[str, list[int]] = {}
    for u, g in zip(utterances, groups):
        if g is None:
            continue
        a = acc.setdefault(str(g), [0, 0, 0, 0, 0])
        for i, v in enumerate((1, u.ref_words, u.substitutions, u.deletions, u.insertions)):
            a[i] += v
    out = {}
    for g in sorted(acc):
        n, N, S, D, I = acc[g]
        out[g] = {"wer": (S + D + I) / N if N else None, "n": n, "ref_words": N, "substitutions": S,
                  "deletions": D, "insertions": I}
    return out


# ------------------------------------------------------------------ comparing two systems
def paired_bootstrap(errors_a: Sequence[int], errors_b: Sequence[int], ref_words: Sequence[int],
                     samples: int = 10_000, seed: int = 0, chunk: int = 1_000) -> dict:
    """Paired bootstrap over utterances (Bisani & Ney, 2004) of the corpus WER difference B - A.

    ``errors_*[i]``: S + D + I of utterance i for each system, ``ref_words[i]`` its reference words (the same
    utterances, in the same order). Each of ``samples`` resamples draws len(utterances) indices with replacement
    (numpy, ``seed``) and scores both systems on the same draw. Returns ``{"wer_a", "wer_b", "diff", "ci95":
    [lo, hi], "p_two_sided", "samples", "better", "worse", "equal"}``: ``diff`` in WER units (B - A; negative: B
    makes fewer errors), ``ci95`` the 2.5 / 97.5 percentiles of the resampled differences, ``p_two_sided`` twice
    the smaller share of resamples on either side of zero (capped at 1; a difference never reversed in any
    resample reads 0, i.e. below 1 / samples), and ``better`` / ``worse`` / ``equal`` the utterances where B makes
    fewer / more / as many errors as A.
    """
    a, b, n = (np.asarray(v, dtype=np.int64) for v in (errors_a, errors_b, ref_words))
    if not (a.shape == b.shape == n.shape) or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"paired_bootstrap: need three equal, non-empty lists, got {len(a)} / {len(b)} / {len(n)}")
    if n.sum() <= 0:
        raise ValueError("paired_bootstrap: the references hold no words")
    if samples < 1:
        raise ValueError(f"paired_bootstrap: samples must be at least 1, got {samples}")
    rng = np.random.default_rng(seed)
    diffs = np.empty(samples)
    d = b - a
    for start in range(0, samples, chunk):
        idx = rng.integers(0, len(a), size=(min(chunk, samples - start), len(a)))
        words = n[idx].sum(axis=1)
        diffs[start : start + len(idx)] = d[idx].sum(axis=1) / np.maximum(words, 1)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    p = min(1.0, 2 * min(float(np.mean(diffs <= 0)), float(np.mean(diffs >= 0))))
    return {"wer_a": float(a.sum() / n.sum()), "wer_b": float(b.sum() / n.sum()), "diff": float(d.sum() / n.sum()),
            "ci95": [float(lo), float(hi)], "p_two_sided": p, "samples": samples,
            "better": int((d < 0).sum()), "worse": int((d > 0).sum()), "equal": int((d == 0).sum())}


def report_utterances(path: str | Path) -> list[dict]:
    """The per-utterance results of an ``mmlora evaluate`` report; ValueError naming the file otherwise."""
    try:
        return json.loads(Path(path).read_text())["utterances"]
    except FileNotFoundError:
        raise ValueError(f"{path}: no such report") from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not an mmlora evaluate report with per-utterance results ({e})") from None


def _report_errors(path: str | Path) -> tuple[list[str], list[int], list[int]]:
    """(keys, errors, reference words) per utterance of an ``mmlora evaluate`` report, in report order; a key is
    the utterance's id (or index) and normalized reference."""
    utts = report_utterances(path)
    keys, errs, words = [], [], []
    for i, u in enumerate(utts):
        try:
            keys.append(f"{u.get('id') if u.get('id') is not None else u['index']}\t{u['ref_norm']}")
            errs.append(int(u["substitutions"]) + int(u["deletions"]) + int(u["insertions"]))
            words.append(int(u["ref_words"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: utterance {i} lacks its counts ({e})") from None
    return keys, errs, words


def _matched_errors(path_a: str | Path, path_b: str | Path) -> tuple[list[int], list[int], list[int]]:
    """A's errors, B's errors (in A's order) and the reference words of two reports of one manifest."""
    ka, ea, na = _report_errors(path_a)
    kb, eb, _ = _report_errors(path_b)
    pos = {k: i for i, k in enumerate(kb)}
    if len(pos) != len(kb) or set(ka) != set(pos):
        only_a, only_b = len(set(ka) - set(pos)), len(set(pos) - set(ka))
        raise ValueError(f"{path_b}: not the utterances of {path_a} ({only_a} only in the first, {only_b} only in "
                         f"the second{', repeated ids' if len(pos) != len(kb) else ''}); compare reports of one manifest")
    return ea, [eb[pos[k]] for k in ka], na


def compare_reports(path_a: str | Path | Sequence[str | Path], path_b: str | Path | Sequence[str | Path],
                    samples: int = 10_000, seed: int = 0) -> dict:
    """:func:`paired_bootstrap` of two ``mmlora evaluate`` reports on the same utterances (matched by id and
    normalized reference; the order may differ). Raises ValueError naming the file when they do not match.
    ``path_a`` and ``path_b`` may also be equal-length lists: A's i-th report pairs with B's i-th (one manifest
    each, e.g. two human test sets), and the utterances of all pairs are resampled together as one test set."""
    pa = [path_a] if isinstance(path_a, (str, Path)) else list(path_a)
    pb = [path_b] if isinstance(path_b, (str, Path)) else list(path_b)
    if len(pa) != len(pb) or not pa:
        raise ValueError(f"compare_reports: {len(pa)} report(s) of A against {len(pb)} of B; pair one with one")
    ea, eb, na = [], [], []
    for a, b in zip(pa, pb):
        xa, xb, n = _matched_errors(a, b)
        ea, eb, na = ea + xa, eb + xb, na + n
    return {"a": " + ".join(map(str, pa)), "b": " + ".join(map(str, pb)),
            **paired_bootstrap(ea, eb, na, samples=samples, seed=seed)}


def compare_by_parts(path_a: str | Path, path_b: str | Path, by: str | Path, parts: int = 3,
                     samples: int = 10_000, seed: int = 0) -> list[dict]:
    """:func:`compare_reports` of A and B within ``parts`` equal shares of the utterances, sorted by their WER in
    the report ``by`` (best-read first; ties in ``by``'s order): e.g. AVSR against ASR in noise, by how well AVSR
    reads the lips alone (GPU runs 39-40). Each part: its utterances' WER in ``by``, A's and B's, and the
    paired bootstrap of B - A on them alone. The three reports must hold the same utterances."""
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    ka, ea, na = _report_errors(path_a)
    ea_, eb, _ = _matched_errors(path_a, path_b)
    _, e_by, _ = _matched_errors(path_a, by)
    n = len(ka)
    if n < parts:
        raise ValueError(f"{path_a}: {n} utterance(s), fewer than the {parts} parts asked for")
    kb, _, _ = _report_errors(by)
    by_pos = {k: i for i, k in enumerate(kb)}
    order = sorted(range(n), key=lambda i: (e_by[i] / max(na[i], 1), by_pos[ka[i]]))
    out = []
    for j in range(parts):
        idx = order[j * n // parts:(j + 1) * n // parts]
        words = sum(na[i] for i in idx)
        r = paired_bootstrap([ea_[i] for i in idx], [eb[i] for i in idx], [na[i] for i in idx],
                             samples=samples, seed=seed)
        out.append({"part": j + 1, "utterances": len(idx), "ref_words": words,
                    "wer_by": sum(e_by[i] for i in idx) / words, **r})
    return out


def format_p(p: float, samples: int, spec: str = ".3g") -> str:
    """A bootstrap p-value for print (format ``spec``): 0 (the difference never reversed in any of ``samples``
    resamples) reads ``< 1e-04`` for 10,000."""
    return f"< {1 / samples:.0e}" if p == 0 else f"{p:{spec}}"


def compare_main(argv: list[str] | None = None) -> int:
    """``mmlora compare-wer A.json B.json``: is B's WER different from A's beyond chance (paired bootstrap)?"""
    import argparse
    import sys

    p = argparse.ArgumentParser(
        prog="mmlora compare-wer",
        description="Compare two `mmlora evaluate` reports of the same utterances: corpus WER of each, the "
                    "difference B - A with a 95 % paired-bootstrap interval and a two-sided p-value, and how many "
                    "utterances B does better / worse on. Prints a table, then one JSON line.")
    p.add_argument("a", help="report of system A (the baseline)")
    p.add_argument("b", help="report of system B")
    p.add_argument("--also", nargs=2, action="append", default=[], metavar=("A2", "B2"),
                   help="another pair of reports (A's and B's on another manifest) resampled together with the "
                        "first as one test set; repeatable")
    p.add_argument("--by", metavar="REPORT",
                   help="also compare within equal shares of the utterances sorted by their WER in REPORT (best "
                        "first), e.g. AVSR's reading with its audio zeroed: where the lips read well or badly")
    p.add_argument("--parts", type=int, default=3, help="with --by: how many shares (default 3)")
    p.add_argument("--samples", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.by and args.also:
        p.error("--by compares one pair of reports: leave out --also")
    try:
        r = compare_reports([args.a] + [a for a, _ in args.also], [args.b] + [b for _, b in args.also],
                            samples=args.samples, seed=args.seed)
    except ValueError as e:
        print(f"mmlora compare-wer: {e}", file=sys.stderr)
        return 2
    lo, hi = r["ci95"]
    p_txt = format_p(r["p_two_sided"], r["samples"], ".3f")
    print(f"A {r['wer_a']:.2%}  {r['a']}\nB {r['wer_b']:.2%}  {r['b']}\n"
          f"B - A {100 * r['diff']:+.2f} points, 95 % CI [{100 * lo:+.2f}, {100 * hi:+.2f}], p = {p_txt} "
          f"({r['samples']} paired resamples); B better on {r['better']}, worse on {r['worse']}, "
          f"equal on {r['equal']} utterances")
    if args.by:
        try:
            rows = compare_by_parts(args.a, args.b, args.by, args.parts, samples=args.samples, seed=args.seed)
        except ValueError as e:
            print(f"mmlora compare-wer: {e}", file=sys.stderr)
            return 2
        print(f"\nby {args.by} (its WER per share, best first)\n| share | words | by | A | B | B - A (points) | p |\n"
              "|---|---|---|---|---|---|---|")
        for q in rows:
            print(f"| {q['part']} of {args.parts} | {q['ref_words']} | {q['wer_by']:.1%} | {q['wer_a']:.1%} | "
                  f"{q['wer_b']:.1%} | {100 * q['diff']:+.1f} [{100 * q['ci95'][0]:+.1f}, {100 * q['ci95'][1]:+.1f}] | "
                  f"{format_p(q['p_two_sided'], q['samples'], '.3f')} |")
        r = {**r, "by": str(args.by), "parts": rows}
    print(json.dumps(r))
    return 0
