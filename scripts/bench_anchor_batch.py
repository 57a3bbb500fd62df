#!/usr/bin/env python
"""How long ``whisper_decoder_probe.py --anchor``'s batch takes with its targets decoded and with them known.

The anchor term's targets are Whisper's own greedy transcript of each anchor clip; since session 57 the probe decodes
a clip once, at its first draw, and keeps its targets. This times ``anchor_batch`` (the clips' frames through the
model's encoder and the judge's, and the targets) both ways on the same clips, batch after batch (docs/PERFORMANCE.md
"The anchor's targets decoded once per clip")::

    OMP_NUM_THREADS=1 python scripts/bench_anchor_batch.py --model outputs/g53/cand/ED3 \\
        --anchor data/anchor_speech/sample40.jsonl --batch 8 --repeats 3 --threads 1

The judge is built as the probe builds it with ``--init model --encoder-lr``: the folder's judge (its trained decoder
and judge encoder where it has them), a float32 copy of that encoder as the trained one (its frames read with a
graph, as in training; no backward pass is timed), Whisper's own decoder as the teacher (the probe's
``own_judge``). Prints one JSON line: the seconds of every batch both ways, their means, and the target tokens a
batch.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from whisper_decoder_probe import anchor_batch, own_judge, read_clips  # noqa: E402


def bench(judge, own, teacher_encoder, encoder, paths: list, batch: int, max_tokens: int, repeats: int = 1,
          clock=time.perf_counter) -> dict:
    """``anchor_batch`` on ``paths`` in batches of ``batch`` (a last partial batch left out), ``repeats`` times over:
    each batch first with its targets decoded, then with them given as known (they must come back the same)."""
    out = {"decoded_s": [], "known_s": [], "tokens": []}
    for _ in range(repeats):
        for i in range(0, len(paths) - batch + 1, batch):
            part = paths[i:i + batch]
            t = clock()
            _, _, targets = anchor_batch(judge, own, teacher_encoder, encoder, part, max_tokens, grad=True)
            out["decoded_s"].append(round(clock() - t, 4))
            t = clock()
            _, _, again = anchor_batch(judge, own, teacher_encoder, encoder, part, max_tokens, grad=True,
                                       known=targets)
            out["known_s"].append(round(clock() - t, 4))
            if again != targets:
                raise RuntimeError("known targets came back changed")
            out["tokens"].append(sum(len(x) for x in targets))
    n = len(out["known_s"])
    if not n:
        raise ValueError(f"fewer clips ({len(paths)}) than one batch ({batch})")
    return {"batches": n, "batch": batch, **{f"{k}_mean": round(sum(v) / n, 4) for k, v in out.items()}, **out}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a model folder with a Whisper judge (e.g. a candidate's)")
    ap.add_argument("--anchor", required=True, help="the anchor manifest (its texts are not read)")
    ap.add_argument("--batch", type=int, default=8, help="clips a batch (the probe's --anchor-batch)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=48, help="as the probe's --max-tokens")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    a = ap.parse_args(argv)
    if a.batch < 1 or a.repeats < 1:
        ap.error("--batch and --repeats: 1 or more")
    import copy

    import torch

    from mmlora import load_pipeline

    torch.set_num_threads(a.threads)
    model = load_pipeline(a.model, device="cpu").model
    judge, base_enc = model.whisper_judge(), model.judge_encoder()
    judge.padded_encoder()
    own = own_judge(model, judge, not model.whisper_decoder_state)  # the probe's --anchor teacher with --init model
    paths = [p for p, _, _ in read_clips(a.anchor)]
    try:
        r = bench(judge, own, model.encoders["audio"], copy.deepcopy(base_enc).float(), paths, a.batch,
                  a.max_tokens, a.repeats)
    except ValueError as e:
        print(f"bench_anchor_batch: {a.anchor}: {e}", file=sys.stderr)
        return 2
    line = json.dumps({"model": a.model, "anchor": a.anchor, "threads": a.threads, **r})
    print(line)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
