#!/usr/bin/env python
"""Time the frozen EfficientNet-Lite0 lip-video encoder on one AVSR batch of synthetic clips, as training runs it.

    python scripts/bench_video_encoder.py [--clips 64] [--frames 100] [--size 64] [--image-size 96]
        [--chunks 64,256,1024,0] [--repeats 5] [--profile] [--out r.md]

Random weights (speed does not depend on them) and random uint8 clips ``[T, size, size, 3]`` (what
``mmlora.data.media.load_video`` hands over), encoded under ``torch.autocast(bf16)`` on CUDA as accelerate's
``mixed_precision=bf16`` runs the model. Two paths over the same frames:

* ``plain``: ``preprocess_frames`` + ``EfficientNetLite0.features`` per chunk (the encoder before the folded program:
  conv → BatchNorm → ReLU6 with an ``F.pad`` per SAME conv, frozen fp32 weights re-cast by autocast per call);
* ``folded``: ``EfficientNetEncoder.encode`` (``FoldedLite0``: BN folded into the convs, weights cast once,
  channels-last on CUDA); ``folded-nchw`` the same without channels-last;
* ``lora``: LoRA inside the encoder (``media.video.encoder_lora``, rank ``--lora-rank``, its default targets: the 1×1
  convs), under no_grad: the folded program with the adapters merged into their convs (since session 30; before,
  the plain network with the adapters ran here); ``lora-train`` a forward with the adapters' graph and a backward
  pass from the features' sum (what a training step adds for the encoder): through the live folded program, the
  adapters folded into their convs per batch (the default since session 31); ``lora-train-plain`` the same through
  the plain network (``encoder.folded_training=false``, the only way before).

``chunk`` = frames per encoder call (``model.media.video.encoder.frames.chunk``; 0: all frames in one call). Columns:
wall ms per batch (synchronized), host ms (time until the Python loop returned, before the sync: close to wall means
the GPU waits on the host, i.e. launch-bound), peak GiB allocated, and with ``--profile`` the CUDA kernels per batch;
the ``lora-train`` rows also print the MB a frame that autograd saves for the backward (what training adds).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=64)
    p.add_argument("--frames", type=int, default=100, help="frames per clip (25 fps: 4 s)")
    p.add_argument("--size", type=int, default=64, help="decoded frame size (the lip corpus: 64x64)")
    p.add_argument("--image-size", type=int, default=96, help="encoder input size (the AVSR recipe: 96)")
    p.add_argument("--chunks", default="64,256,1024,0")
    p.add_argument("--paths", default="plain,folded,folded-nchw",
                   help="also folded-nopad: folded with frames.pad_chunks=false (the last chunk at its own size)")
    p.add_argument("--vary", action="store_true",
                   help="new clip lengths (frames/2 .. 3*frames/2) on every repeat, as training batches have: the "
                        "last chunk then has a new size on most calls")
    p.add_argument("--lora-rank", type=int, default=8, help="the lora paths' rank (alpha twice that)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-autocast", action="store_true")
    p.add_argument("--profile", action="store_true", help="count CUDA kernels of one batch per row")
    p.add_argument("--out")
    args = p.parse_args(argv)

    from mmlora.encoders import EfficientNetConfig, EfficientNetEncoder
    from mmlora.encoders.base import FrameSampling, encode_frames, preprocess_frames
    from mmlora.encoders.efficientnet import FoldedLite0

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    g = torch.Generator().manual_seed(0)
    longest = args.frames * 3 // 2 if args.vary else args.frames
    full = [torch.randint(0, 256, (longest, args.size, args.size, 3), dtype=torch.uint8, generator=g)
            for _ in range(args.clips)]
    if dev.type == "cuda":
        full = [c.pin_memory() for c in full]

    def batch(i: int) -> list[torch.Tensor]:  # repeat i's clips (the same lengths for every path and chunk)
        if not args.vary:
            return full
        n = torch.randint(args.frames // 2, longest + 1, (len(full),), generator=torch.Generator().manual_seed(i))
        return [c[: int(k)] for c, k in zip(full, n)]

    clips = batch(0)
    amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=not args.no_autocast)
    lines = [f"# EfficientNet-Lite0 video encoder: {args.clips} clips x {args.frames} frames {args.size}x{args.size} "
             f"-> {args.image_size}x{args.image_size}", "",
             f"device: {torch.cuda.get_device_name() if dev.type == 'cuda' else 'cpu'}; torch {torch.__version__}; "
             f"autocast bf16: {not args.no_autocast}", "",
             "| path | chunk | wall ms | host ms | frames/s | peak GiB | kernels |", "|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    n_frames = args.clips * args.frames  # the mean with --vary
    ref = None
    for path in args.paths.split(","):
        for chunk in (int(c) for c in args.chunks.split(",")):
            ch = chunk if chunk > 0 else args.clips * longest
            torch.manual_seed(0)
            enc = EfficientNetEncoder(EfficientNetConfig(
                path="random", image_size=args.image_size,
                frames=FrameSampling(chunk=ch, pad_chunks=path != "folded-nopad"))).to(dev)
            if path == "plain":
                def frame_fn(fr, enc=enc):
                    x = preprocess_frames(fr.to(enc.device), enc.cfg.image_size, enc.cfg.mean, enc.cfg.std)
                    return enc.model.features(x.to(enc.dtype), enc.cfg.stage).mean(dim=(2, 3)).unsqueeze(1)

                def run(clips, enc=enc, frame_fn=frame_fn):
                    with torch.no_grad():
                        return encode_frames(clips, enc.cfg.frames, frame_fn, device=enc.device)
            elif path in ("lora", "lora-train", "lora-train-plain"):
                from mmlora.lora import LoRASpec
                from mmlora.model import attach_encoder_lora

                attach_encoder_lora(enc, LoRASpec(rank=args.lora_rank, alpha=2 * args.lora_rank), None)
                enc.cfg.folded_training = path != "lora-train-plain"

                def run(clips, enc=enc, train=path.startswith("lora-train")):
                    with torch.set_grad_enabled(train):
                        f = enc.encode(clips)
                        if train:
                            f.x.float().sum().backward()
                    return f
            elif path in ("folded", "folded-nchw", "folded-nopad"):
                if path == "folded-nchw":  # the same program without channels-last
                    prog = {}
                    enc.folded = lambda dtype, enc=enc, prog=prog: prog.setdefault(
                        dtype, FoldedLite0(enc.model, enc.cfg.stage, dtype, channels_last=False))

                def run(clips, enc=enc):
                    return enc.encode(clips)
            else:
                raise SystemExit(f"unknown path {path!r}")
            if dev.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            walls, hosts = [], []
            for i in range(args.repeats + 1):
                sync()
                t0 = time.perf_counter()
                with amp:
                    f = run(batch(i))
                t1 = time.perf_counter()
                sync()
                t2 = time.perf_counter()
                if i:
                    walls.append(1000 * (t2 - t0))
                    hosts.append(1000 * (t1 - t0))
            if args.vary:  # the last timed batch had its own lengths: encode repeat 0's for the comparison across rows
                with amp:
                    f = run(clips)
            x = f.x.float().detach()
            if ref is None:
                ref = x
            err = ((x - ref).abs().max() / ref.abs().max().clamp(min=1e-12)).item()
            kernels = ""
            if args.profile and dev.type == "cuda":
                from torch.profiler import ProfilerActivity, profile

                with profile(activities=[ProfilerActivity.CUDA]) as prof, amp:
                    run(clips)
                    sync()
                kernels = str(sum(e.count for e in prof.key_averages() if e.device_type.name == "CUDA"))
            wall = statistics.median(walls)
            peak = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else float("nan")
            lines.append(f"| {path} | {chunk or 'all'} | {wall:.1f} | {statistics.median(hosts):.1f} | "
                         f"{n_frames / wall * 1000:.0f} | {peak:.2f} | {kernels} |")
            note = ""
            if path.startswith("lora-train"):  # what the backward keeps: the memory a training step adds per frame
                note = f"; saved for the backward {saved_mb(enc, clips, amp) / sum(len(c) for c in clips):.2f} MB a frame"
            print(lines[-1], f"(max rel. diff to the first row {err:.2e}{note})", flush=True)
            del enc, f
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    return 0


def saved_mb(enc, clips, amp) -> float:
    """MiB of the distinct tensors autograd saves for the backward of one forward of ``enc`` on ``clips``
    (``torch.autograd.graph.saved_tensors_hooks``; each storage counted once)."""
    seen = {}

    def pack(t):
        seen[(t.untyped_storage().data_ptr(), t.dtype)] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), amp:
        enc.encode(clips)
    return sum(seen.values()) / 2**20


if __name__ == "__main__":
    sys.exit(main())
