"""How much of the transcript can a linear CTC reader take from lip features? A probe for ``model.ctc``.

Encodes the lip videos of a training and a test manifest with a lip encoder (a saved model's, with the LoRA trained
inside it, ``--model DIR``; or a freshly built frozen one, ``--encoder``), fits only a linear head on the frozen
features with CTC against the normalized transcripts' characters (:mod:`mmlora.ctc`, the head ``model.ctc`` trains),
and reports the greedy CTC decoding's character and word error rates on both sets (jiwer, :mod:`mmlora.metrics`):

    python scripts/lip_ctc_probe.py --model outputs/lipreader_r25 --train data/open/op12/train.jsonl \\
        --test data/open/op12/test.jsonl --n-train 800 --n-test 100
    python scripts/lip_ctc_probe.py --train ... --test ...      # the frozen EfficientNet-Lite0 at 96 px
    python scripts/lip_ctc_probe.py --model outputs/lipreader_r29ctc --own-head --train ... --test ...

``--own-head`` fits nothing: it scores the CTC head that ``model.ctc`` trained with the model (saved with its video
projector), on the model's own encoder features.

No language model: the CER says what the features carry about the characters, frame by frame in context of a linear
map only; the WER of such spelling is near or above 100 % even where the CER is moderate.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lip_feature_probe import add_encoder_args, load_encoder  # noqa: E402


def greedy_decode(logits: torch.Tensor, length: int) -> str:
    """Best path of one item's ``logits [T, C]`` over its first ``length`` frames: repeats merged, blanks dropped."""
    from mmlora.ctc import CTC_CHARS

    best = logits[:length].argmax(-1).tolist()
    return "".join(CTC_CHARS[c - 1] for i, c in enumerate(best) if c != 0 and (i == 0 or c != best[i - 1]))


def encode_manifest(enc, manifest: str, n: int, batch: int = 8) -> tuple[list[torch.Tensor], list[str]]:
    """The first ``n`` readable clips' features (``[T_i, D]`` each, float32) and transcripts."""
    from mmlora.data.media import load_video
    from mmlora.tasks.speech import read_manifest

    recs = [r for r in read_manifest(manifest) if r.video is not None][:n]
    feats, texts = [], []
    with torch.no_grad():
        for s in range(0, len(recs), batch):
            part = recs[s : s + batch]
            f = enc.encode([load_video(r.video) for r in part])
            if f.tokens_per_step != 1:
                raise SystemExit(f"lip_ctc_probe: the encoder gives {f.tokens_per_step} tokens per frame; CTC needs one")
            feats += [x[m].float() for x, m in zip(f.x, f.mask)]
            texts += [r.text for r in part]
    return feats, texts


def pad(feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(f) for f in feats)
    x = torch.zeros(len(feats), T, feats[0].shape[1])
    mask = torch.zeros(len(feats), T, dtype=torch.bool)
    for i, f in enumerate(feats):
        x[i, : len(f)], mask[i, : len(f)] = f, True
    return x, mask


def fit_head(train_x, train_m, texts, epochs: int, lr: float, batch: int, seed: int = 0) -> torch.nn.Linear:
    """A linear CTC head on standardized features (the statistics of the training frames folded into it)."""
    from mmlora.ctc import CTC_CHARS, ctc_loss

    g = torch.Generator().manual_seed(seed)
    frames = train_x[train_m]
    mu, sd = frames.mean(0), frames.std(0).clamp_min(1e-3)
    head = torch.nn.Linear(train_x.shape[-1], len(CTC_CHARS) + 1)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    z = (train_x - mu) / sd
    for _ in range(epochs):
        for idx in torch.randperm(len(texts), generator=g).split(batch):
            loss = ctc_loss(head(z[idx]), train_m[idx], [texts[i] for i in idx.tolist()])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():  # fold the standardization in: head(x) == old_head((x - mu) / sd)
        w = head.weight / sd
        head.bias -= (w * mu).sum(1)
        head.weight.copy_(w)
    return head


def own_head(model_dir: str) -> torch.nn.Linear:
    """The CTC head a ``model.ctc`` training saved with the video projector (``video.ctc_head.*`` in
    ``projectors.safetensors``), as a float32 linear layer."""
    from safetensors.torch import load_file

    path = Path(model_dir) / "projectors.safetensors"
    state = load_file(str(path)) if path.is_file() else {}
    if "video.ctc_head.weight" not in state:
        raise SystemExit(f"{path}: no video.ctc_head (the model was not trained with model.ctc on video)")
    w, b = state["video.ctc_head.weight"].float(), state["video.ctc_head.bias"].float()
    head = torch.nn.Linear(w.shape[1], w.shape[0])
    with torch.no_grad():
        head.weight.copy_(w)
        head.bias.copy_(b)
    return head


def score(head, x, m, texts) -> dict:
    from mmlora.metrics.wer import compute_wer

    with torch.no_grad():
        logits = head(x)
    hyps = [greedy_decode(logits[i], int(m[i].sum())) for i in range(len(texts))]
    r = compute_wer(texts, hyps)
    return {"cer": round(r.cer, 4), "wer": round(r.wer, 4), "n": r.n, "examples": [[texts[i], hyps[i]] for i in range(min(3, len(texts)))]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_encoder_args(ap)
    ap.add_argument("--train", required=True, help="manifest whose first --n-train clips fit the head")
    ap.add_argument("--test", required=True, help="manifest whose first --n-test clips are scored")
    ap.add_argument("--n-train", type=int, default=800)
    ap.add_argument("--n-test", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--own-head", action="store_true",
                    help="score the CTC head the model in --model trained (model.ctc) instead of fitting one")
    ap.add_argument("--out", help="write the JSON report here too")
    args = ap.parse_args(argv)
    if args.own_head and not args.model:
        ap.error("--own-head needs --model DIR (a model trained with model.ctc)")
    torch.manual_seed(0)
    t0 = time.time()
    head = own_head(args.model) if args.own_head else None
    enc = load_encoder(args.model, args.encoder)
    tr_f, tr_t = encode_manifest(enc, args.train, args.n_train)
    te_f, te_t = encode_manifest(enc, args.test, args.n_test)
    t_enc = time.time() - t0
    (tr_x, tr_m), (te_x, te_m) = pad(tr_f), pad(te_f)
    if head is None:
        head = fit_head(tr_x, tr_m, tr_t, args.epochs, args.lr, args.batch)
    report = {"encoder": args.model or args.encoder, "head": "the model's own" if args.own_head else "fitted",
              "train_clips": len(tr_t), "test_clips": len(te_t),
              "frames_train": int(tr_m.sum()), "train": score(head, tr_x, tr_m, tr_t),
              "test": score(head, te_x, te_m, te_t), "seconds_encoding": round(t_enc, 1),
              "seconds_total": round(time.time() - t0, 1)}
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
