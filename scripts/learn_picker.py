"""A picker learned from candidates, not a weighted sum tuned by grid: a linear score over each candidate's features
(the LLM's, the CTC head's, both Whisper judges', the second judges' log-probabilities, its length in words and how
many candidates read the same text), fitted so that the candidates with the fewest word errors get the most
probability (listwise softmax, L2), on some candidates files and scored on others.

    python scripts/learn_picker.py outputs/g67/c1/res/ENS_hv67{p,s,k}_*.cands.json --check outputs/.../st_val.cands.json

Each file is one fold: the picker fitted on the other files picks its clips; the folds' word errors are printed
beside the decoding's own picks, and the picker fitted on all of them is scored on the ``--check`` files (never fitted
on). A clip decoded in pieces is never fitted on (its pieces have no references) but its pieces are picked. Exploratory
(session 67): generate does not read such a picker.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "scripts"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from rescore_candidates import candidate_errors, errors, hypotheses, load, own_weights, rows_of  # noqa: E402

from mmlora.metrics.wer import normalize_text  # noqa: E402
from mmlora.pipelines import join_pieces, tidy_text  # noqa: E402

FEATURES = ("llm", "ctc", "judge", "whisper", "second", "words", "vote")


def features(row: dict) -> torch.Tensor:
    """``[K, F]``: each candidate's FEATURES (a score the row lacks is 0)."""
    k = len(row["texts"])

    def score(key: str, i: int | None = None) -> torch.Tensor:
        if key not in row:
            return torch.zeros(k)
        v = torch.tensor(row[key], dtype=torch.float64)
        v = v[i] if i is not None else v
        return torch.nan_to_num(v, neginf=-1e4)
    judges = row.get("judges") or []
    norm = [normalize_text(tidy_text(t)) for t in row["texts"]]
    words = torch.tensor([len(t.split()) for t in norm], dtype=torch.float64)
    vote = torch.tensor([math.log(norm.count(t)) for t in norm], dtype=torch.float64)
    cols = [score("llm"), score("ctc"), score("judges", 0) if len(judges) > 0 else torch.zeros(k),
            score("judges", 1) if len(judges) > 1 else torch.zeros(k), score("second"), words, vote]
    return torch.stack(cols, 1)


def clip_targets(doc: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(features, mask of the candidates with the fewest word errors) of each one-piece clip where they differ."""
    out = []
    for u in doc["utterances"]:
        if len(u["pieces"]) != 1:
            continue
        row = u["pieces"][0]
        errs = torch.tensor(candidate_errors(u["reference"], [tidy_text(t) for t in row["texts"]]))
        if errs.min() == errs.max():
            continue
        out.append((features(row), errs == errs.min()))
    return out


def fit(clips: list[tuple[torch.Tensor, torch.Tensor]], l2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights, scale): the linear score ``(f / scale) @ weights`` that maximizes the best candidates'
    probability; scale standardizes each feature's spread within clips."""
    spread = torch.cat([f - f.mean(0) for f, _ in clips]).std(0).clamp_min(1e-6)
    w = torch.zeros(len(FEATURES), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=200, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        opt.zero_grad()
        total = sum(-(torch.logsumexp((f / spread @ w)[m], 0) - torch.logsumexp(f / spread @ w, 0))
                    for f, m in clips) / len(clips) + l2 * (w ** 2).sum()
        total.backward()
        return total
    opt.step(loss)
    return w.detach(), spread


def picks(doc: dict, w: torch.Tensor, spread: torch.Tensor) -> list[str]:
    rows, owner = rows_of(doc)
    chosen = [row["texts"][int((features(row) / spread @ w).argmax())] for row in rows]
    return join_pieces(chosen, owner, len(doc["utterances"]))


def own_errors(doc: dict) -> int:
    return errors(doc, hypotheses(doc, *own_weights(doc["decoding"])))[0]  # and the decoding's second weight


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", type=Path, help="candidates files, one fold each")
    p.add_argument("--check", type=Path, action="append", default=[], help="scored with the picker fitted on all")
    p.add_argument("--l2", type=float, default=1e-3)
    p.add_argument("--drop", default="", help="comma-separated FEATURES left out (their weight held at 0)")
    a = p.parse_args(argv)
    drop = [x for x in a.drop.split(",") if x]
    if any(x not in FEATURES for x in drop):
        raise SystemExit(f"--drop: features are {FEATURES}")
    keep = torch.tensor([f not in drop for f in FEATURES], dtype=torch.float64)
    docs = [load(f) for f in a.files]
    clips = [[(f * keep, m) for f, m in clip_targets(d)] for d in docs]
    out = {"features": [f for f in FEATURES if f not in drop], "l2": a.l2, "folds": {}}
    for i, (f, d) in enumerate(zip(a.files, docs)):
        w, s = fit([c for j, cs in enumerate(clips) if j != i for c in cs], a.l2)
        out["folds"][str(f)] = {"own": own_errors(d), "picker": errors(d, picks(d, w * keep, s))[0]}
    out["own"] = sum(v["own"] for v in out["folds"].values())
    out["picker"] = sum(v["picker"] for v in out["folds"].values())
    w, s = fit([c for cs in clips for c in cs], a.l2)
    out["weights"] = {n: round(float(x / sc), 6) for n, x, sc in zip(FEATURES, w * keep, s)}
    for f in a.check:
        d = load(f)
        out.setdefault("check", {})[str(f)] = {"own": own_errors(d), "picker": errors(d, picks(d, w * keep, s))[0]}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
