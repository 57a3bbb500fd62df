"""mmlora: frozen encoders + projectors + routed multi-LoRA on a frozen LLM.

The public names below are imported lazily (PEP 562), so ``mmlora --help`` and sub-commands
that need no torch start quickly. The routing context manager is ``mmlora.routing.routing``
(``mmlora.routing`` is its module).
"""
from __future__ import annotations

import importlib
from pathlib import Path

__version__ = "0.1.0"

# pyproject maps the checkout's top-level encoders/, projectors/, tasks/ and kernels/ to mmlora.<name>. A wheel or
# setuptools' editable finder resolves them; a path-based editable install, or running from the checkout root with
# the checkout itself on sys.path, does not. There the checkout root joins the package path so they resolve.
_CHECKOUT = Path(__file__).resolve().parent.parent
if (_CHECKOUT / "tasks" / "__init__.py").is_file() and not (Path(__file__).parent / "tasks").exists():
    __path__.append(str(_CHECKOUT))  # noqa: F821  (the package's own __path__)

_LAZY = {
    "LoRASpec": "lora", "MultiLoRALinear": "lora", "attach": "lora", "merge": "lora", "unmerge": "lora",
    "reset": "lora", "adapter_parameters": "lora", "save_adapters": "lora", "load_adapters": "lora",
    "export_peft": "lora", "RoutingPlan": "routing", "load_pipeline": "pipelines",
    "MultimodalLM": "model", "ModelConfig": "model",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mmlora' has no attribute {name!r}")
