"""The auxiliary CTC objective (``model.ctc``): a linear head on one modality's encoder features, trained with CTC
against the characters of the sample's transcript (its assistant answer), added to the LLM's loss. Characters need no
phonemizer or tokenizer, so any manifest works; the transcript is normalized as WER scoring normalizes it
(:func:`mmlora.metrics.wer.normalize_text`: lower case, punctuation removed, numbers as words)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["CTCConfig", "CTC_CHARS", "ctc_targets", "ctc_loss"]

CTC_CHARS = " '" + "abcdefghijklmnopqrstuvwxyz"  # label i + 1 is CTC_CHARS[i]; label 0 is the blank


@dataclass
class CTCConfig:
    """``model.ctc``: CTC on ``modality``'s encoder features (``""``: off), ``weight`` × it added to the
    cross-entropy in training. The head (``projectors.<modality>.ctc_head``) trains and is saved with the projector;
    inference does not use it."""

    modality: str = ""    # e.g. "video": the lip encoder's 25 fps features; "" = off
    weight: float = 0.3   # loss = cross-entropy + weight · CTC (mean over the batch of per-character CTC)

    def __post_init__(self) -> None:
        if self.modality and not self.weight > 0:
            raise ValueError(f"model.ctc.weight must be > 0, got {self.weight}")


def ctc_targets(texts: list[str]) -> tuple[Tensor, Tensor]:
    """The transcripts as CTC labels: ``(labels [sum of lengths], lengths [B])``, characters outside
    :data:`CTC_CHARS` dropped after normalization."""
    from .metrics.wer import normalize_text

    index = {c: i + 1 for i, c in enumerate(CTC_CHARS)}
    seqs = [[index[c] for c in normalize_text(t) if c in index] for t in texts]
    return (torch.tensor([i for s in seqs for i in s], dtype=torch.long),
            torch.tensor([len(s) for s in seqs], dtype=torch.long))


def ctc_loss(logits: Tensor, mask: Tensor, texts: list[str]) -> Tensor:
    """CTC of ``logits [B, T, len(CTC_CHARS) + 1]`` (frames where ``mask [B, T]`` is False are padding) against
    ``texts``: each sample's loss over its number of target characters (at least 1), averaged over the batch; a
    sample whose transcript cannot fit its frames counts zero (``zero_infinity``)."""
    labels, lengths = ctc_targets(texts)
    logp = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)  # [T, B, C]
    per = F.ctc_loss(logp, labels.to(logits.device), mask.sum(1).to(torch.long), lengths.to(logits.device),
                     blank=0, reduction="none", zero_infinity=True)
    return (per / lengths.to(per.device).clamp(min=1)).mean()  # an empty transcript: its blank path, not a 0 division
