"""How much of a model's output is Whisper's own transcript? A probe of ``generate(whisper_proposal=n)`` (session 48).

The release adds Whisper tiny.en's ``n`` best transcripts (its own decoder's beam search over the very frames our
projector reads, encoder LoRA included) to its beams and rescores them all (ASR.md "The released checkpoint"). This
script takes a report of ``mmlora evaluate`` for such a model, recomputes each clip's proposals exactly as ``generate``
makes them, and counts how often the model's output is one of them, and how often Whisper's first; it scores Whisper's
first proposal alone and the best of the proposals by the reference (the oracle) on the same clips, and compares the
model's output with Whisper's first proposal by the paired bootstrap::

    python scripts/whisper_proposal_share.py --report outputs/g46/sttest_p4.json \\
        --manifest data/speech_release/st/test.jsonl --out outputs/g48/share_st.json

Clips longer than ``--max-seconds`` (default: the pipeline's piece length, the model's ``piece_seconds`` within
the encoder's window) are left out: the pipeline cuts those
into pieces and proposes for each piece. ``--proposals`` defaults to the model's ``whisper_proposal``. CPU, one
thread by default (``--threads``). The last line printed is the summary as JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def summarize(refs: list[str], outputs: list[str], proposals: list[list[str]], ids: list[str] | None = None) -> dict:
    """The probe's numbers for clips with these references, the model's outputs and Whisper's proposals (best first):
    how often the output is one of the proposals (on normalized text) and Whisper's first, and the word errors and
    WER of the output, of Whisper's first proposal and of the oracle (each clip's proposal with the fewest errors,
    the first of equals), with the paired bootstrap of the output against Whisper's first."""
    from mmlora.metrics.wer import compute_wer, normalize_text, paired_bootstrap

    def errs(r):
        return [u.errors for u in r.utterances]

    props = [p or [""] for p in proposals]
    oracle = []
    for ref, p in zip(refs, props):
        e = errs(compute_wer([ref] * len(p), p))
        oracle.append(p[e.index(min(e))])
    res = {k: compute_wer(refs, h, ids) for k, h in (("model", outputs), ("whisper_first", [p[0] for p in props]),
                                                       ("oracle", oracle))}
    picked = []
    for out, p in zip(outputs, props):
        norm = [" ".join(normalize_text(x).split()) for x in p]
        o = " ".join(normalize_text(out).split())
        picked.append(norm.index(o) if o in norm else None)
    words = [u.ref_words for u in res["model"].utterances]
    pb = paired_bootstrap(errs(res["whisper_first"]), errs(res["model"]), words)
    return {"clips": len(refs), "ref_words": res["model"].ref_words, "picked": picked,
            "output_is_a_proposal": sum(p is not None for p in picked), "output_is_whispers_first": picked.count(0),
            "errors": {k: sum(errs(r)) for k, r in res.items()}, "wer": {k: round(r.wer, 4) for k, r in res.items()},
            "model_minus_whisper_first": {k: pb[k] for k in ("diff", "ci95", "p_two_sided", "better", "worse")}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="checkpoints/asr-smollm2-whisper-tiny")
    ap.add_argument("--report", required=True, help="mmlora evaluate's report of --model on --manifest")
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--proposals", type=int, default=None, help="Whisper's transcripts per clip (default: the model's)")
    ap.add_argument("--max-seconds", type=float, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="the summary and each clip's proposals as JSON")
    a = ap.parse_args(argv)

    import torch

    from mmlora import load_pipeline
    from mmlora.data.jsonl import read_jsonl
    from mmlora.data.media import SAMPLE_RATE, load_audio

    cfg = json.loads((Path(a.model) / "config.json").read_text())
    gen = (cfg.get("pipeline") or {}).get("generation") or {}
    n = a.proposals if a.proposals is not None else int(gen.get("whisper_proposal") or 0)
    if n < 2:
        sys.exit(f"whisper_proposal_share.py: {a.model} proposes {n} Whisper transcript(s) a clip; "
                 "give --proposals N (N >= 2)")
    max_tokens = int(gen.get("max_new_tokens", 48))
    report = json.loads(Path(a.report).read_text())
    hyps = {u["id"]: u for u in report.get("utterances", [])}
    if not hyps:
        sys.exit(f"whisper_proposal_share.py: {a.report} has no per-utterance hypotheses")
    torch.set_num_threads(a.threads)
    pipe = load_pipeline(a.model, device="cpu")
    model = pipe.model
    # longer clips are decoded in pieces (the pipeline's cut: piece_seconds within the encoder's window)
    max_s = a.max_seconds
    if max_s is None:
        limit = pipe.piece_limit()
        max_s = limit / SAMPLE_RATE if limit else float("inf")
    judge, enc = model.whisper_judge(), model.judge_encoder()  # the folder's judge encoder where it has one
    root = Path(a.manifest).parent
    ids, refs, ours, proposals, long_ = [], [], [], [], 0
    for row in read_jsonl(a.manifest):
        u = hyps.get(row["id"])
        if u is None:
            continue
        wave = load_audio(root / row["audio"])  # mono, 16 kHz, as the pipeline reads it
        if len(wave) > max_s * SAMPLE_RATE:
            long_ += 1
            continue
        with torch.no_grad():
            props = model._whisper_proposals(judge.frames(wave, enc), max_tokens, n)
        ids.append(row["id"]); refs.append(u["reference"]); ours.append(u["hypothesis"]); proposals.append(props)
    if not ids:
        sys.exit(f"whisper_proposal_share.py: no clip of {a.manifest} is both in {a.report} "
                 f"and at most {max_s:g} s long")
    s = summarize(refs, ours, proposals, ids)
    clips = [{"id": i, "output": o, "proposals": p, "output_is_proposal": k}
             for i, o, p, k in zip(ids, ours, proposals, s.pop("picked"))]
    summary = {"report": a.report, "manifest": a.manifest, "proposals": n, f"longer_than_{max_s:g}s": long_, **s}
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps({"summary": summary, "clips": clips}, indent=1))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
