"""One check for "do these saved tensors fit this model?", shared by adapter and checkpoint loading."""
from __future__ import annotations

from typing import Mapping, Sequence

from torch import Tensor

__all__ = ["TensorShapeError", "check_tensors_match"]


class TensorShapeError(ValueError):
    """Saved tensors whose names fit the model but whose shapes do not (e.g. another LoRA rank)."""


def _few(names: Sequence[str]) -> str:
    return f"{list(names[:5])}{' …' if len(names) > 5 else ''}"


def check_tensors_match(source: str, expected: Mapping[str, Sequence[int]], tensors: Mapping[str, Tensor], *,
                        allow_missing: bool = False, allow_unexpected: bool = False, what: str = "weights") -> None:
    """Raise ``ValueError`` naming ``source`` when ``tensors`` (name -> tensor) and ``expected``
    (name -> shape) differ: names missing from the file, names the model lacks, or shapes (then
    :class:`TensorShapeError`, a ``ValueError``)."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if (missing and not allow_missing) or (unexpected and not allow_unexpected):
        raise ValueError(f"{source}: {what} do not match the model: missing from the file {_few(missing)}, "
                         f"not in the model {_few(unexpected)}")
    bad = [f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(s)}" for k, s in expected.items()
           if k in tensors and tuple(tensors[k].shape) != tuple(s)]
    if bad:
        raise TensorShapeError(f"{source}: shape mismatch: " + "; ".join(bad[:5]))
