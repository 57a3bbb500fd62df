"""Checkpoints: ``output_dir/checkpoint-N`` holding what trains, written atomically.

Layout of one checkpoint (step ``N`` = optimizer steps done)::

    checkpoint-N/
      trainable.safetensors   parameters with requires_grad (names as in the unwrapped model)
      model/                  model.save_pretrained(...) output, when the model has that method
      state/                  accelerate save_state: optimizer, lr scheduler, RNG of every process
      trainer_state.json      step, epoch, position in the epoch, counters (written last)

Frozen weights (the LLM, the encoders) are never written. Every process writes into
``.tmp-checkpoint-N``; when all are done the main process renames it to ``checkpoint-N``
(one ``rename``, atomic on POSIX), so a crash mid-write leaves only a hidden temp folder that
:func:`list_checkpoints` ignores and the next run removes. Under FSDP, accelerate also keeps
the (sharded) model in ``state/`` because parameters are not whole on any one process.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Iterable, Mapping

import torch
from torch import nn

from ..fsutil import replace_dir
from ..tensor_match import check_tensors_match

log = logging.getLogger("mmlora.train")

TRAINABLE_FILE = "trainable.safetensors"
STATE_FILE = "trainer_state.json"
PRETRAINED_DIR = "model"
ACCEL_DIR = "state"
_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")
_WRAPPER_PARTS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")


def checkpoint_step(path: str | Path) -> int:
    m = _CKPT_RE.match(Path(path).name)
    if not m:
        raise ValueError(f"{path}: not a checkpoint folder (expected checkpoint-<step>)")
    return int(m.group(1))


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints in ``output_dir``, oldest step first."""
    out = Path(output_dir)
    if not out.is_dir():
        return []
    found = [p for p in out.iterdir() if p.is_dir() and _CKPT_RE.match(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=checkpoint_step)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(output_dir)
    return ckpts[-1] if ckpts else None


def remove_partial(output_dir: str | Path) -> list[Path]:
    """Delete temp folders left by a crash during a save; returns what was removed."""
    out = Path(output_dir)
    removed = []
    if out.is_dir():
        for p in out.iterdir():
            if p.is_dir() and p.name.startswith((".tmp-checkpoint-", ".old-checkpoint-", ".tmp-final", ".old-final")):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


def prune_checkpoints(output_dir: str | Path, keep_last: int) -> list[Path]:
    """Keep the ``keep_last`` newest checkpoints (0 keeps all); returns the removed ones."""
    ckpts = list_checkpoints(output_dir)
    if keep_last <= 0 or len(ckpts) <= keep_last:
        return []
    gone = ckpts[: len(ckpts) - keep_last]
    for p in gone:
        shutil.rmtree(p)
    return gone


# ----------------------------------------------------------------------------- trainable tensors


def _clean_name(name: str) -> str:
    for part in _WRAPPER_PARTS:
        name = name.replace(part, "")
    return name[len("module."):] if name.startswith("module.") else name


def trainable_names(model: nn.Module) -> list[str]:
    """Names of the parameters that train (requires_grad), wrapper prefixes removed."""
    return [_clean_name(n) for n, p in model.named_parameters() if p.requires_grad]


def trainable_state_dict(model: nn.Module, full_state: Mapping[str, torch.Tensor] | None = None
                         ) -> dict[str, torch.Tensor]:
    """Detached CPU copies of the trainable parameters of ``model`` (unwrapped), or the
    matching entries of ``full_state`` (a gathered state dict, e.g. under FSDP)."""
    if full_state is not None:
        keep = set(trainable_names(model))
        out = {_clean_name(k): v for k, v in full_state.items() if _clean_name(k) in keep}
        missing = keep - set(out)
        if missing:
            raise RuntimeError(f"gathered state dict lacks trainable parameters: {sorted(missing)[:5]}")
    else:
        out = {_clean_name(n): p for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in out.items()}


def save_trainable(tensors: Mapping[str, torch.Tensor], path: str | Path) -> None:
    from safetensors.torch import save_file

    save_file(dict(tensors), str(path), metadata={"format": "mmlora-trainable"})


def read_trainable(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        path = path / TRAINABLE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no trainable weights file")
    return load_file(str(path))


def load_trainable(model: nn.Module, tensors: Mapping[str, torch.Tensor] | str | Path, strict: bool = True) -> None:
    """Copy saved trainable weights into ``model``'s trainable parameters, in place. Names
    and shapes must match (``strict``: the same set of names); the error says which differ."""
    source = "given tensors"
    if not isinstance(tensors, Mapping):
        source = str(tensors)
        tensors = read_trainable(tensors)
    params = {_clean_name(n): p for n, p in model.named_parameters() if p.requires_grad}
    check_tensors_match(source, {k: p.shape for k, p in params.items()}, tensors, allow_missing=not strict,
                        what="trainable weights")
    with torch.no_grad():
        for k, v in tensors.items():
            params[k].copy_(v.to(params[k].device, params[k].dtype))


def mean_tensors(sets: list[Mapping[str, torch.Tensor]], weights: list[float] | None = None,
                 sources: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Weighted element-wise mean of several sets of named tensors (``weights``: one per set, >= 0, normalized
    to sum 1; default equal), accumulated in float64 and returned in the first set's dtypes. All sets must hold
    the same names and shapes; ``sources`` (one label per set) name the offender in the error."""
    if not sets:
        raise ValueError("no tensors to average")
    sources = [str(x) for x in sources] if sources is not None else [f"set {i}" for i in range(len(sets))]
    w = mean_weights(weights, len(sets))
    first = sets[0]
    for t, src in zip(sets[1:], sources[1:]):
        if set(t) != set(first):
            diff = sorted(set(t) ^ set(first))[:3]
            raise ValueError(f"{src}: its weights have other names than {sources[0]} (e.g. {', '.join(diff)})")
        for k, v in t.items():
            if v.shape != first[k].shape:
                raise ValueError(f"{src}: {k} has shape {tuple(v.shape)}, {sources[0]} has {tuple(first[k].shape)}")
    total = sum(w)
    out = {}
    for k, v0 in first.items():
        acc = torch.zeros(v0.shape, dtype=torch.float64)
        for t, x in zip(sets, w):
            acc += t[k].to(torch.float64) * x
        out[k] = (acc / total).to(v0.dtype)
    return out


def mean_weights(weights: list[float] | None, n: int) -> list[float]:
    """``n`` averaging weights as given (``None``: all 1), checked: one per set, >= 0, a positive sum."""
    w = [1.0] * n if weights is None else [float(x) for x in weights]
    if len(w) != n:
        raise ValueError(f"{len(w)} weight(s) for {n} set(s) of tensors")
    if any(x < 0 for x in w) or sum(w) <= 0:
        raise ValueError(f"weights must be >= 0 with a positive sum, got {w}")
    return w


def average_checkpoints(dirs: Iterable[str | Path]) -> dict[str, torch.Tensor]:
    """Element-wise mean of the trainable weights of several checkpoints (accumulated in
    float64, returned in each tensor's saved dtype). All must hold the same names and shapes."""
    dirs = [Path(d) for d in dirs]
    if not dirs:
        raise ValueError("no checkpoints to average")
    return mean_tensors([read_trainable(d) for d in dirs], sources=[str(d) for d in dirs])


def average_model_dirs(models: list[str | Path], out: str | Path, weights: list[float] | None = None) -> Path:
    """A model folder (what ``load_pipeline`` reads) whose weights are the weighted mean of ``models``' (every
    ``*.safetensors`` file: projectors, adapters, routers; a trained Whisper judge's packed decoder as the weights it
    stands for, and its encoder LoRA as the exact mean of the weight changes, rank the sum: session 65). The models
    must have the same files, tensor names and shapes (fine-tuned from one another: averaging a model with its
    continuation, or two trainings from one start, is a weight-space ensemble);
    everything else (config.json) is copied from the first. Written to a temp folder, then renamed to ``out``,
    which must not exist; ``averaged.json`` records the sources and weights."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    models, out = [Path(m) for m in models], Path(out)
    if len(models) < 2:
        raise ValueError("average_model_dirs: give at least two model folders")
    from ..model import SECOND_JUDGES, WHISPER_DECODER, WHISPER_ENCODER

    for m in models:
        if not (m / "config.json").is_file():
            raise FileNotFoundError(f"{m}: not a model folder (no config.json)")
        if (m / SECOND_JUDGES).exists():  # packed decoders and LoRAs a folder deeper: not averaged as what they are
            raise ValueError(f"{m}: has second judges ({SECOND_JUDGES}/); average the folders without them, then add "
                             "them again (scripts/ensemble_candidate.py)")
    if out.exists():
        raise FileExistsError(f"{out} exists; choose a new output folder")
    files = sorted(p.relative_to(models[0]) for p in models[0].rglob("*.safetensors"))
    for m in models[1:]:
        other = sorted(p.relative_to(m) for p in m.rglob("*.safetensors"))
        if other != files:
            raise ValueError(f"{m}: its weight files {[str(f) for f in other]} differ from {models[0]}'s "
                             f"{[str(f) for f in files]}")
    w = mean_weights(weights, len(models))

    tmp = out.with_name(f".tmp-{out.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(models[0], tmp)
    try:
        for rel in files:
            if rel.parts[0] == WHISPER_ENCODER:  # written whole below
                continue
            with safe_open(str(models[0] / rel), "pt") as f:
                meta = f.metadata()  # e.g. the adapters file's format tag, kept as the first model has it
            sets, sources = [load_file(str(m / rel)) for m in models], [str(m / rel) for m in models]
            if str(rel) == WHISPER_DECODER:  # a trained judge: packed weights are averaged as the weights they are
                tensors = _mean_judge_decoders(models[0], sets, w, sources)
            else:
                tensors = mean_tensors(sets, w, sources)
            save_file(tensors, str(tmp / rel), metadata=meta)
        if (models[0] / WHISPER_ENCODER).is_dir():  # the judge's encoder LoRA: the mean of the weight changes
            from ..lora import mean_adapter_folders, read_adapter_folder, write_adapter_folder

            shutil.rmtree(tmp / WHISPER_ENCODER)
            write_adapter_folder(tmp / WHISPER_ENCODER,
                                 *mean_adapter_folders([read_adapter_folder(m / WHISPER_ENCODER) for m in models], w))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    (tmp / "averaged.json").write_text(json.dumps(
        {"models": [str(m) for m in models], "weights": [x / sum(w) for x in w]}, indent=2) + "\n")
    return replace_dir(tmp, out)


def _mean_judge_decoders(first: Path, sets: list[dict], w: list[float], sources: list[str]) -> dict:
    """:func:`mmlora.encoders.whisper_judge.mean_decoder_states` of the models' trained judges, against the decoder of
    the packaged Whisper that ``first``'s config names as its audio encoder (loaded only for packed weights)."""
    from ..encoders.whisper_judge import WhisperJudge, mean_decoder_states, packing_of

    own = None
    if packing_of(sets[0]) is not None:
        cfg = json.loads((first / "config.json").read_text())
        enc = (((cfg.get("model") or {}).get("media") or {}).get("audio") or {}).get("encoder") or {}
        if not enc.get("preset"):
            raise ValueError(f"{first}/config.json: no packaged Whisper named (model.media.audio.encoder.preset), "
                             f"which its packed trained judge is a change of")
        own = WhisperJudge.load(enc["preset"]).decoder.state_dict()
    return mean_decoder_states(sets, w, own, sources)


def average_main(argv: list[str]) -> int:
    """``mmlora average-models OUT MODEL MODEL [...] [--weights W,W,...]``."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="mmlora average-models",
                                description="Average the weights of model folders fine-tuned from one another.")
    p.add_argument("out", help="new model folder")
    p.add_argument("models", nargs="+", help="model folders (…/final/model, a checkpoint's model/)")
    p.add_argument("--weights", help="one weight per model, comma-separated (default: equal)")
    args = p.parse_args(argv)
    try:
        weights = [float(x) for x in args.weights.split(",")] if args.weights else None
        out = average_model_dirs(args.models, args.out, weights)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"mmlora average-models: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"model": str(out), **json.loads((out / "averaged.json").read_text())}))
    return 0


# ----------------------------------------------------------------------------- whole checkpoints


def _write_trainable(accelerator, model: nn.Module, folder: Path, save_pretrained: bool) -> None:
    """Trainable weights (+ save_pretrained) of the prepared ``model`` into ``folder``; every
    process calls this (gathering under FSDP is collective), the main process writes."""
    unwrapped = accelerator.unwrap_model(model)
    full = None
    if _is_fsdp(accelerator):
        full = accelerator.get_state_dict(model)  # collective; whole tensors on the main process
    if accelerator.is_main_process:
        save_trainable(trainable_state_dict(unwrapped, full), folder / TRAINABLE_FILE)
        if save_pretrained:
            _save_pretrained(unwrapped, folder / PRETRAINED_DIR, full)


def _save_pretrained(model: nn.Module, folder: Path, state_dict: Mapping[str, torch.Tensor] | None) -> None:
    """``model.save_pretrained(folder)`` when the model has one; with ``state_dict`` (gathered under
    FSDP, where the module's own parameters are shards; wrapper parts in the names are removed, a
    later entry wins over an earlier one of the same clean name) the weights come from there."""
    if not callable(getattr(model, "save_pretrained", None)):
        return
    if state_dict is None:
        model.save_pretrained(folder)
    else:
        model.save_pretrained(folder, state_dict={_clean_name(k): v for k, v in state_dict.items()})


def _is_fsdp(accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.FSDP


def save_checkpoint(accelerator, model: nn.Module, output_dir: str | Path, step: int, trainer_state: dict,
                    save_pretrained: bool = True) -> Path:
    """Write ``output_dir/checkpoint-<step>`` atomically (all processes call it). Needs the
    optimizer prepared by ``accelerator`` and the scheduler registered for checkpointing."""
    out = Path(output_dir)
    final = out / f"checkpoint-{step}"
    tmp = out / f".tmp-checkpoint-{step}"
    if accelerator.is_main_process:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp / ACCEL_DIR))
    _write_trainable(accelerator, model, tmp, save_pretrained)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state = dict(trainer_state, step=step, num_processes=accelerator.num_processes)
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))
        _fsync_dir(tmp)
        replace_dir(tmp, final)  # re-saving a step (e.g. after a resume) swaps the old one out
        _fsync_dir(out)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, model: nn.Module, ckpt: str | Path) -> dict:
    """Restore trainable weights, optimizer, scheduler and RNG from ``ckpt``; returns the
    trainer state (step, epoch, position, counters)."""
    ckpt = Path(ckpt)
    state_file = ckpt / STATE_FILE
    if not state_file.is_file():
        raise FileNotFoundError(f"{ckpt}: not a complete checkpoint (no {STATE_FILE})")
    state = json.loads(state_file.read_text())
    if not _is_fsdp(accelerator):  # under FSDP, load_state below restores the sharded model
        load_trainable(accelerator.unwrap_model(model), ckpt / TRAINABLE_FILE)
    accelerator.load_state(str(ckpt / ACCEL_DIR))
    return state


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_final(model: nn.Module, out_dir: str | Path, tensors: Mapping[str, torch.Tensor], info: dict,
                save_pretrained: bool = True, state_dict: Mapping[str, torch.Tensor] | None = None) -> Path:
    """``out_dir`` (e.g. ``output_dir/final``) with ``trainable.safetensors``, ``model/`` and
    ``info.json``; ``model`` (unwrapped) must already hold ``tensors``, unless ``state_dict``
    (whole tensors, under FSDP) is given: ``model/`` is then written from it.
    Main process only."""
    out = Path(out_dir)
    tmp = out.with_name(f".tmp-{out.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_trainable(tensors, tmp / TRAINABLE_FILE)
    if save_pretrained:
        _save_pretrained(model, tmp / PRETRAINED_DIR, state_dict)
    (tmp / "info.json").write_text(json.dumps(info, indent=2))
    return replace_dir(tmp, out)
