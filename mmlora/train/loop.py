"""The training loop: Hugging Face Accelerate, no Trainer subclassing.

    result = train(model, dataset, collate_fn, TrainConfig(output_dir="outputs/x", max_steps=100),
                   param_groups=[{"name": "projector", "params": proj_params, "lr": 1e-3},
                                 {"name": "lora", "params": lora_params, "lr": 1e-4}])

One optimizer step = ``grad_accum`` micro-batches. For each: ``out = model(batch)``,
``backward(w · out.loss)``; then the global gradient norm is clipped, AdamW steps and the
warmup+cosine schedule advances. Micro-batch weights ``w``:

* ``loss_weighting="mean"``: ``w = 1/n`` over the step's ``n`` usable micro-batches; DDP then
  averages over processes (the usual "mean of per-batch means").
* ``loss_weighting="tokens"``: ``w = num_tokens_i``, and after the last micro-batch the
  gradients are multiplied by ``W / Σ num_tokens`` (sum over micro-batches and all ``W``
  processes), i.e. exactly the gradient of the mean loss per token of the whole step, however
  unequal the batches are (frame-budget batches are).

Step ``s`` (1-based after it runs) then: logs every ``log_every``, calls ``eval_fn`` every
``eval_every``, writes ``checkpoint-s`` every ``save_every`` (and at the end), in that order.
At the end ``output_dir/final`` holds the last weights, or the mean of the last
``average_last`` checkpoints (also loaded into ``model``). See docs/TRAINING.md.
"""
from __future__ import annotations

import json
import logging
import math
import os
import signal
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..data.errors import SampleError
from . import checkpoint as ck
from .logging import RunLogger, memory_gib
from .sampler import BudgetBatchSampler
from .schedule import build_scheduler

log = logging.getLogger("mmlora.train")


@dataclass
class TrainConfig:
    """Everything the loop needs; a task's run config holds one under ``train:``."""

    output_dir: str = "outputs/run"  # checkpoints, final/, metrics.jsonl, runs/ (TensorBoard)
    max_steps: int = 0  # optimizer steps to run; > 0 wins over num_epochs
    num_epochs: int = 1  # passes over the data when max_steps is 0
    batch_size: int = 8  # samples per micro-batch and process (with batch_budget: a cap, 0 = none)
    batch_budget: int = 0  # > 0: fill micro-batches up to this many frames/tokens (needs per-sample lengths)
    budget_padded: bool = True  # the budget counts n_samples * longest (padded cost), else the sum of lengths
    sort_window: int = 1024  # samples sorted by length together before filling batches (1 = no sorting)
    drop_last: bool = False  # drop the uneven tail of batches across processes instead of repeating some
    grad_accum: int = 1  # micro-batches per optimizer step
    loss_weighting: Literal["mean", "tokens"] = "mean"  # weight micro-batches equally or by their num_tokens
    lr: float = 1e-4  # learning rate of parameter groups that set none
    group_lr: dict[str, float] = field(default_factory=dict)  # lr per named group, e.g. {projector: 1e-3}
    freeze_groups: list[str] = field(default_factory=list)  # named groups frozen for this run: no gradients, not in
    # the optimizer or the clipping norm, not in checkpoints (they keep their starting weights, which the model
    # folder still saves), e.g. [encoder]: an encoder's LoRA held without a backward pass through the encoder.
    # (group_lr 0 holds a group too, but computes its gradients and counts them in the clipping norm.)
    weight_decay: float = 0.0  # AdamW decoupled weight decay of groups that set none
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW betas
    eps: float = 1e-8  # AdamW epsilon
    schedule: Literal["cosine", "linear", "constant"] = "cosine"  # decay after warmup
    warmup_steps: int = 0  # linear warmup from 0 over this many steps
    min_lr_ratio: float = 0.0  # the decay ends at this fraction of each group's lr
    max_grad_norm: float = 1.0  # clip the global gradient norm to this; 0 = no clipping (norm still logged)
    mixed_precision: Literal["auto", "bf16", "no"] = "auto"  # auto: the launcher's, else bf16 on CUDA, fp32 on CPU
    log_every: int = 10  # steps between log lines (loss/lr/grad norm/tokens per s)
    save_every: int = 0  # steps between checkpoints; 0 = only at the end
    keep_last: int = 3  # newest checkpoints kept on disk; 0 = keep all
    eval_every: int = 0  # steps between eval_fn calls; 0 = only at the end
    best_metric: str = ""  # an eval_fn metric (e.g. "wer"): output_dir/best holds the weights of its best evaluation
    best_mode: Literal["min", "max"] = "min"  # whether lower or higher best_metric is better
    seed: int = 0  # seeds python/numpy/torch and the batch order
    resume: str = "auto"  # auto (latest checkpoint in output_dir, if any) | none | path to checkpoint-N
    init_from: str = ""  # a saved model folder (…/best/model, checkpoints/…): start from its projector and LoRA
    # weights instead of fresh ones (same shapes; a modality the folder lacks, e.g. video after ASR, starts fresh;
    # read by the task's model builder; a resumed checkpoint wins)
    init_map: dict[str, str | None] = field(default_factory=dict)  # with init_from: rename the saved weights (first
    # occurrence of each key, in order; e.g. {"adapters.default.": "adapters.shared.", "projectors.audio.":
    # "projectors.audio.projectors.4."}: an ASR model into Matryoshka AVSR; a key mapped to null: those saved
    # weights are not loaded); model weights not covered stay fresh
    init_grow_rank: bool = False  # with init_from: an adapter saved at a lower rank fills the first ranks of this
    # run's (e.g. model.adapters.default.rank=16 from a rank-8 release; its output unchanged), the added ranks start at 0
    init_projectors: dict[str, str] = field(default_factory=dict)  # {modality: saved model folder}: after init_from,
    # that modality's projector from another model (same shapes), e.g. an AVSR run with init_from a VSR model (its
    # LoRA and lip projector) and {audio: the ASR release}: both sides start trained
    average_last: int = 0  # N > 1: final/ holds the mean of the last N checkpoints' trainable weights
    num_workers: int = 0  # DataLoader worker processes
    tensorboard: bool = True  # write TensorBoard scalars under output_dir/runs
    progress: bool = True  # show a tqdm progress bar
    save_pretrained: bool = True  # also call model.save_pretrained(checkpoint/model) when the model has it
    find_unused_parameters: bool = False  # DDP: allow trainable parameters unused in a step

    def __post_init__(self) -> None:
        checks = [(self.max_steps >= 0, "max_steps must be >= 0"),
                  (self.max_steps > 0 or self.num_epochs > 0, "set max_steps > 0 or num_epochs > 0"),
                  (self.batch_size > 0 or self.batch_budget > 0, "batch_size must be > 0 (or set batch_budget)"),
                  (self.batch_size >= 0, "batch_size must be >= 0"), (self.batch_budget >= 0, "batch_budget must be >= 0"),
                  (self.grad_accum >= 1, "grad_accum must be >= 1"), (self.lr >= 0, "lr must be >= 0"),
                  (self.log_every >= 1, "log_every must be >= 1"), (self.save_every >= 0, "save_every must be >= 0"),
                  (self.keep_last >= 0, "keep_last must be >= 0"), (self.eval_every >= 0, "eval_every must be >= 0"),
                  (self.warmup_steps >= 0, "warmup_steps must be >= 0"), (self.max_grad_norm >= 0, "max_grad_norm must be >= 0"),
                  (self.average_last >= 0, "average_last must be >= 0"), (self.num_workers >= 0, "num_workers must be >= 0"),
                  (0.0 <= self.min_lr_ratio <= 1.0, "min_lr_ratio must be in [0, 1]"),
                  (self.best_mode in ("min", "max"), "best_mode must be 'min' or 'max'"),
                  (len(self.betas) == 2, "betas must be two numbers")]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)
        if self.keep_last and self.average_last > self.keep_last:
            raise ValueError(f"average_last={self.average_last} needs keep_last >= {self.average_last} "
                             f"(or keep_last=0), got keep_last={self.keep_last}")
        self.betas = tuple(self.betas)


@dataclass
class TrainResult:
    """What :func:`train` returns (the same on every process)."""

    global_step: int  # optimizer steps done in total (including before a resume)
    epoch: int  # passes over the data completed
    history: list[dict] = field(default_factory=list)  # logged scalars of this invocation, one dict per log step
    eval_history: list[dict] = field(default_factory=list)  # {"step", **eval_fn(...)} per evaluation
    best_dir: str | None = None  # output_dir/best (weights of the best evaluation), when best_metric is set
    best: dict | None = None  # {"step", "metric", "value"} of that evaluation
    skipped_samples: int = 0  # unreadable samples skipped over the whole run (all processes)
    tokens_seen: int = 0  # sum of num_tokens over the whole run (all processes)
    checkpoints: list[str] = field(default_factory=list)  # checkpoint folders on disk at the end
    final_dir: str | None = None  # output_dir/final
    resumed_from: str | None = None  # checkpoint this invocation started from
    interrupted: bool = False  # stopped early by SIGTERM / SIGINT: checkpoint written, no final/; rerun to resume

    @property
    def final_loss(self) -> float | None:
        losses = [h["train/loss"] for h in self.history if "train/loss" in h]
        return losses[-1] if losses else None


# ----------------------------------------------------------------------------- robust data


class _Bad:
    """Marker for a sample the dataset could not produce (picklable: crosses worker processes)."""

    def __init__(self, index: int, reason: str):
        self.index, self.reason = index, reason


class _SafeDataset(Dataset):
    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        try:
            item = self.dataset[i]
        except SampleError as e:
            return _Bad(i, str(e))
        return _Bad(i, "the dataset returned None") if item is None else item


class _SafeCollate:
    """Drops bad samples, then collates the rest; returns ``(batch or None, n_skipped, reasons)``."""

    def __init__(self, collate_fn: Callable | None):
        from torch.utils.data import default_collate

        self.collate_fn = collate_fn or default_collate

    def __call__(self, items: list) -> tuple[Any, int, list[str]]:
        good = [x for x in items if not isinstance(x, _Bad)]
        reasons = [f"sample {x.index}: {x.reason}" for x in items if isinstance(x, _Bad)]
        if not good:
            return None, len(items), reasons
        try:
            batch = self.collate_fn(good)
        except SampleError as e:
            return None, len(items), reasons + [f"collate ({len(good)} samples): {e}"]
        if batch is None:
            return None, len(items), reasons + [f"collate ({len(good)} samples) returned None"]
        return batch, len(items) - len(good), reasons


def _unpack(out: Any) -> tuple[torch.Tensor, Any, Mapping | None]:
    if isinstance(out, Mapping):
        if "loss" not in out:
            raise TypeError(f"model(batch) returned a mapping without 'loss' (keys: {list(out)})")
        return out["loss"], out.get("num_tokens"), out.get("metrics")
    if hasattr(out, "loss"):
        return out.loss, getattr(out, "num_tokens", None), getattr(out, "metrics", None)
    if torch.is_tensor(out) and out.ndim == 0:
        return out, None, None
    raise TypeError(f"model(batch) must return a dict (or object) with a scalar 'loss', got {type(out).__name__}")


# ----------------------------------------------------------------------------- set-up helpers


def build_param_groups(model: nn.Module, cfg: TrainConfig, param_groups: Sequence[Mapping] | None) -> list[dict]:
    """AdamW groups: the caller's (``{"params", "lr", "weight_decay", "name"}``) or one group
    ``"all"`` of every trainable parameter; ``cfg.group_lr[name]`` overrides a group's lr; the groups named in
    ``cfg.freeze_groups`` are frozen here (``requires_grad`` off) and left out."""
    if param_groups is None:
        param_groups = [{"name": "all", "params": [p for p in model.parameters() if p.requires_grad]}]
    groups, seen, names = [], {}, set()
    for i, g in enumerate(param_groups):
        g = dict(g)
        name = str(g.setdefault("name", f"group{i}"))
        names.add(name)
        params = list(g["params"])
        if not params:  # a group the model keeps frozen in this run (its group_lr is then unused)
            log.info("parameter group %r has no trainable parameters in this run; left out", name)
            continue
        frozen = sum(not p.requires_grad for p in params)
        if frozen:
            raise ValueError(f"parameter group {name!r} has {frozen} parameter(s) with requires_grad=False")
        if name in cfg.freeze_groups:
            for p in params:
                p.requires_grad_(False)
            log.info("parameter group %r frozen for this run (train.freeze_groups): %d weights keep their starting "
                     "values, no gradients computed", name, sum(p.numel() for p in params))
            continue
        for p in params:
            if id(p) in seen:
                raise ValueError(f"a parameter is in both group {seen[id(p)]!r} and group {name!r}")
            seen[id(p)] = name
        g["params"] = params
        g["lr"] = float(cfg.group_lr.get(name, g.get("lr", cfg.lr)))
        g.setdefault("weight_decay", cfg.weight_decay)
        groups.append(g)
    for key, asked in (("group_lr", set(cfg.group_lr)), ("freeze_groups", set(cfg.freeze_groups))):
        if asked - names:
            raise ValueError(f"{key} names {sorted(asked - names)} are not parameter groups (groups: {sorted(names)})")
    if not groups and cfg.freeze_groups:
        raise ValueError(f"no trainable parameters: freeze_groups {list(cfg.freeze_groups)} left no group to train")
    if not groups:
        raise ValueError("no trainable parameters: every parameter group is empty")
    left_out = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in seen]
    if left_out:
        log.warning("%d trainable parameter(s) are in no parameter group and will not train (e.g. %s)",
                    len(left_out), left_out[0])
    if not groups or not seen:
        raise ValueError("the model has no trainable parameters (everything has requires_grad=False)")
    return groups


def _mixed_precision(choice: str) -> str | None:
    """``auto``: what ``accelerate launch`` was told (``--mixed_precision`` / config file), else
    bf16 on a CUDA device that has it, else fp32 (also when ``ACCELERATE_USE_CPU`` is set: the run is on the
    CPU even where CUDA exists; ``accelerate launch`` always sets its own precision, read first)."""
    if choice == "auto":
        if os.environ.get("ACCELERATE_MIXED_PRECISION"):
            return None  # Accelerator reads the launcher's choice
        from accelerate.utils import parse_flag_from_env

        if parse_flag_from_env("ACCELERATE_USE_CPU"):
            return "no"
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return choice


def _allow_new_precision(precision: str | None) -> None:
    """Accelerate keeps one process-wide state and refuses a second Accelerator with another
    precision; in a single, non-distributed process (tests, notebooks) that state is reset."""
    from accelerate.state import AcceleratorState, DistributedType

    state = AcceleratorState._shared_state
    if state and precision is not None and state.get("_mixed_precision") != precision \
            and state.get("distributed_type") == DistributedType.NO:
        AcceleratorState._reset_state()


def _make_sampler(cfg: TrainConfig, dataset, lengths, rank: int, world: int) -> BudgetBatchSampler:
    common = dict(shuffle=True, seed=cfg.seed, num_replicas=world, rank=rank, drop_last=cfg.drop_last)
    if cfg.batch_budget > 0:
        if lengths is None:
            lengths = getattr(dataset, "lengths", None)
        if lengths is None:
            raise ValueError("batch_budget > 0 needs per-sample lengths: pass lengths=... to train() "
                             "or give the dataset a .lengths attribute")
        if len(lengths) != len(dataset):
            raise ValueError(f"{len(lengths)} lengths for a dataset of {len(dataset)} samples")
        return BudgetBatchSampler(lengths, max_budget=cfg.batch_budget, max_batch_size=cfg.batch_size or None,
                                  padded=cfg.budget_padded, sort_window=cfg.sort_window, **common)
    return BudgetBatchSampler.fixed(len(dataset), cfg.batch_size, **common)


@dataclass
class _Position:
    """Where the loop is: next micro-batch = batch ``batch`` of epoch ``epoch`` (this process)."""

    epoch: int = 0
    batch: int = 0


# ----------------------------------------------------------------------------- the loop


def train(model: nn.Module, train_dataset, collate_fn: Callable | None, cfg: TrainConfig,
          param_groups: Sequence[Mapping] | None = None, eval_fn: Callable[[nn.Module], Mapping] | None = None, *,
          lengths: Sequence[int] | None = None, batch_sampler: BudgetBatchSampler | None = None,
          accelerator=None) -> TrainResult:
    """Train ``model`` on ``train_dataset``; see the module docstring and docs/TRAINING.md.

    Model contract: ``out = model(batch)`` where ``batch = collate_fn([dataset[i], ...])``
    (moved to the device) returns a mapping or object with ``loss`` (a scalar tensor, the mean
    loss of the batch) and optionally ``num_tokens`` (int or tensor: tokens the loss is over,
    for tokens/s and ``loss_weighting="tokens"``) and ``metrics`` (dict of scalars, logged as
    ``train/<key>``, main process values). Trainable = ``requires_grad``; only those parameters
    are optimized and checkpointed. ``model.save_pretrained(dir)``, when present, is called for
    each checkpoint and for ``final/`` (main process). The loop calls ``model.train()``: a model
    whose frozen parts must stay in eval mode (BatchNorm, dropout of frozen encoders) overrides
    ``train()`` to keep them there.

    Data contract: ``dataset[i]`` may raise :class:`mmlora.data.errors.SampleError` or return
    ``None`` for an unusable sample; ``collate_fn`` may do the same for a whole batch. Such
    samples are skipped, counted (``train/skipped_samples``, ``TrainResult.skipped_samples``) and
    logged; any other exception stops the run.

    ``param_groups``: ``[{"params", "lr", "weight_decay", "name"}, ...]`` (default: one group of
    all trainable parameters). ``eval_fn(model) -> {name: number}`` gets the unwrapped model in
    eval mode under ``torch.no_grad`` on every process. ``lengths``: per-sample frame/token
    counts for ``batch_budget`` (default ``dataset.lengths``). ``batch_sampler``: your own
    sampler with ``set_epoch(epoch, start)`` and ``num_batches(epoch)``, already sharded.
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, send_to_device, set_seed

    if accelerator is None:
        kwargs = [DistributedDataParallelKwargs(find_unused_parameters=True)] if cfg.find_unused_parameters else []
        precision = _mixed_precision(cfg.mixed_precision)
        _allow_new_precision(precision)
        accelerator = Accelerator(mixed_precision=precision, kwargs_handlers=kwargs)
    main, world, device = accelerator.is_main_process, accelerator.num_processes, accelerator.device
    out_dir = Path(cfg.output_dir)
    launched = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if launched != world:  # e.g. `use_cpu: true` in an FSDP accelerate config: each process trains alone
        raise ValueError(f"{launched} processes were launched (WORLD_SIZE) but accelerate set up {world}: they would "
                         f"train separately and overwrite each other's checkpoints in {out_dir}; check the accelerate "
                         "config (an FSDP config with use_cpu: true is not distributed by accelerate)")
    set_seed(cfg.seed)

    # -- resume point -----------------------------------------------------------------------------
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        for p in ck.remove_partial(out_dir):
            log.warning("removed %s, left by an interrupted save", p)
    accelerator.wait_for_everyone()
    resume_from: Path | None = None
    if cfg.resume == "auto":
        resume_from = ck.latest_checkpoint(out_dir)
    elif cfg.resume != "none":
        resume_from = Path(cfg.resume)
        if not (resume_from / ck.STATE_FILE).is_file():
            raise FileNotFoundError(f"resume={cfg.resume}: not a complete checkpoint folder")
    elif main and ck.list_checkpoints(out_dir):
        log.warning("resume=none but %s holds checkpoints; starting over (they will be pruned)", out_dir)

    # -- optimizer, schedule, data ----------------------------------------------------------------
    groups = build_param_groups(model, cfg, param_groups)
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    sampler = batch_sampler or _make_sampler(cfg, train_dataset, lengths, accelerator.process_index, world)
    if cfg.max_steps > 0:
        total_steps = cfg.max_steps
    else:
        total_steps = sum(sampler.num_batches(e) for e in range(cfg.num_epochs)) // cfg.grad_accum
    if total_steps <= 0:
        raise ValueError(f"no optimizer steps to run: {len(train_dataset)} samples give "
                         f"{sampler.num_batches(0)} batches per epoch, grad_accum={cfg.grad_accum}")
    scheduler = build_scheduler(optimizer, total_steps, cfg.warmup_steps, cfg.schedule, cfg.min_lr_ratio)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    hooks = [accelerator.register_save_state_pre_hook(lambda models, weights, d: weights.clear()),
             accelerator.register_load_state_pre_hook(lambda models, d: models.clear())]
    unwrapped = accelerator.unwrap_model(model)

    if cfg.num_workers > 0:
        _share_worker_tensors(cfg.num_workers, cfg.batch_size if cfg.batch_size > 0 and not cfg.batch_budget else 512)
    loader = DataLoader(_SafeDataset(train_dataset), batch_sampler=sampler, collate_fn=_SafeCollate(collate_fn),
                        num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                        persistent_workers=cfg.num_workers > 0, worker_init_fn=_ignore_stop_signals,
                        generator=torch.Generator().manual_seed(cfg.seed))  # leaves the global RNG alone

    step, pos, skipped, tokens_seen = 0, _Position(), 0, 0
    best: dict | None = None  # {"step", "metric", "value"} of the best evaluation so far (restored on resume)
    if resume_from is not None:
        state = ck.load_checkpoint(accelerator, model, resume_from)
        step, pos = state["step"], _Position(state["epoch"], state["batch_in_epoch"])
        skipped, tokens_seen = state.get("skipped_samples", 0), state.get("tokens_seen", 0)
        best = state.get("best")
        on_disk = out_dir / "best" / "info.json"  # also covers a best found by the end-of-run evaluation
        if cfg.best_metric and on_disk.is_file():
            saved = json.loads(on_disk.read_text())
            if saved.get("metric") == cfg.best_metric and "value" in saved:
                best = {k: saved[k] for k in ("step", "metric", "value")}
        if state.get("num_processes", world) != world:
            log.warning("%s was written by %d processes, now %d: the data order after the resume differs",
                        resume_from, state["num_processes"], world)
        if main:
            log.info("resumed from %s (step %d)", resume_from, step)
    if main:
        from ..config import dump_config

        dump_config(cfg, out_dir / "train_config.yaml")

    def stream():
        while True:
            sampler.set_epoch(pos.epoch, pos.batch)
            if sampler.num_batches(pos.epoch) == 0:
                raise ValueError(f"epoch {pos.epoch} has no batches ({len(train_dataset)} samples)")
            for item in loader:
                pos.batch += 1
                yield item
            pos.epoch, pos.batch = pos.epoch + 1, 0

    def trainer_state() -> dict:
        return {"epoch": pos.epoch, "batch_in_epoch": pos.batch, "skipped_samples": skipped,
                "tokens_seen": tokens_seen, "best": best}

    def evaluate_and_keep_best(averaged: list | None = None) -> None:
        """``averaged``: the checkpoints whose mean the model holds (the end-of-run evaluation after
        ``average_last``), recorded in best/info.json: those weights are no single step's."""
        nonlocal best
        metrics = _evaluate(accelerator, model, eval_fn, step, result, logger)
        if not cfg.best_metric:
            return
        value = metrics.get(cfg.best_metric)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            log.warning("best_metric %r is missing or not a finite number in the evaluation at step %d (%s)",
                        cfg.best_metric, step, sorted(metrics))
            return
        if best is not None and (value >= best["value"] if cfg.best_mode == "min" else value <= best["value"]):
            return
        best = {"step": step, "metric": cfg.best_metric, "value": float(value)}
        if averaged:
            best["averaged"] = averaged
        _write_best(accelerator, model, unwrapped, cfg, out_dir, best)

    result = TrainResult(global_step=step, epoch=pos.epoch,
                         resumed_from=str(resume_from) if resume_from is not None else None)
    logger = RunLogger(out_dir, total_steps, step, active=main, tensorboard=cfg.tensorboard, progress=cfg.progress)
    params = list(model.parameters())
    last_saved = step if resume_from is not None else -1
    window = _Window(device)
    data = stream()
    last_good = None
    n_reasons_logged = 0
    def save_checkpoint() -> None:
        nonlocal skipped, tokens_seen, last_saved
        n_skip, n_tok = window.fold(accelerator)
        skipped, tokens_seen = skipped + n_skip, tokens_seen + n_tok
        ck.save_checkpoint(accelerator, model, out_dir, step, trainer_state(), save_pretrained=cfg.save_pretrained)
        last_saved = step
        if main:
            ck.prune_checkpoints(out_dir, cfg.keep_last)
        accelerator.wait_for_everyone()

    model.train()
    stop = _StopRequest()
    try:
        while step < total_steps:
            t_wait = time.perf_counter()
            micro = [next(data) for _ in range(cfg.grad_accum)]
            window.data_wait += time.perf_counter() - t_wait
            n_good = sum(b is not None for b, _, _ in micro)
            for _, n_bad, reasons in micro:
                window.pend_skipped += n_bad
                for r in reasons:
                    if n_reasons_logged < 20:
                        log.warning("skipped a bad sample (%s)", r)
                    n_reasons_logged += 1
            step_tokens = torch.zeros((), device=device)
            step_loss = torch.zeros((), device=device)
            step_weight = torch.zeros((), device=device)
            for i, (batch, _, _) in enumerate(micro):
                dummy = batch is None
                if dummy:
                    if world == 1:
                        continue
                    if last_good is None:
                        raise RuntimeError("the first batches of the run are all unreadable samples")
                    batch = last_good  # every process must run backward: a zero-weighted pass
                else:
                    last_good = batch
                batch = send_to_device(batch, device, non_blocking=True)
                sync = i == cfg.grad_accum - 1
                with nullcontext() if sync or world == 1 else accelerator.no_sync(model):
                    loss, ntok, metrics = _unpack(model(batch))
                    if loss.ndim != 0:
                        raise ValueError(f"model(batch)['loss'] must be a scalar, got shape {tuple(loss.shape)}")
                    ntok_t = torch.as_tensor(0 if ntok is None else ntok, device=device, dtype=torch.float32)
                    if cfg.loss_weighting == "tokens":
                        if ntok is None:
                            raise ValueError("loss_weighting='tokens' needs model(batch) to return num_tokens")
                        w = ntok_t * (0.0 if dummy else 1.0)
                    else:
                        w = torch.full((), 0.0 if dummy else 1.0 / max(n_good, 1), device=device)  # a fill, not a host copy
                    accelerator.backward(loss * w)
                if not dummy:
                    lw = ntok_t if cfg.loss_weighting == "tokens" else torch.ones((), device=device)
                    step_loss += loss.detach().float() * lw
                    step_weight += lw
                    step_tokens += ntok_t
                    if metrics:
                        window.add_metrics(metrics)
            if cfg.loss_weighting == "tokens":
                total = accelerator.reduce(step_tokens.clone(), "sum")
                scale = world / total if total > 0 else torch.zeros((), device=device)
                for p in params:
                    if p.grad is not None:
                        p.grad.mul_(scale.to(p.grad.dtype))
            grad_norm = accelerator.clip_grad_norm_(params, cfg.max_grad_norm if cfg.max_grad_norm > 0 else math.inf)
            grad_norm = float(grad_norm) if grad_norm is not None else float("nan")
            if math.isfinite(grad_norm):
                optimizer.step()
            else:
                window.nonfinite += 1
                log.warning("step %d: gradient norm is %s; the update is skipped", step + 1, grad_norm)
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            window.add_step(step_loss, step_weight, step_tokens, grad_norm)
            logger.step()

            if step % cfg.log_every == 0 or step == total_steps:
                scalars = window.flush(accelerator, optimizer, sampler, pos)
                n_skip, n_tok = window.fold(accelerator)
                skipped, tokens_seen = skipped + n_skip, tokens_seen + n_tok
                scalars["train/skipped_samples"] = skipped
                result.history.append({"step": step, **scalars})
                logger.log(step, scalars)
            if eval_fn is not None and cfg.eval_every and step % cfg.eval_every == 0 and step < total_steps:
                evaluate_and_keep_best()
            if (cfg.save_every and step % cfg.save_every == 0) or step == total_steps:
                save_checkpoint()
            if stop.agreed(accelerator, step % cfg.log_every == 0) and step < total_steps:
                if last_saved != step:
                    save_checkpoint()
                if main:
                    log.warning("%s: stopped at step %d of %d; %s is saved, run the same command to resume",
                                stop.reason, step, total_steps, f"checkpoint-{step}")
                result.interrupted = True
                break

        if not result.interrupted:
            if last_saved != step:  # resumed a finished run with other save settings: make sure it is on disk
                ck.save_checkpoint(accelerator, model, out_dir, step, trainer_state(),
                                   save_pretrained=cfg.save_pretrained)
            final_dir, averaged = _finish(accelerator, model, unwrapped, cfg, out_dir, step)
            result.final_dir = str(final_dir)
            if eval_fn is not None:  # the weights final/ holds: with average_last, the mean, not step's own
                evaluate_and_keep_best(averaged)
    finally:
        stop.restore()
        data.close()  # ends the epoch generator
        _stop_workers(loader)
        logger.close()
        for h in hooks:
            h.remove()
        if scheduler in accelerator._custom_objects:  # a caller's accelerator may be reused
            accelerator._custom_objects.remove(scheduler)
    result.global_step = step
    result.epoch = pos.epoch + int(pos.batch >= sampler.num_batches(pos.epoch))
    result.skipped_samples, result.tokens_seen = skipped, tokens_seen
    result.checkpoints = [str(p) for p in ck.list_checkpoints(out_dir)]
    if best is not None:
        result.best, result.best_dir = best, str(out_dir / "best")
    return result


TENSORS_PER_SAMPLE = 8  # an upper estimate: a speech sample's waveform and its prompt segments' token ids


def _share_worker_tensors(num_workers: int, batch_size: int, prefetch: int = 2) -> str:
    """Make sure DataLoader workers can hand their batches over. torch's default ("file_descriptor")
    passes every tensor of a batch as an open file descriptor; a full prefetch queue holds
    ``num_workers * prefetch`` batches, and past the process's open-file limit the hand-over fails
    ("received 0 items of ancdata", "Pin memory thread exited unexpectedly": GPU run 13, 13 workers x 2
    batches x 256 clips x a few tensors each against a limit of 20,000, once the loader outran the GPU).
    Raise the soft limit to the hard one; if that is still below the estimate, switch torch to the
    "file_system" strategy (shared-memory files by name, no descriptor per tensor) and say so.
    Returns the strategy in use."""
    import torch.multiprocessing as tmp

    need = num_workers * prefetch * batch_size * TENSORS_PER_SAMPLE + 1024
    try:
        import resource
    except ImportError:  # not Unix: torch's default there is not descriptor-based
        return tmp.get_sharing_strategy()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need and (hard == resource.RLIM_INFINITY or hard > soft):
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        except (ValueError, OSError):
            pass
    if (soft == resource.RLIM_INFINITY or soft >= need or tmp.get_sharing_strategy() != "file_descriptor"
            or "file_system" not in tmp.get_all_sharing_strategies()):
        return tmp.get_sharing_strategy()
    log.info("%d workers x %d batches of %d samples may hold about %d tensors at once, above the open-file "
             "limit %d: DataLoader workers share tensors through named shared memory (torch 'file_system')",
             num_workers, prefetch, batch_size, need - 1024, soft)
    tmp.set_sharing_strategy("file_system")
    return "file_system"


def _stop_workers(loader: DataLoader) -> None:
    """End a DataLoader's persistent worker processes now. Left to garbage collection they outlive an
    exception: the traceback keeps the loader alive until interpreter exit, where torch skips its own
    clean-up and multiprocessing ends daemon children with SIGTERM, which our workers ignore
    (``_ignore_stop_signals``), then joins them forever. GPU run 32: two trainings that ran out of memory
    printed their tracebacks and held 139 GiB for minutes until killed."""
    it = getattr(loader, "_iterator", None)  # torch keeps the persistent workers' iterator here
    if it is not None and hasattr(it, "_shutdown_workers"):
        it._shutdown_workers()
        loader._iterator = None


def _ignore_stop_signals(worker_id: int) -> None:  # noqa: ARG001 - DataLoader's worker_init_fn signature
    """DataLoader workers ignore SIGTERM / SIGINT: ``timeout``, schedulers and Ctrl-C signal the whole
    process group, and a dead worker would crash the run before the main process can stop cleanly
    (:class:`_StopRequest`). The main process still ends them (and they exit when it dies)."""
    for sig in _StopRequest.signals():
        signal.signal(sig, signal.SIG_IGN)


class _StopRequest:
    """SIGTERM / SIGINT during training: finish the current step, write a checkpoint, return with
    ``interrupted=True`` (a scheduler's time limit or preemption loses no work). A second signal
    stops at once (the default behaviour). Handlers are installed only in the main thread."""

    @staticmethod
    def signals() -> list:
        """SIGTERM and SIGINT, where the platform has them."""
        return [s for s in (getattr(signal, n, None) for n in ("SIGTERM", "SIGINT")) if s is not None]

    def __init__(self) -> None:
        self.reason: str | None = None
        self._old: dict = {}
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in self.signals():
            self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.reason is not None:  # second signal: stop now
            self.restore()
            signal.raise_signal(signum)
            return
        self.reason = name
        log.warning("%s received: stopping after this step (send it again to stop at once)", name)

    def agreed(self, accelerator, sync_step: bool = True) -> bool:
        """Whether any process was asked to stop. With several processes they agree by an all-reduce,
        done only on ``sync_step`` steps (the loop's log steps, which synchronise anyway), so that
        other steps keep the host running ahead of the GPU."""
        if accelerator.num_processes == 1:
            return self.reason is not None
        if not sync_step:
            return False
        flag = torch.tensor(float(self.reason is not None), device=accelerator.device)
        stop = bool(accelerator.reduce(flag, "sum").item() > 0)
        if stop and self.reason is None:
            self.reason = "stop requested by another process"
        return stop

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}


def _evaluate(accelerator, model, eval_fn, step: int, result: TrainResult, logger: RunLogger) -> dict:
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.eval()
    try:
        with torch.no_grad(), accelerator.autocast():
            metrics = dict(eval_fn(unwrapped) or {})
    finally:
        model.train()
    result.eval_history.append({"step": step, **metrics})
    logger.log(step, {f"eval/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))})
    return metrics


def _write_best(accelerator, model, unwrapped, cfg: TrainConfig, out_dir: Path, best: dict) -> None:
    """output_dir/best: the current trainable weights (+ model folder) and ``info.json`` = ``best``."""
    _write_weights(accelerator, model, unwrapped, cfg, out_dir / "best", dict(best))
    if accelerator.is_main_process:
        mean = f" (the mean of {', '.join(best['averaged'])})" if best.get("averaged") else ""
        log.info("best %s so far: %.4g at step %d%s -> %s", best["metric"], best["value"], best["step"], mean,
                 out_dir / "best")


def _finish(accelerator, model, unwrapped, cfg: TrainConfig, out_dir: Path, step: int) -> tuple[Path, list | None]:
    """Write output_dir/final: last weights, or the mean of the last N checkpoints (loaded too, except under
    FSDP). Returns final/ and the names of the averaged checkpoints where the model now holds their mean, else None."""
    info: dict = {"step": step}
    tensors, loaded = None, None
    if cfg.average_last > 1:
        ckpts = ck.list_checkpoints(out_dir)[-cfg.average_last:]
        if len(ckpts) < cfg.average_last:
            log.warning("average_last=%d but only %d checkpoint(s) exist; averaging those",
                        cfg.average_last, len(ckpts))
        tensors = ck.average_checkpoints(ckpts)
        info["averaged"] = [p.name for p in ckpts]
        if not ck._is_fsdp(accelerator):
            ck.load_trainable(unwrapped, tensors)
            loaded = info["averaged"]
    return _write_weights(accelerator, model, unwrapped, cfg, out_dir / "final", info, tensors), loaded


def _write_weights(accelerator, model, unwrapped, cfg: TrainConfig, out: Path, info: dict,
                   tensors: dict | None = None) -> Path:
    """``out`` via :func:`checkpoint.write_final` (main process) from ``tensors``, or the model's current
    trainable weights (gathered under FSDP); every process waits for it."""
    full = accelerator.get_state_dict(model) if ck._is_fsdp(accelerator) else None  # collective
    if tensors is None:
        tensors = ck.trainable_state_dict(unwrapped, full) if accelerator.is_main_process else {}
    if accelerator.is_main_process:
        # under FSDP the module holds shards: model/ is written from the gathered tensors (+ ``tensors``)
        state = None if full is None else {**full, **tensors}
        ck.write_final(unwrapped, out, tensors, info, save_pretrained=cfg.save_pretrained, state_dict=state)
    accelerator.wait_for_everyone()
    return out


class _Window:
    """Running sums between two log lines (device tensors: no host sync per step), plus the
    skipped-sample and token counts not yet added to the run totals."""

    def __init__(self, device: torch.device):
        self.device = device
        self.nonfinite = 0
        self.pend_skipped = 0
        self.pend_tokens = torch.zeros((), device=device)
        self.reset()

    def reset(self) -> None:
        self.loss = torch.zeros((), device=self.device)
        self.weight = torch.zeros((), device=self.device)
        self.tokens = torch.zeros((), device=self.device)
        self.grad_norms: list[float] = []
        self.metrics: dict[str, list[float]] = {}
        self.t0 = time.perf_counter()
        self.steps = 0
        self.data_wait = 0.0  # seconds the loop waited for the data loader

    def add_step(self, loss, weight, tokens, grad_norm: float) -> None:
        self.loss += loss
        self.weight += weight
        self.tokens += tokens
        self.pend_tokens += tokens
        self.grad_norms.append(grad_norm)
        self.steps += 1

    def add_metrics(self, metrics: Mapping) -> None:
        for k, v in metrics.items():  # tensors stay on the device until the log step
            self.metrics.setdefault(k, []).append(v.detach().float() if torch.is_tensor(v) else float(v))

    def fold(self, accelerator) -> tuple[int, int]:
        """Skipped samples and tokens since the last call, summed over processes (collective)."""
        packed = torch.stack([torch.tensor(float(self.pend_skipped), device=self.device), self.pend_tokens.float()])
        if accelerator.num_processes > 1:
            packed = accelerator.reduce(packed, "sum")
        self.pend_skipped, self.pend_tokens = 0, torch.zeros((), device=self.device)
        n_skip, n_tok = packed.tolist()
        return int(n_skip), int(round(n_tok))

    def flush(self, accelerator, optimizer, sampler, pos: _Position) -> dict[str, float]:
        dt = max(time.perf_counter() - self.t0, 1e-9)
        packed = torch.stack([self.loss, self.weight, self.tokens])
        if accelerator.num_processes > 1:
            packed = accelerator.reduce(packed, "sum")
        loss_sum, weight, tokens = packed.tolist()
        groups = optimizer.param_groups
        out = {"train/loss": loss_sum / weight if weight > 0 else float("nan"),
               "train/lr": groups[0]["lr"],
               "train/grad_norm": sum(self.grad_norms) / max(len(self.grad_norms), 1),
               "train/steps_per_s": self.steps / dt,
               "train/data_wait": self.data_wait / dt,  # share of the time spent waiting for batches
               "train/memory_gib": memory_gib(self.device),
               "train/epoch": pos.epoch + pos.batch / max(sampler.num_batches(pos.epoch), 1)}
        if tokens > 0:
            out["train/tokens_per_s"] = tokens / dt
        if len(groups) > 1:
            out.update({f"train/lr/{g.get('name', i)}": g["lr"] for i, g in enumerate(groups)})
        if self.nonfinite:
            out["train/nonfinite_steps"] = self.nonfinite
        out.update({f"train/{k}": sum(float(x) for x in v) / len(v) for k, v in self.metrics.items()})
        self.reset()
        return out
