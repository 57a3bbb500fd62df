"""How much of the drawn mouth shape do the frozen lip features keep? A linear probe.

Renders lip frames of the corpus's mouth model (``mmlora.data.lipvideo``) with a random viseme
per frame, writes and re-reads them as H.264 mp4 (as the corpus does), encodes them with the
recipe's frozen video encoder, and fits ridge regressions on the clips of some faces, tested on
held-out faces:
  * viseme classification accuracy (13 classes; a linear map to one-hot, argmax),
  * R² of the three mouth parameters (open, width, round),
for the encoder's features and, as the reference, for the raw pixels (downsampled to 16x16).

    python scripts/lip_feature_probe.py --faces 80 --frames 50
    python scripts/lip_feature_probe.py --encoder '{"preset": "efficientnet-lite0", "image_size": 96, "stage": "blocks"}'
    python scripts/lip_feature_probe.py --model outputs/lipreader_r25     # a trained model's lip encoder, its LoRA in

``--model DIR`` probes the video encoder of a saved mmlora model as that model runs it (``model.media.video``'s
encoder with the LoRA trained inside it, ``encoder_adapters/video/``) instead of a freshly built frozen one.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch


def ridge(x_tr: torch.Tensor, y_tr: torch.Tensor, x_te: torch.Tensor, lam: float) -> torch.Tensor:
    """Ridge on standardized inputs, targets centred (the intercept is not shrunk)."""
    sd = x_tr.std(0)
    mu, sd, ym = x_tr.mean(0), sd.clamp_min(0.01 * float(sd.mean())), y_tr.mean(0)  # near-constant dims stay small
    a, b = (x_tr - mu) / sd, (x_te - mu) / sd
    w = torch.linalg.solve(a.T @ a + lam * torch.eye(a.shape[1], dtype=a.dtype), a.T @ (y_tr - ym))
    return b @ w + ym


def top_confusions(true: torch.Tensor, pred: torch.Tensor, names: list[str], k: int = 6) -> list[str]:
    """The k most frequent wrong (true -> predicted) pairs, as "true->pred N" (most frequent first)."""
    pairs: dict[tuple[int, int], int] = {}
    for t, p in zip(true.tolist(), pred.tolist()):
        if t != p:
            pairs[t, p] = pairs.get((t, p), 0) + 1
    top = sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    return [f"{names[t]}->{names[p]} {n}" for (t, p), n in top]


def scores(x_tr, x_te, lab_tr, lab_te, par_tr, par_te, lam, names: list[str]) -> dict:
    pred = ridge(x_tr, torch.nn.functional.one_hot(lab_tr, len(names)).double(), x_te, lam).argmax(1)
    p = ridge(x_tr, par_tr, x_te, lam)
    r2 = 1 - ((p - par_te) ** 2).sum(0) / ((par_te - par_te.mean(0)) ** 2).sum(0)
    return {"viseme_acc": round(float((pred == lab_te).double().mean()), 3),
            "r2_open_width_round": [round(float(v), 3) for v in r2],
            "top_confusions": top_confusions(lab_te, pred, names)}


DEFAULT_ENCODER = '{"preset": "efficientnet-lite0", "image_size": 96}'


def add_encoder_args(ap: argparse.ArgumentParser) -> None:
    """``--model DIR`` / ``--encoder JSON``: which lip encoder a probe reads (:func:`load_encoder`)."""
    ap.add_argument("--model", help="a saved mmlora model folder: probe its video encoder (with its encoder LoRA) "
                                    "instead of --encoder")
    ap.add_argument("--encoder", default=DEFAULT_ENCODER,
                    help="video encoder config (JSON), as in a recipe's model.media.video.encoder, built frozen")


def load_encoder(model_dir: str | None, encoder: str = DEFAULT_ENCODER) -> torch.nn.Module:
    """The video encoder of a saved model, its encoder LoRA loaded (what the model itself runs), or without
    ``model_dir`` one built frozen from the JSON config ``encoder``; in eval mode."""
    from mmlora.model import MultimodalLM

    if not model_dir:
        from mmlora.encoders import build_encoder

        return build_encoder(json.loads(encoder)).eval()
    model = MultimodalLM.from_pretrained(model_dir, llm={"dtype": "float32"})
    if "video" not in model.encoders:
        raise SystemExit(f"{model_dir}: the model has no video encoder (model.media.video)")
    return model.encoders["video"].eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=int, default=40, help="appearances (one clip each); the last quarter is held out")
    ap.add_argument("--frames", type=int, default=50, help="frames per clip, one random viseme each")
    add_encoder_args(ap)
    ap.add_argument("--lam", type=float, default=1000.0, help="ridge strength (on standardized inputs)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)

    from mmlora.data.lipvideo import VISEME_NAMES, VISEMES, Appearance, MouthConfig, render_frames, write_mp4
    from mmlora.data.media import load_video

    rng = np.random.default_rng(args.seed)
    cfg = MouthConfig()
    enc = load_encoder(args.model, args.encoder)
    feats, pixels, labels, params, face = [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        for f in range(args.faces):
            lab = rng.integers(0, len(VISEME_NAMES), args.frames)
            par = np.array([VISEMES[VISEME_NAMES[i]] for i in lab], dtype=np.float64)
            frames = render_frames(par, cfg, Appearance.sample(rng), rng)
            path = Path(tmp) / f"{f}.mp4"
            write_mp4(path, frames, cfg.fps, cfg.crf)
            video = load_video(path)  # [T, H, W, 3] uint8, as training reads it
            x = enc([video]).x[0].double()  # [T * P, D]
            feats.append(x.reshape(len(video), -1))
            small = torch.nn.functional.adaptive_avg_pool2d(video[..., 0].double()[:, None], 16)
            pixels.append(small.reshape(len(video), -1))
            labels.append(torch.as_tensor(lab[: len(video)]))
            params.append(torch.as_tensor(par[: len(video)]))
            face.append(torch.full((len(video),), f))
    face = torch.cat(face)
    tr, te = face < int(args.faces * 0.75), face >= int(args.faces * 0.75)
    lab, par = torch.cat(labels), torch.cat(params)
    out = {"frames_train": int(tr.sum()), "frames_test": int(te.sum()), "chance": round(1 / len(VISEME_NAMES), 3)}
    for name, x in (("features", torch.cat(feats)), ("pixels_16x16", torch.cat(pixels))):
        out[name] = {"dim": x.shape[1], **scores(x[tr], x[te], lab[tr], lab[te], par[tr], par[te], args.lam, VISEME_NAMES)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
