"""A release candidate from a GPU run's Whisper-decoder arm: the released ASR folder with the arm's trained decoder
and, where the arm trained one, its encoder LoRA put in place of the release's (docs/ASR.md "The released
checkpoint": the step every candidate since session 59 was made with, by hand until session 61).

    python scripts/asr_candidate.py PACKED ARM OUT [--release checkpoints/asr-smollm2-whisper-tiny] [--force]

PACKED is the folder ``scripts/remote/decoder_job.sh`` ships back (``packed/``): ``ARM.safetensors``, the arm's
decoder in 4 bits, and ``ARM_encoder/``, its encoder LoRA (an adapter folder; arms without ``ENC_LR`` have none and
keep the release's). OUT gets a copy of the release with those two replaced (``whisper_decoder.safetensors`` and
``whisper_encoder_adapters/``); it is written beside OUT and renamed into place, so a failed copy leaves nothing half
made. An existing OUT is replaced only with ``--force``. Then judge it:
``python scripts/release_rule.py NAME=OUT --rule 2 --jobs 2``.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mmlora.fsutil import replace_dir  # noqa: E402
from mmlora.lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS  # noqa: E402
from mmlora.model import WHISPER_DECODER, WHISPER_ENCODER  # noqa: E402

RELEASE = "checkpoints/asr-smollm2-whisper-tiny"


def check_decoder(path: Path) -> None:
    """``path`` is a readable safetensors file with tensors in it (else ValueError naming it)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            n = len(list(f.keys()))
    except Exception as e:  # safetensors raises its own error types for a damaged header
        raise ValueError(f"{path}: not a readable safetensors file ({e})") from e
    if n == 0:
        raise ValueError(f"{path}: holds no tensors")


def check_adapters(folder: Path) -> None:
    """``folder``, where it exists, is an adapter folder (else FileNotFoundError naming what it lacks)."""
    missing = [f for f in (ADAPTER_CONFIG, ADAPTER_WEIGHTS) if folder.exists() and not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder}: not an adapter folder (missing {', '.join(missing)})")


def staged_copy(base: Path, out: Path, force: bool) -> Path:
    """A copy of the model folder ``base`` beside ``out`` (``OUT.tmp``), to be changed and then renamed into place
    with :func:`mmlora.fsutil.replace_dir`; an existing ``out`` only with ``force``."""
    if not (base / "config.json").is_file():
        raise FileNotFoundError(f"{base}: not a model folder (no config.json)")
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists (--force replaces it)")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(base, tmp)
    return tmp


def make_candidate(packed: Path, arm: str, out: Path, release: Path, force: bool = False) -> list[str]:
    """Write OUT (see the module's doc); returns the names of the release's entries that were replaced."""
    decoder = packed / f"{arm}.safetensors"
    encoder = packed / f"{arm}_encoder"
    if not (release / "config.json").is_file():
        raise FileNotFoundError(f"{release}: not a model folder (no config.json)")
    if not decoder.is_file():
        have = sorted(p.stem for p in packed.glob("*.safetensors")) if packed.is_dir() else []
        raise FileNotFoundError(f"{decoder}: no such decoder (arms in {packed}: {', '.join(have) or 'none'})")
    check_decoder(decoder)
    check_adapters(encoder)
    tmp = staged_copy(release, out, force)
    shutil.copyfile(decoder, tmp / WHISPER_DECODER)
    replaced = [WHISPER_DECODER]
    if encoder.exists():
        shutil.rmtree(tmp / WHISPER_ENCODER, ignore_errors=True)
        shutil.copytree(encoder, tmp / WHISPER_ENCODER)
        replaced.append(WHISPER_ENCODER)
    replace_dir(tmp, out)  # the old OUT stays whole under a hidden name until the new one is in place
    return replaced


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("packed", type=Path, help="the run's packed/ folder (ARM.safetensors, ARM_encoder/)")
    ap.add_argument("arm", help="the arm's name (decoder_job.sh's ARMS entry)")
    ap.add_argument("out", type=Path, help="the candidate folder to write")
    ap.add_argument("--release", type=Path, default=Path(RELEASE), help=f"the released folder (default {RELEASE})")
    ap.add_argument("--force", action="store_true", help="replace OUT where it exists")
    a = ap.parse_args(argv)
    try:
        replaced = make_candidate(a.packed, a.arm, a.out, a.release, a.force)
    except (OSError, ValueError) as e:
        print(f"asr_candidate.py: {e}", file=sys.stderr)
        return 2
    print(f"{a.out}: {a.release} with {a.arm}'s {' and '.join(replaced)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
