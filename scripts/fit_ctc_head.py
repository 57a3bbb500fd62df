"""Give a trained model a CTC head afterwards, fitted on its own frozen encoder features, for ``ctc_weight`` rescoring.

``generate(ctc_weight=w)`` (``mmlora evaluate/transcribe --ctc-weight W``) rescores the beams with ``model.ctc``'s head.
A model trained without ``model.ctc`` has none: this script encodes training clips with the model's own encoder (its
encoder LoRA included, exactly the features inference reads), fits a temporal CTC head on them (the head
``model.ctc.head: temporal`` builds; only the head learns) and writes a copy of the model with it (``model.ctc`` set,
the head saved with the projector). The LLM, its LoRA and the projector are unchanged, so the copy decodes as the
original does unless ``ctc_weight`` is given; ``--ctc-weight`` is saved as its default when set.

    python scripts/fit_ctc_head.py --model checkpoints/asr-smollm2-whisper-tiny --out OUT \\
        --train data/speech_release/st/train.jsonl data/speech_release/w3/train.jsonl ... --n-per-manifest 400 \\
        --test data/speech_release/nv9/test.jsonl

Clips come from each ``--train`` manifest at random (``--seed``), at most ``--max-seconds`` long; ``--drop-voice``
leaves a voice out (a held-out test voice must stay unseen). ``--test`` reports the head's own greedy CER there.
``--augment K`` adds K changed copies of every clip, as training augments its clips (docs/ASR.md "Voice
augmentation"): speed and vocal tract length each by a factor from [0.9, 1.1], 0.2-1.2 s of room tone (white noise
35-60 dB below the speech) at each end, and on half of them a synthetic room's reverberation (RT60 0.2-0.7 s).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lip_ctc_probe import encode_records, fit_head, pad, score  # noqa: E402

from mmlora.ctc import CTCConfig  # noqa: E402
from mmlora.data.speech_augment import training_change as augmenter  # noqa: E402,F401


def fold_standardization(probe) -> torch.nn.Module:
    """The fitted head as the model runs it, on raw features: ``ProbeHead`` standardizes its inputs first, and that
    affine map folds into the temporal head's input projection (``W (x - mu) / sd + b``)."""
    head = probe.head
    with torch.no_grad():
        w = head.inp.weight / probe.sd  # [width, D]
        head.inp.bias -= w @ probe.mu
        head.inp.weight.copy_(w)
    return head


def pick(manifest: str, n: int, max_seconds: float, drop: set[str], rng: random.Random) -> list:
    """Up to ``n`` of the manifest's records at random, none of a ``drop`` voice or longer than ``max_seconds``
    (records without a duration neither: their cost is 0 frames)."""
    from mmlora.tasks.speech import AUDIO_HZ, read_manifest

    recs = [r for r in read_manifest(manifest) if r.voice not in drop and 0 < r.frames <= max_seconds * AUDIO_HZ]
    rng.shuffle(recs)
    return recs[:n]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a saved mmlora model folder")
    ap.add_argument("--out", required=True, help="the copy with the CTC head")
    ap.add_argument("--modality", default="audio", choices=["audio", "video"])
    ap.add_argument("--train", nargs="+", required=True, help="manifests of training clips")
    ap.add_argument("--n-per-manifest", type=int, default=400)
    ap.add_argument("--max-seconds", type=float, default=8.0, help="leave longer clips out (and clips without a "
                    "duration in the manifest)")
    ap.add_argument("--drop-voice", action="append", default=[], help="leave this voice's clips out (repeatable)")
    ap.add_argument("--test", help="a manifest whose clips the fitted head reads (greedy CER, reported)")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ctc-weight", type=float, help="save this as the copy's default ctc_weight (needs num_beams > 1)")
    ap.add_argument("--augment", type=int, default=0, metavar="K",
                    help="also fit on K augmented copies of each clip (speed, VTLP, room tone, reverberation; audio)")
    args = ap.parse_args(argv)
    if args.augment < 0 or (args.augment and args.modality != "audio"):
        raise SystemExit("--augment: a number of copies >= 0, and for --modality audio only")

    from mmlora.model import MultimodalLM

    t0 = time.time()
    model = MultimodalLM.from_pretrained(args.model)  # as saved: the copy keeps the LLM's dtype
    if args.modality not in model.encoders:
        raise SystemExit(f"{args.model}: the model has no {args.modality} encoder")
    if model.cfg.ctc.modality:
        raise SystemExit(f"{args.model}: the model has a CTC head already (model.ctc.modality={model.cfg.ctc.modality})")
    enc = model.encoders[args.modality].eval()
    rng = random.Random(args.seed)
    recs = [r for m in args.train for r in pick(m, args.n_per_manifest, args.max_seconds, set(args.drop_voice), rng)]
    if not recs:
        raise SystemExit("no training clips: check --train, --max-seconds and the manifests' durations")
    feats, texts = encode_records(enc, recs, args.modality, dtype=torch.float16)  # half the memory while fitting
    for k in range(args.augment):
        transform, warp = augmenter(args.seed + 1 + k)
        more, more_texts = encode_records(enc, recs, args.modality, dtype=torch.float16, transform=transform, warp=warp)
        feats, texts = feats + more, texts + more_texts
    x, m = pad([f.float() for f in feats])
    del feats
    print(f"fit_ctc_head: {len(texts)} clips encoded ({time.time() - t0:.0f} s)", flush=True)
    cfg = CTCConfig(modality=args.modality, head="temporal")
    probe = fit_head(x, m, texts, args.epochs, args.lr, 32, seed=args.seed, kind=cfg.head, clip=1.0)
    report = {"clips": len(texts), "source_clips": len(recs), "train": score(probe, x, m, texts)}
    del x, m
    if args.test:
        from mmlora.tasks.speech import read_manifest

        tf, tt = encode_records(enc, read_manifest(args.test), args.modality)
        report["test"] = score(probe, *pad(tf), tt)
    head = fold_standardization(probe)
    model.cfg.ctc = cfg
    model.projectors[args.modality].add_module("ctc_head", head.to(next(model.projectors.parameters()).dtype))
    info = dict(model.pipeline_info)
    if args.ctc_weight is not None:
        info["generation"] = {**info.get("generation", {}), "ctc_weight": args.ctc_weight}
    model.save_pretrained(args.out, pipeline=info)
    report["seconds"] = round(time.time() - t0, 1)
    (Path(args.out) / "ctc_head_fit.json").write_text(json.dumps({**report, "args": vars(args)}, indent=2))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
