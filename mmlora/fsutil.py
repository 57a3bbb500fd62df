"""Atomic writes: build in a temporary sibling, then swap it in with a rename, so that a reader (or a run stopped
midway) finds under the final name either the old whole thing or the new whole thing, never half of one."""
from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["replace_dir", "replace_file", "replace_text"]


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


@contextmanager
def replace_file(final: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a hidden temporary path beside ``final`` (its folder is made) to write the whole file to; when the block
    ends without an error the file replaces ``final`` in one rename, otherwise it is removed and ``final`` is left as
    it was. The name is unique to the process and call (``.<name>.<pid>.<rand>.tmp``), so writers never share one;
    ``suffix`` is appended for writers that choose a format by the extension (``soundfile``: ``".wav"``)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{suffix}")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def replace_text(final: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``final`` through :func:`replace_file`."""
    with replace_file(final) as tmp:
        tmp.write_text(text)
    return Path(final)
