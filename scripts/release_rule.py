"""The ASR release rules. Rule 1 (fixed in session 21, used since GPU run 16 up to run 47's candidates; docs/ASR.md
"The released checkpoint"): a candidate replaces the released checkpoint when, both measured on the CPU, it has a
lower WER on nv9 (the training voices reading unseen sentences; ``--batch-size 32``) and makes no more word errors
than the release on all 40 human clips together (``test.jsonl`` + ``extra.jsonl`` of
``scripts/fetch_human_speech.py``; ``--batch-size 8``). Rule 2 (``--rule 2``, below) judges the candidates trained
since session 57.

    python scripts/release_rule.py CANDIDATE_MODEL [CANDIDATE_MODEL ...] [--release checkpoints/asr-smollm2-whisper-tiny]
        [--nv9 data/speech_release/nv9/test.jsonl] [--human data/human_speech] [--out outputs/release_rule]
        [--rule 2 [--margin 1.5] [--st-test data/speech_release/st/test.jsonl]
         [--natt9 data/speech_release/natt9/test.jsonl]] [--jobs N]

Every model is evaluated with ``mmlora evaluate --device cpu`` (one thread: ``OMP_NUM_THREADS=1``) into
OUT/NAME/{nv9,human_test,human_extra}.json (NAME: the model folder's path with "/" as "_"; ``NAME=PATH`` names it).
A report already there is used again only where it was decoded from the same files (``OUT/NAME/model*.sha256``, the
folder's fingerprint; else all three are decoded again: session 51 replaced the release in place, and its reports of
the release before were still there). The LLM decodes in float32 (``--dtype float32``, the CPU's default since
session 45; reports named ``TAG[_beamsN]_float32.json``); the rule's reports before that decoded in the release's
saved bfloat16 (``TAG[_beamsN].json``) and are not used.
All models decode alike: with ``--num-beams N``, by default the release's saved ``num_beams`` (4 since session 32;
reports of N > 1 are named ``TAG_beamsN.json``), so that a candidate saved with the recipe's greedy setting is not
compared greedy against a release that searches.
Prints a table, then one JSON line per candidate: both numbers of both models, ``passes``, and the paired bootstrap
(``mmlora compare-wer``) of the candidate against the release on nv9 and on the 40 human clips as one set.
``--guard TAG=MANIFEST`` (session 52: natt9 and st/test) adds sets on which a candidate must not be significantly
worse (a higher WER with p < 0.05 fails it): session 52's candidate passed nv9 and the human clips and read natt9
significantly worse.

``--rule 2`` (written in session 57, for candidates trained after it; docs/ASR.md "A third human set"): the 40 human
clips could not tell candidates apart (every acoustic candidate since session 53 within 2-5 words of the release,
both ways clip by clip), and neither can 103 (the third set, ``more.jsonl``: every candidate within +-0.75 points,
95 % intervals of about +-1.3). Rule 2 asks what the data can answer: st/test (the issue's target set,
``--st-test``) significantly better (a lower WER with p < 0.05); the human clips' four sets together (test + extra
+ more + fourth, 1,463 words; the fourth set, ``fourth.jsonl``, joined in session 58, before any candidate rule 2
applies to was trained) not worse by as much as ``--margin`` points (1.5 by default: the upper end of the 95 % paired
interval of candidate - release below it); nv9 and natt9 (``--natt9``), and any ``--guard`` set, not significantly
worse. st/test, natt9 and the third and fourth human sets decode at batch 32, as the guards of rule 1 did.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mmlora.data.jsonl import read_jsonl  # noqa: E402
from mmlora.metrics.wer import compare_reports, format_p  # noqa: E402

SETS = (("nv9", 32), ("human_test", 8), ("human_extra", 8))  # the rule's sets and their CPU batch sizes
RULE2_SETS = (("human_more", 32), ("human_fourth", 32), ("st_test", 32), ("natt9", 32))  # rule 2's further sets
HUMAN = ("human_test", "human_extra")  # rule 1's human clips; rule 2 reads HUMAN2
HUMAN2 = HUMAN + ("human_more", "human_fourth")
DTYPE = "float32"  # the LLM's, for every model (session 45; bfloat16 before)


def cands_of(report: Path) -> Path:
    """Where ``--candidates`` keeps a report's candidates: ``TAG{suffix}.cands.json`` beside ``TAG{suffix}.json``."""
    return report.with_name(report.name[:-len(".json")] + ".cands.json")


def report_of(cands: Path) -> Path:
    """The report beside a candidates file (:func:`cands_of`'s inverse): ``X.json`` beside ``X.cands.json``."""
    return cands.with_name(cands.name.removesuffix(".cands.json") + ".json")


def evaluate(model: str, pairs: list[tuple[Path, Path]], batch_size: int, beams: int = 1,
             cands: bool = False) -> None:
    """``mmlora evaluate`` on the CPU in float32, one call for every (manifest, report) pair (the model loads once),
    on one thread: the batch size and the number of threads change the rounding and, on near-ties, the choices (in
    bfloat16, until session 45, the release on the 24 extra human clips made 159 word errors on one thread, 161 on
    two, session 26), while the rule allows no error more."""
    cmd = [sys.executable, "-m", "mmlora.cli", "evaluate", "--model", model, "--batch-size", str(batch_size),
           "--device", "cpu", "--dtype", DTYPE, "--num-beams", str(beams)]
    for manifest, out in pairs:
        out.parent.mkdir(parents=True, exist_ok=True)
        cmd += ["--manifest", str(manifest), "--out", str(out)]
        cmd += ["--candidates", str(cands_of(out))] if cands else []
    subprocess.run(cmd, check=True, cwd=Path(__file__).resolve().parents[1], env={**os.environ, "OMP_NUM_THREADS": "1"})


def named(spec: str) -> tuple[str, str]:
    """``NAME=PATH`` or ``PATH`` (named after the path)."""
    name, sep, path = spec.partition("=")
    return (name, path) if sep and name and "/" not in name else (spec.strip("/").replace("/", "_"), spec)


def saved_beams(model: str) -> int:
    """The ``num_beams`` a model folder's config.json saves for decoding (1: greedy, also where it has none)."""
    try:
        cfg = json.loads((Path(model) / "config.json").read_text())
    except (OSError, ValueError):
        return 1
    return int(cfg.get("pipeline", {}).get("generation", {}).get("num_beams", 1))


def fingerprint(model: str) -> str:
    """SHA-256 over a model folder's files (their paths and bytes): the weights a report was decoded with."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(q for q in Path(model).rglob("*") if q.is_file()):
        h.update(f.relative_to(model).as_posix().encode() + b"\0")
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()


def work(manifest: Path) -> float:
    """A set's decoding work: its audio's seconds where every line of the manifest has a ``duration`` (decoding time
    follows them: session 60, about 1.5 s a second of audio on one thread for every set), else its clips; 0 for a
    manifest that cannot be read (its evaluation names the problem)."""
    try:
        rows = read_jsonl(manifest)
    except (OSError, ValueError):
        return 0.0
    seconds = [r.get("duration") for r in rows]
    return sum(seconds) if all(isinstance(d, (int, float)) for d in seconds) else float(len(rows))


def share(tags: list[str], manifests: dict[str, Path], jobs: int) -> list[list[str]]:
    """``tags`` in at most ``jobs`` groups of about equal :func:`work` (largest first, each to the group with the
    least so far), each group in the order of ``tags``; empty groups left out."""
    size = {t: work(manifests[t]) for t in tags}
    groups: list[list[str]] = [[] for _ in range(max(1, jobs))]
    for t in sorted(tags, key=lambda t: -size[t]):
        min(groups, key=lambda g: sum(size[x] for x in g)).append(t)
    return [sorted(g, key=tags.index) for g in groups if g]


def reports(name: str, model: str, manifests: dict[str, Path], out: Path, beams: int = 1,
            sets: tuple = SETS, jobs: int = 1, cands: bool = False) -> dict[str, Path]:
    """The reports of one model on ``sets`` (``(tag, batch size)``: the rule's three, and any guard sets) decoded with
    ``beams``, those missing evaluated in one call per batch size.
    Reports are used again only where they were made from the same files: each model's ``OUT/NAME/model{suffix}.sha256``
    records :func:`fingerprint` of the folder they were decoded from (written before decoding: a run stopped midway
    leaves its finished reports usable, session 64), and where the folder's files differ from it (a
    release replaced in place, session 51), or none is recorded, every report of that decoding is dropped (those of
    sets not asked for this time too, so that a guard set asked for later is not read from the old files) and the
    asked ones decoded again. A folder that no longer exists is not checked: its reports are used as they are.
    ``jobs`` > 1 shares the missing sets among that many processes side by side (:func:`share`), each decoding on one
    thread as alone: the same reports, sooner where cores are free (session 60). ``cands``: each decoding also keeps
    its candidates (:func:`cands_of`), and a report without them is decoded again (session 67)."""
    suffix = (f"_beams{beams}" if beams > 1 else "") + f"_{DTYPE}"
    got = {tag: out / name / f"{tag}{suffix}.json" for tag, _ in sets}
    sig = out / name / f"model{suffix}.sha256"
    if Path(model).is_dir():
        now = fingerprint(model)
        before = sig.read_text().split()[0] if sig.is_file() else None
        old = [p for p in (out / name).glob(f"*{suffix}.json")  # this decoding's: not TAG_beamsN's beside greedy's
               if not re.search(r"_beams\d+$", p.name[:-len(suffix + ".json")]) or beams > 1]
        if before != now and old:
            print(f"release_rule: {out / name}: reports made from {'other files' if before else 'unrecorded files'} "
                  f"than {model}'s: decoding them again", file=sys.stderr)
            for p in old:
                p.unlink()
                cands_of(p).unlink(missing_ok=True)
    missing = {tag: batch for tag, batch in sets
               if not got[tag].is_file() or (cands and not cands_of(got[tag]).is_file())}
    if missing and not Path(model).is_dir():
        raise ValueError(f"{model}: no such model folder (and no report {got[next(iter(missing))]})")
    if missing:  # recorded before decoding, so that the sets a run finishes before it is stopped are used again
        sig.parent.mkdir(parents=True, exist_ok=True)
        sig.write_text(f"{now} {model}\n")

    def run(group: list[str]) -> None:  # one call per batch size, the model loaded once a call
        for batch in sorted({missing[t] for t in group}, reverse=True):
            pairs = [(manifests[t], got[t]) for t in group if missing[t] == batch]
            evaluate(model, pairs, batch, beams, cands=cands)

    groups = share(list(missing), manifests, jobs)
    if len(groups) > 1:  # each a one-thread process of its own: the same reports as one after the other
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(groups)) as pool:
            for f in [pool.submit(run, g) for g in groups]:
                f.result()
    elif groups:
        run(groups[0])
    return got


def counts(path: Path) -> tuple[float, int, int]:
    """(WER, word errors, reference words) of a report."""
    try:
        r = json.loads(path.read_text())
        errors = int(r["substitutions"]) + int(r["deletions"]) + int(r["insertions"])
        return float(r["wer"]), errors, int(r["ref_words"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not an mmlora evaluate report ({e})") from None


def verdict(cand: dict[str, Path], rel: dict[str, Path], samples: int = 10_000, guards: tuple[str, ...] = ()) -> dict:
    """The rule on two models' reports: nv9 WER strictly lower, human word errors (test + extra) no more; and on each
    of ``guards`` (tags of further sets, e.g. natt9 and st/test since session 52) not significantly worse (the paired
    bootstrap: a higher WER with p < 0.05 fails)."""
    c, r = ({tag: counts(path) for tag, path in m.items()} for m in (cand, rel))  # (WER, errors, words) per report
    err_c, err_r = (sum(x[t][1] for t in HUMAN) for x in (c, r))
    nv9_cmp = compare_reports(rel["nv9"], cand["nv9"], samples=samples)
    human_cmp = compare_reports([rel[t] for t in HUMAN], [cand[t] for t in HUMAN], samples=samples)
    guard = not_worse(cand, rel, c, r, guards, samples)
    return {"nv9_wer": c["nv9"][0], "release_nv9_wer": r["nv9"][0], "human_errors": err_c,
            "release_human_errors": err_r, "human_words": sum(r[t][2] for t in HUMAN),
            "passes": c["nv9"][0] < r["nv9"][0] and err_c <= err_r and not any(v["worse"] for v in guard.values()),
            "nv9_diff": nv9_cmp["diff"], "nv9_p": nv9_cmp["p_two_sided"],
            "human_diff": human_cmp["diff"], "human_p": human_cmp["p_two_sided"], "samples": samples,
            **({"guards": guard} if guard else {})}


def not_worse(cand: dict[str, Path], rel: dict[str, Path], c: dict, r: dict, tags, samples: int) -> dict[str, dict]:
    """Per tag: both WERs (``c`` and ``r``: each report's :func:`counts`), the paired bootstrap's difference and p, and
    ``worse`` (a higher WER with p < 0.05)."""
    out = {}
    for g in tags:
        cmp = compare_reports(rel[g], cand[g], samples=samples)
        out[g] = {"wer": c[g][0], "release_wer": r[g][0], "diff": cmp["diff"], "p": cmp["p_two_sided"],
                  "worse": cmp["diff"] > 0 and cmp["p_two_sided"] < 0.05}
    return out


def verdict2(cand: dict[str, Path], rel: dict[str, Path], samples: int = 10_000, margin: float = 1.5,
             guards: tuple[str, ...] = ()) -> dict:
    """Rule 2 (session 57) on two models' reports: st/test's WER lower with p < 0.05; on the four human sets as one
    set the upper end of the 95 % interval of candidate - release below ``margin`` points; nv9, natt9 and each of
    ``guards`` not significantly worse."""
    c, r = ({tag: counts(path) for tag, path in m.items()} for m in (cand, rel))  # (WER, errors, words) per report
    target = compare_reports(rel["st_test"], cand["st_test"], samples=samples)
    human = compare_reports([rel[t] for t in HUMAN2], [cand[t] for t in HUMAN2], samples=samples)
    held = not_worse(cand, rel, c, r, ("nv9", "natt9", *guards), samples)
    better = target["diff"] < 0 and target["p_two_sided"] < 0.05
    close = human["ci95"][1] < margin / 100
    return {"rule": 2, "st_test_wer": c["st_test"][0], "release_st_test_wer": r["st_test"][0],
            "st_test_diff": target["diff"], "st_test_p": target["p_two_sided"], "st_test_better": better,
            "human_errors": sum(c[t][1] for t in HUMAN2), "release_human_errors": sum(r[t][1] for t in HUMAN2),
            "human_words": sum(r[t][2] for t in HUMAN2), "human_diff": human["diff"],
            "human_ci95": human["ci95"], "human_p": human["p_two_sided"], "margin": margin, "human_close": close,
            "passes": better and close and not any(v["worse"] for v in held.values()), "samples": samples,
            "guards": held}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("candidates", nargs="*", help="candidate model folders (NAME=PATH to name one)")
    p.add_argument("--release", default="checkpoints/asr-smollm2-whisper-tiny")
    p.add_argument("--nv9", type=Path, default=Path("data/speech_release/nv9/test.jsonl"))
    p.add_argument("--human", type=Path, default=Path("data/human_speech"),
                   help="folder with test.jsonl and extra.jsonl (scripts/fetch_human_speech.py; rule 2: more.jsonl"
                        " and fourth.jsonl too)")
    p.add_argument("--out", type=Path, default=Path("outputs/release_rule"))
    p.add_argument("--samples", type=int, default=10_000, help="bootstrap resamples")
    p.add_argument("--num-beams", type=int, help="beams for every model (default: the release's saved num_beams)")
    p.add_argument("--guard", action="append", default=[], metavar="TAG=MANIFEST",
                   help="a further set (batch 32) on which a candidate must not be significantly worse (p < 0.05), "
                        "e.g. natt9=data/speech_release/natt9/test.jsonl (repeatable; session 52)")
    p.add_argument("--rule", type=int, choices=(1, 2), default=1,
                   help="1: nv9 lower, no more errors on the 40 human clips (default); 2: st/test significantly "
                        "better, the 122 human clips within --margin, nv9 and natt9 not significantly worse")
    p.add_argument("--margin", type=float, default=1.5, help="rule 2: the human clips' margin in WER points")
    p.add_argument("--jobs", type=int, default=1,
                   help="one-thread evaluations side by side, the sets shared among them (the same reports; each "
                        "takes the memory of one: about 12 GB for st/test)")
    p.add_argument("--st-test", type=Path, default=Path("data/speech_release/st/test.jsonl"), help="rule 2's target")
    p.add_argument("--natt9", type=Path, default=Path("data/speech_release/natt9/test.jsonl"), help="rule 2's guard")
    p.add_argument("--candidates", action="store_true", dest="keep_candidates",
                   help="the candidate models' decodings also keep their candidates beside each report "
                        "(TAG_beamsN_float32.cands.json; a decoding that rescores: beams > 1), so that other weights "
                        "can be scored on the rule's sets from this one decoding (scripts/rescore_candidates.py)")
    p.add_argument("--release-candidates", action="store_true",
                   help="the release's decodings keep their candidates too (a report without them is decoded again); "
                        "without candidate models: only the release's reports are made, and the rule is not read "
                        "(session 69: a later candidate's rule then reads the release from its kept candidates)")
    a = p.parse_args(argv)
    if not a.candidates and not a.release_candidates:
        p.error("name at least one candidate model folder (or --release-candidates alone: the release's reports)")
    manifests = {"nv9": a.nv9, "human_test": a.human / "test.jsonl", "human_extra": a.human / "extra.jsonl"}
    if a.rule == 2:
        manifests.update(human_more=a.human / "more.jsonl", human_fourth=a.human / "fourth.jsonl", st_test=a.st_test,
                         natt9=a.natt9)
    if a.margin <= 0:
        p.error(f"--margin: a positive number of WER points, got {a.margin}")
    guards = []
    for g in a.guard:
        tag, sep, path = g.partition("=")
        if not sep or not tag or not path or tag in manifests or "/" in tag:
            p.error(f"--guard: TAG=MANIFEST with a new tag, got {g!r}")
        manifests[tag] = Path(path)
        guards.append(tag)
    sets = SETS + (RULE2_SETS if a.rule == 2 else ()) + tuple((t, 32) for t in guards)
    try:
        rel_name, rel_path = named(a.release)
        beams = a.num_beams if a.num_beams is not None else saved_beams(rel_path)
        if beams < 1:
            raise ValueError(f"--num-beams must be at least 1, got {beams}")
        if a.jobs < 1:
            raise ValueError(f"--jobs must be at least 1, got {a.jobs}")
        rel = reports(rel_name, rel_path, manifests, a.out, beams, sets, a.jobs, a.release_candidates)
        if not a.candidates:
            print("\n".join(str(rel[tag]) for tag, _ in sets))
            return 0
        rows = []
        for c in a.candidates:
            name, path = named(c)
            got = reports(name, path, manifests, a.out, beams, sets, a.jobs, a.keep_candidates)
            rows.append(((name, path), verdict(got, rel, a.samples, tuple(guards)) if a.rule == 1
                         else verdict2(got, rel, a.samples, a.margin, tuple(guards))))
    except (ValueError, subprocess.CalledProcessError) as e:
        print(f"release_rule: {e}", file=sys.stderr)
        return 2
    first = rows[0][1]  # the release's numbers, as every verdict has them
    print(f"decoding: {'greedy' if beams == 1 else f'{beams} beams'}, every model; rule {a.rule}")
    if a.rule == 1:
        print("| model | nv9 WER (− release, p) | word errors on the human clips (− release, p) | passes |\n"
              "|---|---|---|---|")
        print(f"| release: {rel_path} | {100 * first['release_nv9_wer']:.1f} % | {first['release_human_errors']} | |")
    else:
        print(f"| model | st/test WER (− release, p) | word errors on the {first['human_words']:,} human words "
              f"(− release, 95 % interval; margin {a.margin:g}) | passes |\n|---|---|---|---|")
        print(f"| release: {rel_path} | {100 * first['release_st_test_wer']:.1f} % | {first['release_human_errors']} "
              f"| |")
    for (name, _), v in rows:
        n = v["samples"]
        if a.rule == 1:
            first_col = f"{100 * v['nv9_wer']:.1f} % ({100 * v['nv9_diff']:+.1f}, p {format_p(v['nv9_p'], n)})"
            human = f"{v['human_errors']} ({100 * v['human_diff']:+.1f} points, p {format_p(v['human_p'], n)})"
        else:
            first_col = (f"{100 * v['st_test_wer']:.1f} % ({100 * v['st_test_diff']:+.1f}, "
                         f"p {format_p(v['st_test_p'], n)})")
            lo, hi = (100 * x for x in v["human_ci95"])
            human = f"{v['human_errors']} ({100 * v['human_diff']:+.1f} points, [{lo:+.1f}, {hi:+.1f}])"
        print(f"| {name} | {first_col} | {human} | {'yes' if v['passes'] else 'no'} |")
    for (name, _), v in rows:  # the guard sets: not significantly worse
        for g, x in v.get("guards", {}).items():
            print(f"{name} on {g}: {100 * x['wer']:.1f} % against {100 * x['release_wer']:.1f} % "
                  f"({100 * x['diff']:+.1f} points, p {format_p(x['p'], v['samples'])})"
                  f"{': significantly worse, fails' if x['worse'] else ''}")
    for (name, path), v in rows:
        print(json.dumps({"candidate": name, "model": path, "release": rel_path, "num_beams": beams, **v}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
