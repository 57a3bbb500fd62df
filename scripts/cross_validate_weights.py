"""Choose decoding weights on some validation files and score them on another: leave-one-file-out over the sweep
lines that ``scripts/rescore_candidates.py`` or ``scripts/picker_probe.py`` print (one JSON line per combination,
with each file's word errors), so that a weight's gain is measured on clips it was not chosen on.

    python scripts/rescore_candidates.py A.json B.json C.json --ctc-weight 0,0.07,0.15 --second-weight 0,0.1 > sweep
    python scripts/cross_validate_weights.py sweep --own ctc_weight=0.07,second_weight=0.1

Each file is one fold (e.g. one voice family of a held-out set): the combination with the fewest word errors on the
other files (the first such line on ties, so list the decoding's own weights first) is scored on it. Printed as one
JSON object: each fold's chosen weights and errors, the folds' total, the same for the ``--own`` line (the weights
the model decodes with now, found by its keys' values) and for the best line chosen on all files at once (in-sample:
not a measure of the gain). ``--check NAME`` (repeatable) keeps the files whose path contains NAME out of every
choice (e.g. another validation set, to see whether the held-out set's choice carries over): each fold's choice and
the in-sample choice are scored on them too.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def read_lines(path: Path) -> list[dict]:
    """The sweep's lines with per-file errors (an oracle line, or anything without ``files``, is left out)."""
    out = []
    for i, text in enumerate(path.read_text().splitlines(), 1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
        except json.JSONDecodeError as e:
            raise SystemExit(f"{path}:{i}: not a JSON line ({e})")
        if isinstance(line, dict) and isinstance(line.get("files"), dict) and not line.get("oracle"):
            out.append(line)
    if not out:
        raise SystemExit(f"{path}: no sweep lines with per-file errors (rescore_candidates.py or picker_probe.py)")
    files = list(out[0]["files"])
    for i, line in enumerate(out):
        if list(line["files"]) != files:
            raise SystemExit(f"{path}: line {i + 1} scores other files than the first ({list(line['files'])})")
    return out


def weights_of(line: dict) -> dict:
    """The line's settings: everything but the scores."""
    return {k: v for k, v in line.items() if k not in ("files", "errors", "ref_words", "wer")}


def _errors(line: dict, files: list[str]) -> int:
    return sum(line["files"][f]["errors"] for f in files)


def cross_validate(lines: list[dict], files: list[str], check: list[str] = ()) -> dict:
    """Each of ``files`` scored with the line chosen on the others (fewest errors there, the first on ties); the
    ``check`` files are scored with each fold's choice too, never chosen on."""
    if len(files) < 2:
        raise SystemExit("cross_validate_weights.py: one file to choose on: no other files to choose on")
    folds = {}
    for f in files:
        rest = [g for g in files if g != f]
        best = min(range(len(lines)), key=lambda i: (_errors(lines[i], rest), i))
        folds[f] = {"chosen": weights_of(lines[best]), "errors": lines[best]["files"][f]["errors"],
                    "errors_where_chosen": _errors(lines[best], rest),
                    **({"check": {c: lines[best]["files"][c]["errors"] for c in check}} if check else {})}
    return {"folds": folds, "errors": sum(v["errors"] for v in folds.values()),
            "ref_words": sum(lines[0]["files"][f]["ref_words"] for f in files)}


def find_own(lines: list[dict], own: dict) -> dict:
    """The line whose settings equal ``own`` (compared as numbers where they are)."""
    def same(a, b) -> bool:
        try:
            return abs(float(a) - float(b)) < 1e-9
        except (TypeError, ValueError):
            return str(a) == str(b)
    hits = [ln for ln in lines if all(k in ln and same(ln[k], v) for k, v in own.items())]
    if len(hits) != 1:
        raise SystemExit(f"cross_validate_weights.py: --own {own} matches {len(hits)} lines, not one "
                         "(name every swept setting)")
    return hits[0]


def _own(text: str) -> dict:
    out = {}
    for part in text.split(","):
        key, eq, value = part.partition("=")
        if not eq or not key:
            raise argparse.ArgumentTypeError(f"KEY=VALUE,... expected, got {text!r}")
        out[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sweep", type=Path, help="the sweep's JSON lines (rescore_candidates.py / picker_probe.py)")
    p.add_argument("--own", type=_own, help="the decoding's own weights, KEY=VALUE,... (e.g. ctc_weight=0.07)")
    p.add_argument("--check", action="append", default=[],
                   help="files whose path contains this are scored, never chosen on (repeatable)")
    a = p.parse_args(argv)
    lines = read_lines(a.sweep)
    every = list(lines[0]["files"])
    check = [f for f in every if any(c in f for c in a.check)]
    for c in a.check:
        if not any(c in f for f in every):
            raise SystemExit(f"cross_validate_weights.py: --check {c}: no such file in the sweep ({every})")
    files = [f for f in every if f not in check]
    out = {"cross_validated": cross_validate(lines, files, check)}
    if a.own:
        o = find_own(lines, a.own)
        out["own"] = {"weights": weights_of(o), "errors": _errors(o, files),
                      "files": {f: o["files"][f]["errors"] for f in every}}
    best = min(range(len(lines)), key=lambda i: (_errors(lines[i], files), i))
    out["in_sample_best"] = {"weights": weights_of(lines[best]), "errors": _errors(lines[best], files),
                             **({"check": {c: lines[best]["files"][c]["errors"] for c in check}} if check else {})}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
