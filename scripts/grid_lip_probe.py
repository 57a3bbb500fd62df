#!/usr/bin/env python
"""Do the frozen lip features tell GRID's words apart? A linear probe per word slot, scored on held-out faces.

A GRID sentence (``scripts/make_text_pool.py grid``) has six words in a fixed order: command, colour, preposition,
letter, digit, adverb (4 / 4 / 4 / 25 / 10 / 4 choices). Each clip's features from the recipe's frozen encoder
(``[T, D]``) are cut into six equal time slots; slot k is described by the mean features of slots k-1, k and k+1
(the words are not equally long), and a ridge regression to one-hot words (``lip_feature_probe.ridge``) is fitted per
slot on training clips and scored on the test split (held-out voices and faces). ``--audio`` runs the same probe on
Whisper tiny.en's features of the same clips, the reference for what this crude slotting allows.

    python scripts/grid_lip_probe.py DATA/g16 [--train 1500] [--test 300] [--audio] [--out r.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # lip_feature_probe.ridge

SLOTS = ("command", "colour", "preposition", "letter", "digit", "adverb")


def slot_features(x: torch.Tensor, n: int = len(SLOTS)) -> torch.Tensor:
    """``[T, D]`` → ``[n, 3 D]``: per slot, the means of slots k-1, k, k+1 (edges repeat the end slot)."""
    t = x.shape[0]
    bounds = [round(i * t / n) for i in range(n + 1)]
    means = torch.stack([x[bounds[i] : max(bounds[i + 1], bounds[i] + 1)].mean(0) for i in range(n)])
    prev = torch.cat([means[:1], means[:-1]])
    nxt = torch.cat([means[1:], means[-1:]])
    return torch.cat([prev, means, nxt], dim=1)


def probe(train: list[tuple[torch.Tensor, list[str]]], test: list[tuple[torch.Tensor, list[str]]], lam: float
          ) -> dict[str, dict]:
    """Per slot: accuracy on ``test`` of a ridge map fitted on ``train`` (word lists from each clip's text)."""
    from lip_feature_probe import ridge

    out = {}
    ftr = torch.stack([slot_features(f) for f, _ in train]).double()  # [N, slots, 3 D], once per clip
    fte = torch.stack([slot_features(f) for f, _ in test]).double()
    for k, name in enumerate(SLOTS):
        vocab = sorted({w[k] for _, w in train} | {w[k] for _, w in test})
        idx = {w: i for i, w in enumerate(vocab)}
        xtr, xte = ftr[:, k], fte[:, k]
        ytr = torch.nn.functional.one_hot(torch.tensor([idx[w[k]] for _, w in train]), len(vocab)).double()
        yte = torch.tensor([idx[w[k]] for _, w in test])
        pred = ridge(xtr, ytr, xte, lam).argmax(1)
        out[name] = {"accuracy": round(float((pred == yte).double().mean()), 3), "chance": round(1 / len(vocab), 3),
                     "words": len(vocab)}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("corpus", help="a GRID corpus folder with train.jsonl / test.jsonl and lip videos (e.g. DATA/g16)")
    p.add_argument("--train", type=int, default=1500, help="training clips used (the first N)")
    p.add_argument("--test", type=int, default=300, help="test clips used (the first N)")
    p.add_argument("--encoder", default='{"preset": "efficientnet-lite0", "image_size": 96}',
                   help="the lip encoder (as in the AVSR recipes)")
    p.add_argument("--audio", action="store_true", help="also probe Whisper tiny.en's features of the audio")
    p.add_argument("--lam", type=float, default=1000.0, help="ridge strength (on standardized inputs)")
    p.add_argument("--out")
    args = p.parse_args(argv)
    torch.set_num_threads(2)

    from mmlora.data.media import load_audio, load_video
    from mmlora.encoders import build_encoder

    root = Path(args.corpus)

    def clips(split: str, n: int) -> list[dict]:
        rows = [json.loads(line) for line in (root / f"{split}.jsonl").read_text().splitlines()][:n]
        bad = [r["id"] for r in rows if len(r["text"].rstrip(".").split()) != len(SLOTS) or not r.get("video")]
        if bad:
            raise SystemExit(f"{root / split}.jsonl: not GRID clips with video: {bad[:3]}")
        return rows

    tr_rows, te_rows = clips("train", args.train), clips("test", args.test)
    words = lambda r: r["text"].rstrip(".").lower().split()  # noqa: E731
    encoders = {"lips": (build_encoder(json.loads(args.encoder)).eval(), lambda r: load_video(root / r["video"]))}
    if args.audio:
        encoders["audio"] = (build_encoder({"preset": "whisper-tiny.en", "full_context": False, "mask_padding": True}).eval(),
                             lambda r: load_audio(root / r["audio"]))
    result = {"corpus": str(root), "train_clips": len(tr_rows), "test_clips": len(te_rows)}
    with torch.no_grad():
        for name, (enc, load) in encoders.items():
            feats = {}
            for split, rows in (("train", tr_rows), ("test", te_rows)):
                feats[split] = [(enc([load(r)]).x[0].double(), words(r)) for r in rows]
            result[name] = probe(feats["train"], feats["test"], args.lam)
            print(json.dumps({name: result[name]}), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
