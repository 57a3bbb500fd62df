"""Mean answer-token cross-entropy of a speech model on manifests (teacher forcing, eval mode: no
augmentation), weighted by tokens: separates what the model reads from what it generates.

    python scripts/answer_loss.py --model checkpoints/asr-smollm2-whisper-tiny --max-samples 96 A.jsonl B.jsonl

Prints one JSON line per manifest: ``{"manifest", "loss", "tokens", "clips"}``. GPU run 10 used it to
tell clean from noisy training clips and trained from new sentences (docs/ASR_RUNS.md, "GPU run 10").
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def answer_loss(pipeline, manifest: str, max_samples: int | None = None, batch_size: int = 16) -> dict:
    """``{"loss", "tokens", "clips"}``: the token-weighted mean of the model's loss over the manifest's clips."""
    import torch

    from mmlora.data.collate import collate_samples
    from mmlora.tasks.speech import SpeechDataset, read_manifest

    model = pipeline.model
    mods = tuple(m for m in pipeline.modalities if m in model.encoders)
    recs = read_manifest(manifest, need=mods)[:max_samples]
    ds = SpeechDataset(recs, mods, pipeline.instruction)
    total, tokens = 0.0, 0
    for i in range(0, len(recs), batch_size):
        batch = collate_samples([ds[j] for j in range(i, min(i + batch_size, len(recs)))], model.prompts)
        with torch.no_grad():
            out = model(batch)
        n = int(out["num_tokens"])
        total, tokens = total + float(out["loss"]) * n, tokens + n
    return {"loss": total / max(tokens, 1), "tokens": tokens, "clips": len(recs)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("manifests", nargs="+")
    ap.add_argument("--model", required=True, help="model folder (mmlora.load_pipeline)")
    ap.add_argument("--max-samples", type=int, default=None, help="first N clips of each manifest")
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args(argv)
    from mmlora.pipelines import load_pipeline

    pipe = load_pipeline(args.model)
    for m in args.manifests:
        print(json.dumps({"manifest": m, **answer_loss(pipe, m, args.max_samples, args.batch_size)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
