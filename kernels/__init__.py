"""Kernels for routed multi-LoRA. Each op has a pure-torch reference with the same signature."""
from .lora import available_backends, lora_delta, lora_delta_reference, register_backend

__all__ = ["lora_delta", "lora_delta_reference", "register_backend", "available_backends"]
