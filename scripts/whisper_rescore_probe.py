"""Would Whisper's own decoder pick better among our beams? A probe, not a decoding option (session 42).

A trained model (default: the release) decodes each clip with K beams and returns all K; Whisper tiny.en's own
decoder (CTranslate2, ``pip install ctranslate2``) then scores each candidate, reading the very frames our projector
reads (the model's audio encoder, its encoder LoRA included, with the padded run's frames after the clip:
``whisper_reference_wer.decoder_features``), as the sum of its token log-probabilities (CTranslate2's ``align``,
which forces the candidate's tokens after ``<|startoftranscript|><|notimestamps|>``). The candidate it finds likeliest
is compared with the first beam, with the model's own decoding (its saved settings: the release rescores its 4 beams
with its CTC head) and with the oracle (the best candidate by the reference)::

    pip install ctranslate2
    python scripts/whisper_rescore_probe.py --beams 4 --out probe.json \\
        --manifest data/human_speech/test.jsonl:6 --manifest data/human_speech/extra.jsonl:6

``MANIFEST:SECONDS`` keeps the clips of at most that many seconds: candidates are decoded from the whole clip, where
the pipeline cuts clips longer than the model's ``piece_seconds`` (6 s for the release) into pieces. The summary
line (last) has the word errors of each choice and the paired bootstrap of the rescored choice against the model's
own decoding.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def read_clips(spec: str) -> list[tuple[str, str]]:
    """``MANIFEST[:SECONDS]`` → (audio path, reference) of its clips, those longer than SECONDS left out."""
    import soundfile as sf

    path, _, limit = spec.partition(":")
    out = []
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        audio = rec["audio"] if os.path.isabs(rec["audio"]) else os.path.join(os.path.dirname(path), rec["audio"])
        if not limit or sf.info(audio).duration <= float(limit):
            out.append((audio, rec["text"]))
    return out


def nbest(pipe, audios: list[str], beams: int, batch: int = 8) -> list[list[str]]:
    """Each clip's ``beams`` candidates, best first by the model's beam score (no CTC rescoring), decoded whole."""
    flat: list[str] = []
    for s in range(0, len(audios), batch):
        flat += pipe._run({"audio": audios[s:s + batch]}, pipe.instruction, None,
                          {"num_beams": beams, "num_return_sequences": beams, "ctc_weight": 0.0})
    return [flat[i * beams:(i + 1) * beams] for i in range(len(audios))]


def whisper_scorer(encoder, name: str = "whisper-tiny.en", threads: int = 2):
    """``score(wave, candidates) -> [(sum of log-probabilities, tokens)]`` by Whisper ``name``'s own decoder reading
    ``encoder``'s frames of the clip (a trained model's audio encoder)."""
    import ctranslate2
    import numpy as np
    from tokenizers import Tokenizer

    from mmlora.encoders import build_encoder, preset
    from whisper_reference_wer import PROMPTS, decoder_features, model_dir

    folder = model_dir(name)
    model = ctranslate2.models.Whisper(str(folder), device="cpu", intra_threads=threads)
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    start = [tok.token_to_id(t) for t in PROMPTS[name]]
    padded = build_encoder(preset(name, full_context=True))

    def score(wave, candidates: list[str]) -> list[tuple[float, int]]:
        x = decoder_features(wave, padded, encoder).numpy()[None]
        ids = [tok.encode(" " + c.strip()).ids if c.strip() else [] for c in candidates]
        ids = [i or [tok.token_to_id("<|endoftext|>")] for i in ids]  # an empty candidate: the end at once
        feats = ctranslate2.StorageView.from_array(np.ascontiguousarray(np.repeat(x, len(ids), 0)))
        res = model.align(feats, start, ids, [2 * x.shape[1]] * len(ids))
        return [(sum(math.log(max(p, 1e-12)) for p in r.text_token_probs), len(r.text_token_probs)) for r in res]
    return score


def summarize(refs: list[str], cands: list[list[str]], scores: list[list[tuple[float, int]]],
              own: list[str]) -> dict:
    """Word errors (normalized text, jiwer) of the first candidate, the model's own decoding, the candidate with the
    highest summed log-probability and the oracle; the paired bootstrap of rescored against own."""
    import jiwer

    from mmlora.metrics.wer import normalize_text, paired_bootstrap

    def errors(ref: str, hyp: str) -> int:
        o = jiwer.process_words(normalize_text(ref), normalize_text(hyp) or "<empty>")
        return o.substitutions + o.deletions + o.insertions

    words = [len(normalize_text(r).split()) for r in refs]
    each = [[errors(r, c) for c in cs] for r, cs in zip(refs, cands)]
    picked = [max(range(len(s)), key=lambda j: s[j][0]) for s in scores]
    cols = {"first": [e[0] for e in each], "own": [errors(r, h) for r, h in zip(refs, own)],
            "rescored": [e[j] for e, j in zip(each, picked)], "oracle": [min(e) for e in each]}
    out = {"clips": len(refs), "words": sum(words), "picked": picked,
           **{f"{k}_errors": sum(v) for k, v in cols.items()},
           **{f"{k}_wer": sum(v) / max(sum(words), 1) for k, v in cols.items()}}
    out["rescored_vs_own"] = paired_bootstrap(cols["own"], cols["rescored"], words)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="checkpoints/asr-smollm2-whisper-tiny")
    ap.add_argument("--manifest", action="append", required=True, metavar="MANIFEST[:SECONDS]")
    ap.add_argument("--beams", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="the full report: every candidate, its score and errors")
    args = ap.parse_args(argv)
    if args.beams < 2:
        ap.error(f"--beams must be at least 2, got {args.beams}")
    try:
        import ctranslate2  # noqa: F401
    except ImportError:
        print("whisper_rescore_probe: needs ctranslate2 (pip install ctranslate2)", file=sys.stderr)
        return 2
    import torch

    import mmlora
    from mmlora.data.media import load_audio

    torch.set_num_threads(args.threads)
    clips = [c for spec in args.manifest for c in read_clips(spec)]
    pipe = mmlora.load_pipeline(args.model, device="cpu")
    audios, refs = [a for a, _ in clips], [r for _, r in clips]
    cands = nbest(pipe, audios, args.beams)
    own = [t for s in range(0, len(audios), 8) for t in pipe._run({"audio": audios[s:s + 8]}, pipe.instruction,
                                                                    None, {})]
    score = whisper_scorer(pipe.model.encoders["audio"].float().eval(), threads=args.threads)
    scores = [score(load_audio(a), cs) for a, cs in zip(audios, cands)]
    summary = summarize(refs, cands, scores, own)
    if args.out:
        Path(args.out).write_text(json.dumps({**summary, "model": args.model, "beams": args.beams,
                                              "decoding": pipe.generation, "clips_detail": [
            {"audio": a, "reference": r, "own": o, "candidates": cs, "scores": s}
            for a, r, o, cs, s in zip(audios, refs, own, cands, scores)]}, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "picked"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
