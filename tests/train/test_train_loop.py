"""The training loop on tiny CPU models: learning, gradient maths, groups, bad samples, logs."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from mmlora.train import BudgetBatchSampler, SampleError, TrainConfig, train
from train_toys import SlowSequences, ToyRegressor, ToySequences, pad_collate


def cfg_for(tmp_path, **kw) -> TrainConfig:
    base = dict(output_dir=str(tmp_path / "run"), batch_size=4, lr=1e-2, log_every=1, progress=False,
                tensorboard=False, resume="none", seed=0,
                mixed_precision="no")  # fp32 references, also on a GPU machine
    base.update(kw)
    return TrainConfig(**base)


def first_moment(run_dir, step: int) -> list[torch.Tensor]:
    """AdamW's exp_avg after step 1 is (1 - beta1) * grad: the step's gradient, per parameter."""
    opt = torch.load(run_dir / f"checkpoint-{step}" / "state" / "optimizer.bin", weights_only=True, map_location="cpu")
    return [opt["state"][i]["exp_avg"] for i in sorted(opt["state"])]


def reference_grad(model: nn.Module, batches: list[dict], weighting: str) -> list[torch.Tensor]:
    """Plain-torch gradient of the step loss: mean of per-batch means, or mean over all tokens."""
    model.zero_grad()
    outs = [model(b) for b in batches]
    if weighting == "tokens":
        loss = sum(o["loss"] * o["num_tokens"] for o in outs) / sum(o["num_tokens"] for o in outs)
    else:
        loss = sum(o["loss"] for o in outs) / len(outs)
    loss.backward()
    return [p.grad.clone() for p in model.parameters() if p.requires_grad]


def test_loss_falls_on_toy_regression(tmp_path):
    ds = ToySequences(n=64)
    res = train(ToyRegressor(dropout=0.0), ds, pad_collate,
                cfg_for(tmp_path, max_steps=150, warmup_steps=10, lr=3e-2, log_every=10))
    losses = [h["train/loss"] for h in res.history]
    assert res.global_step == 150 and len(losses) == 15
    assert losses[-1] < 0.5 * losses[0], losses
    assert all(math.isfinite(h["train/grad_norm"]) for h in res.history)
    n_tokens = [h["train/tokens_per_s"] for h in res.history]
    assert all(t > 0 for t in n_tokens) and res.tokens_seen > 150 * 4  # >= 1 token per sample, 4 per batch


def test_loss_falls_on_tiny_llm_with_lora(tmp_path):
    from conftest import tiny_llm
    from mmlora.lora import LoRASpec, adapter_parameters, attach
    from mmlora.routing import RoutingPlan, routing

    llm = tiny_llm("llama", vocab=64)
    with torch.no_grad():  # the default init (std 0.02) keeps logits near uniform whatever LoRA does
        llm.lm_head.weight.normal_(0, 1.0, generator=torch.Generator().manual_seed(1))
        llm.model.embed_tokens.weight.normal_(0, 1.0, generator=torch.Generator().manual_seed(2))
    attach(llm, {"lm": LoRASpec(rank=4, alpha=8)}, ["q_proj", "v_proj", "o_proj", "up_proj", "down_proj", "gate_proj", "k_proj"])
    assert {id(p) for p in llm.parameters() if p.requires_grad} == {id(p) for p in adapter_parameters(llm)}

    class LM(nn.Module):
        def __init__(self, llm):
            super().__init__()
            self.llm = llm

        def forward(self, batch):
            with routing(self.llm, RoutingPlan.single("lm")):
                out = self.llm(input_ids=batch["input_ids"], labels=batch["input_ids"])
            return {"loss": out.loss, "num_tokens": batch["input_ids"].numel() - batch["input_ids"].shape[0]}

    g = torch.Generator().manual_seed(0)
    starts = torch.randint(3, 64, (8,), generator=g)
    seqs = [3 + (s - 3 + 5 * torch.arange(12)) % 61 for s in starts]  # next token = previous + 5 (mod 61)
    res = train(LM(llm), seqs, lambda xs: {"input_ids": torch.stack(xs)},
                cfg_for(tmp_path, max_steps=40, lr=3e-2, warmup_steps=4, log_every=5))
    losses = [h["train/loss"] for h in res.history]
    assert losses[-1] < 0.2 * losses[0], losses
    frozen = {n for n, p in llm.named_parameters() if not p.requires_grad}
    from mmlora.train import read_trainable

    names = set(read_trainable(tmp_path / "run" / "final"))
    assert names and not (names & frozen) and all("lora" in n or "adapters" in n for n in names), sorted(names)[:3]


@pytest.mark.parametrize("weighting", ["tokens", "mean"])
def test_grad_accumulation_matches_reference(tmp_path, weighting):
    """grad_accum=2 x 4 samples gives the gradient of the same 8 samples computed in one go
    (tokens: mean over all tokens; mean: mean of the two batch means); batch 8 x 1 agrees too
    for token weighting. Unequal sequence lengths make the two weightings differ."""
    ds = ToySequences(n=8, min_len=1, max_len=6, seed=3)
    common = dict(max_steps=1, max_grad_norm=0.0, loss_weighting=weighting, lr=1e-3, betas=(0.9, 0.999))
    train(ToyRegressor(dropout=0.0), ds, pad_collate, cfg_for(tmp_path / "a", batch_size=4, grad_accum=2, **common))
    got = [m / 0.1 for m in first_moment(tmp_path / "a" / "run", 1)]

    batches_idx = BudgetBatchSampler.fixed(8, 4, seed=0).rank_batches(0)
    batches = [pad_collate([ds[i] for i in idx]) for idx in batches_idx]
    want = reference_grad(ToyRegressor(dropout=0.0), batches, weighting)
    other = reference_grad(ToyRegressor(dropout=0.0), batches, "mean" if weighting == "tokens" else "tokens")
    for g, w, o in zip(got, want, other):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
        assert (w - o).abs().max() > 1e-3  # the weighting matters on these batches
    if weighting == "tokens":
        train(ToyRegressor(dropout=0.0), ds, pad_collate, cfg_for(tmp_path / "b", batch_size=8, grad_accum=1, **common))
        for g, w in zip([m / 0.1 for m in first_moment(tmp_path / "b" / "run", 1)], want):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def test_param_groups_lrs_and_group_lr_override(tmp_path):
    model = ToyRegressor()
    groups = [{"name": "weight", "params": [model.head.weight], "lr": 1e-2},
              {"name": "bias", "params": [model.head.bias], "lr": 5e-3, "weight_decay": 0.0}]
    res = train(model, ToySequences(n=16), pad_collate,
                cfg_for(tmp_path, max_steps=4, schedule="constant", group_lr={"bias": 2e-3}), param_groups=groups)
    h = res.history[-1]
    assert h["train/lr/weight"] == pytest.approx(1e-2) and h["train/lr/bias"] == pytest.approx(2e-3)


def test_group_lr_zero_holds_a_group_bit_identical_while_the_others_train(tmp_path):
    """group_lr {name: 0} is how a run holds a group at its starting weights (scripts/asr_encoder_lora.sh's E2 and
    E3 hold the LLM's LoRA at the release's), through warmup, cosine decay, clipping and weight decay."""
    model = ToyRegressor()
    w0, b0 = model.head.weight.detach().clone(), model.head.bias.detach().clone()
    groups = [{"name": "weight", "params": [model.head.weight], "lr": 1e-2, "weight_decay": 0.1},
              {"name": "bias", "params": [model.head.bias], "lr": 1e-2, "weight_decay": 0.1}]
    train(model, ToySequences(n=16), pad_collate,
          cfg_for(tmp_path, max_steps=6, warmup_steps=2, max_grad_norm=0.01, group_lr={"weight": 0.0}),
          param_groups=groups)
    assert torch.equal(model.head.weight.detach().cpu(), w0)  # on the CPU: the loop moves the model to CUDA there
    assert not torch.equal(model.head.bias.detach().cpu(), b0)


def test_param_group_errors(tmp_path):
    model = ToyRegressor()
    with pytest.raises(ValueError, match="both group"):
        train(model, ToySequences(n=8), pad_collate, cfg_for(tmp_path, max_steps=1),
              param_groups=[{"params": [model.head.weight]}, {"params": [model.head.weight]}])
    with pytest.raises(ValueError, match="requires_grad=False"):
        train(model, ToySequences(n=8), pad_collate, cfg_for(tmp_path, max_steps=1),
              param_groups=[{"name": "f", "params": model.frozen.parameters()}])
    with pytest.raises(ValueError, match="group_lr names"):
        train(model, ToySequences(n=8), pad_collate, cfg_for(tmp_path, max_steps=1, group_lr={"lora": 1.0}))


def test_warmup_cosine_lr_is_applied(tmp_path):
    from mmlora.train import lr_factor

    res = train(ToyRegressor(), ToySequences(n=16), pad_collate,
                cfg_for(tmp_path, max_steps=10, warmup_steps=3, lr=0.1, min_lr_ratio=0.1))
    # the lr logged after step s is the one the next step will use: lr * f(s)
    for h in res.history:
        assert h["train/lr"] == pytest.approx(0.1 * lr_factor(h["step"], 10, 3, "cosine", 0.1))


def test_bad_samples_are_skipped_and_counted(tmp_path, caplog):
    ds = ToySequences(n=24, bad={3, 7, 11}, none={5})
    res = train(ToyRegressor(), ds, pad_collate, cfg_for(tmp_path, num_epochs=2, batch_size=4))
    assert res.skipped_samples == 2 * 4
    assert res.history[-1]["train/skipped_samples"] == 8
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["train/skipped_samples"] == 8
    assert "sample 3 is corrupt" in caplog.text

    def picky_collate(items):  # refuses any batch holding sample 0: the whole batch is skipped
        if any(it["index"] == 0 for it in items):
            raise SampleError("batch with sample 0")
        return pad_collate(items)

    res = train(ToyRegressor(), ToySequences(n=24), picky_collate, cfg_for(tmp_path / "c", num_epochs=1))
    assert res.skipped_samples == 4


def test_other_exceptions_are_not_swallowed(tmp_path):
    class Broken(ToySequences):
        def __getitem__(self, i):
            if i == 2:
                raise KeyError("a bug, not bad data")
            return super().__getitem__(i)

    with pytest.raises(KeyError, match="a bug"):
        train(ToyRegressor(), Broken(n=8), pad_collate, cfg_for(tmp_path, num_epochs=1))


def test_frame_budget_batches_and_epochs(tmp_path):
    ds = ToySequences(n=40, min_len=1, max_len=8)
    seen = []

    class Spy(ToyRegressor):
        def forward(self, batch):
            x = batch["x"]
            assert x.shape[0] * x.shape[1] <= 12  # padded frames per batch within the budget
            seen.extend(batch["index"].tolist())
            return super().forward(batch)

    res = train(Spy(), ds, pad_collate, cfg_for(tmp_path, num_epochs=2, batch_budget=12, batch_size=0))
    assert sorted(seen) == sorted(list(range(40)) * 2)  # every sample once per epoch
    assert res.epoch == 2


def test_eval_fn_and_tensorboard(tmp_path):
    calls = []

    def eval_fn(model):
        assert not model.training and not torch.is_grad_enabled()
        calls.append(1)
        return {"score": float(len(calls))}

    res = train(ToyRegressor(), ToySequences(n=16), pad_collate,
                cfg_for(tmp_path, max_steps=6, eval_every=2, tensorboard=True), eval_fn=eval_fn)
    assert [e["step"] for e in res.eval_history] == [2, 4, 6]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "run" / "runs"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    for tag in ("train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s", "eval/score"):
        assert tag in tags, tags
    assert [e.step for e in acc.Scalars("train/loss")] == list(range(1, 7))


def test_model_contract_errors(tmp_path):
    class NoLoss(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(1))

        def forward(self, batch):
            return {"logits": self.w * batch["x"].sum()}

    with pytest.raises(TypeError, match="without 'loss'"):
        train(NoLoss(), ToySequences(n=8), pad_collate, cfg_for(tmp_path, max_steps=1))
    with pytest.raises(ValueError, match="needs per-sample lengths"):
        train(ToyRegressor(), [{"x": 1}] * 4, pad_collate, cfg_for(tmp_path, max_steps=1, batch_budget=10))


def test_worker_processes_skip_and_count(tmp_path):
    ds = ToySequences(n=16, bad={1, 9})
    res = train(ToyRegressor(), ds, pad_collate, cfg_for(tmp_path, num_epochs=1, num_workers=2))
    assert res.skipped_samples == 2 and res.global_step == 4


def test_bf16_autocast_on_cpu_after_fp32_run(tmp_path):
    """mixed_precision=bf16 runs the forward under autocast (here on CPU), in the same process
    as fp32 runs; the trainable weights stay fp32."""
    dtypes = []

    class Probe(ToyRegressor):
        def forward(self, batch):
            dtypes.append(self.frozen(batch["x"]).dtype)
            return super().forward(batch)

    train(ToyRegressor(), ToySequences(n=8), pad_collate, cfg_for(tmp_path / "a", max_steps=1))
    model = Probe()
    res = train(model, ToySequences(n=8), pad_collate, cfg_for(tmp_path / "b", max_steps=2, mixed_precision="bf16"))
    assert dtypes and all(d == torch.bfloat16 for d in dtypes)
    assert model.head.weight.dtype == torch.float32 and math.isfinite(res.final_loss)
    train(ToyRegressor(), ToySequences(n=8), pad_collate, cfg_for(tmp_path / "c", max_steps=1, mixed_precision="no"))


def _scripted_eval(values):
    it = iter(values)
    return lambda model: {"score": next(it)}


@pytest.mark.parametrize("mode,best_step", [("min", 4), ("max", 2)])
def test_best_metric_keeps_the_weights_of_the_best_evaluation(tmp_path, mode, best_step):
    from safetensors.torch import load_file

    cfg = cfg_for(tmp_path, max_steps=6, eval_every=2, save_every=2, keep_last=0, best_metric="score", best_mode=mode)
    res = train(ToyRegressor(), ToySequences(n=16), pad_collate, cfg, eval_fn=_scripted_eval([3.0, 1.0, 2.0]))
    run = tmp_path / "run"
    assert res.best == {"step": best_step, "metric": "score", "value": {4: 1.0, 2: 3.0}[best_step]}
    assert json.loads((run / "best" / "info.json").read_text()) == res.best and res.best_dir == str(run / "best")
    best = load_file(run / "best" / "trainable.safetensors")
    same = load_file(run / f"checkpoint-{best_step}" / "trainable.safetensors")
    last = load_file(run / "checkpoint-6" / "trainable.safetensors")
    assert all(torch.equal(best[k], same[k]) for k in same) and any(not torch.equal(best[k], last[k]) for k in last)


def test_best_metric_survives_resume_and_ignores_missing_values(tmp_path, caplog):
    cfg = cfg_for(tmp_path, max_steps=4, eval_every=2, save_every=2, best_metric="score", resume="auto")
    first = train(ToyRegressor(), ToySequences(n=16), pad_collate, cfg, eval_fn=_scripted_eval([3.0, 1.0]))
    assert first.best["step"] == 4  # found by the end-of-run evaluation, after checkpoint-4 was written
    cfg6 = cfg_for(tmp_path, max_steps=6, eval_every=2, save_every=2, best_metric="score", resume="auto")
    again = train(ToyRegressor(), ToySequences(n=16), pad_collate, cfg6, eval_fn=_scripted_eval([2.0]))
    assert again.best == {"step": 4, "metric": "score", "value": 1.0}  # 2.0 at step 6 is worse
    with caplog.at_level("WARNING"):
        res = train(ToyRegressor(), ToySequences(n=16), pad_collate,
                    cfg_for(tmp_path / "b", max_steps=2, best_metric="wer"), eval_fn=lambda m: {"score": 1.0})
    assert res.best is None and not (tmp_path / "b" / "run" / "best").exists()
    assert "best_metric 'wer' is missing" in caplog.text
    with pytest.raises(ValueError, match="best_mode"):
        cfg_for(tmp_path, best_mode="lowest")


def test_data_wait_is_the_share_of_time_spent_waiting_for_batches(tmp_path):
    """A loader that needs 4 x 20 ms per batch of a millisecond step: the loop waits most of the time; the
    same data without the delay: little."""
    slow = train(ToyRegressor(), SlowSequences(0.02, n=32), pad_collate, cfg_for(tmp_path / "s", max_steps=8, log_every=4))
    fast = train(ToyRegressor(), ToySequences(n=32), pad_collate, cfg_for(tmp_path / "f", max_steps=8, log_every=4))
    w_slow = [h["train/data_wait"] for h in slow.history]
    w_fast = [h["train/data_wait"] for h in fast.history]
    assert len(w_slow) == 2 and all(0.6 < w <= 1.0 for w in w_slow), w_slow
    assert all(0.0 <= w < w_s for w, w_s in zip(w_fast, w_slow)), (w_fast, w_slow)


def test_progress_bar_shows_loader_waits_only_when_there_are_some(tmp_path):
    from mmlora.train.logging import RunLogger

    logger = RunLogger(tmp_path, total_steps=2, tensorboard=False, progress=True)
    try:
        logger.log(1, {"train/loss": 1.0, "train/data_wait": 0.41})
        assert "wait=41%" in logger.bar.postfix
        logger.log(2, {"train/loss": 0.9, "train/data_wait": 0.0})
        assert "wait" not in logger.bar.postfix and "loss=0.9000" in logger.bar.postfix
    finally:
        logger.close()


def test_worker_batches_of_many_tensors_under_a_low_open_file_limit(tmp_path):
    """GPU run 13 died at its first steps ("received 0 items of ancdata") once its loader outran the GPU:
    full worker queues of batches with a tensor per clip and prompt segment held more descriptors than
    the open-file limit. Under a limit of 128 a plain DataLoader fails the same way here; train() switches
    to torch's 'file_system' sharing and finishes the epoch."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parent / "fd_script.py"

    def run(mode):
        p = subprocess.run([sys.executable, str(script), mode, str(tmp_path / mode), "128"], capture_output=True,
                           text=True, timeout=300)
        return json.loads(p.stdout.strip().splitlines()[-1])

    plain = run("plain")
    assert not plain["ok"] and plain["strategy"] == "file_descriptor", plain
    trained = run("train")
    assert trained == {"ok": True, "steps": 6, "strategy": "file_system"}, trained


def test_share_worker_tensors_raises_the_soft_limit_first(monkeypatch):
    """A soft open-file limit below the estimate is raised to what is needed when the hard limit allows:
    the default strategy stays; only when it cannot be raised far enough does the strategy change."""
    import resource

    import torch.multiprocessing as tmp

    from mmlora.train import loop

    limits = {"soft": 1024, "hard": 10**6}
    monkeypatch.setattr(resource, "getrlimit", lambda _: (limits["soft"], limits["hard"]))
    monkeypatch.setattr(resource, "setrlimit", lambda _, v: limits.update(soft=v[0]))
    switched = []
    monkeypatch.setattr(tmp, "set_sharing_strategy", switched.append)
    monkeypatch.setattr(tmp, "get_sharing_strategy", lambda: "file_descriptor")
    need = 13 * 2 * 256 * loop.TENSORS_PER_SAMPLE + 1024
    assert loop._share_worker_tensors(13, 256) == "file_descriptor" and limits["soft"] == need and not switched
    limits.update(soft=1024, hard=4096)
    assert loop._share_worker_tensors(13, 256) == "file_system" and limits["soft"] == 4096
    assert switched == ["file_system"]


def test_auto_precision_is_fp32_when_told_to_use_the_cpu(monkeypatch):
    """mixed_precision=auto: bf16 where CUDA has it, but fp32 when ACCELERATE_USE_CPU puts the run on the CPU,
    even on a GPU machine."""
    from mmlora.train.loop import _mixed_precision

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    assert _mixed_precision("auto") == "bf16"
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")
    assert _mixed_precision("auto") == "no" and _mixed_precision("bf16") == "bf16"


def test_freeze_groups_freezes_a_group_out_of_the_optimizer_the_clipping_norm_and_the_checkpoints(tmp_path):
    """train.freeze_groups: the group keeps its weights bit for bit with no gradient computed, and the others train
    exactly as if it had never been trainable (its gradient is not in the clipping norm, unlike group_lr 0)."""
    from safetensors.torch import load_file

    def run(name, freeze=(), group_lr=None, drop_weight=False):
        model = ToyRegressor()
        w0 = model.head.weight.detach().clone()
        groups = [{"name": "weight", "params": [model.head.weight]}, {"name": "bias", "params": [model.head.bias]}]
        if drop_weight:  # the reference: the weight never trainable
            model.head.weight.requires_grad_(False)
            groups = groups[1:]
        train(model, ToySequences(n=16), pad_collate,
              cfg_for(tmp_path / name, max_steps=4, warmup_steps=1, max_grad_norm=0.01, save_every=4,
                      freeze_groups=list(freeze), group_lr=group_lr or {}), param_groups=groups)
        return model, w0

    frozen, w0 = run("frozen", freeze=["weight"])
    assert torch.equal(frozen.head.weight.detach().cpu(), w0) and frozen.head.weight.grad is None
    assert not frozen.head.weight.requires_grad
    ref, _ = run("ref", drop_weight=True)
    assert torch.equal(frozen.head.bias.detach().cpu(), ref.head.bias.detach().cpu())
    held, _ = run("held", group_lr={"weight": 0.0})  # held by lr 0: the weight's gradient shrinks the clipped step
    assert not torch.equal(held.head.bias.detach().cpu(), ref.head.bias.detach().cpu())
    saved = load_file(str(tmp_path / "frozen/run/checkpoint-4/trainable.safetensors"))
    assert set(saved) == {"head.bias"}


def test_freeze_groups_errors(tmp_path):
    def groups(m):
        return [{"name": "weight", "params": [m.head.weight]}, {"name": "bias", "params": [m.head.bias]}]

    m = ToyRegressor()
    with pytest.raises(ValueError, match=r"freeze_groups names \['lora'\] are not parameter groups"):
        train(m, ToySequences(n=8), pad_collate, cfg_for(tmp_path, max_steps=1, freeze_groups=["lora"]),
              param_groups=groups(m))
    m = ToyRegressor()
    with pytest.raises(ValueError, match="left no group to train"):
        train(m, ToySequences(n=8), pad_collate, cfg_for(tmp_path, max_steps=1, freeze_groups=["weight", "bias"]),
              param_groups=groups(m))


@pytest.mark.parametrize("final_wins", [True, False])
def test_the_end_of_run_evaluation_after_averaging_names_the_averaged_checkpoints(tmp_path, final_wins):
    # run 36: with average_last the last evaluation reads the mean of the last checkpoints; best/info.json said only
    # "step 6", so best/ looked like step 6's own weights (never evaluated) and final/ like something else
    from safetensors.torch import load_file

    cfg = cfg_for(tmp_path, max_steps=6, eval_every=2, save_every=2, keep_last=0, average_last=2, best_metric="score")
    res = train(ToyRegressor(), ToySequences(n=16), pad_collate, cfg,
                eval_fn=_scripted_eval([3.0, 2.0, 1.0 if final_wins else 5.0]))
    run = tmp_path / "run"
    info = json.loads((run / "best" / "info.json").read_text())
    assert info == res.best
    final = load_file(run / "final" / "trainable.safetensors")
    best = load_file(run / "best" / "trainable.safetensors")
    if final_wins:
        assert info == {"step": 6, "metric": "score", "value": 1.0, "averaged": ["checkpoint-4", "checkpoint-6"]}
        assert all(torch.equal(best[k], final[k]) for k in final)  # the very weights final/ holds
    else:
        assert info == {"step": 4, "metric": "score", "value": 2.0}
        assert any(not torch.equal(best[k], final[k]) for k in final)
