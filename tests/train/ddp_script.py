"""Run by test_train_ddp.py under ``accelerate launch --num_processes 2 --cpu``: a DDP run
(gloo) in two phases (steps 1-2, then resume=auto to step 4). Writes, per rank, the dataset
indices it trained on to OUT/seen-<rank>.json."""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from mmlora.train import TrainConfig, train  # noqa: E402
from train_toys import ToyRegressor, ToySequences, pad_collate  # noqa: E402


def config(out: str, max_steps: int, **kw) -> TrainConfig:
    return TrainConfig(output_dir=out, max_steps=max_steps, batch_size=2, grad_accum=1, loss_weighting="tokens",
                       schedule="constant", lr=2e-2, max_grad_norm=0.0, log_every=1, save_every=2, seed=3,
                       progress=False, tensorboard=False, mixed_precision="no", **kw)


def dataset(bad: set[int]) -> ToySequences:
    return ToySequences(n=20, seed=4, bad=bad)


class Recorder(ToyRegressor):
    seen: list[int] = []

    def forward(self, batch):
        self.seen.extend(batch["index"].tolist())
        return super().forward(batch)


if __name__ == "__main__":
    out, bad = sys.argv[1], {int(i) for i in sys.argv[2].split(",") if i}
    model = Recorder(dropout=0.0)
    first = train(model, dataset(bad), pad_collate, config(out, 2))
    second = train(Recorder(dropout=0.0), dataset(bad), pad_collate, config(out, 4))
    import torch.distributed as dist

    rank = dist.get_rank()
    Path(out, f"seen-{rank}.json").write_text(json.dumps(
        {"seen": Recorder.seen, "world": dist.get_world_size(), "resumed_from": second.resumed_from,
         "skipped": second.skipped_samples, "losses": [h["train/loss"] for h in first.history + second.history]}))
    dist.barrier()
    dist.destroy_process_group()  # a clean exit (gloo may abort a rank whose peer is gone)
