"""Run by test_train_checkpoint.py in its own process group: a slow toy run with DataLoader
worker processes, so that a signal sent to the whole group (``timeout``, a scheduler, Ctrl-C in
a terminal) reaches the workers too. Prints the TrainResult as JSON."""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from mmlora.train import TrainConfig, train  # noqa: E402
from train_toys import ToyRegressor, ToySequences, pad_collate  # noqa: E402


class Slow(ToySequences):
    def __getitem__(self, i):
        time.sleep(0.02)
        return super().__getitem__(i)


if __name__ == "__main__":
    cfg = TrainConfig(output_dir=sys.argv[1], max_steps=10_000, batch_size=4, num_workers=2, log_every=1,
                      save_every=0, progress=False, tensorboard=False, lr=1e-2)
    res = train(ToyRegressor(), Slow(n=64, seed=2), pad_collate, cfg)
    print(json.dumps({k: v for k, v in asdict(res).items() if k in ("interrupted", "global_step", "final_dir")}))
