"""A judge encoder LoRA moved part of the way from the release's (session 53; ``mmlora.lora.mix_adapter_folders``).

``scripts/whisper_decoder_probe.py --encoder-lr`` trains the judge's copy of the audio encoder's LoRA on from the
model's own (``encoder_adapters/audio/``); this writes an adapter folder whose weight change is ``(1 − share)`` of the
model's LoRA plus ``share`` of the trained one (rank the sum of both), for a model folder's
``whisper_encoder_adapters/``::

    python scripts/mix_encoder_lora.py MODEL/encoder_adapters/audio TRAINED_ENCODER OUT/whisper_encoder_adapters \\
        --share 0.5
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("base", help="the model's encoder LoRA (an adapter folder)")
    ap.add_argument("trained", help="the judge's trained encoder LoRA (--save-encoder's folder)")
    ap.add_argument("out", help="the mixed adapter folder to write")
    ap.add_argument("--share", type=float, default=0.5, help="the share of the trained LoRA's change kept")
    a = ap.parse_args(argv)
    if not 0.0 <= a.share <= 1.0:
        ap.error(f"--share: in [0, 1], got {a.share}")
    from mmlora.lora import mix_adapter_folders, read_adapter_folder, write_adapter_folder

    try:
        mixed = mix_adapter_folders(read_adapter_folder(a.base), read_adapter_folder(a.trained), a.share)
    except (OSError, ValueError) as e:
        ap.error(str(e))
    write_adapter_folder(a.out, *mixed)
    print(f"{a.out}: {len(mixed[0]['layers'])} layers, share {a.share}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
