"""How much of a trained Whisper decoder's change to keep? Whisper's greedy transcripts (the proposer of
``generate(whisper_proposal=…)``) on the release's LoRA'd encoder frames, with the decoder's weights
``own + share · (trained − own)`` for each share (``mmlora.encoders.whisper_judge.mix_decoder_state``), on each
manifest (session 50: a decoder trained on synthetic voices read them better and a natural voice worse)::

    python scripts/whisper_decoder_mix.py TRAINED.safetensors --shares 0,0.25,0.5,0.75,1 \\
        --manifest data/speech_release/st/val.jsonl --manifest data/speech_release/natt9/test.jsonl --out R.json

TRAINED: ``whisper_decoder_probe.py --save``'s weights or packed ones (``pack_whisper_decoder.py``). One line a
share and manifest, then the report as JSON (``--out``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("trained")
    ap.add_argument("--model", default="checkpoints/asr-smollm2-whisper-tiny", help="whose audio encoder is read")
    ap.add_argument("--shares", default="0,0.25,0.5,0.75,1")
    ap.add_argument("--manifest", action="append", required=True)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    try:
        shares = [float(x) for x in a.shares.split(",")]
    except ValueError:
        ap.error(f"--shares: numbers separated by commas, got {a.shares!r}")
    if not all(0.0 <= x <= 1.0 for x in shares):
        ap.error(f"--shares: each in [0, 1], got {a.shares!r}")

    import torch
    from safetensors.torch import load_file

    from mmlora import load_pipeline
    from mmlora.encoders.whisper_judge import mix_decoder_state
    from whisper_decoder_probe import clip_readers, read_clips, read_greedy

    torch.set_num_threads(a.threads)
    model = load_pipeline(a.model, device="cpu").model
    if model.whisper_decoder_state:
        raise SystemExit(f"{a.model}: carries a trained decoder already; give a model with Whisper's own")
    judge, enc = model.whisper_judge(), model.encoders["audio"]
    own = {k: v.clone() for k, v in judge.decoder.state_dict().items()}
    judge.load_decoder(load_file(a.trained), a.trained)  # unpacks packed weights
    trained = {k: v.clone() for k, v in judge.decoder.state_dict().items()}
    frames, _ = clip_readers(judge, enc)
    sets = {m: (clips, [frames(p) for p, _, _ in clips]) for m in a.manifest for clips in [read_clips(m)]}
    rows = []
    for share in shares:
        judge.decoder.load_state_dict(mix_decoder_state(own, trained, share))
        for m, (clips, fs) in sets.items():
            r, _ = read_greedy(judge, clips, fs, a.max_tokens)
            rows.append({"share": share, "manifest": m, "wer": round(r.wer, 4),
                         "errors": sum(u.errors for u in r.utterances), "words": r.ref_words})
            print(json.dumps(rows[-1]), flush=True)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps({"trained": a.trained, "model": a.model, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
