"""Loading the frozen LLM and its tokenizer: a local HF folder, a shipped asset, or a random
tiny model (``random:tiny``) with a byte-level tokenizer for tests and CPU recipes."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["LLMConfig", "load_llm", "byte_tokenizer", "CHATML_TEMPLATE", "DTYPES"]

CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}

# random tiny presets (Llama architecture): name -> config overrides
_RANDOM_PRESETS = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2),
    "small": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2),
}


@dataclass
class LLMConfig:
    """Which frozen decoder to load."""

    path: str = "random:tiny"  # HF folder, shipped asset name ("smollm2-135m"), or "random:<preset>"
    dtype: str = "float32"     # weights dtype: float32 | bfloat16 | float16
    seed: int = 0              # init seed for random:* models
    attn_implementation: str = "sdpa"  # passed to from_pretrained / the config
    # let scaled_dot_product_attention pick cuDNN's kernel on CUDA (False: flash / memory-efficient / math only).
    # cuDNN is torch's first choice on Hopper and plans every new sequence length: 104-147 ms (forward + backward)
    # at a length not seen before against ~1 ms at a repeat, where the memory-efficient kernel takes 0.6-1.0 ms at
    # both (H200, torch 2.11, cuDNN 9.19; docs/PERFORMANCE.md). Training and decoding batches have new lengths on
    # most steps. Covers the LLM and the encoders run inside the model (Whisper's attention too).
    cudnn_attention: bool = False


def attention_backends(cfg: LLMConfig, device: torch.device | str):
    """Context for a model call on ``device``: SDPA without its cuDNN backend (``cfg.cudnn_attention`` False, on
    CUDA), else nothing changed. The backward of an attention call uses the kernel its forward chose."""
    if cfg.cudnn_attention or torch.device(device).type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def byte_tokenizer():
    """A byte-level tokenizer (256 byte symbols + ChatML specials) that needs no files."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    specials = ["<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    vocab = {tok: i for i, tok in enumerate(specials)}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="<|im_end|>",
                                 additional_special_tokens=["<|im_start|>", "</s>"])
    hf.chat_template = CHATML_TEMPLATE
    return hf


def _resolve_path(path: str) -> str:
    if os.path.isdir(path):
        return path
    try:
        from . import assets
    except ImportError as e:  # pragma: no cover - assets module missing
        raise FileNotFoundError(f"LLM path {path!r} is not a folder and assets are unavailable ({e})") from None
    return str(assets.ensure(path))


def load_llm(cfg: LLMConfig) -> tuple[nn.Module, object]:
    """Return ``(causal_lm, tokenizer)``, the LM in eval mode with every parameter frozen."""
    import transformers as tf

    dtype = DTYPES.get(cfg.dtype)
    if dtype is None:
        raise ValueError(f"llm.dtype must be one of {sorted(DTYPES)}, got {cfg.dtype!r}")
    if cfg.path.startswith("random:"):
        preset = cfg.path.split(":", 1)[1]
        if preset not in _RANDOM_PRESETS:
            raise ValueError(f"unknown random LLM preset {preset!r}; choose from {sorted(_RANDOM_PRESETS)}")
        tokenizer = byte_tokenizer()
        torch.manual_seed(cfg.seed)
        config = tf.LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=4096,
                                pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                                eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True,
                                **_RANDOM_PRESETS[preset])
        config._attn_implementation = cfg.attn_implementation
        model = tf.LlamaForCausalLM(config).to(dtype)
    else:
        path = _resolve_path(cfg.path)
        tokenizer = tf.AutoTokenizer.from_pretrained(path)
        model = tf.AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=cfg.attn_implementation)
        if tokenizer.chat_template is None:
            tokenizer.chat_template = CHATML_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, tokenizer
