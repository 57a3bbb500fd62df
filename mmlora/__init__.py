"""mmlora: frozen encoders + projectors + routed multi-LoRA on a frozen LLM."""
from .lora import (LoRASpec, MultiLoRALinear, adapter_parameters, attach, export_peft, load_adapters, merge,
                   reset, save_adapters, unmerge)
from .routing import RoutingPlan, routing

__version__ = "0.1.0"

__all__ = [
    "LoRASpec", "MultiLoRALinear", "attach", "merge", "unmerge", "reset", "adapter_parameters",
    "save_adapters", "load_adapters", "export_peft", "RoutingPlan", "routing", "load_pipeline",
]


def load_pipeline(*args, **kwargs):
    """Inference API (speech recognition, captioning): see :mod:`mmlora.pipelines`."""
    from .pipelines import load_pipeline as _load

    return _load(*args, **kwargs)
