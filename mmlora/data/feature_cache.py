"""On-disk cache of frozen-encoder outputs, so a second epoch does no encoder work.

    key   = sha256(file content sha256, encoder_id, preprocessing config as sorted JSON, hidden-states flag)
    entry = <root>/<key[:2]>/<key>.safetensors     {"x": [n, D], "hidden.<l>": [m, D_l] ...}
            metadata: rate_hz, tokens_per_step, encoder_id, source file, sha256 checksum of the tensors

``encoder_id`` (see :class:`mmlora.encoders.Encoder`) covers the weights and the encoder's own
preprocessing; ``preprocess`` covers decoding (sample rate, fps, …). Entries are written to a
temporary file and renamed (atomic); an entry that fails to parse or whose checksum does not match
is counted as corrupt, deleted and recomputed.

    cache = FeatureCache("~/.cache/mmlora/features")
    feats = cache.encode(encoder, ["a.wav", "b.wav"], load_audio, preprocess=AudioConfig())
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

import torch
import torch.utils.data
from torch import Tensor

from ..fsutil import replace_file


@dataclass
class CacheStats:
    """Counters since the cache object was made."""

    hits: int = 0  # entries read back
    misses: int = 0  # items the encoder had to run on
    corrupt: int = 0  # entries found unreadable / wrong checksum (then recomputed)
    writes: int = 0  # entries written


def tensors_checksum(tensors: dict[str, Tensor]) -> str:
    """sha256 over (name, dtype, shape, bytes) of every tensor, sorted by name."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _jsonable(cfg: Any) -> Any:
    if cfg is None:
        return None
    if is_dataclass(cfg):
        return asdict(cfg)
    return cfg


class FeatureCache:
    """Encoder outputs on disk, keyed by file content + encoder id + preprocessing config."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser()
        self.root.mkdir(parents=True, exist_ok=True)
        self.stats = CacheStats()
        self._hashes: dict[tuple[str, int, int], str] = {}

    # ---- keys
    def file_hash(self, path: str | os.PathLike) -> str:
        """sha256 of the file's bytes (memoized per path, size and mtime)."""
        p = Path(path)
        try:
            st = p.stat()
        except FileNotFoundError:
            raise FileNotFoundError(f"media file not found: {p}") from None
        memo = (str(p.resolve()), st.st_size, st.st_mtime_ns)
        if memo not in self._hashes:
            with open(p, "rb") as f:
                self._hashes[memo] = hashlib.file_digest(f, "sha256").hexdigest()
        return self._hashes[memo]

    def key(self, path: str | os.PathLike, encoder_id: str, preprocess: Any = None,
            output_hidden_states: bool = False) -> str:
        """The entry key of one file under one encoder and preprocessing."""
        payload = json.dumps({"file": self.file_hash(path), "encoder": encoder_id, "pre": _jsonable(preprocess),
                              "hidden": bool(output_hidden_states)}, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()

    def entry_path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    # ---- entries
    def load(self, key: str) -> tuple[dict[str, Tensor], dict[str, str]] | None:
        """``(tensors, metadata)``, or None on a miss or a corrupt entry (which is deleted)."""
        from safetensors import safe_open

        p = self.entry_path(key)
        if not p.is_file():
            return None
        try:
            with safe_open(str(p), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
            ok = meta.get("key") == key and meta.get("checksum") == tensors_checksum(tensors) and "x" in tensors
        except Exception as e:  # noqa: BLE001 - any parse failure means a corrupt entry
            ok, why = False, f"{type(e).__name__}: {e}"
        else:
            why = "checksum or key mismatch"
        if not ok:
            self.stats.corrupt += 1
            warnings.warn(f"feature cache: corrupt entry {p} ({why}); recomputing", stacklevel=2)
            p.unlink(missing_ok=True)
            return None
        return tensors, meta

    def save(self, key: str, tensors: dict[str, Tensor], meta: dict[str, Any]) -> Path:
        """Write one entry atomically (:func:`mmlora.fsutil.replace_file`)."""
        from safetensors.torch import save_file

        p = self.entry_path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        metadata = {k: json.dumps(v) if not isinstance(v, str) else v for k, v in meta.items()}
        metadata.update(key=key, checksum=tensors_checksum(tensors))
        with replace_file(p) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
        self.stats.writes += 1
        return p

    # ---- the main entry point
    def encode(self, encoder, paths: Sequence[str | os.PathLike], loader: Callable[[Path], Any],
               preprocess: Any = None, output_hidden_states: bool = False, batch_size: int = 16):
        """Features for ``paths`` (in order), running ``encoder.encode(loader(path) ...)`` only on misses.

        ``loader`` decodes one file (e.g. :func:`mmlora.data.media.load_audio`); ``preprocess`` is its
        config (dataclass or dict) and becomes part of the key.
        """
        from mmlora.encoders.base import Features

        if not paths:
            raise ValueError("FeatureCache.encode: no paths")
        eid = encoder.encoder_id
        keys = [self.key(p, eid, preprocess, output_hidden_states) for p in paths]
        items: list[dict[str, Tensor] | None] = [None] * len(paths)
        rate: float | None = None
        tps = 1
        for i, k in enumerate(keys):
            got = self.load(k)
            if got is not None:
                items[i], meta = got
                rate, tps = json.loads(meta["rate_hz"]), json.loads(meta["tokens_per_step"])
                self.stats.hits += 1
        todo = [i for i, it in enumerate(items) if it is None]
        for s in range(0, len(todo), batch_size):
            chunk = todo[s : s + batch_size]
            done, rate, tps = self._encode_and_save(encoder, [paths[i] for i in chunk], [keys[i] for i in chunk],
                                                    [loader(Path(paths[i])) for i in chunk], output_hidden_states)
            for i, item in zip(chunk, done):
                items[i] = item
        return Features.collate(items, rate_hz=rate, tokens_per_step=tps)

    def _encode_and_save(self, encoder, paths: Sequence, keys: Sequence[str], decoded: list,
                         output_hidden_states: bool) -> tuple[list[dict[str, Tensor]], float | None, int]:
        """Encode one batch of decoded items and write one entry per item: ``(items, rate_hz, tokens_per_step)``."""
        feats = encoder.encode(decoded, output_hidden_states=output_hidden_states)
        out = []
        for path, key, item in zip(paths, keys, feats.unbatch()):
            item = {k: v.cpu() for k, v in item.items()}
            self.save(key, item, {"rate_hz": feats.rate_hz, "tokens_per_step": feats.tokens_per_step,
                                  "encoder_id": encoder.encoder_id, "source": str(path)})
            out.append(item)
        self.stats.misses += len(out)
        return out, feats.rate_hz, feats.tokens_per_step

    def fill(self, encoder, paths: Sequence[str | os.PathLike], loader: Callable[[Path], Any],
             preprocess: Any = None, output_hidden_states: bool = False, batch_size: int = 32, workers: int = 0,
             autocast: torch.dtype | None = None, progress: bool = False,
             log_every_s: float = 0.0) -> dict[str, int]:
        """Write an entry for every path that has none yet, before training (``mmlora cache-features``).

        Files are decoded by ``loader`` in ``workers`` DataLoader processes while the main process
        encodes (under ``torch.autocast(autocast)`` when given, as the training loop does) and writes:
        the first epoch of a run then reads only. Keys are those of :meth:`encode`. A file that cannot
        be decoded is skipped, counted and named in one warning. Returns ``{"files", "cached",
        "written", "failed"}`` (``cached``: entries already there). ``progress``: a tqdm bar (a terminal);
        ``log_every_s`` > 0: a line ``caching video: 1,024 / 10,000 files (26.1 files/s)`` on stderr at most that
        often and at the end (a log file).
        """
        from torch.utils.data import DataLoader

        unique = list(dict.fromkeys(str(p) for p in paths))
        eid = encoder.encoder_id
        keys = {p: self.key(p, eid, preprocess, output_hidden_states) for p in unique}
        todo = [p for p in unique if not self.entry_path(keys[p]).is_file()]
        counts = {"files": len(unique), "cached": len(unique) - len(todo), "written": 0, "failed": 0}
        failed: list[str] = []
        dl = DataLoader(_Decoded(todo, loader), batch_size=batch_size, num_workers=workers, collate_fn=list)
        from tqdm.auto import tqdm

        device = encoder.device
        bar = tqdm(total=len(todo), desc=f"caching {encoder.kind}", unit="file", disable=not progress)
        t0 = last = time.monotonic()
        done_n = 0

        def log(now: float) -> None:
            print(f"caching {encoder.kind}: {done_n:,} / {len(todo):,} files ({done_n / max(now - t0, 1e-9):.1f} files/s)",
                  file=sys.stderr, flush=True)

        for batch in dl:
            good = [(p, x) for p, x, err in batch if err is None]
            failed += [f"{p} ({err})" for p, _, err in batch if err is not None]
            if good:
                with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
                    done, _, _ = self._encode_and_save(encoder, [p for p, _ in good], [keys[p] for p, _ in good],
                                                       [x for _, x in good], output_hidden_states)
                counts["written"] += len(done)
            bar.update(len(batch))
            done_n += len(batch)
            if log_every_s > 0 and (now := time.monotonic()) - last >= log_every_s:
                log(now)
                last = now
        bar.close()
        if log_every_s > 0 and todo:
            log(time.monotonic())
        counts["failed"] = len(failed)
        if failed:
            warnings.warn(f"feature cache: skipped {len(failed)} unreadable file(s): " + "; ".join(failed[:5])
                          + (" ..." if len(failed) > 5 else ""), stacklevel=2)
        return counts


class _Decoded(torch.utils.data.Dataset):
    """``(path, decoded item or None, error or None)`` per path: decoding runs in the DataLoader's workers."""

    def __init__(self, paths: list[str], loader: Callable[[Path], Any]):
        self.paths, self.loader = paths, loader

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        p = self.paths[i]
        try:
            return p, self.loader(Path(p)), None
        except Exception as e:  # noqa: BLE001 - any decode failure: skip the file, named
            return p, None, f"{type(e).__name__}: {e}"
