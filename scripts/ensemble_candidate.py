"""A release candidate that asks other trainings' judges for a second opinion: a model folder (by default the
release) with each named folder's trained Whisper decoder and judge encoder LoRA as a second judge
(``second_judges/NAME/``) and ``second_judge_weight`` in its saved generation settings (docs/ASR.md "Seeds";
``generate(second_judge_weight=…)``: the candidates ranked by ``(1 - v) * total + v * mean of the second judges``).

    python scripts/ensemble_candidate.py OUT s1=outputs/g66/cand/EA_S1 s2=outputs/g66/cand/EA_S2 --weight 0.1

Each NAME=DIR is a model folder with ``whisper_decoder.safetensors`` (and, where its judge read its own encoder LoRA,
``whisper_encoder_adapters/``), e.g. one that ``scripts/asr_candidate.py`` made. OUT is written beside itself and
renamed into place; an existing OUT is replaced only with ``--force``. Then judge it:
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
from asr_candidate import RELEASE, check_decoder  # noqa: E402

from mmlora.fsutil import replace_dir  # noqa: E402
from mmlora.lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS  # noqa: E402
from mmlora.model import SECOND_JUDGES, WHISPER_DECODER, WHISPER_ENCODER  # noqa: E402


def make_ensemble(out: Path, judges: dict[str, Path], weight: float, base: Path, force: bool = False) -> None:
    """Write OUT (see the module's doc)."""
    if not (base / "config.json").is_file():
        raise FileNotFoundError(f"{base}: not a model folder (no config.json)")
    if not judges:
        raise ValueError("name at least one second judge (NAME=DIR)")
    if not 0.0 < weight < 1.0:
        raise ValueError(f"--weight: the second judges' weight must be in (0, 1), got {weight}")
    for name, folder in judges.items():
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"{name!r}: a second judge's name is a plain folder name")
        check_decoder(folder / WHISPER_DECODER)
        enc = folder / WHISPER_ENCODER
        missing = [f for f in (ADAPTER_CONFIG, ADAPTER_WEIGHTS) if enc.exists() and not (enc / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{enc}: not an adapter folder (missing {', '.join(missing)})")
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists (--force replaces it)")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(base, tmp)
    shutil.rmtree(tmp / SECOND_JUDGES, ignore_errors=True)  # the base's own second judges give way to these
    for name, folder in judges.items():
        (tmp / SECOND_JUDGES / name).mkdir(parents=True)
        shutil.copyfile(folder / WHISPER_DECODER, tmp / SECOND_JUDGES / name / WHISPER_DECODER)
        if (folder / WHISPER_ENCODER).exists():
            shutil.copytree(folder / WHISPER_ENCODER, tmp / SECOND_JUDGES / name / WHISPER_ENCODER)
    cfg = json.loads((tmp / "config.json").read_text())
    gen = cfg.setdefault("pipeline", {}).setdefault("generation", {})
    if not gen.get("whisper_weight"):
        shutil.rmtree(tmp)
        raise ValueError(f"{base}: its generation settings have no whisper_weight, beside which second judges weigh")
    gen["second_judge_weight"] = weight
    (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
    replace_dir(tmp, out)


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
    a = ap.parse_args(argv)
    judges = dict(a.judges)
    if len(judges) != len(a.judges):
        print("ensemble_candidate.py: each second judge's NAME once", file=sys.stderr)
        return 2
    try:
        make_ensemble(a.out, judges, a.weight, a.base, a.force)
    except (OSError, ValueError) as e:
        print(f"ensemble_candidate.py: {e}", file=sys.stderr)
        return 2
    print(f"{a.out}: {a.base} with second judges {', '.join(judges)} at {a.weight}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
