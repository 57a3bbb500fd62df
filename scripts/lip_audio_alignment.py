"""Do the lip-video tokens line up in time with an ASR model's audio tokens, and how much of them can they predict?

Encodes the clean clips (``snr`` null) of a speech manifest that have lip video with the AVSR recipe's frozen
encoders, projects the audio with the ASR model's projector (stack 4: 12.5 tokens/s) and stacks the lip features
two frames at a time (12.5 tokens/s), then fits a ridge regression from video token t to audio token t + shift on
the first 75 % of the clips and scores the rest (other voices and faces), for shifts of -4..4 tokens (80 ms each):
  rel. err = Σ‖pred − a‖² / Σ‖a‖²   (what ``model.align`` minimises; the mean token alone scores ~0.78 here)
  R²       = 1 − Σ‖pred − a‖² / Σ‖a − mean‖²
A peak at shift 0 says the streams are aligned; its height says how much of the audio tokens the lips carry.

    python scripts/lip_audio_alignment.py --manifest DATA/st/train.jsonl --clips 480 --lam 30000   # CPU, ~3 min
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lip_feature_probe import ridge  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--manifest", required=True, help="speech manifest with audio, video and snr fields")
    ap.add_argument("--model", default="checkpoints/asr-smollm2-whisper-tiny", help="ASR model folder (audio projector)")
    ap.add_argument("--recipe", default="recipes/avsr_smollm2_whisper_tiny.yaml")
    ap.add_argument("--clips", type=int, default=480)
    ap.add_argument("--lam", type=float, default=30000.0, help="ridge penalty on standardized inputs")
    ap.add_argument("--shifts", type=int, default=4)
    args = ap.parse_args()

    from mmlora.tasks.cli import build_model, load_run_config

    man = Path(args.manifest)
    recs = [json.loads(line) for line in man.read_text().splitlines() if line.strip()]
    recs = [r for r in recs if r.get("video") and r.get("snr") is None][: args.clips]
    if len(recs) < 8:
        raise SystemExit(f"{man}: {len(recs)} clean clips with video; need at least 8")
    _, cfg = load_run_config(args.recipe, [f"train.init_from={args.model}"])
    model = build_model(cfg).eval()
    audio, video = [], []
    with torch.no_grad():
        for i in range(0, len(recs), 16):
            b = recs[i:i + 16]
            feats = model.encode_media({"audio": [str(man.parent / r["audio"]) for r in b],
                                        "video": [str(man.parent / r["video"]) for r in b]})
            a = model.project({"audio": feats["audio"]}, {"audio": 4}, augment=False)["audio"]
            f = feats["video"]
            for j in range(len(b)):
                x = f.x[j, f.mask[j]].float()
                n = x.shape[0] // 2
                video.append(x[: 2 * n].reshape(n, -1))
                audio.append(a[j].float())
    cut = int(0.75 * len(audio))

    def pairs(a_list, v_list, s):
        xs, ys = [], []
        for a, v in zip(a_list, v_list):
            t = torch.arange(min(len(v), len(a)))
            t = t[(t + s >= 0) & (t + s < len(a))]
            xs.append(v[t])
            ys.append(a[t + s])
        return torch.cat(xs).double(), torch.cat(ys).double()

    print(f"{len(audio)} clips ({cut} fit, {len(audio) - cut} scored), lam {args.lam:g}")
    for s in range(-args.shifts, args.shifts + 1):
        x_tr, y_tr = pairs(audio[:cut], video[:cut], s)
        x_te, y_te = pairs(audio[cut:], video[cut:], s)
        p = ridge(x_tr, y_tr, x_te, args.lam)
        rel = float(((p - y_te) ** 2).sum() / (y_te ** 2).sum())
        r2 = float(1 - ((p - y_te) ** 2).sum() / ((y_te - y_tr.mean(0)) ** 2).sum())
        print(json.dumps({"shift_tokens": s, "shift_ms": 80 * s, "rel_err": round(rel, 3), "r2": round(r2, 3),
                          "fit_tokens": len(x_tr), "scored_tokens": len(x_te)}))


if __name__ == "__main__":
    main()
