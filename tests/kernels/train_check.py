"""A short training run of a tiny Llama with routed adapters, reference vs fused backend."""
from __future__ import annotations

import torch

from mmlora.kernels import forced_backend


def _run(device: str, dtype: torch.dtype, backend: str | None, steps: int, seed: int = 0) -> list[float]:
    import transformers as tf

    from mmlora.lora import LoRASpec, adapter_parameters, attach
    from mmlora.routing import RoutingPlan, routing

    with forced_backend(backend):
        torch.manual_seed(seed)
        cfg = tf.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
        model = tf.LlamaForCausalLM(cfg).to(device=device, dtype=dtype)
        attach(model, {"a": LoRASpec(8, 16), "b": LoRASpec(4, 8, use_rslora=True)},
               ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
        model.train()
        opt = torch.optim.AdamW(adapter_parameters(model), lr=1e-2)
        g = torch.Generator().manual_seed(seed + 1)
        ids = torch.randint(0, 128, (3, 24), generator=g).to(device)
        route = torch.randint(-1, 2, (3, 24), generator=g)
        plan = RoutingPlan.by_token(route, ["a", "b"])
        losses = []
        for _ in range(steps):
            with routing(model, plan):
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.detach().item())
        return losses


def loss_curves(device: str, dtype: torch.dtype, backend: str | None, steps: int = 10) -> tuple[list[float], list[float]]:
    """``(reference losses, losses with backend)``; ``backend=None`` is the device default."""
    return _run(device, dtype, "torch", steps), _run(device, dtype, backend, steps)
