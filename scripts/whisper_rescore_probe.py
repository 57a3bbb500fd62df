"""Would Whisper's own decoder pick better among our beams? A probe, not a decoding option (session 42).

A trained model (default: the release) decodes each clip with K beams and returns all K; Whisper tiny.en's own
decoder then scores each candidate, reading the very frames our projector reads (the model's audio encoder, its
encoder LoRA included, with the padded run's frames after the clip: ``mmlora.encoders.whisper_judge.decoder_features``).
Two judges, each taking the candidate with the highest sum of log-probabilities:

- ``whisper``: the decoder ported to torch (:func:`whisper_torch_scorer`), the complete candidate after
  ``<|startoftranscript|><|notimestamps|>``: its text tokens, then ``<|endoftext|>``.
- ``ct2_align`` (with ``pip install ctranslate2``): CTranslate2's ``align`` (:func:`whisper_scorer`), which scores the
  text tokens only, with ``<|endoftext|>`` left out of each distribution: it never judges where a candidate ends.

Each is compared with the first beam, with the model's own decoding (its saved settings: the release rescores its 4
beams with its CTC head) and with the oracle (the best candidate by the reference)::

    python scripts/whisper_rescore_probe.py --beams 4 --out probe.json \\
        --manifest data/human_speech/test.jsonl:6 --manifest data/human_speech/extra.jsonl:6

``MANIFEST:SECONDS`` keeps the clips of at most that many seconds: candidates are decoded from the whole clip, where
the pipeline cuts clips longer than the model's ``piece_seconds`` (6 s for the release) into pieces. The summary
line (last) has the word errors of each choice and the paired bootstrap of each judge's choice against the model's
own decoding.
"""
from __future__ import annotations

import argparse
import importlib.util
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


def clip_frames(encoder, name: str = "whisper-tiny.en"):
    """``frames(wave) -> [1500, d_model]``: what the judges read, ``encoder``'s frames of the clip (a trained model's
    audio encoder) followed by Whisper ``name``'s padded run's frames after it
    (:meth:`mmlora.encoders.whisper_judge.WhisperJudge.frames`)."""
    from mmlora.encoders import build_encoder, preset
    from mmlora.encoders.whisper_judge import decoder_features

    padded = build_encoder(preset(name, full_context=True)).float().eval()
    return lambda wave: decoder_features(wave.float(), padded, encoder)


def whisper_scorer(name: str = "whisper-tiny.en", threads: int = 2):
    """``score(frames, candidates) -> [(sum of log-probabilities, tokens scored)]`` by Whisper ``name``'s own decoder
    in CTranslate2 reading a clip's :func:`clip_frames`: ``align``'s probabilities of the text tokens, which leave
    ``<|endoftext|>`` out of each distribution (found in session 42: they equal the plain ones renormalized without
    it); an empty candidate scores (0, 0)."""
    import ctranslate2
    import numpy as np
    from tokenizers import Tokenizer

    from mmlora.encoders.whisper_judge import PROMPTS, model_dir

    folder = model_dir(name)
    model = ctranslate2.models.Whisper(str(folder), device="cpu", intra_threads=threads)
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    # align appends <|notimestamps|> to the start sequence itself (as faster-whisper passes it the sot sequence)
    start = [tok.token_to_id(t) for t in PROMPTS[name] if t != "<|notimestamps|>"]

    def score(frames, candidates: list[str]) -> list[tuple[float, int]]:
        x = frames.numpy()[None]
        ids = [tok.encode(" " + c.strip(), add_special_tokens=False).ids if c.strip() else [] for c in candidates]
        some = [i for i in ids if i]
        res = iter(model.align(ctranslate2.StorageView.from_array(np.ascontiguousarray(np.repeat(x, len(some), 0))),
                               start, some, [2 * x.shape[1]] * len(some)) if some else [])
        out = []
        for i in ids:
            r = next(res) if i else None
            out.append((sum(math.log(max(p, 1e-12)) for p in r.text_token_probs), len(i)) if r else (0.0, 0))
        return out
    return score


def whisper_torch_scorer(name: str = "whisper-tiny.en", as_align: bool = False):
    """The judge of ``generate(whisper_weight=…)`` (:class:`mmlora.encoders.whisper_judge.WhisperJudge`: the decoder
    ported to torch from CTranslate2's ``model.bin``, no ctranslate2 needed): ``score(frames, candidates) -> [(sum of
    log-probabilities, tokens scored)]`` from a clip's :func:`clip_frames`, by default of the complete candidate, its
    text tokens and then ``<|endoftext|>``. ``as_align=True`` scores as CTranslate2's ``align`` does
    (:func:`whisper_scorer`): the text tokens only, each with ``<|endoftext|>`` left out of the distribution, so that a
    candidate is never judged on where it ends (the tests compare the port with CTranslate2 that way)."""
    from mmlora.encoders.whisper_judge import WhisperJudge

    judge = WhisperJudge.load(name)

    def score(frames, candidates: list[str]) -> list[tuple[float, int]]:
        sums = judge.score(frames, candidates, as_align=as_align).tolist()
        counts = [len(judge.token_ids(c)) + (0 if as_align else 1) for c in candidates]
        return [(s, n) if n else (0.0, 0) for s, n in zip(sums, counts)]
    return score


def summarize(refs: list[str], cands: list[list[str]], scores: dict[str, list[list[tuple[float, int]]]],
              own: list[str]) -> dict:
    """Word errors (normalized text, jiwer) of the first candidate, the model's own decoding, the oracle and, for each
    judge in ``scores``, the candidate with its highest summed log-probability (``JUDGE_errors``, ``JUDGE_picked``,
    and the paired bootstrap ``JUDGE_vs_own``)."""
    from mmlora.metrics.wer import compute_wer, paired_bootstrap

    k = len(cands[0])  # every candidate and the model's own decoding in one scoring, as evaluate scores
    utts = compute_wer([r for r in refs for _ in range(k + 1)], [h for cs, o in zip(cands, own) for h in [*cs, o]]
                       ).utterances
    errs = [u.errors for u in utts]
    each = [errs[i * (k + 1):i * (k + 1) + k] for i in range(len(refs))]
    words = [utts[i * (k + 1)].ref_words for i in range(len(refs))]
    cols = {"first": [e[0] for e in each], "own": [errs[i * (k + 1) + k] for i in range(len(refs))],
            "oracle": [min(e) for e in each]}
    out: dict = {"clips": len(refs), "words": sum(words)}
    for judge, sc in scores.items():
        out[f"{judge}_picked"] = [max(range(len(s)), key=lambda j: s[j][0]) for s in sc]
        cols[judge] = [e[j] for e, j in zip(each, out[f"{judge}_picked"])]
    out.update({f"{k}_errors": sum(v) for k, v in cols.items()})
    out.update({f"{k}_wer": sum(v) / max(sum(words), 1) for k, v in cols.items()})
    for judge in scores:
        out[f"{judge}_vs_own"] = paired_bootstrap(cols["own"], cols[judge], words)
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
    have_ct2 = importlib.util.find_spec("ctranslate2") is not None
    if not have_ct2:
        print("whisper_rescore_probe: no ctranslate2: the CTranslate2 judge (ct2_align) is left out", file=sys.stderr)
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
    frames_of = clip_frames(pipe.model.encoders["audio"].float().eval())
    frames = [frames_of(load_audio(a)) for a in audios]  # once a clip, for every judge
    judges = {"whisper": whisper_torch_scorer()}
    if have_ct2:
        judges["ct2_align"] = whisper_scorer(threads=args.threads)
    scores = {j: [score(f, cs) for f, cs in zip(frames, cands)] for j, score in judges.items()}
    summary = summarize(refs, cands, scores, own)
    if args.out:
        Path(args.out).write_text(json.dumps({**summary, "model": args.model, "beams": args.beams,
                                              "decoding": pipe.generation, "clips_detail": [
            {"audio": a, "reference": r, "own": o, "candidates": cs, **{j: scores[j][i] for j in scores}}
            for i, (a, r, o, cs) in enumerate(zip(audios, refs, own, cands))]}, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if not k.endswith("_picked")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
