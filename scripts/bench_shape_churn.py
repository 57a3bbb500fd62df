#!/usr/bin/env python
"""What a new input shape costs on the GPU: the first call of an op at a shape against a repeat at that shape.

    python scripts/bench_shape_churn.py [--shapes 8] [--out r.md]

Training batches differ in length from step to step (clips of 2-8 s, videos of 50-200 frames), so the frozen encoders
and the LLM see shapes they have not seen before on most steps. cuDNN builds an execution plan per new convolution
(and attention) shape; a plan build is host work that a repeat skips. Rows (random weights, bf16, CUDA only):

* ``lite0 chunk``: the BN-folded EfficientNet-Lite0 program (``FoldedLite0``) on ``M`` frames of 96x96 (the lip
  encoder's last, shorter chunk of a batch: ``M`` = frames mod chunk);
* ``whisper conv``: Whisper tiny's two front-end convolutions on ``[64, 80, 2T]`` log-mels (``T`` = the batch's
  longest clip at 50 Hz, what the short-form encoder runs on);
* ``sdpa``: ``scaled_dot_product_attention`` (causal, SmolLM2-135M's 9 heads of 64, batch 64) at sequence length
  ``L``, the default backend choice; then forward + backward per backend (cuDNN, flash, memory-efficient, default),
  causal or with a boolean mask (what transformers passes when a batch has padding).

Columns: median ms of the first call at a new shape and of a repeat, both synchronized.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def timed(fn) -> float:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - t0)


def first_and_repeat(make_fn, sizes: list[int]) -> tuple[float, float]:
    """median ms of the first call at each size, median ms of the second call at the same size."""
    firsts, repeats = [], []
    for s in sizes:
        fn = make_fn(s)
        firsts.append(timed(fn))
        repeats.append(timed(fn))
    return statistics.median(firsts), statistics.median(repeats)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", type=int, default=8, help="distinct new shapes per row")
    p.add_argument("--out")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_shape_churn: CUDA only (the cost measured is cuDNN's per-shape plan)", file=sys.stderr)
        return 2
    from mmlora.encoders import EfficientNetConfig, EfficientNetEncoder

    dev = torch.device("cuda")
    g = torch.Generator().manual_seed(0)
    sizes = lambda lo, hi: sorted({int(v) for v in torch.randint(lo, hi, (args.shapes,), generator=g)})  # noqa: E731
    lines = ["# First call at a new shape vs a repeat (ms, synchronized)", "",
             f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}; cuDNN {torch.backends.cudnn.version()}; "
             f"cudnn.benchmark={torch.backends.cudnn.benchmark}", "",
             "| op | shapes | first call ms | repeat ms |", "|---|---|---|---|"]
    print("\n".join(lines), flush=True)

    def row(name: str, make_fn, sz: list[int]) -> None:
        make_fn(sz[0] + 1000)()  # warm-up at a shape not measured (library loading, first kernels)
        f, r = first_and_repeat(make_fn, sz)
        lines.append(f"| {name} | {len(sz)} in {min(sz)}-{max(sz)} | {f:.1f} | {r:.1f} |")
        print(lines[-1], flush=True)

    enc = EfficientNetEncoder(EfficientNetConfig(path="random", image_size=96)).to(dev)
    prog = enc.folded(torch.bfloat16)

    def lite0(m: int):
        x = torch.randn(m, 3, 96, 96, device=dev)
        return lambda: prog(x)

    with torch.no_grad():
        row("lite0 chunk (M frames)", lite0, sizes(100, 1024))
        c1 = torch.nn.Conv1d(80, 384, 3, padding=1).to(dev, torch.bfloat16)
        c2 = torch.nn.Conv1d(384, 384, 3, stride=2, padding=1).to(dev, torch.bfloat16)

        def whisper(t: int):
            mel = torch.randn(64, 80, 2 * t, device=dev, dtype=torch.bfloat16)
            return lambda: c2(torch.nn.functional.gelu(c1(mel)))

        row("whisper conv (T frames)", whisper, sizes(100, 400))

        def sdpa(n: int):
            q = torch.randn(64, 9, n, 64, device=dev, dtype=torch.bfloat16)
            return lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)

        row("sdpa causal (L tokens)", sdpa, sizes(80, 300))
    # forward + backward (training) per SDPA backend, each at lengths of its own (a plan built for one row would
    # make the next row's first calls repeats); masked = a boolean causal mask, as transformers passes for padding
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = {"default": None, "cudnn": [SDPBackend.CUDNN_ATTENTION], "flash": [SDPBackend.FLASH_ATTENTION],
                "efficient": [SDPBackend.EFFICIENT_ATTENTION]}
    base = 100
    for name in ("cudnn", "flash", "efficient", "default"):
        for masked in (False, True):
            if name == "flash" and masked:  # flash takes no mask
                continue
            base += 37

            def train_step(n: int, masked=masked):
                q = torch.randn(64, 9, n, 64, device=dev, dtype=torch.bfloat16, requires_grad=True)
                m = torch.ones(n, n, device=dev, dtype=torch.bool).tril()[None, None].expand(64, 1, n, n) if masked else None

                def f():
                    torch.nn.functional.scaled_dot_product_attention(q, q, q, attn_mask=m, is_causal=not masked).sum().backward()
                return f

            ctx = sdpa_kernel(backends[name]) if backends[name] else torch.autocast("cuda", enabled=False)
            with ctx:
                row(f"sdpa fwd+bwd {name}{' masked' if masked else ''}", train_step,
                    [base + 7 * k for k in range(args.shapes)])
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
