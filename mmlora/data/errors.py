"""The one exception a dataset or collate function raises for a sample it cannot use.

The training loop (:func:`mmlora.train.train`) catches it, skips the sample, counts it and
logs the count; any other exception still stops the run (it is a bug, not bad data).

    raise SampleError(f"{path}: cannot decode audio ({e})", index=i, path=path)
"""
from __future__ import annotations


class SampleError(Exception):
    """An unreadable or unusable sample (missing/corrupt media, empty transcript, ...).

    ``index``: dataset index, when known; ``path``: the offending file, when there is one."""

    def __init__(self, message: str, index: int | None = None, path: str | None = None):
        super().__init__(message)
        self.index = index
        self.path = path
