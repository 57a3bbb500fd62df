"""What a task is: a name, the modalities it feeds, its run config and its data/metric hooks."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from mmlora.model import ModelConfig
from mmlora.train import TrainConfig


@dataclass
class EvalConfig:
    """Decoding used by evaluation and by the saved pipeline."""

    num_beams: int = 1          # beam width (Llama-AVSR: 15)
    max_new_tokens: int = 48    # longest answer (Llama-AVSR: 32)
    batch_size: int = 16        # utterances per generate() call
    rates: dict[str, int] = field(default_factory=dict)  # Matryoshka rate pair to decode at; {} = finest
    piece_seconds: float | None = None  # speech: longer audio is cut at pauses into pieces of at most this
    # length, decoded one by one, texts joined (None: only audio longer than the encoder's window is cut)
    stop_strings: list[str] = field(default_factory=list)  # decoding also ends at any of these (speech recipes:
    # a line break, since a transcript is one line; a model that misses its end-of-text otherwise repeats the sentence)
    ascii_only: bool = False    # answers use ASCII characters only: tokens whose text is anything else (Cyrillic
    # letters, a piece of a multi-byte character) are never generated (speech recipes: English transcripts)


@dataclass
class TaskSpec:
    name: str
    modalities: tuple[str, ...]          # media the task feeds, in prompt order
    run_config: type                     # dataclass with task, model, data, train, eval
    build_data: Callable[[Any, Any], tuple]  # (run_cfg, model) -> (train_dataset, val_records or None)
    evaluate: Callable[..., dict]        # (pipeline, manifest, **opts) -> report dict
    description: str = ""
    media_paths: Callable[..., dict] | None = None  # (manifests, modalities) -> {modality: [file paths]}
    # (mmlora cache-features); None: the task has no feature cache


def run_config_class(name: str, data_cls: type, default_task: str) -> type:
    """A run config dataclass ``{task, model, data, train, eval}`` for one data config type."""
    from dataclasses import make_dataclass

    return make_dataclass(name, [
        ("task", str, field(default=default_task)),
        ("model", ModelConfig, field(default_factory=ModelConfig)),
        ("data", data_cls, field(default_factory=data_cls)),
        ("train", TrainConfig, field(default_factory=TrainConfig)),
        ("eval", EvalConfig, field(default_factory=EvalConfig)),
    ])
