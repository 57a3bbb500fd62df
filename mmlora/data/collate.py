"""Collate chat samples with decoded media into the batch MultimodalLM takes."""
from __future__ import annotations

from typing import Any, Sequence

from ..prompt import PromptBuilder

__all__ = ["collate_samples", "MEDIA_KEYS"]

MEDIA_KEYS = {"audio": "audios", "video": "videos", "image": "images"}


def collate_samples(samples: Sequence[dict[str, Any]], prompts: PromptBuilder, with_answer: bool = True,
                    rates: dict[str, int] | None = None) -> dict[str, Any]:
    """``samples``: dicts with ``messages`` and decoded media lists under ``audios`` /
    ``videos`` / ``images`` (waveforms, frame tensors, or per-item feature dicts), in slot order.

    Returns ``{"segments", "media", "rates", "ids", "answers"}`` (``answers``: each sample's last assistant
    message, None without one or without ``with_answer``) for :meth:`MultimodalLM.forward` /
    :meth:`MultimodalLM.generate`. The number of ``<audio>`` slots of a sample must equal
    the length of its ``audios`` list (and likewise for video, image).
    """
    media: dict[str, list] = {}
    segments = []
    for i, s in enumerate(samples):
        counts = prompts.count_slots(s["messages"])
        offsets = {}
        for mod, key in MEDIA_KEYS.items():
            items = list(s.get(key) or [])
            if counts[mod] != len(items):
                sid = s.get("id", i)
                raise ValueError(f"sample {sid!r}: {counts[mod]} <{mod}> slot(s) in the messages but "
                                 f"{len(items)} item(s) in {key!r}")
            if items:
                offsets[mod] = len(media.setdefault(mod, []))
                media[mod].extend(items)
        segments.append(prompts.build(s["messages"], offsets, with_answer=with_answer))
    answers = [next((m["content"] for m in reversed(s["messages"]) if m.get("role") == "assistant"), None)
               if with_answer else None for s in samples]  # what the sample should say (model.ctc's targets)
    return {"segments": segments, "media": media, "rates": rates, "ids": [s.get("id", i) for i, s in enumerate(samples)],
            "answers": answers}
