"""How far apart do the judges' views of a clip lie? A probe of a model folder's audio encoders (session 54).

A model folder with a judge encoder (``whisper_encoder_adapters/``) has three views of each clip that Whisper's
decoders can read: the model's audio encoder (its LoRA, the release's view), the judge's own copy
(:meth:`MultimodalLM.judge_encoder`) and the packaged encoder without any LoRA (:meth:`MultimodalLM.base_audio_encoder`).
For each manifest this prints the relative change between two views over the clips' own frames (the padded run's
frames after a clip, the same for every view, are left out): ``sqrt(sum ||a - b||² / sum ||b||²)``::

    python scripts/judge_frame_change.py --model outputs/g53/cand/ED3B \\
        --manifest data/human_speech/extra.jsonl:24 --manifest data/speech_release/st/test.jsonl:40

``MANIFEST:N`` reads its first N clips. The last line printed is every result as JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PAIRS = (("judge", "model"), ("model", "base"), ("judge", "base"))  # (a, b): the change from b to a


def relative_change(a: list, b: list) -> float:
    """``sqrt(sum_i ||a_i - b_i||² / sum_i ||b_i||²)`` over clips ``i`` (each a ``[T_i, D]`` tensor)."""
    num = sum(float(((x - y) ** 2).sum()) for x, y in zip(a, b, strict=True))
    den = sum(float((y ** 2).sum()) for y in b)
    return (num / den) ** 0.5


def manifest_spec(spec: str) -> tuple[str, int | None]:
    """``MANIFEST:N`` → ``(MANIFEST, N)``; a spec without a count after its last ``:`` → ``(spec, None)``."""
    head, _, n = spec.rpartition(":")
    return (head, int(n)) if head and n.isdigit() else (spec, None)


def clip_frames(judge, waves: list, encoder) -> list:
    """Each clip's own frames of :meth:`WhisperJudge.frames_many` through ``encoder``: as many as the unpadded encoder
    gives the clip (the first ``len(wave) // 320``, Whisper's 20 ms a frame), the padded run's after them left out."""
    return [f[: w.shape[0] // 320] for f, w in zip(judge.frames_many(waves, encoder), waves)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a model folder with a judge encoder (whisper_encoder_adapters/)")
    ap.add_argument("--manifest", action="append", required=True, help="MANIFEST or MANIFEST:N (its first N clips)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)

    import torch

    from mmlora import load_pipeline
    from mmlora.data.media import load_audio
    from mmlora.tasks.speech import read_manifest

    torch.set_num_threads(a.threads)
    model = load_pipeline(a.model, device="cpu").model
    if not model.whisper_encoder_lora:
        print(f"judge_frame_change: error: {a.model} has no judge encoder (whisper_encoder_adapters/)", file=sys.stderr)
        return 1
    judge = model.whisper_judge()
    views = {"model": model.encoders["audio"], "judge": model.judge_encoder(), "base": model.base_audio_encoder()}
    results = []
    with torch.no_grad():
        for spec in a.manifest:
            path, n = manifest_spec(spec)
            records = read_manifest(path, need=("audio",))[:n]
            waves = [load_audio(r.audio) for r in records]
            frames = {k: clip_frames(judge, waves, enc) for k, enc in views.items()}
            res = {"manifest": path, "clips": len(waves),
                   **{f"{x}_vs_{y}": round(relative_change(frames[x], frames[y]), 4) for x, y in PAIRS}}
            print("  ".join(f"{k} {v}" for k, v in res.items()), flush=True)
            results.append(res)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
