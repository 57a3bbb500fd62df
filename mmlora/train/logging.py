"""What a run reports: tqdm bar, TensorBoard scalars and ``metrics.jsonl`` (main process only).

Every ``log_every`` steps the loop hands :meth:`RunLogger.log` one flat dict of scalars
(``train/loss``, ``train/lr/<group>``, ``train/grad_norm``, ``train/tokens_per_s``, …); it goes
to TensorBoard under ``output_dir/runs`` (when on), as one JSON line to
``output_dir/metrics.jsonl`` (always) and, shortened, to the progress bar.
"""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import torch

log = logging.getLogger("mmlora.train")


def memory_gib(device: torch.device | None = None) -> float:
    """Peak CUDA memory allocated on ``device`` (GiB) when it is a GPU, else this process's RSS."""
    if device is not None and device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated(device) / 2**30
    try:
        import psutil

        return psutil.Process(os.getpid()).memory_info().rss / 2**30
    except ImportError:  # pragma: no cover - psutil comes with accelerate
        return float("nan")


class RunLogger:
    """Progress bar + TensorBoard + JSON lines. Inactive (all no-ops) off the main process."""

    def __init__(self, output_dir: str | Path, total_steps: int, initial_step: int = 0, *, active: bool = True,
                 tensorboard: bool = True, progress: bool = True):
        self.active = active
        self.bar = self.writer = None
        self.jsonl = None
        if not active:
            return
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.jsonl = open(out / "metrics.jsonl", "a")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(log_dir=str(out / "runs"))
            except ImportError as e:  # tensorboard not installed: keep training, say so once
                log.warning("TensorBoard logging off: %s", e)
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total_steps, initial=initial_step, desc="train", dynamic_ncols=True,
                            smoothing=0.1)

    def step(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        if not self.active:
            return
        clean = {k: float(v) for k, v in scalars.items()}
        if self.writer is not None:
            for k, v in clean.items():
                if math.isfinite(v):
                    self.writer.add_scalar(k, v, step)
        self.jsonl.write(json.dumps({"step": step, **clean}) + "\n")
        self.jsonl.flush()
        if self.bar is not None:
            short = {}
            for key, name, fmt in (("train/loss", "loss", "{:.4f}"), ("train/lr", "lr", "{:.2e}"),
                                   ("train/tokens_per_s", "tok/s", "{:.0f}"), ("train/memory_gib", "mem", "{:.2f}G"),
                                   ("train/data_wait", "wait", "{:.0%}"), ("train/skipped_samples", "skipped", "{:.0f}")):
                quiet = key in ("train/skipped_samples", "train/data_wait") and clean.get(key, 0) < 0.005
                if key in clean and not quiet:  # a loader that keeps up, no skipped samples: not shown
                    short[name] = fmt.format(clean[key])
            self.bar.set_postfix(short, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
        if self.jsonl is not None:
            self.jsonl.close()
        self.bar = self.writer = self.jsonl = None
