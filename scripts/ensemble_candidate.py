"""A release candidate that asks other trainings' judges for a second opinion: a model folder (by default the
release) with each named folder's trained Whisper decoder and judge encoder LoRA as a second judge
(``second_judges/NAME/``) and ``second_judge_weight`` in its saved generation settings (docs/ASR.md "Seeds";
``generate(second_judge_weight=…)``: the candidates ranked by ``(1 - v) * total + v * mean of the second judges``).

    python scripts/ensemble_candidate.py OUT s1=outputs/g66/cand/EA_S1 s2=outputs/g66/cand/EA_S2 --weight 0.1

Each NAME=DIR is a model folder with ``whisper_decoder.safetensors`` (and, where its judge read its own encoder LoRA,
``whisper_encoder_adapters/``), e.g. one that ``scripts/asr_candidate.py`` made. OUT is written beside itself and
renamed into place; an existing OUT is replaced only with ``--force``. ``--set KEY=VALUE`` saves other decoding
settings with it, e.g. session 67's ENSW8: ``--weight 0.45 --set ctc_weight=0.0 --set whisper_weight=0.8 --set
whisper_both=0.3 --set whisper_proposal=8``; ``--set 'confidence_gate={"judge": "trained", "below": -0.8}'`` (a JSON
object: :class:`mmlora.ctc.ConfidenceGate`, session 68) ranks where the folder's judge is unsure with other
weights. Then judge it:
``python scripts/release_rule.py NAME=OUT --rule 2 --jobs 2``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from asr_candidate import RELEASE, check_adapters, check_decoder, staged_copy  # noqa: E402

from mmlora.ctc import ConfidenceGate  # noqa: E402
from mmlora.fsutil import replace_dir  # noqa: E402
from mmlora.model import SECOND_JUDGES, WHISPER_DECODER, WHISPER_ENCODER  # noqa: E402

# the decoding's weights that --set may save beside second_judge_weight (chosen on validation: docs/ASR.md
# "Held-out voices for validation")
SETTABLE = {"ctc_weight", "whisper_weight", "whisper_both", "whisper_proposal", "num_beams", "confidence_gate"}


def make_ensemble(out: Path, judges: dict[str, Path], weight: float, base: Path, force: bool = False,
                  settings: dict | None = None) -> None:
    """Write OUT (see the module's doc); ``settings``: more generation settings to save (e.g. the other weights)."""
    if not judges:
        raise ValueError("name at least one second judge (NAME=DIR)")
    if not 0.0 < weight < 1.0:
        raise ValueError(f"--weight: the second judges' weight must be in (0, 1), got {weight}")
    unknown = sorted(set(settings or {}) - SETTABLE)
    if unknown:
        raise ValueError(f"--set {', '.join(unknown)}: not a decoding setting here ({', '.join(sorted(SETTABLE))})")
    for key, value in (settings or {}).items():  # a JSON object is confidence_gate's alone, and checked
        if isinstance(value, dict) != (key == "confidence_gate"):
            raise ValueError(f"--set {key}: " + ("a JSON object of its fields" if key == "confidence_gate"
                                                 else "a number, true or false"))
    ConfidenceGate.parse((settings or {}).get("confidence_gate"))
    for name, folder in judges.items():
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"{name!r}: a second judge's name is a plain folder name")
        check_decoder(folder / WHISPER_DECODER)
        check_adapters(folder / WHISPER_ENCODER)
    tmp = staged_copy(base, out, force)
    shutil.rmtree(tmp / SECOND_JUDGES, ignore_errors=True)  # the base's own second judges give way to these
    for name, folder in judges.items():
        (tmp / SECOND_JUDGES / name).mkdir(parents=True)
        shutil.copyfile(folder / WHISPER_DECODER, tmp / SECOND_JUDGES / name / WHISPER_DECODER)
        if (folder / WHISPER_ENCODER).exists():
            shutil.copytree(folder / WHISPER_ENCODER, tmp / SECOND_JUDGES / name / WHISPER_ENCODER)
    cfg = json.loads((tmp / "config.json").read_text())
    gen = cfg.setdefault("pipeline", {}).setdefault("generation", {})
    gen.update(settings or {})
    if not gen.get("whisper_weight"):
        shutil.rmtree(tmp)
        raise ValueError(f"{base}: its generation settings have no whisper_weight, beside which second judges weigh")
    gen["second_judge_weight"] = weight
    (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
    replace_dir(tmp, out)


def _setting(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"KEY=VALUE, got {text!r}")
    try:
        v = json.loads(value)  # numbers, true / false, a JSON object
    except json.JSONDecodeError:
        raise argparse.ArgumentTypeError(f"{key}: a number, true or false, got {value!r}") from None
    if not isinstance(v, (int, float, bool, dict)):
        raise argparse.ArgumentTypeError(f"{key}: a number, true or false (or a JSON object), got {value!r}")
    return key, v


def _judge(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"NAME=DIR, got {text!r}")
    return name, Path(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="the candidate folder to write")
    ap.add_argument("judges", nargs="+", type=_judge, help="NAME=DIR: a model folder whose trained judge joins")
    ap.add_argument("--weight", type=float, required=True, help="second_judge_weight, in (0, 1)")
    ap.add_argument("--base", type=Path, default=Path(RELEASE), help=f"the model folder to start from ({RELEASE})")
    ap.add_argument("--force", action="store_true", help="replace OUT where it exists")
    ap.add_argument("--set", type=_setting, action="append", default=[], metavar="KEY=VALUE",
                    help="another decoding setting saved with it (repeatable): " + ", ".join(sorted(SETTABLE)))
    a = ap.parse_args(argv)
    judges = dict(a.judges)
    if len(judges) != len(a.judges):
        print("ensemble_candidate.py: each second judge's NAME once", file=sys.stderr)
        return 2
    try:
        make_ensemble(a.out, judges, a.weight, a.base, a.force, dict(a.set))
    except (OSError, ValueError) as e:
        print(f"ensemble_candidate.py: {e}", file=sys.stderr)
        return 2
    extra = "".join(f", {k}={v}" for k, v in a.set)
    print(f"{a.out}: {a.base} with second judges {', '.join(judges)} at {a.weight}{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
