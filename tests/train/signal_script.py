"""Run by the signal tests in its own process (or under `accelerate launch`, one per rank): a long,
slow toy run. Each rank writes OUT/pid-<rank> at the start and OUT/result-<rank>.json (its
TrainResult) at the end; the run itself goes to OUT/run.

    python signal_script.py OUT NUM_WORKERS LOG_EVERY [CRASH_AT]

CRASH_AT: the model raises on that forward call (an error inside the loop, as running out of memory).
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from mmlora.train import TrainConfig, train  # noqa: E402
from train_toys import SlowSequences, ToyRegressor, pad_collate  # noqa: E402


if __name__ == "__main__":
    out, workers, log_every = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    rank = int(os.environ.get("RANK", "0"))
    out.mkdir(parents=True, exist_ok=True)
    (out / f"pid-{rank}").write_text(str(os.getpid()))
    cfg = TrainConfig(output_dir=str(out / "run"), max_steps=100_000, batch_size=2, num_workers=workers,
                      log_every=log_every, save_every=0, progress=False, tensorboard=False, lr=1e-2, seed=3)
    model = ToyRegressor(dropout=0.0)
    model.crash_at = int(sys.argv[4]) if len(sys.argv) > 4 else None
    res = train(model, SlowSequences(0.01, n=40, seed=4), pad_collate, cfg)
    (out / f"result-{rank}.json").write_text(json.dumps(
        {k: v for k, v in asdict(res).items() if k in ("interrupted", "global_step", "final_dir")}))
