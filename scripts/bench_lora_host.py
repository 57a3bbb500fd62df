"""Host (Python) cost of mmlora's LoRA layer calls, measured on the CPU with tiny tensors.

On the GPU the eager training step of the reference config is host-bound (docs/PERFORMANCE.md):
what limits it is the Python time per MultiLoRALinear call, not the arithmetic. With tiny
tensors on the CPU the arithmetic is negligible, so wall time ≈ host time. Two measurements:

* ``layers``: a chain of ``7 × layers`` MultiLoRALinear (d → d) called on ``[4, T/4, d]``,
  forward + backward, against the same chain of plain ``nn.Linear`` (frozen, input gradient
  only, like the frozen base). Reported: µs per layer call (forward + backward) and the extra
  over ``nn.Linear``.
* ``triton-python``: the Python of ``TritonOps.forward``/``backward`` with the kernels stubbed.
* ``model``: one forward + backward of a tiny Llama (``layers`` decoder layers, LoRA on
  q,k,v,o,gate,up,down), ms per step and extra µs per LoRA layer call over the frozen base.

Routing modes: ``single`` (one adapter on every token), ``routed`` (two adapters by token, 25 %
/ 75 %), ``per-sample`` (3 adapters + one text-only sample), ``soft`` (two adapters, soft
weights that train).

    MMLORA_KERNELS=fused python scripts/bench_lora_host.py            # defaults: 16 layers, T=8, d=64
    python scripts/bench_lora_host.py --what triton-python            # Python around TritonOps' launches
"""
from __future__ import annotations

import argparse
import inspect
import os
import statistics
import sys
import time
from dataclasses import dataclass

import torch
from torch import nn

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
MODES = ("single", "routed", "per-sample", "soft")


@dataclass(frozen=True)
class HostBenchConfig:
    """What to measure."""

    layers: int = 16         # decoder layers (7 LoRA targets each)
    tokens: int = 8          # tokens per call, as [4, tokens // 4]
    dim: int = 64            # width of every projection (ffn = 2 × dim in the model measurement)
    rank: int = 4            # LoRA rank
    iters: int = 30          # forward+backward passes per timing sample
    repeats: int = 7         # timing samples (the median is reported)
    fused_mlp: bool = True   # model measurement: use the fused gated-MLP path where available


def plan_for(mode: str, batch: int, seq: int, names_out: list[str]):
    from mmlora.routing import RoutingPlan

    if mode == "single":
        names_out[:] = ["a"]
        return RoutingPlan.single("a")
    if mode == "routed":
        names_out[:] = ["a", "b"]
        tok = torch.ones(batch, seq, dtype=torch.int32)
        tok[:, : max(1, seq // 4)] = 0
        return RoutingPlan.by_token(tok, ["a", "b"])
    if mode == "per-sample":
        names_out[:] = ["a", "b", "c"]
        return RoutingPlan.by_sample([("a", "b", "c", None)[i % 4] for i in range(batch)])
    if mode == "soft":
        names_out[:] = ["a", "b"]
        w = torch.rand(batch, seq, 2, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
        return RoutingPlan.soft(w, ["a", "b"])
    raise ValueError(f"unknown mode {mode!r}; choose from {MODES}")


def _time(fn, cfg: HostBenchConfig) -> float:
    """Median seconds of one ``fn()`` over ``repeats`` samples of ``iters`` calls."""
    for _ in range(3):
        fn()
    samples = []
    for _ in range(cfg.repeats):
        t0 = time.perf_counter()
        for _ in range(cfg.iters):
            fn()
        samples.append((time.perf_counter() - t0) / cfg.iters)
    return statistics.median(samples)


def bench_layers(cfg: HostBenchConfig, modes, log=print) -> dict[str, float]:
    """µs per layer call (forward + backward) of a MultiLoRALinear chain, and of nn.Linear."""
    from mmlora.lora import LoRASpec, MultiLoRALinear
    from mmlora.routing import install_plan

    n = 7 * cfg.layers
    torch.manual_seed(0)
    bases = [nn.Linear(cfg.dim, cfg.dim, bias=False).requires_grad_(False) for _ in range(n)]
    x0 = torch.randn(4, cfg.tokens // 4, cfg.dim)

    def chain(mods):
        def step():
            x = x0.detach().requires_grad_(True)
            y = x
            for m in mods:
                y = m(y)
            y.sum().backward()
        return step

    out = {"nn.Linear": _time(chain(bases), cfg) / n * 1e6}
    log(f"[layers] nn.Linear (frozen)        {out['nn.Linear']:7.1f} us/call")
    for mode in modes:
        names: list[str] = []
        plan = plan_for(mode, 4, cfg.tokens // 4, names)
        mods = nn.Sequential()
        for b in bases:
            layer = MultiLoRALinear(b)
            for nm in names:
                layer.add_adapter(nm, LoRASpec(cfg.rank, 2.0 * cfg.rank))
            mods.append(layer)
        install_plan(mods, plan)
        us = _time(chain(list(mods)), cfg) / n * 1e6
        out[mode] = us
        log(f"[layers] MultiLoRALinear {mode:12s} {us:7.1f} us/call  (+{us - out['nn.Linear']:6.1f} over nn.Linear)")
    return out


def bench_model(cfg: HostBenchConfig, modes, log=print) -> dict[str, float]:
    """ms per forward+backward of a tiny Llama: frozen base and each routing mode."""
    import transformers as tf

    from mmlora.lora import LoRASpec, adapter_parameters, attach
    from mmlora.routing import routing

    seq = cfg.tokens // 4

    def build():
        torch.manual_seed(0)
        mc = tf.LlamaConfig(vocab_size=128, hidden_size=cfg.dim, intermediate_size=2 * cfg.dim,
                            num_hidden_layers=cfg.layers, num_attention_heads=4, num_key_value_heads=2,
                            max_position_embeddings=64)
        m = tf.LlamaForCausalLM(mc).train()
        m.requires_grad_(False)
        m.enable_input_require_grads()
        return m

    ids = torch.randint(0, 128, (4, seq), generator=torch.Generator().manual_seed(0))
    base = build()

    def base_step():
        base(input_ids=ids, labels=ids).loss.backward()

    out = {"base": _time(base_step, cfg) * 1e3}
    log(f"[model] frozen base                {out['base']:7.2f} ms/step")
    calls = 7 * cfg.layers
    for mode in modes:
        names: list[str] = []
        plan = plan_for(mode, 4, seq, names)
        m = build()
        kw = {"fused_mlp": False} if not cfg.fused_mlp and "fused_mlp" in inspect.signature(attach).parameters else {}
        attach(m, {nm: LoRASpec(cfg.rank, 2.0 * cfg.rank) for nm in names}, TARGETS, **kw)

        params = adapter_parameters(m)

        def step(m=m, plan=plan, params=params):
            with routing(m, plan):
                loss = m(input_ids=ids, labels=ids).loss
            loss.backward()
            for p in params:  # what an optimizer's zero_grad does
                p.grad = None

        ms = _time(step, cfg) * 1e3
        out[mode] = ms
        log(f"[model] {mode:12s} {ms:7.2f} ms/step  (+{(ms - out['base']) * 1e3 / calls:6.1f} us per LoRA layer call)")
    return out


def bench_triton_python(cfg: HostBenchConfig, log=print) -> dict[str, float]:
    """µs of Python around the Triton launches of one ``TritonOps`` forward / backward, with the
    kernels replaced by stubs (no GPU needed; Triton's own launcher cost is not included)."""
    import mmlora.kernels.lora_triton as lt

    class _Stub:
        def __getitem__(self, grid):
            return lambda *a, **k: None

    saved = lt._fwd_kernel, lt._bwd_kernel
    lt._fwd_kernel, lt._bwd_kernel = _Stub(), _Stub()
    try:
        ops = lt.TritonOps()
        T, d, r = cfg.tokens, cfg.dim, cfg.rank
        x, y, dy, dx = (torch.randn(T, d) for _ in range(4))
        A, B, M, hm = torch.randn(r, d), torch.randn(d, r), torch.randn(1, r), torch.randn(T, r)
        n = cfg.iters * 100
        out = {}
        for name, fn in (("forward", lambda: ops.forward(x, A, B, M, y, False)),
                         ("backward", lambda: ops.backward(dy, x, A, B, M, hm, dx, True, False))):
            fn()
            best = float("inf")
            for _ in range(cfg.repeats):
                t0 = time.perf_counter()
                for _ in range(n):
                    fn()
                best = min(best, (time.perf_counter() - t0) / n)
            out[name] = best * 1e6
            log(f"[triton-python] TritonOps.{name:8s} {out[name]:6.1f} us/call (kernels stubbed)")
        return out
    finally:
        lt._fwd_kernel, lt._bwd_kernel = saved


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=16, help="decoder layers (7 LoRA calls each)")
    ap.add_argument("--tokens", type=int, default=8, help="tokens per call (multiple of 4)")
    ap.add_argument("--dim", type=int, default=64, help="projection width")
    ap.add_argument("--iters", type=int, default=30, help="passes per timing sample")
    ap.add_argument("--repeats", type=int, default=7, help="timing samples (median)")
    ap.add_argument("--modes", default=",".join(MODES), help="comma list of " + ", ".join(MODES))
    ap.add_argument("--what", default="layers,model", help="comma list of layers, model, triton-python")
    ap.add_argument("--no-fused-mlp", action="store_true", help="model: attach without the fused gated-MLP path")
    args = ap.parse_args(argv)
    if args.tokens % 4 or args.tokens < 4:
        print("error: --tokens must be a positive multiple of 4", file=sys.stderr)
        return 2
    modes = [m for m in args.modes.split(",") if m]
    bad = [m for m in modes if m not in MODES]
    if bad:
        print(f"error: unknown modes {bad}; choose from {MODES}", file=sys.stderr)
        return 2
    cfg = HostBenchConfig(layers=args.layers, tokens=args.tokens, dim=args.dim, iters=args.iters,
                          repeats=args.repeats, fused_mlp=not args.no_fused_mlp)
    torch.set_num_threads(1)  # host cost is one thread's; keeps the numbers stable on a shared machine
    print(f"torch {torch.__version__}, MMLORA_KERNELS={os.environ.get('MMLORA_KERNELS', '')!r}, {cfg}")
    what = set(args.what.split(","))
    if "layers" in what:
        bench_layers(cfg, modes)
    if "model" in what:
        bench_model(cfg, modes)
    if "triton-python" in what:
        bench_triton_python(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
