"""Two CPU processes under ``accelerate launch`` (DDP over gloo) against one process with
gradient accumulation: same batches, same token-weighted gradients, same weights; resume
across the two phases; unreadable samples skipped on one rank without a hang."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmlora.train import BudgetBatchSampler, TrainConfig, read_trainable, train
from train_toys import ToyRegressor, pad_collate

HERE = Path(__file__).parent
ACCELERATE = Path(sys.executable).with_name("accelerate")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(not ACCELERATE.exists(), reason="accelerate launcher not installed")
def test_ddp_two_cpu_processes_match_single_process_accumulation(tmp_path):
    # both samples of the 4th global batch are unreadable: that whole micro-batch is skipped on
    # its rank, which still has to join the gradient all-reduce (zero-weighted pass)
    batches = BudgetBatchSampler.fixed(20, 2, seed=3).all_batches(0)
    bad = set(batches[3])
    # `accelerate launch --cpu --num_processes 2` wants mpirun; `--multi_gpu` with
    # ACCELERATE_USE_CPU runs torchrun's 2 processes on CPU with gloo instead
    env = dict(os.environ, OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="true", CUDA_VISIBLE_DEVICES="")  # CPU on a GPU machine too
    cmd = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           str(HERE / "ddp_script.py"), str(tmp_path / "ddp"), ",".join(map(str, sorted(bad)))]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads((tmp_path / "ddp" / f"seen-{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 for r in ranks)
    assert all(r["resumed_from"].endswith("checkpoint-2") for r in ranks)
    # each rank trained on its own batches: 4 steps x 1 batch each, disjoint, = global batches 0..7
    seen0, seen1 = ranks[0]["seen"], ranks[1]["seen"]
    want0 = [i for b in batches[0:8:2] for i in b]
    want1 = [i for b in batches[1:8:2] for i in b if b != batches[3]]
    want1_with_dummy = want1[:2] + want1[:2] + want1[2:]  # step 2 reuses its last good batch, weight 0
    assert seen0 == want0 and seen1 == want1_with_dummy
    assert ranks[0]["losses"] == ranks[1]["losses"]  # logged losses are reduced over ranks
    assert ranks[0]["skipped"] == 2

    # one process, grad_accum=2 over the same global batches, token-weighted: same weights
    sys.path.insert(0, str(HERE))
    from ddp_script import config, dataset

    single = dict(vars(config(str(tmp_path / "single"), 4)), grad_accum=2)
    train(ToyRegressor(dropout=0.0), dataset(bad), pad_collate, TrainConfig(**single))
    a, b = read_trainable(tmp_path / "ddp" / "final"), read_trainable(tmp_path / "single" / "final")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    assert not torch.equal(a["head.bias"], ToyRegressor(dropout=0.0).head.bias.detach())  # it trained


@pytest.mark.parametrize("name,kind", [("ddp.yaml", "MULTI_GPU"), ("fsdp.yaml", "FSDP")])
def test_shipped_accelerate_configs_parse(name, kind):
    from accelerate.commands.config.config_args import load_config_from_file

    path = HERE.parents[1] / "recipes" / "accelerate" / name
    cfg = load_config_from_file(str(path))
    assert cfg.distributed_type.name == kind and cfg.mixed_precision == "bf16" and cfg.num_machines == 1
    if kind == "FSDP":
        assert cfg.fsdp_config["fsdp_version"] == 2


@pytest.mark.slow
@pytest.mark.skipif(not ACCELERATE.exists(), reason="accelerate launcher not installed")
def test_ddp_signal_to_one_rank_stops_every_rank_at_a_log_step(tmp_path):
    """SIGTERM to rank 1 only: the ranks agree at the next log step (log_every=2), both stop at the
    same step with one checkpoint, and the launcher exits 0."""
    import signal
    import time

    env = dict(os.environ, OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="true", CUDA_VISIBLE_DEVICES="")  # CPU on a GPU machine too
    cmd = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           str(HERE / "signal_script.py"), str(tmp_path / "o"), "0", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        metrics = tmp_path / "o" / "run" / "metrics.jsonl"
        deadline = time.time() + 120
        while time.time() < deadline and not (metrics.is_file() and metrics.read_text().count("\n") >= 2):
            time.sleep(0.1)
        os.kill(int((tmp_path / "o" / "pid-1").read_text()), signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-4000:]
    r0, r1 = (json.loads((tmp_path / "o" / f"result-{r}.json").read_text()) for r in (0, 1))
    assert r0["interrupted"] and r1["interrupted"] and r0["final_dir"] is None
    assert r0["global_step"] == r1["global_step"] and r0["global_step"] % 2 == 0
    from mmlora.train import latest_checkpoint

    assert latest_checkpoint(tmp_path / "o" / "run").name == f"checkpoint-{r0['global_step']}"


@pytest.mark.slow
@pytest.mark.skipif(not ACCELERATE.exists(), reason="accelerate launcher not installed")
def test_processes_that_accelerate_does_not_group_are_refused(tmp_path):
    """accelerate runs an FSDP config with ``use_cpu: true`` as separate one-process trainings;
    they would overwrite each other's checkpoints, so the loop refuses before training."""
    root = HERE.parents[1]
    cfg = (root / "recipes" / "accelerate" / "fsdp.yaml").read_text()
    cfg = cfg.replace("use_cpu: false", "use_cpu: true").replace("mixed_precision: bf16", "mixed_precision: 'no'")
    assert "use_cpu: true" in cfg
    (tmp_path / "fsdp_cpu.yaml").write_text(cfg)
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    cmd = [str(ACCELERATE), "launch", "--config_file", str(tmp_path / "fsdp_cpu.yaml"), "--num_processes", "2",
           "--main_process_port", str(_free_port()), "-m", "mmlora.cli", "train", str(root / "recipes" / "asr_tiny.yaml"),
           f"data.train_manifest={root / 'tests' / 'data' / 'speech' / 'train.jsonl'}",
           f"train.output_dir={tmp_path / 'out'}", "train.max_steps=2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=root)
    assert proc.returncode != 0
    assert "2 processes were launched (WORLD_SIZE) but accelerate set up 1" in proc.stderr, proc.stderr[-3000:]
    assert not any((tmp_path / "out").glob("checkpoint-*"))
