"""Atomic folder writes: build in a temporary sibling, then swap it in with renames."""
from __future__ import annotations

import shutil
import uuid
from pathlib import Path

__all__ = ["replace_dir"]


def replace_dir(tmp: Path, final: Path) -> Path:
    """Move the finished folder ``tmp`` to ``final`` (same filesystem). An existing ``final`` is
    renamed aside to ``.old-<name>-<rand>`` first and deleted after the swap, so at every moment
    either the old or the new folder is complete under its name or a hidden one."""
    tmp, final = Path(tmp), Path(final)
    old = None
    if final.exists():
        old = final.with_name(f".old-{final.name}-{uuid.uuid4().hex[:8]}")
        final.rename(old)
    tmp.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final
