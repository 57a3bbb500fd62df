"""scripts/make_encoder_lora_corpora.sh (GPU run 21's corpora) against test_train_grid_script's stand-in for Python:
each corpus with its seed and the exclusions that keep its sentences apart, train_asr_release.sh's commands for the
corpora both scripts make (scripts/lib_speech_corpora.sh), and nothing made twice. Seconds on CPU."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from test_train_grid_script import FAKE, ROOT


def run(tmp_path: Path, **env) -> list[list[str]]:
    repo = tmp_path / "repo"  # links to the scripts, so that the text pools it writes (data/text/) land here
    if not repo.exists():
        (repo / "scripts").mkdir(parents=True)
        for f in ("make_encoder_lora_corpora.sh", "lib_speech_corpora.sh", "make_wide_speech_corpora.sh",
                  "wide_voices.sh"):
            (repo / "scripts" / f).symlink_to(ROOT / "scripts" / f)
    (tmp_path / "fake_python.py").write_text(FAKE)
    log = tmp_path / "calls.jsonl"
    log.unlink(missing_ok=True)
    e = {**os.environ, "PYTHON": f"{sys.executable} {tmp_path / 'fake_python.py'}", "FAKE_LOG": str(log),
         "WORKERS": "2", **env}
    p = subprocess.run(["bash", str(repo / "scripts/make_encoder_lora_corpora.sh"), str(tmp_path / "d"),
                        str(tmp_path / "h")], env=e, text=True, capture_output=True, timeout=120, cwd=repo)
    assert p.returncode == 0, p.stderr[-2000:]
    return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []


def test_each_corpus_once_with_its_seed_and_exclusions(tmp_path):
    calls = run(tmp_path)
    d = tmp_path / "d"
    corpora = {Path(c[c.index("--out") + 1]).name: c for c in calls if c[2:3] == ["make-speech-corpus"]}
    seeds = {name: c[c.index("--seed") + 1] for name, c in corpora.items()}
    assert seeds == {"st": "1", "w3": "3", "natt9": "33", "nv9": "35", "n9": "31", "n10": "41", "n14": "81",
                     "n15": "91", "nv10": "36"}
    assert "--no-video" in corpora["st"] and corpora["st"][corpora["st"].index("--noisy-splits") + 1] == "test"
    excl = {name: c[c.index("--exclude-text") + 1].split(",") for name, c in corpora.items() if "--exclude-text" in c}
    held = [f"{d}/st/val.jsonl", f"{d}/st/test.jsonl", f"{d}/natt9/test.jsonl", f"{d}/nv9/test.jsonl"]
    assert excl["n9"] == held and excl["n10"] == held + [f"{d}/n9/train.jsonl"]
    assert excl["n14"] == held + [f"{tmp_path}/h/test.jsonl", f"{tmp_path}/h/extra.jsonl"]
    assert excl["n15"] == excl["n14"] + [f"{d}/n14/train.jsonl"]
    assert set(excl["nv10"]) >= {f"{d}/{c}/train.jsonl" for c in ("st", "w3", "n9", "n10", "n14", "n15")}
    assert "--n-train" in corpora["nv10"] and corpora["nv10"][corpora["nv10"].index("--n-train") + 1] == "0"
    fetches = [c[1:] for c in calls if c[0].endswith("fetch_human_speech.py")]  # the human clips (and exclusions)
    assert [f[:2] for f in fetches] == [["--out", f"{tmp_path}/h"], ["--set", "extra"], ["--set", "more"],
                                            ["--set", "fourth"]]
    assert not [c for c in run(tmp_path) if c[2:3] == ["make-speech-corpus"]]  # again: every corpus is there


def test_the_release_script_makes_the_shared_corpora_with_the_same_commands():
    """st, natt9, nv9, n9 and n10 come from one definition (scripts/lib_speech_corpora.sh) in both scripts."""
    for script in ("train_asr_release.sh", "make_encoder_lora_corpora.sh"):
        text = (ROOT / "scripts" / script).read_text()
        assert "source scripts/lib_speech_corpora.sh" in text and "corpora_stage4" in text and "corpus_st" in text
        assert "--seed 31" not in text and "--seed 35" not in text  # no second copy of n9's or nv9's command


def test_pico_corpus_only_when_asked_with_every_other_sentence_left_out(tmp_path):
    """PICO=1 adds p16 (SVOX Pico's two voices), its sentences none of the held-out sets', the human clips' or the
    other training corpora's; without it, no Pico corpus (the seeds above)."""
    run(tmp_path)  # every other corpus first, as a machine that has them
    calls = [c for c in run(tmp_path, PICO="1") if c[2:3] == ["make-speech-corpus"]]
    assert len(calls) == 1 and Path(calls[0][calls[0].index("--out") + 1]).name == "p16"
    c, d, h = calls[0], tmp_path / "d", tmp_path / "h"
    assert c[c.index("--seed") + 1] == "161" and c[c.index("--voices") + 1] == "pico:en-US,pico:en-GB"
    assert c[c.index("--n-train") + 1] == "6000" and c[c.index("--n-test") + 1] == "0"
    excl = set(c[c.index("--exclude-text") + 1].split(","))
    held = {f"{d}/st/val.jsonl", f"{d}/st/test.jsonl", f"{d}/natt9/test.jsonl", f"{d}/nv9/test.jsonl",
            f"{d}/nv10/test.jsonl", f"{h}/test.jsonl", f"{h}/extra.jsonl"}
    assert excl == held | {f"{d}/{n}/train.jsonl" for n in ("n9", "n10", "n14", "n15")}
    assert not [c for c in run(tmp_path, PICO="1") if c[2:3] == ["make-speech-corpus"]]  # made once


def _accent_corpora(tmp_path: Path, accents: str) -> tuple[dict, Path, dict, Path]:
    """The make-speech-corpus calls by corpus name of a fresh ``RUN21=0 KJV=2 ACCENTS=accents`` run (the stand-in
    answering the script's ``python -c`` for the accents' names), its data folder, environment and repo."""
    fake = FAKE.replace('if args[0].endswith("make_text_pool.py"):',
                        'if args[:1] == ["-c"]:\n    exec(args[1])\n    raise SystemExit(0)\n'
                        'if args[0].endswith("make_text_pool.py"):')
    repo = tmp_path / "repo"
    run(tmp_path)  # links the scripts
    (tmp_path / "fake_python.py").write_text(fake)
    log = tmp_path / "calls.jsonl"
    log.unlink(missing_ok=True)
    e = {**os.environ, "PYTHON": f"{sys.executable} {tmp_path / 'fake_python.py'}", "FAKE_LOG": str(log),
         "WORKERS": "2", "RUN21": "0", "KJV": "2", "ACCENTS": accents}
    fresh = tmp_path / "d2"
    p = subprocess.run(["bash", str(repo / "scripts/make_encoder_lora_corpora.sh"), str(fresh), str(tmp_path / "h")],
                       env=e, text=True, capture_output=True, timeout=120, cwd=repo)
    assert p.returncode == 0, p.stderr[-2000:]
    calls = [json.loads(x) for x in log.read_text().splitlines()]
    return {Path(c[c.index("--out") + 1]).name: c for c in calls if c[2:3] == ["make-speech-corpus"]}, fresh, e, repo


def test_run21_0_leaves_out_n14_n15_nv10_and_accents_make_a62_apart_from_every_other_corpus(tmp_path):
    """ACCENTS=1 (session 62): a62 read by the 18 accents of our own with the wide corpora's 55 variants, st's text
    (no --text-weights), none of the sentences of st, w3, the King James corpora or a test set; RUN21=0 makes none
    of session 26's corpora, and PICO=1 beside it is refused."""
    from mmlora.data.speech_tts import ESPEAK_ACCENTS

    corpora, fresh, e, repo = _accent_corpora(tmp_path, "1")
    assert not {"n14", "n15", "nv10"} & set(corpora) and {"k49", "k50", "kn50", "a62"} <= set(corpora)
    a = corpora["a62"]
    assert a[a.index("--seed") + 1] == "62" and "--text-weights" not in a and a[a.index("--n-train") + 1] == "2400"
    voices = a[a.index("--voices") + 1].split(",")
    assert len(voices) == len(set(voices)) == len(ESPEAK_ACCENTS) * 55
    assert {v.split("+")[0] for v in voices} == {f"espeak:{x}" for x in ESPEAK_ACCENTS}
    excl = set(a[a.index("--exclude-text") + 1].split(","))
    assert {f"{fresh}/{c}/train.jsonl" for c in ("st", "w3", "k49", "k50", "kn50")} <= excl
    assert {f"{fresh}/st/test.jsonl", f"{tmp_path}/h/test.jsonl", f"{tmp_path}/h/fourth.jsonl"} <= excl
    e["PICO"] = "1"
    p = subprocess.run(["bash", str(repo / "scripts/make_encoder_lora_corpora.sh"), str(fresh), str(tmp_path / "h")],
                       env=e, text=True, capture_output=True, timeout=120, cwd=repo)
    assert p.returncode == 2 and "PICO=1" in p.stderr


def test_accents_2_makes_a64_by_a62s_voices_with_none_of_its_sentences(tmp_path):
    """ACCENTS=2 (session 64): a64, 2,400 more clips by a62's voices with another seed, a62's sentences left out too."""
    corpora, fresh, _, _ = _accent_corpora(tmp_path, "2")
    a62, a64 = corpora["a62"], corpora["a64"]
    assert a64[a64.index("--seed") + 1] == "64" and a64[a64.index("--n-train") + 1] == "2400"
    assert a64[a64.index("--voices") + 1] == a62[a62.index("--voices") + 1]
    excl = a64[a64.index("--exclude-text") + 1].split(",")
    assert excl == a62[a62.index("--exclude-text") + 1].split(",") + [f"{fresh}/a62/train.jsonl"]
