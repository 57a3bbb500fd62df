"""Checkpoints: exact resume, atomic writes under a crash, keep_last, averaging, loading checks."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from mmlora.train import (TrainConfig, average_checkpoints, latest_checkpoint, list_checkpoints, load_trainable,
                          read_trainable, train)
from train_toys import ToyRegressor, ToySequences, pad_collate

HERE = Path(__file__).parent


def cfg_for(out, **kw) -> TrainConfig:
    base = dict(output_dir=str(out), batch_size=4, grad_accum=2, lr=2e-2, warmup_steps=2, log_every=1,
                progress=False, tensorboard=False, seed=7, mixed_precision="no")  # bitwise checks: fp32, also on a GPU
    base.update(kw)
    return TrainConfig(**base)


def losses(res) -> dict[int, float]:
    return {h["step"]: h["train/loss"] for h in res.history}


@pytest.mark.parametrize("batching", [{}, {"batch_budget": 12, "batch_size": 0, "loss_weighting": "tokens"}])
def test_exact_resume_gives_the_same_loss_curve(tmp_path, monkeypatch, batching):
    """Crash in step 8 of 12 (after checkpoint-6, mid-epoch 2), resume with resume=auto: steps
    7..12 have bitwise the losses of an uninterrupted run, and the final weights are identical.
    Dropout (global RNG), shuffling, AdamW moments and the cosine schedule all must resume."""
    ds = ToySequences(n=40, seed=1)  # 10 batches of 4 per epoch, grad_accum 2: 5 steps per epoch
    full = train(ToyRegressor(dropout=0.2), ds, pad_collate, cfg_for(tmp_path / "full", max_steps=12, save_every=3, **batching))

    crashing = ToyRegressor(dropout=0.2)
    crashing.crash_at = 2 * 7 + 1  # first forward of step 8
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(crashing, ds, pad_collate, cfg_for(tmp_path / "cut", max_steps=12, save_every=3, **batching))
    assert latest_checkpoint(tmp_path / "cut").name == "checkpoint-6"
    resumed = train(ToyRegressor(dropout=0.2), ds, pad_collate, cfg_for(tmp_path / "cut", max_steps=12, save_every=3, **batching))

    assert resumed.resumed_from.endswith("checkpoint-6")
    assert sorted(losses(resumed)) == list(range(7, 13))
    for s, v in losses(resumed).items():
        assert v == losses(full)[s], (s, v, losses(full)[s])  # bitwise, not approx
    a, b = read_trainable(tmp_path / "full" / "final"), read_trainable(tmp_path / "cut" / "final")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the run is deterministic, and the restored RNG state matters: resuming the same
    # checkpoint without restoring torch's RNG gives other dropout masks, other losses
    again = train(ToyRegressor(dropout=0.2), ds, pad_collate,
                  cfg_for(tmp_path / "again", max_steps=12, save_every=3, **batching))
    assert losses(again) == losses(full)
    import shutil

    shutil.rmtree(tmp_path / "cut" / "checkpoint-12")
    shutil.rmtree(tmp_path / "cut" / "checkpoint-9")
    monkeypatch.setattr(torch, "set_rng_state", lambda state: None)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: None)  # on a GPU, dropout draws from CUDA's
    no_rng = train(ToyRegressor(dropout=0.2), ds, pad_collate, cfg_for(tmp_path / "cut", max_steps=12, save_every=3, **batching))
    assert no_rng.resumed_from.endswith("checkpoint-6")
    assert losses(no_rng)[7] != losses(full)[7]


def test_resume_from_explicit_path_and_finished_run(tmp_path):
    ds = ToySequences(n=16)
    train(ToyRegressor(), ds, pad_collate, cfg_for(tmp_path, max_steps=4, save_every=2, keep_last=0))
    res = train(ToyRegressor(), ds, pad_collate, cfg_for(tmp_path, max_steps=4, resume=str(tmp_path / "checkpoint-2")))
    assert res.resumed_from.endswith("checkpoint-2") and [h["step"] for h in res.history] == [3, 4]
    done = train(ToyRegressor(), ds, pad_collate, cfg_for(tmp_path, max_steps=4))  # resume=auto, nothing left
    assert done.global_step == 4 and done.history == []
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        train(ToyRegressor(), ds, pad_collate, cfg_for(tmp_path, max_steps=4, resume=str(tmp_path / "nope")))


CRASH_SCRIPT = """
import os, sys
sys.path.insert(0, {here!r})
import mmlora.train.checkpoint as ck
from mmlora.train import TrainConfig, train
from train_toys import ToyRegressor, ToySequences, pad_collate

real = ck.save_trainable
calls = []
def dying_save(tensors, path):
    calls.append(path)
    if len(calls) == 2:            # second checkpoint: half the tensors on disk, then the process dies
        half = dict(list(tensors.items())[:1])
        real(half, path)
        os._exit(3)
    real(tensors, path)
ck.save_trainable = dying_save
train(ToyRegressor(), ToySequences(n=16), pad_collate,
      TrainConfig(output_dir={out!r}, max_steps=6, save_every=2, batch_size=4, progress=False, tensorboard=False))
"""


def test_crash_mid_save_leaves_no_half_checkpoint(tmp_path):
    out = tmp_path / "run"
    code = textwrap.dedent(CRASH_SCRIPT.format(here=str(HERE), out=str(out)))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr[-2000:]
    names = sorted(p.name for p in out.iterdir())
    assert "checkpoint-2" in names and "checkpoint-4" not in names
    assert ".tmp-checkpoint-4" in names  # the half-written one exists only under its hidden temp name
    assert (out / ".tmp-checkpoint-4" / "trainable.safetensors").is_file()
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-2"]
    res = train(ToyRegressor(), ToySequences(n=16), pad_collate,
                cfg_for(out, max_steps=6, save_every=2, grad_accum=1, seed=0))
    assert res.resumed_from.endswith("checkpoint-2") and res.global_step == 6
    assert not (out / ".tmp-checkpoint-4").exists()
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]


def test_keep_last_prunes_oldest(tmp_path):
    res = train(ToyRegressor(), ToySequences(n=16), pad_collate, cfg_for(tmp_path, max_steps=7, save_every=2, keep_last=2))
    assert [Path(p).name for p in res.checkpoints] == ["checkpoint-6", "checkpoint-7"]
    state = json.loads((tmp_path / "checkpoint-7" / "trainer_state.json").read_text())
    assert state["step"] == 7 and state["num_processes"] == 1


def test_average_last_n(tmp_path):
    model = ToyRegressor()
    res = train(model, ToySequences(n=16), pad_collate,
                cfg_for(tmp_path, max_steps=5, save_every=1, keep_last=0, average_last=3))
    ckpts = [read_trainable(tmp_path / f"checkpoint-{s}") for s in (3, 4, 5)]
    # the mean taken in float64, as average_checkpoints documents (a float32 mean rounds differently for some weights:
    # 1 of 16 on an H200, where the weights differ from the CPU's)
    want = {k: torch.stack([c[k].double() for c in ckpts]).mean(0).to(ckpts[0][k].dtype) for k in ckpts[0]}
    final = read_trainable(Path(res.final_dir))
    for k in want:
        torch.testing.assert_close(final[k], want[k], rtol=0, atol=0)
        assert not torch.equal(final[k], ckpts[-1][k])  # the average is not just the last one
    torch.testing.assert_close(model.head.weight.detach().cpu(), want["head.weight"], rtol=0, atol=0)  # loaded
    info = json.loads((Path(res.final_dir) / "info.json").read_text())
    assert info["averaged"] == ["checkpoint-3", "checkpoint-4", "checkpoint-5"]
    with pytest.raises(ValueError, match="keep_last"):
        TrainConfig(average_last=4, keep_last=3)


def test_average_checkpoints_refuses_mismatch(tmp_path):
    from mmlora.train.checkpoint import save_trainable

    for name, t in (("a", {"w": torch.ones(2)}), ("b", {"w": torch.ones(3)}), ("c", {"v": torch.ones(2)})):
        (tmp_path / name).mkdir()
        save_trainable(t, tmp_path / name / "trainable.safetensors")
    with pytest.raises(ValueError, match="shape"):
        average_checkpoints([tmp_path / "a", tmp_path / "b"])
    with pytest.raises(ValueError, match="other names"):
        average_checkpoints([tmp_path / "a", tmp_path / "c"])


def test_only_trainable_weights_and_save_pretrained(tmp_path):
    class WithSave(ToyRegressor):
        def save_pretrained(self, d):
            Path(d).mkdir(parents=True)
            torch.save({"head": self.head.state_dict()}, Path(d) / "head.pt")

    train(WithSave(), ToySequences(n=8), pad_collate, cfg_for(tmp_path, max_steps=2))
    assert set(read_trainable(tmp_path / "checkpoint-2")) == {"head.weight", "head.bias"}
    assert (tmp_path / "checkpoint-2" / "model" / "head.pt").is_file()
    assert (tmp_path / "final" / "model" / "head.pt").is_file()
    assert not list((tmp_path / "checkpoint-2" / "state").glob("model*"))  # accelerate wrote no full model


def test_load_trainable_names_mismatches(tmp_path):
    model = ToyRegressor()
    with pytest.raises(ValueError, match="not in the model.*extra"):
        load_trainable(model, {"head.weight": torch.zeros(1, 16), "head.bias": torch.zeros(1), "extra": torch.zeros(1)})
    with pytest.raises(ValueError, match="missing from the file.*head.bias"):
        load_trainable(model, {"head.weight": torch.zeros(1, 16)})
    with pytest.raises(ValueError, match="shape mismatch.*head.weight"):
        load_trainable(model, {"head.weight": torch.zeros(2, 16), "head.bias": torch.zeros(1)})
    load_trainable(model, {"head.weight": torch.zeros(1, 16), "head.bias": torch.ones(1)})
    assert model.head.bias.item() == 1.0 and model.head.weight.abs().sum() == 0


class SignalOnReads(ToySequences):
    """Raises ``sig`` once at each of the ``reads``-th sample reads (1-based, counted over all reads) in this thread
    (the loop's main process: num_workers=0). ``signal.raise_signal`` runs the Python handler before it returns;
    ``os.kill`` to the process may be taken by another thread (the CI run with more threads alive). Two signals
    raised in one read were seen as one in CI (session 46): one read each keeps them apart, as a user's second
    Ctrl-C comes after the first."""

    def __init__(self, reads: tuple[int, ...], sig, **kw):
        super().__init__(**kw)
        self.reads, self.sig, self.count = set(reads), sig, 0

    def __getitem__(self, i):
        self.count += 1
        if self.count in self.reads:
            import signal

            signal.raise_signal(self.sig)
        return super().__getitem__(i)


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_signal_stops_after_the_step_with_a_checkpoint_and_resumes_exactly(tmp_path, signame):
    """A SIGTERM/SIGINT mid-run (scheduler time limit, preemption, Ctrl-C) finishes the current step,
    writes checkpoint-<step> (not only the last periodic one), returns interrupted without final/,
    and restores the previous handler; rerunning resumes to bitwise the uninterrupted result."""
    import signal

    sig = getattr(signal, signame)
    before = signal.getsignal(sig)
    ds = ToySequences(n=40, seed=1)
    full = train(ToyRegressor(dropout=0.2), ds, pad_collate, cfg_for(tmp_path / "full", max_steps=12, save_every=5))
    stopping = SignalOnReads(reads=(9,), sig=sig, n=40, seed=1)  # in step 2 (8 reads a step)
    cut = train(ToyRegressor(dropout=0.2), stopping, pad_collate, cfg_for(tmp_path / "cut", max_steps=12, save_every=5))
    assert cut.interrupted and cut.final_dir is None and not (tmp_path / "cut" / "final").exists()
    assert 1 <= cut.global_step < 5
    assert latest_checkpoint(tmp_path / "cut").name == f"checkpoint-{cut.global_step}"
    assert signal.getsignal(sig) is before
    resumed = train(ToyRegressor(dropout=0.2), ds, pad_collate, cfg_for(tmp_path / "cut", max_steps=12, save_every=5))
    assert not resumed.interrupted and resumed.resumed_from.endswith(f"checkpoint-{cut.global_step}")
    assert sorted(losses(resumed)) == list(range(cut.global_step + 1, 13))
    for s, v in losses(resumed).items():
        assert v == losses(full)[s]
    a, b = read_trainable(tmp_path / "full" / "final"), read_trainable(tmp_path / "cut" / "final")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_second_signal_stops_at_once(tmp_path):
    import signal

    ds = SignalOnReads(reads=(1, 2), sig=signal.SIGINT, n=40, seed=1)  # both within the first step (8 reads)
    # The second signal hands over to the handler that was there before the run: Python's default here, whatever an
    # earlier test may have left (the clean-clone CI of session 46 failed this test twice in the full suite, never
    # alone; which earlier test, if any, was not found)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            train(ToyRegressor(), ds, pad_collate, cfg_for(tmp_path / "x", max_steps=12))
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)
    assert latest_checkpoint(tmp_path / "x") is None


def test_an_error_in_the_loop_ends_the_process_with_dataloader_workers(tmp_path):
    """An exception inside the loop (GPU run 32: out of GPU memory) must end the process. The persistent
    workers ignore SIGTERM, and left to interpreter exit they were joined forever: the run printed its
    traceback and hung, holding its GPU memory."""
    proc = subprocess.Popen([sys.executable, str(HERE / "signal_script.py"), str(tmp_path / "o"), "2", "1", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        import os
        import signal

        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the process did not end after the error in the loop")
    assert proc.returncode == 1 and "RuntimeError: simulated crash" in stderr, stderr[-2000:]


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_signal_to_the_process_group_spares_dataloader_workers(tmp_path, signame):
    """`timeout`, schedulers and Ctrl-C signal the whole process group: the DataLoader workers
    ignore it (they used to die and crash the run with 'DataLoader worker killed') and the main
    process stops cleanly with a checkpoint."""
    import os
    import signal
    import time

    out = tmp_path / "o"
    proc = subprocess.Popen([sys.executable, str(HERE / "signal_script.py"), str(out), "2", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        metrics = out / "run" / "metrics.jsonl"
        deadline = time.time() + 60
        while time.time() < deadline and not (metrics.is_file() and metrics.read_text().count("\n") >= 3):
            time.sleep(0.1)
        os.killpg(proc.pid, getattr(signal, signame))
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, stderr[-2000:]
    res = json.loads((out / "result-0.json").read_text())
    assert res["interrupted"] and res["final_dir"] is None and res["global_step"] >= 3
    assert latest_checkpoint(out / "run").name == f"checkpoint-{res['global_step']}"
    assert "DataLoader worker" not in stderr
