"""``mmlora train`` / ``mmlora evaluate`` / ``mmlora transcribe``: thin entry points over the tasks.

    mmlora train recipes/asr_tiny.yaml train.max_steps=20 train.output_dir=outputs/asr_tiny
    mmlora evaluate --model outputs/asr_tiny/final/model --manifest tests/data/speech/test.jsonl --out report.json
    mmlora transcribe --model outputs/asr_tiny/final/model clip.flac [--video lips.mp4]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path


def _fail(msg: str) -> int:
    print(f"mmlora: error: {msg}", file=sys.stderr)
    return 2


def _bad_overrides(overrides: list[str]) -> str | None:
    """The error for command-line overrides that are not ``key=value``, or None."""
    bad = [o for o in overrides if "=" not in o]
    return f"overrides must look like key=value, got {bad}" if bad else None


def load_run_config(recipe: str, overrides: list[str]):
    """Read a recipe's ``task`` (override wins), then the whole run config of that task."""
    from mmlora.config import load_config, load_yaml

    from . import get_task

    task = load_yaml(recipe).get("task")
    for o in overrides:
        if o.startswith("task="):
            task = o.split("=", 1)[1]
    if not task:
        raise ValueError(f"{recipe}: no 'task' key (one of the registered tasks)")
    spec = get_task(task)
    return spec, load_config(spec.run_config, recipe, overrides)


def _start_folders(cfg) -> list[tuple[str, str | None, dict]]:
    """The saved folders a run starts from, each with its saved ``model`` config, read once: ``(train.init_from,
    None, …)`` (every modality) and ``(folder, m, …)`` for each ``train.init_projectors`` entry (modality ``m`` only)."""
    from mmlora.model import _model_config

    sources = [(cfg.train.init_from, None)] if cfg.train.init_from else []
    sources += [(folder, m) for m, folder in cfg.train.init_projectors.items()]
    return [(folder, only, json.loads(_model_config(Path(folder)).read_text())["model"]) for folder, only in sources]


def adopt_encoder_lora(cfg, starts: list[tuple[str, str | None, dict]]) -> None:
    """A saved folder the run starts from (``starts``: :func:`_start_folders`) with
    encoder LoRA (``encoder_adapters/<m>/``) for a modality whose recipe has none: the run takes the folder's
    ``media.<m>.encoder_lora``, so that its encoder reads as the saved model's did, and the adapters then load with
    the weights (logged). Without this, a recipe starting from the release of session 28 (LoRA inside Whisper)
    was refused, or its audio projector would have read an encoder it was not trained on."""
    from mmlora.model import ENCODER_ADAPTERS

    for folder, only, saved_model in starts:
        enc_dir = Path(folder) / ENCODER_ADAPTERS
        if not enc_dir.is_dir():
            continue
        saved = saved_model["media"]
        for m in sorted(d.name for d in enc_dir.iterdir() if d.is_dir()):
            media = cfg.model.media.get(m)
            if (only and m != only) or media is None or media.encoder_lora or not saved.get(m, {}).get("encoder_lora"):
                continue
            media.encoder_lora = dict(saved[m]["encoder_lora"])
            media.encoder_lora_spec()  # validated as a recipe's would be
            logging.getLogger("mmlora.train").info("model.media.%s.encoder_lora=%s from %s (its encoder adapters load "
                                                   "with it)", m, media.encoder_lora, folder)


CTC_HEAD_SHAPE = ("modality", "head", "width", "kernel", "layers", "feed")  # what a fed projector's weights depend on


def adopt_ctc_feed(cfg, starts: list[tuple[str, str | None, dict]]) -> None:
    """A saved folder the run starts from whose projector for modality ``m`` reads its CTC head's hidden frames
    (``model.ctc.feed``): the run takes the folder's ``model.ctc`` (its weight too) when its recipe sets none, since
    that projector's first layer reads the encoder's width plus the head's, and the head then loads with it (logged).
    A run whose own ``model.ctc`` differs in the head's shape is a clear error. Without this an AVSR run starting from
    GPU run 31's lip reader failed on the video projector's shape."""
    from mmlora.ctc import CTCConfig

    for folder, only, saved_model in starts:
        saved = saved_model.get("ctc") or {}
        m = saved.get("modality")
        if not (m and saved.get("feed")) or (only and m != only) or m not in cfg.model.media:
            continue
        ours = cfg.model.ctc
        if not ours.modality:
            cfg.model.ctc = CTCConfig(**saved)
            logging.getLogger("mmlora.train").info("model.ctc=%s from %s (its %s projector reads the CTC head's hidden "
                                                   "frames; the head loads with it)", saved, folder, m)
        elif any(getattr(ours, k) != saved.get(k) for k in CTC_HEAD_SHAPE):
            want = {k: saved.get(k) for k in CTC_HEAD_SHAPE}
            raise ValueError(f"{folder}: its {m} projector reads its CTC head's hidden frames (model.ctc.feed), and "
                             f"this run's model.ctc has another head: give the same ({want}) or leave model.ctc "
                             f"unset to take the folder's")


def build_model(cfg):
    """The run's model, its fresh weights (projectors, LoRA) drawn after seeding with ``train.seed``:
    the same command builds the same model whatever ran before it in the process. With
    ``train.init_from`` the trained weights of that model folder replace the fresh ones, then
    ``train.init_projectors`` loads single modalities' projectors from other folders."""
    from accelerate.utils import set_seed

    from mmlora.model import MultimodalLM

    set_seed(cfg.train.seed)
    starts = _start_folders(cfg)  # the folders the run starts from, their configs read once for both
    adopt_encoder_lora(cfg, starts)
    adopt_ctc_feed(cfg, starts)
    model = MultimodalLM.build(cfg.model)
    if cfg.train.init_from and (cfg.train.init_map or cfg.train.init_grow_rank):
        fresh = model.load_trainable_renamed(cfg.train.init_from, cfg.train.init_map, grow_rank=cfg.train.init_grow_rank)
        logging.getLogger("mmlora.train").info("weights from %s renamed by %s%s; %d weight(s) fresh%s", cfg.train.init_from,
                                               cfg.train.init_map, ", lower ranks grown" if cfg.train.init_grow_rank else "",
                                               len(fresh), f" (e.g. {fresh[0]})" if fresh else "")
    elif cfg.train.init_from:
        from mmlora.tensor_match import TensorShapeError

        try:
            fresh = model.load_trainable(cfg.train.init_from, new_modalities=True)
        except TensorShapeError as e:
            raise ValueError(f"{e} (a LoRA rank changed? train.init_grow_rank=true loads a lower saved rank into a "
                             "higher one)") from None
        logging.getLogger("mmlora.train").info("weights from %s%s", cfg.train.init_from,
                                               f"; fresh: {', '.join(fresh)}" if fresh else "")
    for modality, folder in cfg.train.init_projectors.items():
        model.load_projector(modality, folder)
        logging.getLogger("mmlora.train").info("%s projector from %s", modality, folder)
    return model


def run_training(recipe: str, overrides: list[str] | None = None):
    """Train a task from a recipe; returns ``(TrainResult, final model folder)``."""
    import functools

    from mmlora.config import dump_config
    from mmlora.data.collate import collate_samples
    from mmlora.pipelines import MediaPipeline
    from mmlora.train import train
    from .speech import validation_noise

    spec, cfg = load_run_config(recipe, list(overrides or []))
    model = build_model(cfg)
    model.pipeline_info = {"task": spec.name, "modalities": list(spec.modalities),
                           "instruction": cfg.data.instruction,
                           "generation": {"num_beams": cfg.eval.num_beams, "max_new_tokens": cfg.eval.max_new_tokens,
                                          **({"stop_strings": list(cfg.eval.stop_strings)} if cfg.eval.stop_strings else {}),
                                          **({"ascii_only": True} if cfg.eval.ascii_only else {})},
                           **({"piece_seconds": cfg.eval.piece_seconds} if cfg.eval.piece_seconds else {})}
    train_ds, val_records = spec.build_data(cfg, model)
    out = Path(cfg.train.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, out / "run_config.yaml")
    collate = functools.partial(collate_samples, prompts=model.prompts)

    def eval_fn(m):
        if not val_records:
            return {}
        pipe = MediaPipeline(m, batch_size=cfg.eval.batch_size)
        rep = spec.evaluate(pipe, cfg.data.val_manifest, rates=cfg.eval.rates or None, records=val_records,
                            **validation_noise(cfg.data))
        return {} if rep.get("wer") is None else {"val_wer": rep["wer"]}

    result = train(model, train_ds, collate, cfg.train, param_groups=model.param_groups(), eval_fn=eval_fn,
                   lengths=train_ds.lengths())
    return result, Path(result.final_dir) / "model" if result.final_dir else None


def train(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="mmlora train", description="Train a task from a YAML recipe.")
    p.add_argument("recipe", help="recipes/<task>_<scale>.yaml")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.lr=3e-4 data.max_samples=100")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("accelerate").setLevel(logging.WARNING)
    if (bad := _bad_overrides(args.overrides)) is not None:
        return _fail(bad)
    try:
        result, final = run_training(args.recipe, args.overrides)
    except (ValueError, FileNotFoundError, KeyError) as e:
        return _fail(str(e))
    print(json.dumps({"final_loss": result.final_loss, "steps": result.global_step,
                      "skipped_samples": result.skipped_samples, "model": str(final) if final else None,
                      **({"best": result.best, "best_model": str(Path(result.best_dir) / "model")} if result.best else {}),
                      **({"interrupted": True} if result.interrupted else {})}))
    return 3 if result.interrupted else 0  # 3: stopped by SIGTERM/SIGINT, checkpoint saved: rerun to resume


def _parse_rates(text: str | None, modalities) -> dict[str, int] | None:
    if not text:
        return None
    vals = [int(v) for v in text.split(",")]
    mods = [m for m in ("audio", "video") if m in modalities]
    if len(vals) != len(mods):
        raise ValueError(f"--rates needs {len(mods)} value(s) for {mods}, got {text!r}")
    return dict(zip(mods, vals))


def _add_piece_seconds(p: argparse.ArgumentParser) -> None:
    p.add_argument("--piece-seconds", type=float, metavar="S",
                   help="audio longer than S seconds is cut at pauses into pieces decoded one by one (default: the "
                        "model's saved value; 0: up to the audio encoder's whole window, e.g. Whisper's 30 s)")


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", help="default: cuda when available, else cpu")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                   help="the LLM's weights (default: float32 on the CPU, else the model's saved dtype)")


def _piece_seconds(args) -> dict:
    if args.piece_seconds is None:
        return {}
    if args.piece_seconds < 0:
        raise ValueError(f"--piece-seconds must be >= 0 (0: the encoder's window), got {args.piece_seconds:g}")
    return {"piece_seconds": args.piece_seconds}


def _parse_talkers(text: str) -> tuple[int, int]:
    try:
        parts = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"--noise-talkers takes LO,HI (or N), got {text!r}") from None
    return (parts[0], parts[0]) if len(parts) == 1 else parts  # checked by the dataset


def _parse_snr(text: str) -> float | None:
    if text.lower() in ("none", "clean"):
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--snr takes a number of dB or 'none', got {text!r}") from None


def _per_manifest(flag: str, given: list[str] | None, n: int, default, parse) -> list:
    """One value of ``flag`` per manifest: the default where not given, one value for all, or one per manifest."""
    if not given:
        return [default] * n
    if len(given) not in (1, n):
        raise ValueError(f"{len(given)} {flag} for {n} --manifest: give it once (for all) or once per --manifest")
    values = [parse(g) for g in given]
    return values * n if len(values) == 1 else values


def evaluate(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="mmlora evaluate", description="Score a trained model on a manifest.")
    p.add_argument("--model", required=True, help="model folder (…/final/model or a checkpoint's model/)")
    p.add_argument("--manifest", required=True, action="append",
                   help="JSONL manifest; repeatable: the model is loaded once and scored on each in turn (with as "
                        "many --out, paired in order)")
    p.add_argument("--rates", help="Matryoshka rate pair A,V (audio,video compression), e.g. 4,2")
    p.add_argument("--snr", action="append", help="mix noise at this SNR (dB) into the audio ('none': clean). Given "
                   "once, for every --manifest; given once per --manifest, the i-th for the i-th (so one call can "
                   "score clean and noisy conditions); the same for --noise and --noise-talkers")
    p.add_argument("--noise", action="append", choices=["babble", "white"], help="babble (default) or white")
    p.add_argument("--noise-talkers", action="append", help="babble: LO,HI other utterances summed (default 3,6; "
                   "1,1 = one competing talker)")
    p.add_argument("--zero-modality", action="append", default=[], choices=["audio", "video"],
                   help="zero this modality's tokens (repeatable): e.g. an AVSR model read as VSR with 'audio'")
    p.add_argument("--max-samples", type=int)
    _add_search(p, sweep=True)
    p.add_argument("--batch-size", type=int, default=16)
    _add_device(p)
    p.add_argument("--out", action="append", help="write the full JSON report here (one per --manifest)")
    p.add_argument("--candidates", action="append", metavar="JSON",
                   help="write every utterance's candidates with the scores that rescoring weighs here (one per "
                        "--manifest; with --ctc-weight or --whisper-weight, saved or given), for "
                        "scripts/rescore_candidates.py to choose weights without decoding again")
    p.add_argument("--show", action="store_true", help="print each reference beside its hypothesis")
    _add_piece_seconds(p)
    args = p.parse_args(argv)
    n = len(args.manifest)
    outs = args.out or [None] * n
    if len(outs) != n:
        return _fail(f"{n} --manifest but {len(outs)} --out: give one --out per --manifest, "
                     "in the same order (or none)")
    dumps = args.candidates or [None] * n
    if len(dumps) != n:
        return _fail(f"{n} --manifest but {len(dumps)} --candidates: give one per --manifest, in the same order")
    try:
        snrs = _per_manifest("--snr", args.snr, n, None, _parse_snr)
        kinds = _per_manifest("--noise", args.noise, n, "babble", str)
        talkers = _per_manifest("--noise-talkers", args.noise_talkers, n, None, _parse_talkers)
    except ValueError as e:
        return _fail(str(e))
    from mmlora.model import SWEEPS
    from mmlora.pipelines import load_pipeline

    from . import get_task

    try:
        pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype, batch_size=args.batch_size,
                             **_piece_seconds(args))
        spec = get_task(pipe.model.pipeline_info.get("task", "asr"))
        gen = _search(args)
        if args.zero_modality:  # speech-task options, passed only when asked (other tasks' evaluate lacks them)
            gen["zero"] = tuple(args.zero_modality)
        rates = _parse_rates(args.rates, pipe.modalities)
    except (ValueError, FileNotFoundError, KeyError) as e:
        return _fail(str(e))
    for manifest, out, snr, kind, talk, dump in zip(args.manifest, outs, snrs, kinds, talkers, dumps):  # in order
        try:
            extra = {} if talk is None or talk == (3, 6) else {"noise_talkers": talk}  # the default: not passed
            if dump:  # speech-task option, passed only when asked
                extra["candidates_out"] = dump
            result = spec.evaluate(pipe, manifest, rates=rates, snr=snr, noise_kind=kind,
                                   max_samples=args.max_samples, **gen, **extra)
        except (ValueError, FileNotFoundError, KeyError) as e:
            return _fail(str(e))
        sweep = isinstance(result, list)  # several weights: one report each, its weight in its decoding
        key = next((k for k in SWEEPS if isinstance(gen.get(k), list)), None)
        for report in result if sweep else [result]:
            weight = report["decoding"][key] if sweep else None
            if args.show:
                for u in report.get("utterances", []):
                    print(f"{u['id']}\n  REF: {u['reference']}\n  HYP: {u['hypothesis']}")
            path = (_sweep_path(out, key, weight) if sweep else Path(out)) if out else None
            if path:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(report, indent=2))
            summary = {k: report.get(k) for k in ("wer", "cer", "n", "n_skipped", "substitutions", "deletions",
                                                  "insertions", "rates", "snr_db", "noise_talkers", "zeroed")
                       if k in report}
            if sweep:
                summary[key] = weight
            if len(args.manifest) > 1:
                summary["manifest"] = manifest
            print(json.dumps(summary))
    return 0


def _add_search(p: argparse.ArgumentParser, sweep: bool = False) -> None:
    """The decoding search options of evaluate and transcribe (unset: the model's saved ones); ``sweep``: several
    comma-separated CTC weights, one report each from one search."""
    p.add_argument("--num-beams", type=int)
    p.add_argument("--ctc-weight", type=_ctc_weights if sweep else float,
                   help="rescore the beams with the model's CTC head (model.ctc), weight w in (0, 1]: (1 - w) * LLM + "
                        "w * CTC log-probability; 0 turns it off" + (
                            ". Several, comma-separated (e.g. 0,0.05,0.1): one search, one report per weight (each "
                            "--out gets _ctcW before its suffix), to tune w on a validation set" if sweep else ""))
    p.add_argument("--whisper-weight", type=_ctc_weights if sweep else float,
                   help="rescore the beams with Whisper's own decoder reading the model's audio frames (a model "
                        "whose audio encoder is a packaged Whisper), weight w in (0, 1]: (1 - w) * (LLM, with CTC) + "
                        "w * Whisper's log-probability; 0 turns it off" + (
                            ". Several, comma-separated: one search, one report per weight (_whisperW before each "
                            "--out's suffix); not with several --ctc-weight" if sweep else ""))
    p.add_argument("--whisper-both", type=_both, metavar="{on,off,S}",
                   help="with --whisper-weight, for a model folder with a judge of its own (a trained Whisper decoder "
                        "or judge encoder): Whisper's own decoder proposes and judges beside it; S in [0, 1] is its "
                        "share of the judges' score (on: 0.5, the mean)" + (
                            ". Several, comma-separated: one search, one report per share (_bothS before each --out's "
                            "suffix)" if sweep else ""))
    p.add_argument("--whisper-own-encoder", choices=["model", "base"],
                   help="with --whisper-both: what Whisper's own decoder reads, the model's audio encoder (model, "
                        "the default) or the packaged encoder without its LoRA (base)")
    p.add_argument("--whisper-proposal", type=_proposal, metavar="{on,off,N}",
                   help="with --whisper-weight: Whisper's own greedy transcript of each clip joins its beams as one "
                        "more candidate (scored by the LLM, the CTC head and Whisper alike); N > 1: Whisper's N best "
                        "transcripts by its own beam search join them; unset: the model's saved setting")


def _proposal(text: str) -> bool | int:
    """``--whisper-proposal``: on / off, or a number of Whisper's transcripts (1 is on: its greedy one)."""
    if text in ("on", "off"):
        return text == "on"
    if text.isdigit():
        return int(text) if int(text) > 1 else bool(int(text))
    raise argparse.ArgumentTypeError(f"{text!r}: on, off or a number of Whisper's transcripts, e.g. 4")


def _both(text: str) -> bool | float | list[float]:
    """``--whisper-both``: on / off, or Whisper's own decoder's share(s) of the judges' score."""
    return text == "on" if text in ("on", "off") else _ctc_weights(text)


def _ctc_weights(text: str) -> float | list[float]:
    """``--ctc-weight``: one weight, or several comma-separated (a sweep)."""
    try:
        weights = [float(w) for w in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a weight or comma-separated weights, e.g. 0.07 or 0,0.05,0.1") \
            from None
    return weights if len(weights) > 1 else weights[0]


def _search(args: argparse.Namespace) -> dict:
    gen = {"num_beams": args.num_beams} if args.num_beams else {}
    if args.ctc_weight is not None:
        gen["ctc_weight"] = args.ctc_weight
    if args.whisper_weight is not None:
        gen["whisper_weight"] = args.whisper_weight
    if args.whisper_both is not None:
        gen["whisper_both"] = args.whisper_both
    if args.whisper_own_encoder is not None:
        gen["whisper_own_encoder"] = args.whisper_own_encoder
    if args.whisper_proposal is not None:
        gen["whisper_proposal"] = args.whisper_proposal
    return gen


# the report names of mmlora.model.SWEEPS
SWEEP_TAGS = {"ctc_weight": "ctc", "whisper_weight": "whisper", "whisper_both": "both"}


def _sweep_path(out: str, key: str, weight: float) -> Path:
    """A sweep's report for one weight: ``R.json`` -> ``R_ctc0.05.json`` (ctc_weight), ``R_whisper0.5.json``,
    ``R_both0.7.json`` (whisper_both)."""
    p = Path(out)
    return p.with_name(f"{p.stem}_{SWEEP_TAGS[key]}{weight:g}{p.suffix}")


def transcribe(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="mmlora transcribe", description="Transcribe audio (+ lip video) files.")
    p.add_argument("--model", required=True)
    p.add_argument("audio", nargs="*", help="audio files")
    p.add_argument("--video", nargs="*", help="lip videos (one per audio file, or alone for a VSR model)")
    p.add_argument("--rates", help="Matryoshka rate pair A,V")
    _add_search(p)
    _add_device(p)
    _add_piece_seconds(p)
    args = p.parse_args(argv)
    if not args.audio and not args.video:
        return _fail("give at least one audio file (or --video)")
    from mmlora.data.media import MediaError
    from mmlora.pipelines import load_pipeline

    try:
        pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype, **_piece_seconds(args))
        gen = _search(args)
        texts = pipe.transcribe(audio=args.audio or None, video=args.video or None,
                                rates=_parse_rates(args.rates, pipe.modalities), **gen)
    except (MediaError, ValueError, FileNotFoundError) as e:
        return _fail(str(e))
    names = args.audio or args.video
    for name, text in zip(names, texts):
        print(f"{name}\t{text}")
    return 0


def cache_features(argv: list[str]) -> int:
    """Fill a recipe's ``data.feature_cache`` before training, decoding in parallel workers."""
    p = argparse.ArgumentParser(
        prog="mmlora cache-features",
        description="Encode every media file of the recipe's manifests with its frozen encoders and write the "
                    "entries to data.feature_cache, so training reads features from the first step. Files "
                    "already cached are skipped; unreadable files are skipped, counted and named.")
    p.add_argument("recipe", help="the training recipe (its model.media encoders and data.feature_cache are used)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, as for mmlora train")
    p.add_argument("--manifest", action="append", help="manifest(s) to cache (default: data.train_manifest)")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="decoding processes")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", help="default: cuda when available, else cpu")
    args = p.parse_args(argv)
    if (bad := _bad_overrides(args.overrides)) is not None:
        return _fail(bad)
    import torch

    from mmlora.data import media as media_io
    from mmlora.data.feature_cache import FeatureCache
    from mmlora.encoders import build_encoder
    from mmlora.train.loop import _mixed_precision

    try:
        spec, cfg = load_run_config(args.recipe, args.overrides)
        root = getattr(cfg.data, "feature_cache", None)
        if not root:
            raise ValueError(f"{args.recipe}: data.feature_cache is not set (give data.feature_cache=DIR)")
        manifests = args.manifest or [cfg.data.train_manifest]
        mods = [m for m in spec.modalities if m in cfg.model.media]
        only = getattr(cfg.data, "feature_cache_modalities", None)  # speech: cache only these (e.g. [video])
        if only:
            from .speech import cached_modalities

            mods = [m for m in mods if m in cached_modalities(cfg.data, spec.modalities)]
        from mmlora.model import check_uncached_encoder_lora

        check_uncached_encoder_lora(cfg.model.media, mods)  # before the manifests are read
        if spec.media_paths is None:
            raise ValueError(f"task {spec.name!r} has no feature cache")
        paths = spec.media_paths(manifests, mods)
    except (ValueError, FileNotFoundError, KeyError, AttributeError) as e:
        return _fail(str(e))
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    precision = _mixed_precision(cfg.train.mixed_precision) if device.type == "cuda" else "no"
    autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision or "no")
    cache, report = FeatureCache(root), {}
    for mod in mods:
        enc = build_encoder(cfg.model.media[mod].encoder).to(device)
        report[mod] = cache.fill(enc, paths[mod], media_io.LOADERS[mod], output_hidden_states=cfg.model.media[mod].hidden_states,
                                 batch_size=args.batch_size, workers=args.workers, autocast=autocast,
                                 progress=sys.stderr.isatty(), log_every_s=0.0 if sys.stderr.isatty() else 30.0)
    print(json.dumps({"feature_cache": str(root), **report}))
    return 0
