"""scripts/remote/encoder_lora_job.sh (GPU run 21's job on the lent machine) started the way remote.sh starts it, with
`python3` a stand-in that records every command (test_train_grid_script's, plus pip, the asset check and the WAV
decoding): the decoded training manifest the trainings read, a training still running after T seconds stopped by
SIGTERM and evaluated at its best weights, the reports, and DONE with the exit status also when a step fails."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from test_train_grid_script import FAKE, ROOT

EXTRA = r'''
import shutil, signal, time
if args[:2] == ["-m", "pip"] or args[2:4] == ["assets", "get"]:
    raise SystemExit(0)
if args[0].endswith("decode_audio.py"):
    if os.environ.get("FAKE_FAIL") == "decode":
        raise SystemExit(1)
    out = Path(opt("--out"))
    for m in map(Path, args[1:args.index("--out")]):
        (out / m.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(m, out / m.parent.name / m.name)
    raise SystemExit(0)
if args[2:3] == ["train"] and Path(over("train.output_dir")).name in os.environ.get("FAKE_SLOW", "").split():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))  # as the loop: checkpoint written, exit 3
    (Path(over("train.output_dir")) / "best/model").mkdir(parents=True, exist_ok=True)
    time.sleep(60)
'''
# the stand-in's own handlers come after these, so a slow training that is not stopped would go on to make final/
FAKE_JOB = FAKE.replace("if args[0].endswith(\"make_text_pool.py\"):", EXTRA + "\nif args[0].endswith(\"make_text_pool.py\"):")
CORPORA = ["st/train", "st/test", "st/test_babble_snr0", "w3/train", "n9/train", "n10/train", "n14/train", "n15/train",
           "natt9/test", "nv9/test", "nv10/test"]


def run_remote_job(tmp_path: Path, job: str, scripts: tuple[str, ...], fake: str, env: dict):
    """Start scripts/remote/JOB in tmp_path/work (made by the caller: the unpacked pieces) as remote.sh starts it,
    with $REPO a tree of links to SCRIPTS and the recipes, and `python3` the stand-in FAKE; returns the finished
    process, the work folder and the stand-in's calls."""
    work, repo, bin_ = tmp_path / "work", tmp_path / "repo", tmp_path / "bin"
    (work / "whl").mkdir(parents=True, exist_ok=True)
    (repo / "scripts").mkdir(parents=True)  # the repository the job copies: links to what it runs
    for f in (*scripts, "remote/lib_job.sh"):
        (repo / "scripts" / f).parent.mkdir(parents=True, exist_ok=True)
        (repo / "scripts" / f).symlink_to(ROOT / "scripts" / f)
    (repo / "recipes").symlink_to(ROOT / "recipes")
    bin_.mkdir()
    (tmp_path / "fake_python.py").write_text(fake)
    (bin_ / "python3").write_text(f'#!/bin/sh\nexec "{sys.executable}" "{tmp_path / "fake_python.py"}" "$@"\n')
    (bin_ / "python3").chmod(0o755)
    e = {**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}", "FAKE_LOG": str(tmp_path / "calls.jsonl"),
         "REPO": str(repo), **env}
    p = subprocess.run(["bash", str(ROOT / "scripts/remote" / job)], cwd=work, env=e, text=True,
                       capture_output=True, timeout=120)
    log = tmp_path / "calls.jsonl"
    return p, work, [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []


def run_job(tmp_path: Path, env: dict) -> tuple[subprocess.CompletedProcess, Path, list]:
    work = tmp_path / "work"
    for m in CORPORA:
        f = work / "data/speech_release" / f"{m}.jsonl"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text('{"id": "u0", "audio": "a.flac", "text": "x"}\n')
    (work / "data/human_speech").mkdir(parents=True)
    (work / "data/human_speech/test.jsonl").write_text('{"id": "h0", "audio": "h.flac", "text": "x"}\n')
    (work / "log").mkdir()
    return run_remote_job(tmp_path, "encoder_lora_job.sh",
                          ("asr_encoder_lora.sh", "lib_train.sh", "merge_manifests.py", "decode_audio.py"), FAKE_JOB, env)


def test_the_job_trains_on_the_decoded_manifest_stops_a_slow_training_and_evaluates(tmp_path):
    p, work, calls = run_job(tmp_path, {"T": "3", "FAKE_SLOW": "E1", "MAX_STEPS": "7"})
    assert p.returncode == 0, p.stderr[-2000:]
    assert (work / "DONE").exists() and "job ended, exit 0" in p.stdout
    train = "train_ab_st_w3_n9_n10_n14x2_n15x2.jsonl"
    decode = next(c for c in calls if c[0].endswith("decode_audio.py"))
    assert decode[1] == str(work / "data/speech_release" / train)
    trainings = {Path(next(a for a in c if a.startswith("train.output_dir="))).name: c
                 for c in calls if c[2:3] == ["train"]}
    assert set(trainings) == {"E1", "E2"}
    for name, c in trainings.items():  # the WAV manifest, nv10 for validation, 7 workers each, the steps asked for
        assert f"data.train_manifest={work}/dec/speech_release/{train}" in c
        assert f"data.val_manifest={work}/dec/speech_release/nv10/test.jsonl" in c
        assert c[-1] == "train.num_workers=7" and "train.max_steps=7" in c and "data.val_samples=120" in c
    assert "train.group_lr.lora=0" in trainings["E2"] and "train.group_lr.lora=0" not in trainings["E1"]
    assert (work / "out/E1/STOPPED").exists() and not (work / "out/E1/final").exists()  # SIGTERM after T = 3 s
    assert (work / "out/E2/final/model").is_dir()
    reports = {f.stem for f in (work / "res/eval").glob("*.json")}
    assert {"E1_nv10", "E2_nv10", "REL_nv10", "E1_st", "E2_human_test"} <= reports
    assert json.loads((work / "out/eval/E1_st.json").read_text())["model"] == f"{work}/out/E1/best/model"


def test_a_failed_step_still_ends_the_monitors_wait(tmp_path):
    p, work, calls = run_job(tmp_path, {"FAKE_FAIL": "decode"})
    assert p.returncode == 1 and (work / "DONE").exists() and "job ended, exit 1" in p.stdout
    assert not [c for c in calls if c[2:3] == ["train"]]
