#!/usr/bin/env python
"""Where a training step of a speech recipe spends its time: the data loader alone, then the model step
split into encoder / rest of forward / backward / optimizer (CUDA events), host enqueue time, and a
torch.profiler table. Results as markdown (docs/PERFORMANCE.md, "Speech training step").

    python scripts/bench_asr_train.py recipes/asr_smollm2_whisper_tiny.yaml data.train_manifest=M.jsonl \
        --batch-sizes 64,128 --workers 4,8 --steps 12 [--variant "name:key=value;key=value" ...] [--profile] --out r.md

Each ``--variant`` builds the model again with its model overrides on top of the command line's (``base`` always
runs first). Batches are read once per batch size and reused by every variant, so variants see the same data.
"""
from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


class _Timer:
    """Named intervals of one step: CUDA events on a GPU, wall time (after a sync) elsewhere."""

    def __init__(self, dev: torch.device):
        self.dev, self.marks = dev, []

    def mark(self, name: str) -> None:
        if self.dev.type == "cuda":
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            self.marks.append((name, ev))
        else:
            self.marks.append((name, time.perf_counter()))

    def spans(self) -> dict[str, float]:
        _sync(self.dev)
        out = {}
        for (_, a), (name, b) in zip(self.marks, self.marks[1:]):
            out[name] = a.elapsed_time(b) if self.dev.type == "cuda" else 1000 * (b - a)
        return out


def loader_rate(ds, collate, batch_size: int, workers: int, n_batches: int) -> float:
    """Samples per second the DataLoader delivers (the first batch, worker start-up, not counted)."""
    from torch.utils.data import DataLoader

    dl = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers, collate_fn=collate,
                    persistent_workers=False, prefetch_factor=4 if workers else None,
                    generator=torch.Generator().manual_seed(0))
    it = iter(dl)
    next(it)
    t0, n = time.perf_counter(), 0
    for _ in range(n_batches):
        try:
            n += len(next(it)["ids"])
        except StopIteration:
            break
    return n / max(time.perf_counter() - t0, 1e-9)


def bench_steps(model, batches: list, accelerator, steps: int, warmup: int = 3) -> dict:
    """Median ms per step part over ``steps`` steps (after ``warmup``), host enqueue time, answer tokens/s."""
    from mmlora.encoders.base import Features

    dev = model.device
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, fused=dev.type == "cuda")
    model.train()
    rows, hosts, tokens = [], [], []
    for i in range(warmup + steps):
        b = batches[i % len(batches)]
        t = _Timer(dev)
        _sync(dev)
        h0 = time.perf_counter()
        t.mark("start")
        with accelerator.autocast():
            feats = model.encode_media(b["media"])
            t.mark("encoder")
            out = model({**b, "media": {m: f for m, f in feats.items() if isinstance(f, Features)}})
            t.mark("forward")
        out["loss"].backward()
        t.mark("backward")
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        t.mark("optimizer")
        host = 1000 * (time.perf_counter() - h0)
        sp = t.spans()
        if i >= warmup:
            rows.append(sp)
            hosts.append(host)
            tokens.append(int(out["num_tokens"]))
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    total = sum(med.values())
    return {**med, "step": total, "host": statistics.median(hosts),
            "samples_s": 1000 * len(batches[0]["ids"]) / total,
            "tokens_s": 1000 * statistics.median(tokens) / total,
            "peak_gib": torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else float("nan")}


def profile_table(model, batches: list, accelerator, rows: int = 25) -> str:
    from torch.profiler import ProfilerActivity, profile

    dev = model.device
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    params = [p for p in model.parameters() if p.requires_grad]
    with profile(activities=acts, acc_events=True) as prof:
        for b in batches[:4]:
            with accelerator.autocast():
                out = model(b)
            out["loss"].backward()
            for p in params:
                p.grad = None
        _sync(dev)
    key = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    try:
        return prof.key_averages().table(sort_by=key, row_limit=rows)
    except (KeyError, AttributeError, RuntimeError):
        return prof.key_averages().table(sort_by="self_device_time_total", row_limit=rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--batch-sizes", default="64")
    p.add_argument("--workers", default="", help="loader worker counts to time, e.g. 0,4,8 (empty: skip)")
    p.add_argument("--loader-batches", type=int, default=20)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--variant", action="append", default=[], help="name:key=value;key=value (model settings: the batches are made once)")
    p.add_argument("--profile", action="store_true", help="a torch.profiler table of the base variant")
    p.add_argument("--out", help="write the markdown here too")
    args = p.parse_args(argv)

    from accelerate import Accelerator

    from mmlora.data.collate import collate_samples
    from tasks.cli import build_model, load_run_config

    dev_name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    lines = [f"# Speech training step: {args.recipe}", "", f"device: {dev_name}; torch {torch.__version__}",
             f"overrides: `{' '.join(args.overrides)}`", ""]
    accelerator = Accelerator(mixed_precision="bf16" if torch.cuda.is_available() else "no")
    spec, cfg = load_run_config(args.recipe, args.overrides)
    model = build_model(cfg).to(accelerator.device)
    ds, _ = spec.build_data(cfg, model)
    collate = functools.partial(collate_samples, prompts=model.prompts)
    sizes = [int(s) for s in args.batch_sizes.split(",")]

    if args.workers:
        lines += ["## Data loader alone", "", "| workers | batch | samples/s |", "|---|---|---|"]
        for w in (int(x) for x in args.workers.split(",")):
            r = loader_rate(ds, collate, sizes[0], w, args.loader_batches)
            lines.append(f"| {w} | {sizes[0]} | {r:.0f} |")
            print(lines[-1], flush=True)
        lines.append("")

    batches = {}
    for bs in sizes:
        g = torch.Generator().manual_seed(bs)
        reps = -(-bs * 4 // len(ds))  # a manifest smaller than four batches is cycled (no empty batch)
        idx = torch.cat([torch.randperm(len(ds), generator=g) for _ in range(reps)])[: bs * 4].tolist()
        batches[bs] = [collate([ds[j] for j in idx[k * bs:(k + 1) * bs]]) for k in range(4)]
    variants = [("base", [])] + [(v.split(":", 1)[0], [o for o in v.split(":", 1)[1].split(";") if o])
                                 for v in args.variant]
    lines += ["## Model step (median ms; CUDA events)", "",
              "| variant | batch | encoder | forward | backward | optimizer | step | host | samples/s | answer tokens/s | peak GiB |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    prof = None
    for name, extra in variants:
        if name != "base":
            del model
            torch.cuda.empty_cache() if torch.cuda.is_available() else None
            _, vcfg = load_run_config(args.recipe, args.overrides + extra)
            model = build_model(vcfg).to(accelerator.device)
        for bs in sizes:
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            r = bench_steps(model, batches[bs], accelerator, args.steps)
            lines.append(f"| {name} | {bs} | {r['encoder']:.1f} | {r['forward']:.1f} | {r['backward']:.1f} | "
                         f"{r['optimizer']:.1f} | {r['step']:.1f} | {r['host']:.1f} | {r['samples_s']:.0f} | "
                         f"{r['tokens_s']:.0f} | {r['peak_gib']:.2f} |")
            print(lines[-1], flush=True)
        if name == "base" and args.profile:
            prof = profile_table(model, batches[sizes[0]], accelerator)
    lines.append("")
    if prof:
        lines += [f"## torch.profiler, base, batch {sizes[0]}, 4 steps (forward + backward)", "", "```", prof, "```", ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
