"""Run by test_worker_batches_of_many_tensors_under_a_low_open_file_limit in its own process: the
open-file limit is lowered to LIMIT, then DataLoader workers hand over batches of many small tensors
(like a speech batch: a waveform and token-id tensors per clip), either through a plain DataLoader
("plain", torch's default descriptor passing: a worker that cannot send hangs, so it has a 10 s timeout) or through mmlora's train() ("train"). Prints a JSON line.

    python fd_script.py plain|train OUT LIMIT
"""
from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from mmlora.train import TrainConfig, train  # noqa: E402
from train_toys import ToyRegressor, ToySequences, pad_collate  # noqa: E402

PER_SAMPLE = 12  # small tensors each sample carries beside its x / y


def many_tensors(items):
    batch = pad_collate(items)
    batch["extra"] = [torch.full((3,), float(i)) for i in range(PER_SAMPLE * len(items))]
    return batch


class SlowRegressor(ToyRegressor):  # the consumer is slower than the workers: their queues fill up
    def forward(self, batch):
        time.sleep(0.05)
        return super().forward(batch)


if __name__ == "__main__":
    mode, out, limit = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    ds = ToySequences(n=96)
    try:
        if mode == "plain":
            n = 0
            for batch in DataLoader(ds, batch_size=16, num_workers=2, collate_fn=many_tensors, timeout=10):
                time.sleep(0.05)
                n += 1
            res = {"ok": True, "batches": n}
        else:
            cfg = TrainConfig(output_dir=str(out), batch_size=16, num_workers=2, num_epochs=1, log_every=1,
                              progress=False, tensorboard=False, resume="none", seed=0, lr=1e-2)
            r = train(SlowRegressor(), ds, many_tensors, cfg)
            res = {"ok": True, "steps": r.global_step}
    except Exception as e:  # noqa: BLE001 - the test reads what failed
        res = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    res["strategy"] = torch.multiprocessing.get_sharing_strategy()
    print(json.dumps(res), flush=True)
