"""Other pickers over the candidates one decoding kept (``mmlora evaluate --candidates``): more scores beside the
LLM's, the CTC head's and the judges', and other ways to choose, each tried on validation sets in seconds.

    python scripts/picker_probe.py outputs/g63/cands/EK60_stval.json --manifest data/speech_release/st/val.jsonl \\
        --text-lm --judge whisper-base --scores outputs/g64/stval_scores.json \\
        --lm-weight 0,0.1,0.2 --judge-weight 0,0.1,0.2 --length-bonus -0.5,0,0.5 --vote 0,1 --mbr 0,1,2

Each candidate's total is first the decoding's own (:func:`mmlora.ctc.rescore_beams`, with the decoding's weights
unless ``--ctc-weight`` / ``--whisper-weight`` / ``--whisper-both`` say otherwise), then

- ``--lm-weight w``: ``(1 - w - v) * total + w * lm + v * judge`` with ``--judge-weight v``; ``lm`` is the packaged
  SmolLM2's log-probability of the text alone (``--text-lm``: no audio, no LoRA: a language-model prior), ``judge``
  another Whisper's complete model (``--judge whisper-base``: its own encoder and decoder) on the clip, or the
  mean of several (``--judge`` again: e.g. the trained judges of runs with other seeds, a score ensemble);
- ``--length-bonus b``: ``+ b`` a word; ``--vote c``: ``+ c * log(how many candidates read the same text)``;
- ``--mbr T``: with ``T > 0`` the candidate of least expected word errors against the others, each weighted by
  ``softmax(total / T)`` (minimum Bayes risk); 0 the best total.

``--write-second DIR`` (session 69) writes each candidates file again to ``DIR`` (same name) with every row's
``second`` (the decoding's second judges' mean score) replaced by the mean of the ``--judge`` scores, and prints
nothing else: ``rescore_candidates.py`` then sweeps ``--second-weight`` and ``--gate`` over them as if the decoding
had asked those judges (e.g. more seeds of the trained judge); the report beside each file is copied too, so that
``--reports`` reads them.

The extra scores take minutes on the CPU; with ``--scores FILE`` they are kept there and read again next time. A
clip the decoding cut into pieces is cut again as the decoding did (:func:`mmlora.pipelines.cut_long_audio` at the
``piece_samples`` of the report beside its candidates file; for reports before session 71 its ``piece_seconds``, or
``--piece-seconds``, within the judge's Whisper window), each piece's candidates scored
on its own audio (until session 70 they got 0, which ``--write-second`` passed on as "no second judges" there).
One JSON line a combination, as ``rescore_candidates.py`` prints them; every extra weight at 0 gives its picks
exactly. Choose on validation sets only.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import torch
from torch import Tensor

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "scripts"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from rescore_candidates import (_floats, _with_totals, errors, load, own_weights, rows_of,  # noqa: E402
                                second_weight)
from release_rule import report_of  # noqa: E402

from mmlora.ctc import row_totals  # noqa: E402
from mmlora.fsutil import replace_text  # noqa: E402
from mmlora.metrics.wer import normalize_text  # noqa: E402
from mmlora.pipelines import join_pieces, tidy_text  # noqa: E402


def base_total(row: dict, ctc: float, judge: float, share: float, second: float = 0.0) -> Tensor:
    """The decoding's own total of each candidate (:func:`mmlora.ctc.row_totals`: rescore_beams' arithmetic)."""
    return row_totals(row, ctc, judge, share, second_weight=second).float()


def word_edits(a: str, b: str) -> int:
    """Word substitutions, deletions and insertions between two normalized texts."""
    import jiwer

    if not a or not b:
        return len((a or b).split())
    o = jiwer.process_words(a, b)
    return o.substitutions + o.deletions + o.insertions


def pick(row: dict, total: Tensor, lb: float, vote: float, mbr: float) -> str:
    """The candidate of ``row`` chosen from ``total`` with the length bonus, the vote and minimum Bayes risk."""
    texts = row["texts"]
    if "_keys" not in row:  # the same for every combination of a grid: made once a row
        row["_keys"] = [normalize_text(tidy_text(t)) for t in texts]
    keys = row["_keys"]
    t = total + lb * torch.tensor([float(len(k.split())) for k in keys])
    if vote:
        t = t + vote * torch.log(torch.tensor([float(keys.count(k)) for k in keys]))
    if not mbr:
        return texts[int(t.argmax())]  # the first of equal maxima, as rescore_beams
    if "_edits" not in row:
        row["_edits"] = [[word_edits(a, b) for b in keys] for a in keys]
    risk = torch.tensor(row["_edits"], dtype=torch.float) @ torch.softmax(t / mbr, 0)
    return texts[int(risk.argmin())]


def hypotheses(doc: dict, weights: tuple[float, float, float], lm: float = 0.0, judge: float = 0.0, lb: float = 0.0,
               vote: float = 0.0, mbr: float = 0.0) -> list[str]:
    """Each utterance's transcript with these weights and choices."""
    rows, owner = rows_of(doc)
    picks = []
    for i, row in enumerate(rows):
        total = base_total(row, *weights, second_weight(doc["decoding"]))
        extra = [(w, k) for w, k in ((lm, "lm"), (judge, "judge")) if w]
        for w, k in extra:
            if k not in row:
                raise SystemExit(f"piece {i}: no '{k}' scores (run with --{'text-lm' if k == 'lm' else 'judge'})")
        if extra:
            total = (1 - sum(w for w, _ in extra)) * total + sum(w * torch.tensor(row[k]) for w, k in extra)
        picks.append(pick(row, total, lb, vote, mbr))
    return join_pieces(picks, owner, len(doc["utterances"]))


def text_lm_scores(rows: list[dict], threads: int = 1) -> None:
    """``row["lm"]``: the packaged SmolLM2's summed log-probability of each candidate's text alone, after the
    tokenizer's start token and up to a newline."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mmlora.assets import llm_path

    torch.set_num_threads(threads)
    path = llm_path()
    tok = AutoTokenizer.from_pretrained(path)
    lm = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    for row in rows:
        texts = [(tok.bos_token or "") + tidy_text(t) + "\n" for t in row["texts"]]
        enc = tok(texts, return_tensors="pt", padding=True)
        with torch.no_grad():
            logp = lm(**enc).logits.float().log_softmax(-1)
        taken = logp[:, :-1].gather(-1, enc.input_ids[:, 1:, None])[..., 0] * enc.attention_mask[:, 1:]
        row["lm"] = taken.sum(1).tolist()


def judge_scores(doc: dict, manifest: Path, name: str, threads: int = 1, key: str = "judge",
                 piece_seconds: float | None = None, piece_samples: int | None = None) -> None:
    """``row[key]``: Whisper ``name``'s complete model (its own encoder and decoder) scoring each candidate of
    each clip, its audio read from ``manifest`` as the decoding read it (:func:`mmlora.data.media.load_audio`); a
    clip decoded in pieces is cut again as the decoding cut it (``piece_samples``, its report's exact piece length;
    reports before session 71 give only ``piece_seconds``, which cuts as :func:`mmlora.pipelines.piece_limit` does
    within the judge's Whisper window) and each piece's row scored on its piece. A model folder's path for ``name``
    (one with ``config.json``) asks that folder's trained judge instead (its ``whisper_decoder.safetensors`` reading
    its judge encoder: another training's judge beside the decoding's)."""
    from mmlora.data.media import SAMPLE_RATE, load_audio
    from mmlora.encoders.whisper_judge import WhisperJudge
    from mmlora.pipelines import cut_long_audio, piece_limit

    torch.set_num_threads(threads)
    encoder = None
    if (Path(name) / "config.json").is_file():
        from mmlora.model import MultimodalLM

        model = MultimodalLM.from_pretrained(name, llm={"dtype": "float32"})
        judge, encoder = model.whisper_judge(), model.judge_encoder()
        if not model.whisper_decoder_state:
            raise SystemExit(f"{name}: no trained judge ({name}/whisper_decoder.safetensors)")
    else:
        judge = WhisperJudge.load(name)
    lines = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    audio = {r["id"]: manifest.parent / r["audio"] for r in lines}
    for u in doc["utterances"]:
        if u.get("id") not in audio:
            raise SystemExit(f"{manifest}: no clip {u.get('id')!r} of the candidates file")
        waves = [load_audio(audio[u["id"]])]
        if len(u["pieces"]) != 1:
            if not (piece_samples or piece_seconds):
                raise SystemExit(f"{audio[u['id']]}: decoded in {len(u['pieces'])} pieces, and no piece_seconds "
                                 "(the report beside the candidates file has none: give --piece-seconds)")
            limit = piece_samples or piece_limit(judge.padded_encoder().max_samples, piece_seconds)
            waves, _ = cut_long_audio(waves, limit)
            if len(waves) != len(u["pieces"]):
                raise SystemExit(f"{audio[u['id']]}: cut into {len(waves)} pieces at {limit / SAMPLE_RATE:g} s, the "
                                 f"decoding into {len(u['pieces'])}")
        with torch.no_grad():
            for row, wave in zip(u["pieces"], waves):
                row[key] = judge.score(judge.frames(wave, encoder), row["texts"]).tolist()


PIECES_SCORED = "judge_pieces_scored"  # a store's mark: its judges scored the clips in pieces (session 70)


def add_scores(doc: dict, a: argparse.Namespace, manifest: Path | None, store: Path | None,
               piece_seconds: float | None = None, piece_samples: int | None = None) -> None:
    """The extra scores asked for, read from ``store`` where it has them, else computed (and written there): ``lm``,
    and each judge's under ``judge:NAME``; ``row["judge"]`` is then the mean of the judges named. A store written
    before the judges scored clips in pieces (no :data:`PIECES_SCORED` mark) has its judges' scores computed again."""
    rows, _ = rows_of(doc)
    kept = json.loads(store.read_text()) if store and store.exists() else {}
    if not kept.get(PIECES_SCORED):
        kept = {k: v for k, v in kept.items() if not k.startswith("judge:")}
    kept[PIECES_SCORED] = True
    judges = [f"judge:{name}" for name in a.judge]
    for key in (["lm"] if a.text_lm else []) + judges:
        if len(kept.get(key, [])) == len(rows):
            for row, s in zip(rows, kept[key]):
                row[key] = s
            continue
        if key == "lm":
            text_lm_scores(rows, a.threads)
        else:
            if manifest is None:
                raise SystemExit("--judge reads the clips: give each candidates file its --manifest")
            judge_scores(doc, manifest, key.removeprefix("judge:"), a.threads, key, piece_seconds, piece_samples)
        kept[key] = [row[key] for row in rows]
        if store:
            replace_text(store, json.dumps(kept))
    for row in rows if judges else ():
        row["judge"] = torch.tensor([row[k] for k in judges]).mean(0).tolist()


def write_second(path: Path, doc: dict, out: Path, judges: list[str]) -> Path:
    """``out/path.name``: ``doc`` with each row's ``second`` the mean of its ``judges`` scores (add_scores' ``judge``)
    and its decoding's ``second_judges`` naming them; the report beside ``path`` copied beside it."""
    doc = json.loads(json.dumps(doc))  # a copy: the caller's rows keep their own scores
    for row in rows_of(doc)[0]:
        row["second"] = row.pop("judge")
        row["dtypes"]["second"] = "float32"  # add_scores' mean
        for k in [k for k in row if k.startswith("judge:")]:  # each judge's own scores: their mean is "second"
            del row[k]
    doc["decoding"]["second_judges"] = judges
    out.mkdir(parents=True, exist_ok=True)
    replace_text(out / path.name, json.dumps(doc))
    src = report_of(path)
    if src.is_file():
        replace_text(out / src.name, src.read_text())
    return out / path.name


def _piece_cut(path: Path) -> tuple[float | None, int | None]:
    """How the decoding of a candidates file cut its clips, as its report says: ``piece_seconds`` and
    ``piece_samples`` (the exact piece length; reports since session 71), each None where it does not say."""
    src = report_of(path)
    dec = json.loads(src.read_text()).get("decoding", {}) if src.is_file() else {}
    return dec.get("piece_seconds"), dec.get("piece_samples")


def _numbers(text: str) -> list[float]:
    try:
        return [float(w) for w in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated numbers, got {text!r}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", type=Path, help="candidates files (mmlora evaluate --candidates)")
    p.add_argument("--manifest", type=Path, action="append", default=[], help="each file's manifest (for --judge)")
    p.add_argument("--scores", type=Path, action="append", default=[], help="each file's store of extra scores")
    p.add_argument("--text-lm", action="store_true", help="score each text with the packaged SmolLM2 alone")
    p.add_argument("--judge", action="append", default=[], help="score each clip with this Whisper's complete model "
                   "(e.g. whisper-base), or a model folder's trained judge; again for the mean of several")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--piece-seconds", type=float, help="where the report beside a candidates file names none: the "
                   "decoding's piece_seconds, to cut its clips in pieces again for --judge")
    p.add_argument("--write-second", type=Path, metavar="DIR", help="write each file to DIR with the --judge "
                   "scores' mean as its second judges' score (for rescore_candidates.py), and stop")
    p.add_argument("--ctc-weight", type=_floats, help="CTC weights (default: the decoding's)")
    p.add_argument("--whisper-weight", type=_floats, help="the Whisper judges' weights (default: the decoding's)")
    p.add_argument("--whisper-both", type=_floats, help="Whisper's own decoder's shares (default: the decoding's)")
    p.add_argument("--lm-weight", type=_floats, default=[0.0])
    p.add_argument("--judge-weight", type=_floats, default=[0.0])
    p.add_argument("--length-bonus", type=_numbers, default=[0.0], help="added a word")
    p.add_argument("--vote", type=_numbers, default=[0.0], help="times log(candidates reading the same)")
    p.add_argument("--mbr", type=_numbers, default=[0.0], help="temperatures of minimum Bayes risk (0: off)")
    a = p.parse_args(argv)
    for flag, given in (("--manifest", a.manifest), ("--scores", a.scores)):
        if given and len(given) != len(a.files):
            raise SystemExit(f"{flag}: one for each candidates file ({len(a.files)}), got {len(given)}")
    a.text_lm = a.text_lm or any(a.lm_weight)
    if any(a.judge_weight) and not a.judge:
        raise SystemExit("--judge-weight weighs another Whisper's scores: name it with --judge (e.g. whisper-base)")
    if any(w < 0 for w in a.mbr):
        raise SystemExit(f"--mbr: temperatures are >= 0, got {a.mbr}")
    if a.write_second and not a.judge:
        raise SystemExit("--write-second: name the second judges with --judge (e.g. model folders)")
    docs = [load(f) for f in a.files]
    for i, doc in enumerate(docs):
        seconds, samples = _piece_cut(a.files[i])
        add_scores(doc, a, a.manifest[i] if a.manifest else None, a.scores[i] if a.scores else None,
                   seconds or a.piece_seconds, samples)
    if a.write_second:
        for f, doc in zip(a.files, docs):
            print(write_second(f, doc, a.write_second, a.judge))
        return 0
    own = own_weights(docs[0]["decoding"])
    grid = [ws if ws is not None else [o] for ws, o in zip((a.ctc_weight, a.whisper_weight, a.whisper_both), own)]
    for c, j, s, lm, jw, lb, v, t in itertools.product(*grid, a.lm_weight, a.judge_weight, a.length_bonus, a.vote,
                                                       a.mbr):
        if lm + jw > 1:
            continue
        line: dict = {"ctc_weight": c, "whisper_weight": j, "whisper_both": s, "lm_weight": lm, "judge_weight": jw,
                      "length_bonus": lb, "vote": v, "mbr": t, "files": {}}
        for f, doc in zip(a.files, docs):
            e, n = errors(doc, hypotheses(doc, (c, j, s), lm, jw, lb, v, t))
            line["files"][str(f)] = {"errors": e, "ref_words": n}
        print(json.dumps(_with_totals(line)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
