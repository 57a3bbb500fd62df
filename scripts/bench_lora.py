"""Benchmark routed multi-LoRA training steps against the frozen base and PEFT (one process, one GPU).

Rows (each on a freshly built random-init Llama-style model, bf16, full train step =
forward + backward + AdamW on the adapters, median of ``--steps`` after ``--warmup``, CUDA events):

* ``frozen base``    — no adapters, gradients to activations only (the floor);
* ``PEFT LoRA``      — ``peft.get_peft_model``, dropout 0;
* ``mmlora single``  — one adapter on every token;
* ``mmlora routed``  — two adapters routed per token, 25 % / 75 % (MM-LoRA);
* ``mmlora per-sample`` — Phi-4-MM style: 3 adapters + one text-only sample, one adapter per sample;

each mmlora row for every backend in ``--backends`` (``triton``, ``fused`` = plain-torch fused
function, ``torch`` = reference). mmlora rows use the fused gated MLP (``attach(fused_mlp=True)``,
the default: down_proj's input is recomputed in backward instead of kept); ``--no-fused-mlp``
adds the same rows without it (backend column ``<backend>, no fused MLP``). Then a forward-only mixed-adapter inference comparison
against PEFT's ``adapter_names`` mixed batch, and (``--ops``) a per-op microbenchmark with
achieved bandwidth. Writes a Markdown report (``--out``).

    python scripts/bench_lora.py --out docs/bench_h200.md          # reference config (GPU)
    python scripts/bench_lora.py --tiny --device cpu --out /tmp/b.md  # smoke test (CPU, seconds)
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

ADAPTERS = ("vision", "speech", "extra", None)  # None: a text-only sample (base model)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass(frozen=True)
class BenchConfig:
    """Model, batch and measurement settings."""

    hidden: int = 2048            # d_model
    layers: int = 16              # decoder layers
    ffn: int = 5632               # MLP width
    heads: int = 32               # attention heads
    kv_heads: int = 4             # key/value heads (GQA)
    vocab: int = 32000            # vocabulary
    batch: int = 4                # sequences per step
    seq: int = 2048               # tokens per sequence
    rank: int = 16                # LoRA rank on every target
    alpha: float = 32.0           # LoRA alpha
    dtype: str = "bfloat16"       # model dtype
    steps: int = 10               # timed steps (median reported)
    warmup: int = 3               # untimed steps first (compilation, allocator, optimizer state)
    device: str = "cuda"          # "cuda" or "cpu"
    routed_frac: float = 0.25     # share of each sequence routed to the first adapter


TINY = BenchConfig(hidden=64, layers=2, ffn=128, heads=4, kv_heads=2, vocab=256, batch=4, seq=32, rank=4,
                   alpha=8.0, dtype="float32", steps=2, warmup=1, device="cpu")


def _sync(dev: str) -> None:
    if dev == "cuda":
        torch.cuda.synchronize()


def build_model(cfg: BenchConfig, seed: int = 0):
    import transformers as tf

    torch.manual_seed(seed)
    mcfg = tf.LlamaConfig(vocab_size=cfg.vocab, hidden_size=cfg.hidden, intermediate_size=cfg.ffn,
                          num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads,
                          num_key_value_heads=cfg.kv_heads, max_position_embeddings=max(cfg.seq, 64),
                          attn_implementation="sdpa")
    with torch.device(cfg.device):
        model = tf.LlamaForCausalLM(mcfg)
    model.to(getattr(torch, cfg.dtype))
    model.requires_grad_(False)
    model.enable_input_require_grads()  # every row gets activation gradients from the first layer on
    model.train()
    return model


def time_steps(cfg: BenchConfig, step) -> tuple[float, float, list[float]]:
    """Run ``step()`` warmup+steps times: (median ms, peak GiB, all ms)."""
    dev = cfg.device
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(cfg.warmup):
        step()
    _sync(dev)
    times, host = [], []
    for _ in range(cfg.steps):
        if dev == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            t0 = time.perf_counter()
            step()
            host.append((time.perf_counter() - t0) * 1e3)  # time to enqueue: ~= ms/step when host-bound
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
        else:
            t0 = time.perf_counter()
            step()
            times.append((time.perf_counter() - t0) * 1e3)
            host.append(times[-1])
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if dev == "cuda" else float("nan")
    time_steps.last_host = statistics.median(host)
    return statistics.median(times), peak, times


def time_graph(cfg: BenchConfig, model, params, ids, plan=None) -> float | None:
    """Median ms of the same train step captured once in a CUDA graph and replayed: the GPU's
    time with the host's launch overhead removed (AdamW ``capturable``). None if capture fails."""
    import contextlib

    from mmlora.routing import routing

    opt = torch.optim.AdamW(params, lr=1e-4, fused=True, capturable=True) if params else None

    def body():
        with (routing(model, plan) if plan is not None else contextlib.nullcontext()):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        if opt is not None:
            opt.step()

    g = None
    try:
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                if opt is not None:
                    opt.zero_grad(set_to_none=True)
                body()
        torch.cuda.current_stream().wait_stream(s)
        if opt is not None:
            opt.zero_grad(set_to_none=True)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            body()
        for _ in range(2):
            g.replay()
        torch.cuda.synchronize()
        ts = []
        for _ in range(cfg.steps):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            g.replay()
            b.record()
            b.synchronize()
            ts.append(a.elapsed_time(b))
        return statistics.median(ts)
    except Exception as e:  # noqa: BLE001 - report, keep the eager numbers
        print(f"graph capture failed: {type(e).__name__}: {str(e)[:300]}")
        torch.cuda.synchronize()
        return None
    finally:
        del g
        model.zero_grad(set_to_none=True)
        _free()


def make_step(model, params, ids, plan=None, fwd_kwargs=None):
    from mmlora.routing import routing

    opt = torch.optim.AdamW(params, lr=1e-4, fused=ids.is_cuda) if params else None

    def step():
        if plan is not None:
            with routing(model, plan):
                loss = model(input_ids=ids, labels=ids, **(fwd_kwargs or {})).loss
        else:
            loss = model(input_ids=ids, labels=ids, **(fwd_kwargs or {})).loss
        loss.backward()
        if opt is not None:
            opt.step()
            opt.zero_grad(set_to_none=True)
    return step


def _free():
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def plans(cfg: BenchConfig):
    from mmlora.routing import RoutingPlan

    n_first = int(round(cfg.routed_frac * cfg.seq))
    tok = torch.ones(cfg.batch, cfg.seq, dtype=torch.int32)
    tok[:, :n_first] = 0  # e.g. the image tokens at the start of each prompt go to the first adapter
    per_sample = [ADAPTERS[i % 4] for i in range(cfg.batch)]
    return {
        "single": (RoutingPlan.single("vision"), ["vision"]),
        "routed 25/75": (RoutingPlan.by_token(tok, ["vision", "speech"]), ["vision", "speech"]),
        "per-sample 3+text": (RoutingPlan.by_sample(per_sample), list(ADAPTERS[:3])),
    }


def profile_step(step, title: str, rows: int = 14) -> str:
    """Kernel-level profile of one step: top kernels by GPU time and the total GPU busy time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    avg = prof.key_averages()
    key = "self_device_time_total" if hasattr(avg[0], "self_device_time_total") else "self_cuda_time_total"
    busy = sum(getattr(e, key) for e in avg) / 1e3
    table = avg.table(sort_by=key, row_limit=rows, max_name_column_width=60)
    return f"[profile] {title}: GPU kernels busy {busy:.1f} ms per step\n{table}"


def run_training(cfg: BenchConfig, backends: list[str], log=print, profile: bool = False,
                 graph: bool = False, without_fused_mlp: bool = False) -> list[dict]:
    from mmlora.kernels import forced_backend
    from mmlora.lora import LoRASpec, adapter_parameters, attach

    rows = []
    ids = torch.randint(0, cfg.vocab, (cfg.batch, cfg.seq), device=cfg.device,
                        generator=torch.Generator(cfg.device).manual_seed(0))

    def record(name, backend, step_fn, graph_args=None):
        try:
            ms, peak, times = time_steps(cfg, step_fn)
        except Exception as e:  # noqa: BLE001 - one broken row must not lose the others
            log(f"{name} [{backend}] FAILED: {type(e).__name__}: {e}")
            return
        host = time_steps.last_host
        gms = time_graph(cfg, *graph_args) if graph and graph_args is not None else None
        rows.append(dict(variant=name, backend=backend, ms=ms, peak=peak, times=times, host=host, graph=gms))
        log(f"{name:24s} {backend:8s} {ms:9.2f} ms  host {host:8.2f} ms  graph {gms or float('nan'):8.2f} ms  "
            f"peak {peak:6.2f} GiB  (all: {[round(t, 1) for t in times]})")
        if profile and backend != "-":
            log(profile_step(step_fn, f"{name} [{backend}]"))

    model = build_model(cfg)
    base_step = make_step(model, [], ids)
    record("frozen base", "-", base_step, (model, [], ids))
    if profile:
        log(profile_step(base_step, "frozen base"))
    del model, base_step
    _free()

    try:
        import peft
        model = build_model(cfg)
        pcfg = peft.LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=0.0, target_modules=TARGETS)
        model = peft.get_peft_model(model, pcfg)
        trainable = [p for p in model.parameters() if p.requires_grad]
        record("PEFT LoRA, dropout 0", f"peft {peft.__version__}", make_step(model, trainable, ids),
               (model, trainable, ids))
        del model
        _free()
    except ImportError:
        log("peft not installed: PEFT row skipped")

    spec = LoRASpec(cfg.rank, cfg.alpha)
    for backend in backends:
        with forced_backend(backend):
            for fused_mlp in ((True, False) if without_fused_mlp else (True,)):
                label = backend if fused_mlp else f"{backend}, no fused MLP"
                for name, (plan, names) in plans(cfg).items():
                    model = build_model(cfg)
                    attach(model, {n: spec for n in names}, TARGETS, fused_mlp=fused_mlp)
                    params = [p for n in names for p in adapter_parameters(model, n)]
                    record(f"mmlora {name}", label, make_step(model, params, ids, plan), (model, params, ids, plan))
                    del model, params
                    _free()
    return rows


@torch.no_grad()
def run_inference(cfg: BenchConfig, backend: str, log=print) -> list[dict]:
    """Forward only, mixed adapters per sample: PEFT ``adapter_names`` vs mmlora by_sample."""
    import peft

    from mmlora.kernels import forced_backend
    from mmlora.lora import LoRASpec, attach
    from mmlora.routing import RoutingPlan, routing

    ids = torch.randint(0, cfg.vocab, (cfg.batch, cfg.seq), device=cfg.device,
                        generator=torch.Generator(cfg.device).manual_seed(1))
    per_sample = [ADAPTERS[i % 4] for i in range(cfg.batch)]
    icfg = replace(cfg, steps=max(cfg.steps, 10) if cfg.device == "cuda" else cfg.steps)
    rows = []

    def rec(name, fn):
        ms, peak, _ = time_steps(icfg, fn)
        rows.append(dict(variant=name, ms=ms, peak=peak))
        log(f"[infer] {name:34s} {ms:9.2f} ms  peak {peak:6.2f} GiB")

    model = build_model(cfg).eval()
    rec("frozen base", lambda: model(input_ids=ids))
    pcfg = peft.LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=0.0, target_modules=TARGETS,
                           init_lora_weights=False)
    pm = peft.get_peft_model(model, pcfg, adapter_name=ADAPTERS[0])
    pm.add_adapter(ADAPTERS[1], pcfg)
    pm.add_adapter(ADAPTERS[2], pcfg)
    pm.eval()
    names = [n if n is not None else "__base__" for n in per_sample]
    rec("PEFT adapter_names mixed batch", lambda: pm(input_ids=ids, adapter_names=names))
    del pm, model
    _free()
    model = build_model(cfg).eval()
    attach(model, {n: LoRASpec(cfg.rank, cfg.alpha) for n in ADAPTERS[:3]}, TARGETS)
    plan = RoutingPlan.by_sample(per_sample)

    def fwd():
        with routing(model, plan):
            model(input_ids=ids)
    with forced_backend(backend):
        rec(f"mmlora by_sample ({backend})", fwd)
    del model
    _free()
    return rows


def run_ops(cfg: BenchConfig, log=print) -> list[dict]:
    """GPU time of the LoRA work of one layer call beyond the base GEMM, per op set, at the
    reference shapes: eager (events around back-to-back calls: host-bound if launches dominate)
    and CUDA-graph replay (pure GPU time)."""
    from mmlora.kernels.lora_fused import torch_ops
    from mmlora.kernels.lora_triton import triton_ops

    dt = getattr(torch, cfg.dtype)
    T = cfg.batch * cfg.seq
    rows = []
    shapes = [("q/o D=N=%d R=%d" % (cfg.hidden, cfg.rank), cfg.hidden, cfg.hidden, cfg.rank, False),
              ("gate D=%d N=%d R=%d" % (cfg.hidden, cfg.ffn, cfg.rank), cfg.hidden, cfg.ffn, cfg.rank, False),
              ("down D=%d N=%d R=%d" % (cfg.ffn, cfg.hidden, cfg.rank), cfg.ffn, cfg.hidden, cfg.rank, False),
              ("gate routed 3 adapters R=%d" % (3 * cfg.rank), cfg.hidden, cfg.ffn, 3 * cfg.rank, True)]
    e = torch.tensor([], dtype=dt).element_size()
    for label, D, N, R, routed in shapes:
        x = torch.randn(T, D, device="cuda", dtype=dt)
        A = torch.randn(R, D, device="cuda", dtype=dt) * 0.02
        B = torch.randn(N, R, device="cuda", dtype=dt) * 0.02
        M = (torch.rand(T, R, device="cuda") < 0.3).float() * 2 if routed else torch.full((1, R), 2.0, device="cuda")
        y = torch.randn(T, N, device="cuda", dtype=dt)
        dy = torch.randn(T, N, device="cuda", dtype=dt)
        dx = torch.randn(T, D, device="cuda", dtype=dt)
        W = torch.randn(N, D, device="cuda", dtype=dt) * 0.02
        hm = torch_ops.forward(x, A, B, M, None, False)[2]
        cases = {  # name: (fn(ops) or fn(None) for the base, minimal extra bytes)
            "base fwd GEMM x W^T": (lambda o: x @ W.t(), None),
            "base bwd GEMM dy W": (lambda o: dy @ W, None),
            "LoRA fwd extra (shrink+expand in place)": (lambda o: o.forward(x, A, B, M, y, False),
                                                        e * (T * D + 2 * T * N + T * R)),
            "LoRA bwd extra (dh, dA, dB, dx in place)": (lambda o: o.backward(dy, x, A, B, M, hm, dx, True, False),
                                                         e * (T * N + T * D + 2 * T * D + T * R)),
        }
        for name, (fn, nbytes) in cases.items():
            r = dict(shape=label, op=name, floor_us=(nbytes or 0) / 4.3e12 * 1e6)
            for o in ((None,) if nbytes is None else (torch_ops, triton_ops)):
                key = "base" if o is None else o.name
                r[key + "_eager"] = _bench(lambda: fn(o)) * 1e3
                r[key + "_graph"] = _bench_graph(lambda: fn(o)) * 1e3
            rows.append(r)
            log("[ops] " + label + " | " + name + " | " + ", ".join(
                f"{k} {v:.1f}" for k, v in r.items() if k not in ("shape", "op")))
        del x, A, B, M, y, dy, dx, W, hm
    return rows


def _bench(fn, reps: int = 20) -> float:
    """ms per call, eager: events around ``reps`` back-to-back calls (median of 5)."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(5):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(reps):
            fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) / reps)
    return statistics.median(ts)


def _bench_graph(fn, reps: int = 20) -> float:
    """ms per call of ``fn`` captured in a CUDA graph (``reps`` calls per graph): GPU time only."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(reps):
            fn()
    g.replay()
    torch.cuda.synchronize()
    ts = []
    for _ in range(5):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) / reps)
    del g
    return statistics.median(ts)


def saved_activations(cfg: BenchConfig, backend: str = "fused", log=print) -> list[dict]:
    """GiB of distinct tensors autograd saves for backward in one training forward (parameters and
    views of them excluded, views of one tensor counted once), counted with ``saved_tensors_hooks`` on the ``meta`` device: shapes only, no GPU
    and no arithmetic, so the full reference config runs anywhere in seconds. Rows: frozen base,
    mmlora single without and with the fused gated MLP. (On meta, SDPA takes the math path and
    saves the attention probabilities, which the CUDA kernels do not: compare the differences.)"""
    import contextlib

    import transformers as tf

    from mmlora.kernels import forced_backend
    from mmlora.lora import LoRASpec, attach
    from mmlora.routing import RoutingPlan, routing

    mcfg = tf.LlamaConfig(vocab_size=cfg.vocab, hidden_size=cfg.hidden, intermediate_size=cfg.ffn,
                          num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads,
                          num_key_value_heads=cfg.kv_heads, max_position_embeddings=max(cfg.seq, 64),
                          attn_implementation="sdpa")
    ids = torch.zeros(cfg.batch, cfg.seq, dtype=torch.long, device="meta")
    rows = []
    with forced_backend(backend):
        for name, fused_mlp in (("frozen base", None), ("mmlora single, no fused MLP", False),
                                ("mmlora single, fused MLP", True)):
            with torch.device("meta"):
                model = tf.LlamaForCausalLM(mcfg)
            model.to(getattr(torch, cfg.dtype)).requires_grad_(False)
            model.enable_input_require_grads()
            model.train()
            plan = None
            if fused_mlp is not None:
                attach(model, {"a": LoRASpec(cfg.rank, cfg.alpha)}, TARGETS, fused_mlp=fused_mlp)
                plan = RoutingPlan.single("a")
            skip = {id(p) for p in model.parameters()}  # (attached adapters are parameters of the model too)
            saved: dict[int, int] = {}

            def pack(t, saved=saved, skip=skip):
                owner = t if t._base is None else t._base  # views count once, with what they view
                if id(owner) not in skip:
                    saved[id(owner)] = owner.numel() * owner.element_size()
                return t

            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                with routing(model, plan) if plan is not None else contextlib.nullcontext():
                    model(input_ids=ids, labels=ids)
            gib = sum(saved.values()) / 2 ** 30
            rows.append(dict(variant=name, gib=gib, n=len(saved)))
            log(f"[saved] {name:30s} {gib:8.3f} GiB in {len(saved)} tensors")
            del model
    return rows


def markdown(cfg: BenchConfig, rows: list[dict], inf_rows: list[dict], op_rows: list[dict], cmd: str) -> str:
    base = next(r for r in rows if r["variant"] == "frozen base")
    dev = torch.cuda.get_device_name() if cfg.device == "cuda" else "cpu"
    out = [f"Device: {dev}; torch {torch.__version__}; config: {cfg}", f"Command: `{cmd}`", "",
           "| variant | backend | ms/step | × frozen base | host ms/step | CUDA-graph ms/step | × base (graph) "
           "| peak GiB | × base memory |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        g, gb = r.get("graph"), base.get("graph")
        gcol = f"{g:.1f} | {g / gb:.3f}" if g and gb else "– | –"
        out.append(f"| {r['variant']} | {r['backend']} | {r['ms']:.1f} | {r['ms'] / base['ms']:.3f} | "
                   f"{r['host']:.1f} | {gcol} | {r['peak']:.2f} | {r['peak'] / base['peak']:.3f} |")
    if inf_rows:
        ib = inf_rows[0]
        out += ["", "Forward only (inference), mixed adapters per sample (3 adapters + 1 base sample):", "",
                "| variant | ms/forward | × frozen base |", "|---|---|---|"]
        out += [f"| {r['variant']} | {r['ms']:.1f} | {r['ms'] / ib['ms']:.3f} |" for r in inf_rows]
    if op_rows:
        out += ["", "One layer call at T = batch x seq (µs per call; eager = events around 20 back-to-back calls, "
                "graph = CUDA-graph replay = GPU time only; floor = minimal extra bytes / 4.3 TB/s):", "",
                "| shape | work | torch eager | torch graph | triton eager | triton graph | floor |",
                "|---|---|---|---|---|---|---|"]
        for r in op_rows:
            if "base_graph" in r:
                out.append(f"| {r['shape']} | {r['op']} | {r['base_eager']:.1f} | {r['base_graph']:.1f} | | | |")
            else:
                out.append(f"| {r['shape']} | {r['op']} | {r['torch_eager']:.1f} | {r['torch_graph']:.1f} | "
                           f"{r['triton_eager']:.1f} | {r['triton_graph']:.1f} | {r['floor_us']:.1f} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny model (CPU smoke test)")
    ap.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per row")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up steps per row")
    ap.add_argument("--layers", type=int, default=None, help="override the number of layers")
    ap.add_argument("--backends", default=None,
                    help="mmlora backends to measure (comma list; default triton,fused on CUDA, fused on the CPU)")
    ap.add_argument("--no-inference", action="store_true", help="skip the forward-only comparison")
    ap.add_argument("--ops", action="store_true", help="also run the per-op microbenchmark (CUDA)")
    ap.add_argument("--graph", action="store_true",
                    help="also time each step captured in a CUDA graph (GPU time without host overhead; CUDA)")
    ap.add_argument("--profile", action="store_true", help="print a kernel profile of one step per row (CUDA)")
    ap.add_argument("--saved", action="store_true",
                    help="only count the activation bytes saved for backward (meta device: no GPU, seconds) and exit")
    ap.add_argument("--no-fused-mlp", action="store_true",
                    help="also measure every mmlora row without the fused gated MLP (attach(fused_mlp=False))")
    ap.add_argument("--out", default=None, help="write the Markdown report here")
    args = ap.parse_args(argv)
    cfg = TINY if args.tiny else BenchConfig()
    dev = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    over = {k: v for k, v in dict(steps=args.steps, warmup=args.warmup, layers=args.layers).items() if v is not None}
    cfg = replace(cfg, device=dev, **over)
    if dev == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    if args.saved:
        rows = saved_activations(cfg)
        base = rows[0]["gib"]
        md = "\n".join([f"Saved-for-backward activations per training forward (meta device); config: {cfg}", "",
                        "| variant | saved GiB | − frozen base GiB |", "|---|---|---|"] +
                       [f"| {r['variant']} | {r['gib']:.3f} | {r['gib'] - base:+.3f} |" for r in rows]) + "\n"
        print(md)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(md)
        return 0
    backends = [b for b in (args.backends or ("triton,fused" if dev == "cuda" else "fused")).split(",") if b]
    from mmlora.kernels import available_backends

    if dev != "cuda" and "triton" in backends:
        print("error: the triton backend needs CUDA (use --backends fused,torch on the CPU)", file=sys.stderr)
        return 2

    unknown = [b for b in backends if b not in available_backends()]
    if unknown:
        print(f"error: unknown backends {unknown}; available: {available_backends()}", file=sys.stderr)
        return 2
    rows = run_training(cfg, backends, profile=args.profile and dev == "cuda", graph=args.graph and dev == "cuda",
                        without_fused_mlp=args.no_fused_mlp)
    inf_rows = [] if args.no_inference else run_inference(cfg, backends[0])
    op_rows = run_ops(cfg) if args.ops and dev == "cuda" else []
    md = markdown(cfg, rows, inf_rows, op_rows, "python " + " ".join([sys.argv[0], *(argv or sys.argv[1:])]))
    print(md)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
