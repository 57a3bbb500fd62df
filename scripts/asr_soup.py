"""A weight-space average ("model soup", Wortsman et al. 2022) of two release candidates that differ only in their
judge: two trainings of Whisper's decoder and its encoder LoRA by one recipe from the same start (session 65).

    python scripts/asr_soup.py A B OUT [--share 0.5] [--force]

OUT is A with ``whisper_decoder.safetensors`` = A's decoder + SHARE x (B's - A's) (both unpacked against the packaged
Whisper's own decoder, the mix packed again in the release's 4 bits, groups of 64) and ``whisper_encoder_adapters/``
= one LoRA whose weight change is exactly (1 - SHARE) of A's plus SHARE of B's (``mmlora.lora.mix_adapter_folders``:
the factors stacked, rank the sum; averaging the factors themselves would not be the average change). Every other
file of A and B must be the same bytes (else the folders are not two judges of one model: an error names the file).
Written beside OUT and renamed into place. Then judge it: ``python scripts/release_rule.py NAME=OUT --rule 2``.
"""
from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mmlora.fsutil import replace_dir  # noqa: E402
from mmlora.model import WHISPER_DECODER, WHISPER_ENCODER  # noqa: E402

JUDGE = (WHISPER_DECODER, WHISPER_ENCODER)


def _other_files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")
            if p.is_file() and p.relative_to(folder).parts[0] not in JUDGE}


def check_pair(a: Path, b: Path) -> None:
    """Both are model folders with a judge, the same in every other file (else ValueError / FileNotFoundError)."""
    for f in (a, b):
        for need in ("config.json", *JUDGE):
            if not (f / need).exists():
                raise FileNotFoundError(f"{f / need}: missing (a soup needs two model folders with a trained judge)")
    fa, fb = _other_files(a), _other_files(b)
    if fa != fb:
        raise ValueError(f"{a} and {b} hold different files: {sorted(fa ^ fb)[:5]}")
    for rel in sorted(fa):
        if not filecmp.cmp(a / rel, b / rel, shallow=False):
            raise ValueError(f"{rel} differs between {a} and {b}: a soup mixes the judges of one model only")


def soup_state(dec_a: dict, dec_b: dict, own: dict, share: float, bits: int = 4, group: int = 64) -> dict:
    """The packed decoder of ``unpack(A) + share x (unpack(B) - unpack(A))``, packed against ``own``."""
    from mmlora.encoders.whisper_judge import mix_decoder_state, pack_decoder_delta, unpack_decoder_state

    ua = unpack_decoder_state(dec_a, own, "A's decoder")
    ub = unpack_decoder_state(dec_b, own, "B's decoder")
    if set(ua) != set(ub):
        raise ValueError(f"the decoders hold different weights: {sorted(set(ua) ^ set(ub))[:5]}")
    return pack_decoder_delta(mix_decoder_state(ua, ub, share), own, bits=bits, group=group)


def make_soup(a: Path, b: Path, out: Path, own: dict, share: float = 0.5, force: bool = False) -> None:
    from safetensors.torch import load_file, save_file

    from mmlora.lora import mix_adapter_folders, read_adapter_folder, write_adapter_folder

    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share: in [0, 1], got {share}")
    check_pair(a, b)
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists (--force replaces it)")
    packed = soup_state(load_file(str(a / WHISPER_DECODER)), load_file(str(b / WHISPER_DECODER)), own, share)
    enc = mix_adapter_folders(read_adapter_folder(a / WHISPER_ENCODER), read_adapter_folder(b / WHISPER_ENCODER), share)
    tmp = out.with_name(f".tmp-{out.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(a, tmp)
    save_file(packed, str(tmp / WHISPER_DECODER))
    shutil.rmtree(tmp / WHISPER_ENCODER)
    write_adapter_folder(tmp / WHISPER_ENCODER, *enc)
    replace_dir(tmp, out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", type=Path, help="a candidate model folder (its files other than the judge are kept)")
    ap.add_argument("b", type=Path, help="another candidate of the same model")
    ap.add_argument("out", type=Path, help="the soup's model folder")
    ap.add_argument("--share", type=float, default=0.5, help="B's share of the judge's weights (0.5: the mean)")
    ap.add_argument("--whisper", default="whisper-tiny.en", help="the packaged Whisper whose decoder was trained")
    ap.add_argument("--force", action="store_true", help="replace OUT where it exists")
    a = ap.parse_args(argv)
    try:
        from mmlora.encoders.whisper_judge import WhisperJudge

        own = WhisperJudge.load(a.whisper).decoder.state_dict()
        make_soup(a.a, a.b, a.out, own, a.share, a.force)
    except (OSError, ValueError) as e:
        print(f"asr_soup.py: {e}", file=sys.stderr)
        return 2
    print(f"{a.out}: {a.a} with its judge mixed {1 - a.share:g} : {a.share:g} with {a.b}'s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
