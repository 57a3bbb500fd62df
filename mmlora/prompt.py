"""Chat prompts with media slots, as token segments the model splices features into.

A user message such as ``"<audio><video>Transcribe the speech."`` is rendered through the
LLM's chat template; each slot becomes ``start-marker · features · end-marker`` (by default the
Llama-AVSR markers ``<audio> … </audio>``). The result is a list of segments:

* ``TextSegment(ids, is_answer)`` — token ids; ``is_answer`` marks the assistant reply, the
  only tokens with labels;
* ``MediaSegment(modality, index)`` — the ``index``-th item of that modality in the batch.

The answer (assistant content plus the template's end-of-turn text) is the difference between
the full rendering and the rendering with ``add_generation_prompt=True``, so training and
inference share the prompt tokens exactly.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

__all__ = ["TextSegment", "MediaSegment", "PromptBuilder", "SLOTS", "MarkerConfig"]

SLOTS = ("audio", "video", "image")
_SLOT_RE = re.compile(r"<(audio|video|image)>")


@dataclass
class TextSegment:
    ids: torch.Tensor   # [n] int64 token ids
    is_answer: bool = False


@dataclass
class MediaSegment:
    modality: str       # "audio" | "video" | "image"
    index: int          # row of this modality's batch


@dataclass
class MarkerConfig:
    """Text around each modality's features (tokenized like any text)."""

    audio: tuple[str, str] = ("<audio>", "</audio>")
    video: tuple[str, str] = ("<video>", "</video>")
    image: tuple[str, str] = ("<image>", "</image>")


@dataclass
class PromptBuilder:
    tokenizer: object
    markers: MarkerConfig = field(default_factory=MarkerConfig)
    system_prompt: str | None = None

    def _tok(self, text: str) -> torch.Tensor:
        return torch.tensor(self.tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)

    def _render(self, messages: list[dict], add_generation_prompt: bool) -> str:
        if self.system_prompt and (not messages or messages[0]["role"] != "system"):
            messages = [{"role": "system", "content": self.system_prompt}, *messages]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    def build(self, messages: list[dict], media_offsets: dict[str, int] | None = None,
              with_answer: bool = True) -> list[TextSegment | MediaSegment]:
        """Segments for one sample. ``media_offsets[modality]`` is the batch row of this
        sample's first item of that modality (several slots of one modality take
        consecutive rows). With ``with_answer`` the last message must be the assistant's."""
        if not messages:
            raise ValueError("sample has no messages")
        offsets = dict(media_offsets or {})
        if with_answer:
            if messages[-1].get("role") != "assistant":
                raise ValueError("the last message must be the assistant's answer to train on it")
            prompt_msgs = messages[:-1]
        else:
            prompt_msgs = messages[:-1] if messages[-1].get("role") == "assistant" else messages
        prefix = self._render(prompt_msgs, add_generation_prompt=True)
        segments: list[TextSegment | MediaSegment] = []
        pieces = _SLOT_RE.split(prefix)  # text, modality, text, modality, ...
        text = pieces[0]
        for i in range(1, len(pieces), 2):
            modality, after = pieces[i], pieces[i + 1]
            start, end = getattr(self.markers, modality)
            segments.append(TextSegment(self._tok(text + start)))
            segments.append(MediaSegment(modality, offsets.get(modality, 0)))
            offsets[modality] = offsets.get(modality, 0) + 1
            text = end + after
        segments.append(TextSegment(self._tok(text)))
        if with_answer:
            full = self._render(messages, add_generation_prompt=False)
            if not full.startswith(prefix):
                raise ValueError("chat template renders the prompt differently with and without the answer")
            answer = full[len(prefix):]
            if _SLOT_RE.search(answer):
                raise ValueError("media slots are only allowed in user/system messages")
            segments.append(TextSegment(self._tok(answer), is_answer=True))
        return [s for s in segments if not isinstance(s, TextSegment) or s.ids.numel()]

    @staticmethod
    def count_slots(messages: list[dict]) -> dict[str, int]:
        counts = {m: 0 for m in SLOTS}
        for msg in messages:
            for mod in _SLOT_RE.findall(msg.get("content") or ""):
                counts[mod] += 1
        return counts
