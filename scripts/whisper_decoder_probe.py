"""Does Whisper's own decoder read our voices better once trained on our clips? A probe (session 48; ``--device``).

The release's output is one of Whisper tiny.en's own 4 transcripts on 443 of 448 test clips (ASR.md "How much of the
output is Whisper's own transcript"): Whisper's decoder, reading the release's LoRA'd encoder frames, proposes; the
LLM chooses. This probe trains that decoder (teacher forcing, cross-entropy on the transcript's tokens and
``<|endoftext|>``; its token embeddings, which are also its output layer, held) on a training manifest's clips,
each read as ``generate`` reads it (``WhisperJudge.frames`` with the model's audio encoder), and compares Whisper's
greedy transcript before and after on a test manifest, choosing the step on a validation manifest::

    python scripts/whisper_decoder_probe.py --train data/speech_release/st/train.jsonl \\
        --val data/speech_release/st/val.jsonl --test data/speech_release/st/test.jsonl --out outputs/g48/wdec.json

With ``--save FILE`` the chosen decoder's trained weights (all but the held token embeddings) go to a safetensors
file: copied into a model folder as ``whisper_decoder.safetensors``, that model's ``generate(whisper_weight=…)``
proposes and judges with them (``MultimodalLM.whisper_judge``). Training starts from Whisper's own decoder even where
the model folder carries a trained one (the release does since session 51); ``--init model`` starts from that one,
and reads the folder's judge encoder (``whisper_encoder_adapters/``) where it has one.
With ``--encoder-lr LR`` > 0 the judge reads a copy of the model's audio encoder whose LoRA trains too (the encoder
LoRA trained through Whisper's decoder, session 53; ``--train-part none`` trains it alone, beside Whisper's own
decoder), and ``--save-encoder DIR`` writes the chosen step's LoRA as an adapter folder (``mmlora.lora.save_adapters``).
The last line printed is the summary as JSON.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def read_clips(manifest: str, limit: int | None = None, seed: int = 0) -> list[tuple[Path, str, str]]:
    """``(audio path, transcript, id)`` of a manifest's clips, a seeded sample of ``limit`` of them where given."""
    from mmlora.data.jsonl import read_jsonl

    root = Path(manifest).parent
    rows = [(root / r["audio"], r["text"], r["id"]) for r in read_jsonl(manifest)]
    if limit is not None and limit < len(rows):
        rows = random.Random(seed).sample(rows, limit)
    return rows


def batch_loss(decoder, start: list[int], eot: int, frames: list, targets: list[list[int]], teacher=None,
               kl: float = 0.0, teacher_frames: list | None = None, ce: float = 1.0):
    """Mean cross-entropy over every target token (each transcript's text tokens, then ``<|endoftext|>``) of a batch,
    teacher-forced after the start tokens; the output layer is the token embeddings, as the judge scores. With a
    ``teacher`` decoder (Whisper's own, frozen) and ``kl`` > 0, plus ``kl`` times the mean over the same positions of
    KL(teacher || decoder) over the whole vocabulary: the change is held near what Whisper would say (learning
    without forgetting), not only towards our transcripts. ``teacher_frames`` (``--kl-view base``): the teacher reads
    these instead (the same clips through the encoder before training), so that the encoder's change is held too.
    ``ce``: the cross-entropy's weight (0 for ``--anchor``'s clips: the KL alone, the targets being the teacher's
    own transcript, not a reference)."""
    import torch

    seqs = [start + t for t in targets]
    labels = [[-100] * (len(start) - 1) + t + [eot] for t in targets]
    width, device = max(map(len, seqs)), frames[0].device
    ids = torch.tensor([s + [eot] * (width - len(s)) for s in seqs], device=device)
    lab = torch.tensor([lb + [-100] * (width - len(lb)) for lb in labels], device=device)
    enc = torch.stack(frames)

    def logits(d):
        return (d(input_ids=ids, encoder_hidden_states=enc).last_hidden_state @ d.embed_tokens.weight.T).float()

    out = logits(decoder)
    loss = ce * torch.nn.functional.cross_entropy(out.flatten(0, 1), lab.flatten(), ignore_index=-100)
    if teacher is None or not kl:
        return loss
    with torch.no_grad():
        if teacher_frames is not None:
            enc = torch.stack(teacher_frames)
        ref = torch.log_softmax(logits(teacher), -1)
    keep = lab != -100
    div = (ref.exp() * (ref - torch.log_softmax(out, -1))).sum(-1)
    return loss + kl * div[keep].mean()


def clip_readers(judge, encoder, augment: float = 0.0, seed: int = 0, grad: bool = False, teacher_encoder=None):
    """``(frames, train_frames)``: each maps a list of clip paths to what ``generate``'s judge reads for each (the clip
    as the pipeline loads it, mono 16 kHz, through ``encoder``; ``judge.frames_many``, the encoders run once over the
    list); ``train_frames`` first gives each clip, with probability ``augment``, a training-like change
    (:func:`mmlora.data.speech_augment.training_change`: speed, room tone, reverberation on half, and a VTLP warp both
    encoders apply), drawn clip after clip from generators seeded by ``seed``; with ``grad`` its frames keep a graph to
    ``encoder``'s training LoRA (``frames``' never do). With a ``teacher_encoder`` (``--kl-view base``)
    ``train_frames`` returns ``(frames, teacher's frames)``: the same changed clips and warps through it too, no
    graph."""
    from mmlora.data.media import load_audio
    from mmlora.data.speech_augment import training_change

    change, warp = training_change(seed + 1)
    coin = random.Random(seed + 1)

    def frames(paths: list[Path]):
        return judge.frames_many([load_audio(p) for p in paths], encoder)

    def train_frames(paths: list[Path]):
        waves, warps = [], []
        for p in paths:
            if augment and coin.random() < augment:
                waves.append(change(load_audio(p)))
                warps.append(warp(1)[0])
            else:
                waves.append(load_audio(p))
                warps.append(1.0)  # factor 1: the identity (to 1e-14) beside a changed clip's
        warps = warps if any(w != 1.0 for w in warps) else None
        out = judge.frames_many(waves, encoder, warps, grad=grad)
        return out if teacher_encoder is None else (out, judge.frames_many(waves, teacher_encoder, warps))

    return frames, train_frames


def anchor_batch(judge, own, teacher_encoder, encoder, paths: list[Path], max_tokens: int, grad: bool = False,
                 known: list | None = None):
    """``(frames, teacher's frames, targets)`` of ``--anchor``'s clips (speech held near what Whisper said, their texts
    never read): the clips through ``encoder`` (the trained judge's, a graph to its LoRA with ``grad``) and through
    ``teacher_encoder`` (the model's, no graph), and as targets the token ids of ``own``'s greedy transcript of the
    teacher's frames (Whisper's own decoder; where it has not ended within ``max_tokens``, its tokens so far). Where
    the judge reads the model's encoder itself (no ``--encoder-lr``, no judge encoder), its frames are the teacher's,
    read once. ``known``: each clip's targets from an earlier draw, or None; only the others are decoded (both the
    model's encoder and Whisper's own decoder stay frozen, so a clip's targets never change: the training loop keeps
    them, and each clip is decoded once, at its first draw)."""
    import torch

    from mmlora.data.media import load_audio

    known = list(known) if known is not None else [None] * len(paths)
    waves = [load_audio(p) for p in paths]
    with torch.no_grad():
        teacher = judge.frames_many(waves, teacher_encoder)
        todo = [i for i, k in enumerate(known) if k is None]
        texts = own.propose_many([teacher[i] for i in todo], max_tokens, partial=True) if todo else []
    for i, t in zip(todo, texts):
        known[i] = judge.token_ids(t)
    frames = teacher if encoder is teacher_encoder else judge.frames_many(waves, encoder, grad=grad)
    return frames, teacher, known


def own_judge(model, judge, untrained: bool, device: str = "cpu"):
    """``--anchor``'s teacher: a copy of ``judge`` (reading the frames it reads) with Whisper's own decoder, frozen: a
    copy of ``judge``'s decoder where that is still untrained (``untrained``: ``--init own``, or a model folder without
    a trained decoder), else the packaged one that ``generate(whisper_both=…)`` reads beside the trained one."""
    own = copy.copy(judge)
    own.decoder = (copy.deepcopy(judge.decoder) if untrained
                   else copy.deepcopy(model.whisper_judges(both=True)[0].decoder)).to(device)
    own.decoder.eval().requires_grad_(False)
    return own


def next_batch(order: list[int], size: int, count: int, rng: random.Random) -> tuple[list[int], list[int]]:
    """``(the next batch's indices, the order left)``: ``size`` indices from ``order``, refilled with a shuffled pass
    over all ``count`` items (``rng``) whenever fewer are left."""
    if len(order) < size:
        more = list(range(count))
        rng.shuffle(more)
        order = order + more
    return order[:size], order[size:]


PARTS = ("all", "cross", "none")  # --train-part


def decoder_params(decoder, part: str = "all") -> list:
    """The weights trained, their ``requires_grad`` set and every other weight's cleared: every weight but the token
    embeddings (``all``; tied to the output layer, the vocabulary stays Whisper's), only the cross-attention
    (``cross``: each layer's ``encoder_attn`` and its LayerNorm; what the decoder reads from the frames changes,
    its language model, self-attention and MLPs, stays Whisper's own), or none (``none``: the decoder stays
    Whisper's, only the encoder's LoRA trains through it)."""
    if part not in PARTS:
        raise ValueError(f"--train-part: one of {PARTS}, got {part!r}")
    out = []
    for name, p in decoder.named_parameters():
        trains = part == "all" or (part == "cross" and ".encoder_attn" in name)
        p.requires_grad_(trains and name != "embed_tokens.weight")
        if p.requires_grad:
            out.append(p)
    return out


def encoder_params(encoder) -> list:
    """The audio encoder's LoRA weights (:func:`mmlora.lora.adapter_parameters`), their ``requires_grad`` set and
    every other weight's cleared; an encoder without LoRA is refused (the judge's encoder trains only through its
    LoRA)."""
    from mmlora.lora import adapter_parameters

    encoder.requires_grad_(False)
    out = adapter_parameters(encoder)
    for p in out:
        p.requires_grad_(True)
    if not out:
        raise ValueError("--encoder-lr: the model's audio encoder has no LoRA to train (media.audio.encoder_lora)")
    return out


def read_greedy(judge, clips: list, frames: list, max_tokens: int):
    """``(compute_wer report, hypotheses)``: Whisper's greedy transcript (``judge.propose_many``, "" where it did not
    end) of each clip's ``frames``, scored against the clips' transcripts (``read_clips``' rows)."""
    from mmlora.metrics.wer import compute_wer

    judge.decoder.eval()
    hyps = [h or "" for h in judge.propose_many(frames, max_tokens)]
    return compute_wer([t for _, t, _ in clips], hyps, [i for _, _, i in clips]), hyps


def trained_state(state: dict) -> dict:
    """The weights the probe trains: every decoder weight but the token embeddings (held; also the output layer)."""
    return {k: v for k, v in state.items() if k != "embed_tokens.weight"}


def save_trained(state: dict, path: str) -> None:
    """:func:`trained_state` of ``state`` to ``path`` (safetensors, float32), written to a temporary file and renamed."""
    from safetensors.torch import save_file

    from mmlora.fsutil import replace_file

    with replace_file(path) as tmp:
        save_file({k: v.detach().float().cpu().contiguous() for k, v in trained_state(state).items()}, str(tmp))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="checkpoints/asr-smollm2-whisper-tiny", help="whose audio encoder is read")
    ap.add_argument("--train", required=True)
    ap.add_argument("--val", required=True,
                    help="validation manifest(s), comma-separated: the step is chosen on their word errors together")
    ap.add_argument("--test", required=True)
    ap.add_argument("--max-train", type=int, default=None, help="a seeded sample of this many training clips")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-5)
    ap.add_argument("--eval-every", type=int, default=100, help="steps between validations (and at the end)")
    ap.add_argument("--max-seconds", type=float, default=None,
                    help="stop training after this many seconds (validated at the stop; the schedule stays planned "
                         "for all the steps): a guard for a lent machine's time")
    ap.add_argument("--stop-step", type=int, default=None,
                    help="stop training after this step (validated there; the schedule stays planned for all the "
                         "steps): where --max-seconds stopped a run, the same stop by steps, which reproduces it")
    ap.add_argument("--kl", type=float, default=0.0,
                    help="add this weight times KL(Whisper's own decoder || the trained one) per target token")
    ap.add_argument("--kl-view", choices=("same", "base"), default="same",
                    help="what the --kl teacher reads: the same frames as the trained decoder (same), or, with "
                         "--encoder-lr, the clips through the encoder before training (base: the judge's whole change, "
                         "encoder and decoder, held near what Whisper said from the release's frames)")
    ap.add_argument("--init", choices=("own", "model"), default="own",
                    help="start from Whisper's own decoder (own), or from the model folder's trained one "
                         "(whisper_decoder.safetensors, where it has one: model)")
    ap.add_argument("--train-part", choices=PARTS, default="all",
                    help="which weights train: all but the token embeddings, the cross-attention only (the "
                         "decoder's language model stays Whisper's), or none (with --encoder-lr: the encoder alone)")
    ap.add_argument("--encoder-lr", type=float, default=0.0,
                    help="train the judge's own copy of the model's audio encoder LoRA too, at this learning rate "
                         "(0: the judge reads the model's encoder as it is)")
    ap.add_argument("--save-encoder", default=None,
                    help="with --encoder-lr: write the chosen step's encoder LoRA here (an adapter folder)")
    ap.add_argument("--anchor", default=None, metavar="MANIFEST",
                    help="speech on which the trained judge is held near Whisper's own decoder reading the model's "
                         "encoder (its texts are not read; e.g. human speech unlike the training voices): each step "
                         "adds --anchor-kl times KL(own || trained) over the positions of own's greedy transcript")
    ap.add_argument("--anchor-kl", type=float, default=1.0, help="the --anchor term's weight")
    ap.add_argument("--anchor-batch", type=int, default=8, help="--anchor clips a step")
    ap.add_argument("--choose", choices=("best", "last"), default="best",
                    help="the step kept: validation's best (default), or the last one run")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="where the encoders and the decoder run (cpu, cuda)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    ap.add_argument("--save", default=None, help="write the chosen decoder's trained weights here (safetensors)")
    ap.add_argument("--augment", type=float, default=0.0, metavar="P",
                    help="give each training clip drawn, with probability P, a training-like change (speed and VTLP "
                         "0.9-1.1, room tone, reverberation on half: mmlora.data.speech_augment.training_change)")
    a = ap.parse_args(argv)
    if not 0.0 <= a.augment <= 1.0:
        ap.error(f"--augment: a probability in [0, 1], got {a.augment}")
    if a.stop_step is not None and a.stop_step < 1:
        ap.error(f"--stop-step: a step of training, 1 or more, got {a.stop_step}")
    if a.encoder_lr < 0:
        ap.error(f"--encoder-lr: a learning rate, 0 or more, got {a.encoder_lr}")
    if a.train_part == "none" and not a.encoder_lr:
        ap.error("--train-part none trains nothing without --encoder-lr")
    if a.save_encoder and not a.encoder_lr:
        ap.error("--save-encoder: the encoder trains only with --encoder-lr")
    if a.anchor and (a.anchor_kl <= 0 or a.anchor_batch < 1):
        ap.error(f"--anchor: a positive --anchor-kl and --anchor-batch, got {a.anchor_kl} and {a.anchor_batch}")
    if a.kl_view == "base" and not (a.kl and a.encoder_lr):
        ap.error("--kl-view base: a --kl teacher reading the encoder before training needs --kl and --encoder-lr")

    import torch

    from mmlora import load_pipeline
    from mmlora.metrics.wer import paired_bootstrap

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    model = load_pipeline(a.model, device=a.device).model
    trained_before = bool(model.whisper_decoder_state)  # the folder's trained decoder (the release has one since 51)
    if a.init == "own":
        model.whisper_decoder_state = None  # the judge then reads Whisper's own decoder
    # the encoder read: the model's (the LLM's view), or with --init model the folder's judge encoder where it has one
    judge, base_enc = model.whisper_judge(), model.judge_encoder() if a.init == "model" else model.encoders["audio"]
    dec = judge.decoder.to(a.device)
    judge.padded_encoder().to(a.device)  # decoder_features' frames come out where it runs
    enc, enc_params = base_enc, []
    if a.encoder_lr:  # the judge's own copy of the encoder, its LoRA trained in float32; the model's stays as it is
        enc = copy.deepcopy(base_enc).float()
        enc_params = encoder_params(enc)

    def enc_state() -> list:  # the training LoRA's values (none where the encoder does not train)
        return [p.detach().clone() for p in enc_params]

    def load_enc_state(state: list) -> None:
        with torch.no_grad():
            for p, v in zip(enc_params, state):
                p.copy_(v)

    frames, train_frames = clip_readers(judge, enc, a.augment, a.seed, grad=bool(enc_params),
                                        teacher_encoder=base_enc if a.kl_view == "base" else None)

    def read(clips, cached):
        return read_greedy(judge, clips, cached, a.max_tokens)

    t0 = time.time()
    vals = [read_clips(m) for m in a.val.split(",")]
    val, test = [c for v in vals for c in v], read_clips(a.test)

    def val_errors(r) -> list[int]:  # word errors on each validation manifest
        errs, out = [u.errors for u in r.utterances], []
        for v in vals:
            out.append(sum(errs[:len(v)]))
            errs = errs[len(v):]
        return out

    def read_frames(clips, frames=frames):  # in batches: the encoders' memory
        return [f for i in range(0, len(clips), 64) for f in frames([p for p, _, _ in clips[i:i + 64]])]

    val_f = read_frames(val)
    r0, _ = read(val, val_f)
    history = [{"step": 0, "val_wer": round(r0.wer, 4), "val_errors": val_errors(r0)}]
    print(json.dumps(history[-1]), flush=True)
    best_step, best_wer = 0, r0.wer
    best_state = {k: v.clone() for k, v in dec.state_dict().items()}
    untrained, best_enc = best_state, enc_state()
    teacher = None
    if a.kl:
        teacher = copy.deepcopy(dec).eval().requires_grad_(False)  # Whisper's own decoder, frozen
    own, anchor, anchor_order, anchor_targets = None, [], [], {}  # anchor_targets: each drawn clip's (anchor_batch)
    if a.anchor:  # Whisper's own decoder (frozen) reading the model's encoder (whisper_both's other judge)
        own = own_judge(model, judge, a.init == "own" or not trained_before, a.device)
        anchor = read_clips(a.anchor)
        anchor_rng = random.Random(a.seed + 2)
    train = read_clips(a.train, a.max_train, a.seed)
    dec_params = decoder_params(dec, a.train_part)
    params = dec_params + enc_params
    opt = torch.optim.AdamW([g for g in ({"params": dec_params, "lr": a.lr}, {"params": enc_params, "lr": a.encoder_lr})
                             if g["params"]], weight_decay=0.0)
    steps = max(1, math.ceil(a.epochs * len(train) / a.batch_size))
    sched = torch.optim.lr_scheduler.LambdaLR(  # 10 warm-up steps, then cosine to 0
        opt, lambda s: min(1.0, (s + 1) / 10) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    order = []
    rng = random.Random(a.seed)
    for step in range(1, steps + 1):
        idx, order = next_batch(order, a.batch_size, len(train), rng)
        with torch.set_grad_enabled(bool(enc_params)):  # a graph to the encoder's LoRA where it trains
            fs = train_frames([train[i][0] for i in idx])
        fs, teacher_fs = fs if a.kl_view == "base" else (fs, None)
        dec.train()
        loss = batch_loss(dec, judge.start, judge.eot, fs, [judge.token_ids(train[i][1]) for i in idx], teacher, a.kl,
                          teacher_fs)
        held = None
        if anchor:
            aidx, anchor_order = next_batch(anchor_order, a.anchor_batch, len(anchor), anchor_rng)
            with torch.set_grad_enabled(bool(enc_params)):
                afs, ats, atg = anchor_batch(judge, own, model.encoders["audio"], enc, [anchor[i][0] for i in aidx],
                                             a.max_tokens, grad=bool(enc_params),
                                             known=[anchor_targets.get(i) for i in aidx])
            anchor_targets.update(zip(aidx, atg))
            held = batch_loss(dec, judge.start, judge.eot, afs, atg, own.decoder, 1.0, ats, ce=0.0)
            loss = loss + a.anchor_kl * held
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % 10 == 0:
            print(json.dumps({"step": step, "loss": round(float(loss.detach()), 4), "s": round(time.time() - t0),
                              **({"anchor_kl": round(float(held.detach()), 4)} if held is not None else {})}),
                  flush=True)
        stop = (a.max_seconds is not None and time.time() - t0 > a.max_seconds) or step == a.stop_step
        if step % a.eval_every == 0 or step == steps or stop:
            if enc_params:  # the encoder has changed: its frames again
                val_f = read_frames(val)
            r, _ = read(val, val_f)
            history.append({"step": step, "val_wer": round(r.wer, 4), "val_errors": val_errors(r),
                            "loss": round(float(loss.detach()), 4)})
            print(json.dumps(history[-1]), flush=True)
            if r.wer < best_wer or (a.choose == "last" and (step == steps or stop)):
                best_step, best_wer = step, r.wer
                best_state = {k: v.clone() for k, v in dec.state_dict().items()}
                best_enc = enc_state()
        if stop:
            print(json.dumps({"stopped": step, "of": steps, "s": round(time.time() - t0)}), flush=True)
            break
    if a.save:
        save_trained(best_state, a.save)
    load_enc_state(best_enc)
    if a.save_encoder:
        from mmlora.lora import save_adapters

        save_adapters(enc, a.save_encoder)
    dec.load_state_dict(best_state)
    rb, hb = read(test, read_frames(test))
    dec.load_state_dict(untrained)  # the starting decoder on the model's own encoder
    test_f = read_frames(test, clip_readers(judge, base_enc)[0]) if enc_params else read_frames(test)
    ra, ha = read(test, test_f)

    def errs(r):
        return [u.errors for u in r.utterances]

    pb = paired_bootstrap(errs(ra), errs(rb), [u.ref_words for u in ra.utterances])
    summary = {"train": a.train, "train_clips": len(train), "steps": steps, "steps_run": history[-1]["step"],
               "batch_size": a.batch_size, "lr": a.lr, "kl": a.kl, "kl_view": a.kl_view, "train_part": a.train_part,
               "encoder_lr": a.encoder_lr,
               "init": a.init if trained_before else "own",
               "augment": a.augment, "anchor": a.anchor, "anchor_kl": a.anchor_kl if a.anchor else 0.0,
               "anchor_batch": a.anchor_batch if a.anchor else 0, "choose": a.choose,
               "val": a.val, "best_step": best_step, "val_wer_untrained": history[0]["val_wer"],
               "val_wer_best": round(best_wer, 4), "test": a.test, "test_words": ra.ref_words,
               "test_errors": {"untrained": sum(errs(ra)), "trained": sum(errs(rb))},
               "test_wer": {"untrained": round(ra.wer, 4), "trained": round(rb.wer, 4)},
               "trained_minus_untrained": {k: pb[k] for k in ("diff", "ci95", "p_two_sided", "better", "worse")},
               "seconds": round(time.time() - t0)}
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps({"summary": summary, "history": history,
                                           "test": [{"id": i, "ref": t, "untrained": x, "trained": y}
                                                    for (_, t, i), x, y in zip(test, ha, hb)]}, indent=1))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
