"""Pack a trained Whisper decoder's weights (``scripts/whisper_decoder_probe.py --save``, 38 MB for tiny.en in float32)
into fewer bytes for a model folder's ``whisper_decoder.safetensors``: each weight matrix as its change from the
packaged Whisper's own decoder, in 8 or 4 bits a value (``mmlora.encoders.whisper_judge.pack_decoder_delta``; a
judge unpacks it as it loads), with ``--mix A`` only the share A of the training's change. Prints how far the packed
weights are from the (mixed) trained ones::

    python scripts/pack_whisper_decoder.py TRAINED.safetensors MODEL_DIR/whisper_decoder.safetensors --bits 4 [--mix 0.75]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmlora.fsutil import replace_file  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src", help="the trained decoder's weights (safetensors, as whisper_decoder_probe.py saves them)")
    ap.add_argument("dst", help="where the packed weights go (written to a temporary file, then renamed)")
    ap.add_argument("--bits", type=int, default=4, choices=[4, 8])
    ap.add_argument("--group", type=int, default=64, help="inputs of a row that share one scale")
    ap.add_argument("--whisper", default="whisper-tiny.en", help="the packaged Whisper whose decoder was trained")
    ap.add_argument("--mix", type=float, default=1.0, help="keep this share of the training's change (Whisper's "
                    "own weights + MIX x (trained - own), as weight-space ensembles of a fine-tuned model and its "
                    "start do: 1 = the trained decoder, 0 = Whisper's own)")
    a = ap.parse_args(argv)
    if not 0.0 <= a.mix <= 1.0:
        ap.error(f"--mix: a share in [0, 1], got {a.mix}")

    from safetensors.torch import load_file, save_file

    from mmlora.encoders.whisper_judge import (WhisperJudge, mix_decoder_state, pack_decoder_delta,
                                              unpack_decoder_state)

    try:
        trained = load_file(a.src)
    except Exception as e:  # noqa: BLE001 - a missing file, or safetensors' own SafetensorError
        raise SystemExit(f"{a.src}: not a readable safetensors file ({e})")
    own = WhisperJudge.load(a.whisper).decoder.state_dict()
    trained = mix_decoder_state(own, trained, a.mix)
    packed = pack_decoder_delta(trained, own, bits=a.bits, group=a.group)
    back = unpack_decoder_state(packed, own, a.src)
    worst = max(float((back[k] - v.float()).abs().max() / v.float().abs().max().clamp_min(1e-12))
                for k, v in trained.items())
    with replace_file(a.dst) as tmp:
        save_file(packed, str(tmp))
    print(json.dumps({"src": a.src, "dst": a.dst, "bits": a.bits, "group": a.group, "mix": a.mix,
                      "bytes": {"src": os.path.getsize(a.src), "dst": os.path.getsize(a.dst)},
                      "worst_error_of_a_weights_largest": round(worst, 6)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
