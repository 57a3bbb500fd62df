"""Compare the two ways a trained lip reader's encoder LoRA can train, on its real weights: the live folded program
(the default since session 31) against the plain network (``encoder.folded_training=false``), and both against the
plain network in float64. One clip, a random projection of the features as the loss; prints the features' and the
adapters' gradients' largest differences relative to their largest values (the tests check the same in float64 on
random weights: tests/tasks/test_encoder_lora.py).

    python scripts/check_lip_encoder_paths.py outputs/lipreader_r25 data/open/op12/test.jsonl [--frames 40]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="a model folder with LoRA inside its lip encoder")
    p.add_argument("manifest", help="its first clip's video is read")
    p.add_argument("--frames", type=int, default=40)
    a = p.parse_args(argv)
    from mmlora.data.media import load_video
    from mmlora.model import MultimodalLM

    enc = MultimodalLM.from_pretrained(a.model).encoders["video"]
    row = json.loads(Path(a.manifest).read_text().splitlines()[0])
    clip = load_video(str(Path(a.manifest).parent / row["video"]))[: a.frames]
    params = [q for q in enc.parameters() if q.requires_grad]
    if not params:
        raise SystemExit(f"{a.model}: its lip encoder has no LoRA that trains")
    probe = None

    def run(folded: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        nonlocal probe
        enc.cfg.folded_training = folded
        for q in params:
            q.grad = None
        with torch.enable_grad():
            f = enc.encode([clip]).x
            if probe is None:
                probe = torch.randn(f.shape, generator=torch.Generator().manual_seed(0))
            (f * probe.to(f.dtype)).sum().backward()
        return f.detach().float(), [q.grad.float().clone() for q in params]

    f_live, g_live = run(True)
    f_plain, g_plain = run(False)
    enc.to(torch.float64)
    f_64, g_64 = run(False)

    def grads(x: list[torch.Tensor], y: list[torch.Tensor]) -> str:
        r = sorted(rel(u, v) for u, v in zip(x, y))
        return f"max {r[-1]:.2e}, median {r[len(r) // 2]:.2e}"

    print(f"{len(params)} adapter weights, {clip.shape[0]} frames")
    print(f"live vs plain (fp32): features {rel(f_live, f_plain):.2e}; gradients {grads(g_live, g_plain)}")
    print(f"live (fp32) vs float64: features {rel(f_live, f_64):.2e}; gradients {grads(g_live, g_64)}")
    print(f"plain (fp32) vs float64: features {rel(f_plain, f_64):.2e}; gradients {grads(g_plain, g_64)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
