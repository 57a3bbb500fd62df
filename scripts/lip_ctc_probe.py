"""How much of the transcript can a linear CTC reader take from lip features? A probe for ``model.ctc``.

Encodes the lip videos of a training and a test manifest with a lip encoder (a saved model's, with the LoRA trained
inside it, ``--model DIR``; or a freshly built frozen one, ``--encoder``), fits only a linear head on the frozen
features with CTC against the normalized transcripts' characters (:mod:`mmlora.ctc`, the head ``model.ctc`` trains),
and reports the greedy CTC decoding's character and word error rates on both sets (jiwer, :mod:`mmlora.metrics`):

    python scripts/lip_ctc_probe.py --model outputs/lipreader_r25 --train data/open/op12/train.jsonl \\
        --test data/open/op12/test.jsonl --n-train 800 --n-test 100
    python scripts/lip_ctc_probe.py --train ... --test ...      # the frozen EfficientNet-Lite0 at 96 px
    python scripts/lip_ctc_probe.py --model outputs/lipreader_r29ctc --own-head --train ... --test ...

``--head temporal`` fits a head with temporal context (a projection, two residual 1-D convolutions of 5 frames, a
linear map) instead of the linear one; ``--inputs raw|layernorm`` feeds the features unstandardized or
layer-normalized; ``--cache F`` keeps the encoded features in F for the next run with the same encoder and clips.
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

from mmlora.ctc import CTC_CHARS, HEADS, CTCConfig, build_ctc_head, ctc_loss, run_ctc_head  # noqa: E402


def greedy_decode(logits: torch.Tensor, length: int) -> str:
    """Best path of one item's ``logits [T, C]`` over its first ``length`` frames: repeats merged, blanks dropped."""
    best = logits[:length].argmax(-1).tolist()
    return "".join(CTC_CHARS[c - 1] for i, c in enumerate(best) if c != 0 and (i == 0 or c != best[i - 1]))


def encode_manifest(enc, manifest: str, n: int, batch: int = 8) -> tuple[list[torch.Tensor], list[str]]:
    """The first ``n`` readable clips' features (``[T_i, D]`` each, float32) and transcripts."""
    from mmlora.tasks.speech import read_manifest

    return encode_records(enc, [r for r in read_manifest(manifest, need=()) if r.video is not None][:n], "video", batch)


def encode_records(enc, recs: list, modality: str, batch: int = 8, dtype: torch.dtype = torch.float32,
                   transform=None, warp=None) -> tuple[list[torch.Tensor], list[str]]:
    """Speech manifest records' ``modality`` ("audio" or "video") features (``[T_i, D]`` each, in ``dtype``) and
    transcripts, encoded by ``enc``. ``transform`` (optional) changes each loaded clip before encoding; ``warp``
    (optional, ``n -> n factors``) gives each batch's frequency warps (the encoder's ``encode(warp=…)``, VTLP)."""
    from mmlora.data.media import load_audio, load_video

    load = load_audio if modality == "audio" else load_video
    feats, texts = [], []
    with torch.no_grad():
        for s in range(0, len(recs), batch):
            part = recs[s : s + batch]
            media = [load(getattr(r, modality)) for r in part]
            if transform is not None:
                media = [transform(x) for x in media]
            f = enc.encode(media) if warp is None else enc.encode(media, warp=warp(len(media)))
            if f.tokens_per_step != 1:
                raise SystemExit(f"the {modality} encoder gives {f.tokens_per_step} tokens per time step; CTC needs one")
            feats += [x[m].to(dtype) for x, m in zip(f.x, f.mask)]
            texts += [r.text for r in part]
    return feats, texts


def pad(feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(f) for f in feats)
    x = torch.zeros(len(feats), T, feats[0].shape[1])
    mask = torch.zeros(len(feats), T, dtype=torch.bool)
    for i, f in enumerate(feats):
        x[i, : len(f)], mask[i, : len(f)] = f, True
    return x, mask


class ProbeHead(torch.nn.Module):
    """``head`` on the features as the probe feeds them: standardized with the training frames' statistics
    (``std``), layer-normalized per frame (``layernorm``) or as they come (``raw``)."""

    def __init__(self, head: torch.nn.Module, inputs: str, mu: torch.Tensor, sd: torch.Tensor):
        super().__init__()
        self.head, self.inputs = head, inputs
        self.register_buffer("mu", mu)
        self.register_buffer("sd", sd)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.inputs == "std":
            x = (x - self.mu) / self.sd
        elif self.inputs == "layernorm":
            x = torch.nn.functional.layer_norm(x, x.shape[-1:])
        return run_ctc_head(self.head, x, mask)


INPUTS = ("std", "raw", "layernorm")


def fit_head(train_x, train_m, texts, epochs: int, lr: float, batch: int, seed: int = 0, kind: str = "linear",
             inputs: str = "std", clip: float = 0.0) -> ProbeHead:
    """A CTC head (``kind``: a zero-initialized linear map, or :class:`TemporalHead`) fitted with Adam on the
    features fed as ``inputs`` says; ``clip`` > 0 clips the gradient norm."""
    if kind not in HEADS or inputs not in INPUTS:
        raise ValueError(f"head {kind!r} / inputs {inputs!r}: heads are {HEADS}, inputs {INPUTS}")
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    frames = train_x[train_m]
    mu, sd = frames.mean(0), frames.std(0).clamp_min(1e-3)
    inner = build_ctc_head(CTCConfig(head=kind), train_x.shape[-1])  # model.ctc's head, its default settings
    if kind == "linear":  # the probe's linear head starts at zero (no draw of random weights to wash out)
        torch.nn.init.zeros_(inner.weight)
        torch.nn.init.zeros_(inner.bias)
    head = ProbeHead(inner, inputs, mu, sd)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    head.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(texts), generator=g).split(batch):
            loss = ctc_loss(head(train_x[idx], train_m[idx]), train_m[idx], [texts[i] for i in idx.tolist()])
            opt.zero_grad()
            loss.backward()
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(head.parameters(), clip)
            opt.step()
    return head.eval()


def own_head(model_dir: str) -> torch.nn.Module:
    """The CTC head a ``model.ctc`` training saved with the video projector (``video.ctc_head.*`` in
    ``projectors.safetensors``), built as its config.json's ``model.ctc`` says, in float32."""
    from safetensors.torch import load_file

    path = Path(model_dir) / "projectors.safetensors"
    state = load_file(str(path)) if path.is_file() else {}
    prefix = "video.ctc_head."
    head_state = {k[len(prefix):]: v.float() for k, v in state.items() if k.startswith(prefix)}
    if not head_state:
        raise SystemExit(f"{path}: no video.ctc_head (the model was not trained with model.ctc on video)")
    ctc = json.loads((Path(model_dir) / "config.json").read_text())["model"].get("ctc") or {}
    cfg = CTCConfig(**{k: v for k, v in ctc.items() if k != "modality"})
    d_in = head_state["weight" if cfg.head == "linear" else "inp.weight"].shape[1]
    head = build_ctc_head(cfg, d_in)
    head.load_state_dict(head_state)
    return head.float().eval()


def score(head, x, m, texts) -> dict:
    """Greedy decoding's CER and WER (jiwer), and the CTC loss per character (nats), of ``head`` on ``x``."""
    from mmlora.metrics.wer import compute_wer

    with torch.no_grad():
        logits = head(x, m) if isinstance(head, ProbeHead) else run_ctc_head(head, x, m)
        loss = ctc_loss(logits, m, texts).item()
    hyps = [greedy_decode(logits[i], int(m[i].sum())) for i in range(len(texts))]
    r = compute_wer(texts, hyps)
    return {"cer": round(r.cer, 4), "wer": round(r.wer, 4), "ctc_per_char": round(loss, 4), "n": r.n,
            "examples": [[texts[i], hyps[i]] for i in range(min(3, len(texts)))]}


def cached_features(enc_key: str, load, args) -> tuple:
    """``(train, test)`` features and transcripts: from ``args.cache`` where it holds the same encoder, manifests and
    counts, else encoded by ``load()`` (and saved there when ``--cache`` is given)."""
    key = {"encoder": enc_key, "train": args.train, "test": args.test, "n_train": args.n_train, "n_test": args.n_test}
    if args.cache and Path(args.cache).is_file():
        d = torch.load(args.cache)
        if d.get("key") == key:
            return d["tr"], d["te"]
        print(f"lip_ctc_probe: {args.cache} holds other features ({d.get('key')}); encoding again", file=sys.stderr)
    enc = load()
    tr, te = encode_manifest(enc, args.train, args.n_train), encode_manifest(enc, args.test, args.n_test)
    if args.cache:
        torch.save({"key": key, "tr": tr, "te": te}, args.cache)
    return tr, te


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
    ap.add_argument("--head", choices=HEADS, default="linear",
                    help="the fitted head: linear, or temporal (1-D convolutions over frames, then linear)")
    ap.add_argument("--inputs", choices=INPUTS, default="std",
                    help="how the fitted head sees the features: standardized, as they come, layer-normalized")
    ap.add_argument("--clip", type=float, default=0.0, help="clip the fitted head's gradient norm (0: off)")
    ap.add_argument("--cache", help="save the encoded features here, and reuse them when they match")
    ap.add_argument("--own-head", action="store_true",
                    help="score the CTC head the model in --model trained (model.ctc) instead of fitting one")
    ap.add_argument("--out", help="write the JSON report here too")
    args = ap.parse_args(argv)
    if args.own_head and not args.model:
        ap.error("--own-head needs --model DIR (a model trained with model.ctc)")
    torch.manual_seed(0)
    t0 = time.time()
    head = own_head(args.model) if args.own_head else None
    (tr_f, tr_t), (te_f, te_t) = cached_features(args.model or args.encoder,
                                                 lambda: load_encoder(args.model, args.encoder), args)
    t_enc = time.time() - t0
    (tr_x, tr_m), (te_x, te_m) = pad(tr_f), pad(te_f)
    if head is None:
        head = fit_head(tr_x, tr_m, tr_t, args.epochs, args.lr, args.batch, kind=args.head, inputs=args.inputs,
                        clip=args.clip)
    report = {"encoder": args.model or args.encoder,
              "head": "the model's own" if args.own_head else f"fitted {args.head}, inputs {args.inputs}",
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
