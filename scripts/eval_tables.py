"""Markdown tables of an evaluation folder: every ``mmlora evaluate`` report's WER and its
substitutions / deletions / insertions, then every paired comparison that
``scripts/train_grid.sh`` wrote to ``compare.txt`` (``B - A: {mmlora compare-wer JSON}`` per line).

    python scripts/eval_tables.py OUT/eval > docs/bench/runN.md          # both tables
    python scripts/eval_tables.py OUT/eval --title "# GPU run N" > docs/bench/runN.md

The comparison table gives diff = B − A in points with its 95 % interval and p, and on how many
clips B is better / worse / equal than A (compare-wer's own counts).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mmlora.metrics.wer import format_p  # noqa: E402


def pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def points(x: float) -> str:
    return f"{100 * x:+.1f}"


def report_rows(folder: Path) -> list[str]:
    """One row per ``*.json`` report in ``folder``, by name."""
    rows = ["| report | WER | S / D / I |", "|---|---|---|"]
    for path in sorted(folder.glob("*.json")):
        try:
            r = json.loads(path.read_text())
            wer, s, d, i = r["wer"], r["substitutions"], r["deletions"], r["insertions"]
        except (ValueError, KeyError) as e:
            raise ValueError(f"{path}: not an mmlora evaluate report ({e})") from None
        rows.append(f"| {path.stem} | {100 * wer:.2f} % | {s} / {d} / {i} |")
    return rows


def comparison_rows(compare: Path) -> list[str]:
    """One row per line of ``compare.txt`` (``B - A: JSON``); A and B are the report names."""
    rows = ["| A | B | A WER | B WER | diff | 95 % interval | p | B better / worse / equal |",
            "|---|---|---|---|---|---|---|---|"]
    for n, line in enumerate(compare.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            names, blob = line.split(": ", 1)
            b, a = names.split(" - ")
            c = json.loads(blob)
            lo, hi = c["ci95"]
            rows.append(f"| {a} | {b} | {pct(c['wer_a'])} | {pct(c['wer_b'])} | {points(c['diff'])} | "
                        f"[{points(lo)}, {points(hi)}] | {format_p(c['p_two_sided'], c['samples'])} | "
                        f"{c['better']} / {c['worse']} / {c['equal']} |")
        except (ValueError, KeyError) as e:
            raise ValueError(f"{compare}:{n}: not a 'B - A: {{compare-wer JSON}}' line ({e})") from None
    return rows


def tables(folder: Path, title: str = "") -> str:
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder")
    parts = [title, ""] if title else []
    parts += report_rows(folder)
    compare = folder / "compare.txt"
    if compare.is_file():
        parts += ["", "Paired bootstrap (`mmlora compare-wer A B`; diff = B − A in points; better / worse / equal: "
                  "clips where B is better / worse than A):", ""]
        parts += comparison_rows(compare)
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path, help="a folder of evaluate reports (*.json), with compare.txt if any")
    p.add_argument("--title", default="", help="a first line (markdown heading)")
    a = p.parse_args(argv)
    try:
        sys.stdout.write(tables(a.folder, a.title))
    except ValueError as e:
        print(f"eval_tables: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
