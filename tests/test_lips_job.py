"""scripts/remote/lips_job.sh (GPU run 23's job: a gw300 -> fw300 curriculum for the lip reader against fw300 alone)
started the way remote.sh starts it, with `python3` the stand-in of test_encoder_lora_job that records every
command: what each lip reader starts from and how many steps it is sized for, the time each part gets before
SIGTERM, the reports and the comparison, and DONE with the exit status when a part fails."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from test_encoder_lora_job import FAKE_JOB, run_remote_job

FAIL = r'''
if args[2:3] == ["train"] and os.environ.get("FAKE_FAIL") and f"/out/{os.environ['FAKE_FAIL']}/" in over("train.output_dir"):
    raise SystemExit(1)
'''
FAKE_LIPS = FAKE_JOB.replace("import shutil, signal, time\n", "import shutil, signal, time\n" + FAIL)


def run_job(tmp_path: Path, env: dict) -> tuple[subprocess.CompletedProcess, Path, list]:
    work = tmp_path / "work"
    for pool, c in (("gridwide", "gw300"), ("freewords", "fw300"), ("open", "op12")):
        d = work / "data" / pool
        for f in ("train.jsonl", f"{c}/train.jsonl", f"{c}/val.jsonl", f"{c}/test.jsonl", f"{c}/test_wrong_lips.jsonl"):
            (d / f).parent.mkdir(parents=True, exist_ok=True)
            (d / f).write_text('{"id": "u0", "audio": "a.ogg", "video": "v.mp4", "text": "x"}\n')
    for f in ("op13/train.jsonl", "train_more1.jsonl"):  # stage_lips.sh OPEN_MORE=1's op13 and merged manifest
        (work / "data/open" / f).parent.mkdir(parents=True, exist_ok=True)
        (work / "data/open" / f).write_text('{"id": "u1", "audio": "a.ogg", "video": "v.mp4", "text": "y"}\n')
    return run_remote_job(tmp_path, "lips_job.sh", ("train_grid.sh", "wide_voices.sh", "lib_train.sh",
                                                    "remote/lip_corpora.sh"), FAKE_LIPS, env)


def trainings(calls: list, work: Path) -> dict:
    return {next(a.split("=", 1)[1] for a in c if a.startswith("train.output_dir=")).split("/out/")[1]: c
            for c in calls if c[2:3] == ["train"]}


def test_the_curriculum_continues_from_gw300_and_the_control_gets_all_the_steps(tmp_path):
    p, work, calls = run_job(tmp_path, {"S1": "30", "S2": "20"})
    assert p.returncode == 0, p.stderr[-2000:]
    assert (work / "DONE").exists() and "job ended, exit 0" in p.stdout
    t = trainings(calls, work)
    assert set(t) == {"gw/GV", "cur/GV", "ctl/GV"}
    rel = "train.init_from=checkpoints/asr-smollm2-whisper-tiny"
    assert rel in t["gw/GV"] and rel in t["ctl/GV"]
    assert f"train.init_from={work}/out/gw/GV/best/model" in t["cur/GV"]  # the second part starts from the first
    for name, steps, val in (("gw/GV", 30, "gridwide/gw300"), ("cur/GV", 20, "freewords/fw300"),
                             ("ctl/GV", 50, "freewords/fw300")):
        c = t[name]  # the last max_steps wins: the job's, after the script's own 1,500
        assert [a for a in c if a.startswith("train.max_steps=")][-1] == f"train.max_steps={steps}"
        assert f"data.val_manifest={work}/data/{val}/val.jsonl" in c and "train.num_workers=6" in c
    for r in ("gw", "cur", "ctl"):
        assert {f.name for f in (work / f"res/eval_{r}").iterdir()} == {"GV_vsr.json", "GV_vsr_wrong_lips.json", "GV_final_vsr.json"}
    compare = (work / "res/compare.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in compare] == ["cur_GV_vsr - ctl_GV_vsr",
                                                       "cur_GV_vsr_wrong_lips - ctl_GV_vsr_wrong_lips",
                                                       "cur_GV_final_vsr - ctl_GV_final_vsr"]
    assert json.loads(compare[0].split(": ", 1)[1])["a"] == "out/ctl/eval/GV_vsr.json"


def test_each_part_is_stopped_when_its_time_is_up_and_evaluated_at_its_best(tmp_path):
    p, work, calls = run_job(tmp_path, {"FAKE_SLOW": "GV", "T": "6"})  # every training would run for 60 s
    assert p.returncode == 0, p.stderr[-2000:]
    for r in ("gw", "cur", "ctl"):  # gw300 after 3 s, fw300 from it for what is left of 6, the control after 6
        assert (work / f"out/{r}/GV/STOPPED").exists() and not (work / f"out/{r}/GV/final").exists()
        report = json.loads((work / f"out/{r}/eval/GV_vsr.json").read_text())
        assert report["model"] == f"{work}/out/{r}/GV/best/model"


def test_a_failed_first_part_ends_the_job_with_its_status_and_done(tmp_path):
    p, work, calls = run_job(tmp_path, {"FAKE_FAIL": "gw"})
    assert p.returncode != 0 and (work / "DONE").exists() and "job ended, exit 0" not in p.stdout
    assert set(trainings(calls, work)) == {"gw/GV", "ctl/GV"}  # the curriculum's second part never started


def test_encoder_lora_mode_trains_the_same_lip_reader_with_lora_inside_the_lip_encoder(tmp_path):
    p, work, calls = run_job(tmp_path, {"MODE": "encoder_lora", "ENC_POOL": "gridwide", "ENC_RANK": "4", "S1": "5",
                                        "S2": "5", "PYTEST": "tests/tasks/test_encoder_lora.py -k gpu",
                                        "BENCH": "--paths folded,lora --chunks 1024"})
    assert p.returncode == 0, p.stderr[-2000:]
    t = trainings(calls, work)
    assert set(t) == {"enc/GV", "ctl/GV"}
    lora = "model.media.video.encoder_lora={rank: 4, alpha: 8}"
    assert lora in t["enc/GV"] and "train.group_lr.encoder=5e-4" in t["enc/GV"]
    assert not [a for a in t["ctl/GV"] if a.startswith(("model.media.video.encoder_lora", "train.group_lr.encoder"))]
    for c in t.values():  # both on the chosen corpus, from the release, for S1 + S2 steps
        assert f"data.val_manifest={work}/data/gridwide/gw300/val.jsonl" in c
        assert "train.init_from=checkpoints/asr-smollm2-whisper-tiny" in c
        assert [a for a in c if a.startswith("train.max_steps=")][-1] == "train.max_steps=10"
    # the benchmark, then the tests, both before the first training (a time limit cannot cut them off)
    bench = next(i for i, c in enumerate(calls) if c[0].endswith("scripts/bench_video_encoder.py"))
    assert calls[bench][1:] == ["--paths", "folded,lora", "--chunks", "1024", "--out", "res/bench_video_encoder.md"]
    test = next(i for i, c in enumerate(calls) if c[:2] == ["-m", "pytest"])
    assert calls[test][-3:] == ["tests/tasks/test_encoder_lora.py", "-k", "gpu"]
    assert bench < test < min(i for i, c in enumerate(calls) if c[2:3] == ["train"])
    compare = (work / "res/compare.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in compare] == ["enc_GV_vsr - ctl_GV_vsr",
                                                       "enc_GV_vsr_wrong_lips - ctl_GV_vsr_wrong_lips",
                                                       "enc_GV_final_vsr - ctl_GV_final_vsr"]


def test_a_bad_mode_stops_with_a_message_and_done(tmp_path):
    p, work, calls = run_job(tmp_path, {"MODE": "encoder_lora", "ENC_POOL": "grid"})
    assert p.returncode == 2 and "ENC_POOL freewords, gridwide or open" in p.stderr and (work / "DONE").exists()
    assert not calls


def test_avsr_mode_trains_avsr_from_the_staged_lip_reader_against_its_asr_control(tmp_path):
    (tmp_path / "work/lipreader").mkdir(parents=True)
    (tmp_path / "work/lipreader/config.json").write_text("{}")
    p, work, calls = run_job(tmp_path, {"MODE": "avsr", "S1": "5", "S2": "5", "ENC_LR": "1e-4"})
    assert p.returncode == 0, p.stderr[-2000:]
    t = trainings(calls, work)
    assert set(t) == {"avl/GAVL", "ctl/GAOL"}
    # AVSR from the staged lip reader (through train_grid.sh's GV slot), the audio projector from the release
    assert f"train.init_from={work}/out/avl/GV/best/model" in t["avl/GAVL"]
    assert (work / "out/avl/GV/best/model").resolve() == (work / "lipreader").resolve()
    assert "train.init_projectors={audio: checkpoints/asr-smollm2-whisper-tiny}" in t["avl/GAVL"]
    assert "train.init_from=checkpoints/asr-smollm2-whisper-tiny" in t["ctl/GAOL"]
    for c in t.values():  # both chosen on noisy validation of fw300, ENC_LR for every encoder LoRA, S1 + S2 steps
        assert f"data.val_manifest={work}/data/freewords/fw300/val.jsonl" in c and "data.val_snr=0" in c
        assert "train.group_lr.encoder=1e-4" in c
        assert [a for a in c if a.startswith("train.max_steps=")][-1] == "train.max_steps=10"
    # each condition for the best and (run 28: they disagreed on white noise at -5 dB) the last weights
    conds = ("clean", "t1_0", "t1_-5", "b_0", "b_-5", "w_0", "w_-5")
    compare = (work / "res/compare.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in compare] == [
        f"avl_GAVL_{f}{n} - ctl_GAOL_{f}{n}" for n in conds for f in ("", "final_")]
    assert json.loads(compare[-1].split(": ", 1)[1])["b"] == "out/avl/eval/GAVL_final_w_-5.json"
    assert all((work / f"res/eval_ctl/GAOL_final_{n}.json").exists() for n in conds)
    assert (work / "res/eval_avl/GAVL_vsr.json").exists() and (work / "res/eval_ctl/GAOL_clean.json").exists()
    assert not (work / "res/eval_gw").exists()  # no curriculum: no empty folder for it
    # each `remote.sh ship` brings back both models' chosen weights (session 48: a machine taken back before AVSR's
    # reports); the staged lip reader is here already
    assert sorted((work / "ship_also").read_text().split()) == ["out/avl/GAVL/best/model", "out/ctl/GAOL/best/model"]


def test_avsr_mode_without_a_staged_lip_reader_stops_before_any_work(tmp_path):
    p, work, calls = run_job(tmp_path, {"MODE": "avsr"})
    assert p.returncode == 2 and "LIPREADER=DIR" in p.stderr and (work / "DONE").exists()
    assert not calls


def _stage(tmp_path: Path, env: dict) -> subprocess.CompletedProcess:
    """scripts/remote/stage_lips.sh on fake corpora (made on the first call), for its checks before any download."""
    import os
    for pool, c in (("gw", "gw300"), ("fw", "fw300")) if not (tmp_path / "fw").exists() else ():
        for f in ("train.jsonl", f"{c}/val.jsonl", f"{c}/test.jsonl", f"{c}/test_wrong_lips.jsonl"):
            (tmp_path / pool / f).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / pool / f).touch()
    return subprocess.run(["bash", "scripts/remote/stage_lips.sh", str(tmp_path / "st"), str(tmp_path / "pk"),
                           str(tmp_path / "gw"), str(tmp_path / "fw")], cwd=Path(__file__).resolve().parents[1],
                          env={**os.environ, **env}, text=True, capture_output=True, timeout=60)


def test_staging_checks_the_pools_and_the_lip_reader_before_any_download(tmp_path):
    p = _stage(tmp_path, {"LIPREADER": str(tmp_path / "nothing")})
    assert p.returncode == 2 and "LIPREADER=" in p.stderr and "no config.json" in p.stderr
    p = _stage(tmp_path, {"POOLS": "freewords grid"})
    assert p.returncode == 2 and "each is gridwide, freewords or open" in p.stderr
    p = _stage(tmp_path, {"POOLS": "open", "OPEN_DATA": str(tmp_path / "op")})
    assert p.returncode == 2 and "op/train.jsonl is missing" in p.stderr  # OPEN_DATA: where the open pool lies
    (tmp_path / "gw/gw300/test.jsonl").unlink()  # only the pools asked for are checked
    p = _stage(tmp_path, {"POOLS": "gridwide", "LIPREADER": str(tmp_path / "nothing")})
    assert p.returncode == 2 and "gw300/test.jsonl is missing" in p.stderr
    p = _stage(tmp_path, {"POOLS": "freewords", "LIPREADER": str(tmp_path / "nothing")})
    assert p.returncode == 2 and "no config.json" in p.stderr
    op = tmp_path / "op"  # OPEN_MORE=1: op13's training clips and the merged train_more1.jsonl are checked too
    for f in ("train.jsonl", "op12/val.jsonl", "op12/test.jsonl", "op12/test_wrong_lips.jsonl"):
        (op / f).parent.mkdir(parents=True, exist_ok=True)
        (op / f).touch()
    p = _stage(tmp_path, {"POOLS": "open", "OPEN_DATA": str(op), "OPEN_MORE": "1"})
    assert p.returncode == 2 and "op/train_more1.jsonl is missing" in p.stderr
    (op / "train_more1.jsonl").touch()
    p = _stage(tmp_path, {"POOLS": "open", "OPEN_DATA": str(op), "OPEN_MORE": "1"})
    assert p.returncode == 2 and "op/op13/train.jsonl is missing" in p.stderr
    assert not (tmp_path / "st").exists()


def test_encoder_lora_mode_on_open_text(tmp_path):
    p, work, calls = run_job(tmp_path, {"MODE": "encoder_lora", "ENC_POOL": "open", "S1": "5", "S2": "5"})
    assert p.returncode == 0, p.stderr[-2000:]
    t = trainings(calls, work)
    assert set(t) == {"enc/GV", "ctl/GV"}
    for c in t.values():
        assert f"data.val_manifest={work}/data/open/op12/val.jsonl" in c


def test_more_mode_trains_the_lip_reader_on_more_open_text_against_op12_alone(tmp_path):
    """MODE=more: the same lip reader with LoRA inside its encoder, on op12 + op13 (train_more1.jsonl) against op12
    alone, both validated and tested on op12; nothing regenerated (the staged corpora are there)."""
    p, work, calls = run_job(tmp_path, {"MODE": "more", "ENC_POOL": "open", "S1": "5", "S2": "5"})
    assert p.returncode == 0, p.stderr[-2000:]
    assert not [c for c in calls if c[2:3] == ["make-speech-corpus"]]
    t = trainings(calls, work)
    assert set(t) == {"more/GV", "ctl/GV"}
    d = work / "data/open"
    assert f"data.train_manifest={d}/train_more1.jsonl" in t["more/GV"]
    assert f"data.train_manifest={d}/train.jsonl" in t["ctl/GV"]
    for c in t.values():
        assert f"data.val_manifest={d}/op12/val.jsonl" in c and "train.group_lr.encoder=5e-4" in c
        assert "model.media.video.encoder_lora={rank: 8, alpha: 16}" in c
    compare = (work / "res/compare.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in compare] == ["more_GV_vsr - ctl_GV_vsr",
                                                       "more_GV_vsr_wrong_lips - ctl_GV_vsr_wrong_lips",
                                                       "more_GV_final_vsr - ctl_GV_final_vsr"]
    p, _, _ = run_job(tmp_path / "b", {"MODE": "more", "ENC_POOL": "freewords"})
    assert p.returncode == 2 and "MODE=more: open only" in p.stderr


ARM = ["model.media.video.projector.compressor=conv", "model.media.video.projector.conv_kernel=8"]


@pytest.mark.parametrize("mode,env,arm_args,ctl_prefix", [
    # MODE=ctc: with model.ctc (weight CTC_WEIGHT)
    ("ctc", {"CTC_WEIGHT": "0.5"}, ["model.ctc={modality: video, weight: 0.5}"], "model.ctc"),
    # MODE=arm (runs 30-31): ARM's key=value overrides, last, so they win over the recipe's and ENC's own settings
    ("arm", {"ARM": " ".join(ARM)}, ARM, "model.media.video.projector."),
])
def test_ctc_and_arm_modes_train_the_lip_reader_with_their_change_against_the_same_without(tmp_path, mode, env,
                                                                                           arm_args, ctl_prefix):
    """MODE=ctc and MODE=arm: the same lip reader with LoRA inside its encoder, with the mode's change (the last
    overrides of its training) against without it, both on ENC_POOL's corpus, compared at the best steps, with the
    next clip's lips, and at the last weights."""
    p, work, calls = run_job(tmp_path, {"MODE": mode, "ENC_POOL": "open", "S1": "5", "S2": "5", **env})
    assert p.returncode == 0, p.stderr[-2000:]
    t = trainings(calls, work)
    assert set(t) == {f"{mode}/GV", "ctl/GV"}
    assert t[f"{mode}/GV"][-len(arm_args):] == arm_args
    assert not [a for a in t["ctl/GV"] if a.startswith(ctl_prefix)]
    for c in t.values():
        assert f"data.val_manifest={work}/data/open/op12/val.jsonl" in c and "train.group_lr.encoder=5e-4" in c
        assert "model.media.video.encoder_lora={rank: 8, alpha: 16}" in c
        assert [a for a in c if a.startswith("train.max_steps=")][-1] == "train.max_steps=10"
    compare = (work / "res/compare.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in compare] == [f"{mode}_GV_vsr - ctl_GV_vsr",
                                                       f"{mode}_GV_vsr_wrong_lips - ctl_GV_vsr_wrong_lips",
                                                       f"{mode}_GV_final_vsr - ctl_GV_final_vsr"]


@pytest.mark.parametrize("best_last,a,b", [
    ("/out/arm/", "out/ctl/eval/GV_final_vsr.json", "out/arm/eval/GV_vsr.json"),  # run 30: the arm's best was step 1500
    ("/out/ctl/", "out/ctl/eval/GV_vsr.json", "out/arm/eval/GV_final_vsr.json"),
])
def test_an_arm_whose_best_is_its_last_step_pairs_its_best_report_at_the_last_weights(tmp_path, best_last, a, b):
    """train_grid.sh evaluates last weights only where they are later than best/; the other arm's last weights are
    then compared with that arm's best-step report, which holds the same weights (none is dropped, as in run 30)."""
    p, work, _ = run_job(tmp_path, {"MODE": "arm", "ARM": ARM[0], "ENC_POOL": "open", "S1": "5", "S2": "5",
                                    "FAKE_BEST_LAST": best_last})
    assert p.returncode == 0, p.stderr[-2000:]
    side = "arm" if best_last == "/out/arm/" else "ctl"
    assert "GV_final_vsr.json" not in {f.name for f in (work / f"res/eval_{side}").iterdir()}
    compare = (work / "res/compare.txt").read_text().splitlines()
    assert compare[-1].split(":")[0] == "arm_GV_final_vsr - ctl_GV_final_vsr"
    got = json.loads(compare[-1].split(": ", 1)[1])
    assert (got["a"], got["b"]) == (a, b)


def test_arms_whose_best_is_their_last_step_make_no_last_weights_line(tmp_path):
    p, work, _ = run_job(tmp_path, {"MODE": "arm", "ARM": ARM[0], "ENC_POOL": "open", "S1": "5", "S2": "5",
                                    "FAKE_BEST_LAST": "/out/arm/ /out/ctl/"})
    assert p.returncode == 0, p.stderr[-2000:]
    compare = (work / "res/compare.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in compare] == ["arm_GV_vsr - ctl_GV_vsr",
                                                       "arm_GV_vsr_wrong_lips - ctl_GV_vsr_wrong_lips"]


def test_two_arms_of_overrides_train_beside_one_control(tmp_path):
    """MODE=arm+arm2: ARM's and ARM2's overrides each make an arm (the last overrides of its training), the control
    has neither, and each is compared with it."""
    feed = ["model.ctc.modality=video", "model.ctc.head=temporal", "model.ctc.feed=true"]
    p, work, calls = run_job(tmp_path, {"MODE": "arm+arm2", "ARM": " ".join(feed), "ARM2": " ".join(ARM),
                                        "ENC_POOL": "open", "S1": "5", "S2": "5"})
    assert p.returncode == 0, p.stderr[-2000:]
    t = trainings(calls, work)
    assert set(t) == {"arm/GV", "arm2/GV", "ctl/GV"}
    assert t["arm/GV"][-3:] == feed and t["arm2/GV"][-2:] == ARM
    assert not [a for a in t["arm/GV"] if a in ARM] and not [a for a in t["arm2/GV"] if a in feed]
    assert not [a for a in t["ctl/GV"] if a in ARM + feed]
    compare = (work / "res/compare.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in compare] == [f"{b}_{n} - ctl_{n}" for b in ("arm", "arm2")
                                                       for n in ("GV_vsr", "GV_vsr_wrong_lips", "GV_final_vsr")]
    p, work, calls = run_job(tmp_path / "no_arm2", {"MODE": "arm+arm2", "ARM": ARM[0], "ENC_POOL": "open"})
    assert p.returncode == 2 and "MODE=arm+arm2 needs ARM2" in p.stderr and not calls


def test_more_and_arm_train_beside_one_control_and_are_each_compared_with_it(tmp_path):
    """MODE=more+arm: runs 27 and 31 in one job; three trainings, each arm compared with the one control."""
    p, work, calls = run_job(tmp_path, {"MODE": "more+arm", "ARM": " ".join(ARM), "ENC_POOL": "open",
                                        "S1": "5", "S2": "5"})
    assert p.returncode == 0, p.stderr[-2000:]
    t = trainings(calls, work)
    assert set(t) == {"more/GV", "arm/GV", "ctl/GV"}
    assert t["arm/GV"][-len(ARM):] == ARM and not [a for a in t["more/GV"] + t["ctl/GV"] if a in ARM]
    for c in t.values():
        assert "model.media.video.encoder_lora={rank: 8, alpha: 16}" in c
        assert [a for a in c if a.startswith("train.max_steps=")][-1] == "train.max_steps=10"
    more_data = [a for a in t["more/GV"] if a.startswith("data.train_manifest=")][-1]
    ctl_data = [a for a in t["ctl/GV"] if a.startswith("data.train_manifest=")][-1]
    assert more_data != ctl_data == [a for a in t["arm/GV"] if a.startswith("data.train_manifest=")][-1]
    for r in ("more", "arm", "ctl"):
        assert (work / f"res/eval_{r}/GV_vsr.json").exists()
    compare = (work / "res/compare.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in compare] == [f"{b}_{n} - ctl_{n}" for b in ("more", "arm")
                                                       for n in ("GV_vsr", "GV_vsr_wrong_lips", "GV_final_vsr")]


@pytest.mark.parametrize("mode", ["avsr+arm", "arm+arm", "more+curriculum"])
def test_arms_that_cannot_share_the_control_stop_before_any_work(tmp_path, mode):
    p, work, calls = run_job(tmp_path, {"MODE": mode, "ARM": ARM[0], "ENC_POOL": "open"})
    assert p.returncode == 2 and "share one control only" in p.stderr and (work / "DONE").exists()
    assert not calls


@pytest.mark.parametrize("mode,pool", [("lips", "open"), ("more", "freewords"), ("arm+lips", "open")])
def test_an_unknown_mode_or_pool_names_the_choices(tmp_path, mode, pool):
    p, work, calls = run_job(tmp_path, {"MODE": mode, "ARM": ARM[0], "ENC_POOL": pool})
    assert p.returncode == 2 and not calls and (work / "DONE").exists()
    assert f"MODE={mode} ENC_POOL={pool}: MODE is curriculum, encoder_lora, more, ctc, arm, arm2 or avsr" in p.stderr


def test_arm_mode_without_arm_stops_before_any_work(tmp_path):
    p, work, calls = run_job(tmp_path, {"MODE": "arm", "ENC_POOL": "open"})
    assert p.returncode == 2 and "MODE=arm needs ARM" in p.stderr and (work / "DONE").exists()
    assert not calls


def test_beams_read_each_lip_reader_again_with_its_ctc_head_at_every_weight_of_the_sweep(tmp_path):
    """BEAMS=8: after the trainings each lip reader's best weights read op12's validation and test clips with 8 beams
    and the CTC sweep, in one evaluate call each (one model load); the reports come back with the others."""
    p, work, calls = run_job(tmp_path, {"MODE": "arm+arm2", "ARM": ARM[0], "ARM2": ARM[1], "ENC_POOL": "open",
                                        "S1": "5", "S2": "5", "BEAMS": "8", "CTC_SWEEP": "0,0.1"})
    assert p.returncode == 0, p.stderr[-2000:]
    beams = [c for c in calls if c[2:3] == ["evaluate"] and "--num-beams" in c and c[c.index("--num-beams") + 1] == "8"]
    assert len(beams) == 3
    d = "data/open/op12"
    for r, c in zip(("arm", "arm2", "ctl"), beams):
        assert c[c.index("--model") + 1] == f"out/{r}/GV/best/model" and c[c.index("--ctc-weight") + 1] == "0,0.1"
        pairs = [(c[i + 1], c[i + 3]) for i, a in enumerate(c) if a == "--manifest"]
        assert pairs == [(f"{d}/val.jsonl", f"out/{r}/eval/GV_vsr_val_b8.json"),
                         (f"{d}/test.jsonl", f"out/{r}/eval/GV_vsr_b8.json")]
        assert {"GV_vsr_val_b8.json", "GV_vsr_b8.json", "GV_vsr.json"} <= {f.name for f in (work / f"res/eval_{r}").iterdir()}
    # without BEAMS (and for AVSR) the job decodes greedily only, inside train_grid.sh
    p, work, calls = run_job(tmp_path / "greedy", {"MODE": "arm", "ARM": ARM[0], "ENC_POOL": "open"})
    assert p.returncode == 0 and not [c for c in calls if "--num-beams" in c and c[c.index("--num-beams") + 1] != "1"]


FEED = ["model.ctc.modality=video", "model.ctc.head=temporal", "model.ctc.feed=true"]


def test_avsr_mode_can_train_its_lip_reader_first_while_the_asr_control_trains(tmp_path):
    """MODE=avsr with LIP_T (run 34): nothing staged; the lip reader (ENC's, with LIP_ARM's overrides, LIP_STEPS
    steps) trains first and is evaluated as VSR, then AVSR from its best weights and the ASR control side by side;
    BEAMS then reads that lip reader with beams and its CTC head."""
    p, work, calls = run_job(tmp_path, {"MODE": "avsr", "ENC_POOL": "open", "S1": "5", "S2": "5", "LIP_T": "60",
                                        "LIP_STEPS": "7", "LIP_ARM": " ".join(FEED), "BEAMS": "8",
                                        "AVL_ARM": "model.media.video.dropout=0.25 data.noise_prob=0.6"})
    assert p.returncode == 0, p.stderr[-2000:]
    t = trainings(calls, work)
    assert set(t) == {"lips/GV", "avl/GAVL", "ctl/GAOL"}
    lips = t["lips/GV"]
    assert lips[-3:] == FEED and "model.media.video.encoder_lora={rank: 8, alpha: 16}" in lips
    assert [a for a in lips if a.startswith("train.max_steps=")][-1] == "train.max_steps=7"
    assert f"data.val_manifest={work}/data/open/op12/val.jsonl" in lips
    assert not [a for a in t["avl/GAVL"] + t["ctl/GAOL"] if a in FEED]  # AVSR adopts the head from the lip reader
    arm = ["model.media.video.dropout=0.25", "data.noise_prob=0.6"]  # AVL_ARM: AVSR's alone, last on its line
    assert t["avl/GAVL"][-2:] == arm and not [a for a in lips + t["ctl/GAOL"] if a in arm]
    assert f"train.init_from={work}/out/avl/GV/best/model" in t["avl/GAVL"]
    assert (work / "out/avl/GV/best/model").resolve() == (work / "out/lips/GV/best/model").resolve()
    # every later `remote.sh ship` brings the lip reader back (run 41 lost one with its machine), then AVSR's and
    # its control's chosen weights (session 48 lost a machine before AVSR's reports)
    also = (work / "ship_also").read_text().split()
    assert also[0] == "out/lips/GV/best/model"
    assert sorted(also[1:]) == ["out/avl/GAVL/best/model", "out/ctl/GAOL/best/model"]
    order = [c for c in calls if c[2:3] == ["train"]]  # the lip reader first, then AVSR and its control side by side
    assert order.index(t["lips/GV"]) < order.index(t["avl/GAVL"]) and order.index(t["lips/GV"]) < order.index(t["ctl/GAOL"])
    assert (work / "res/eval_lips/GV_vsr.json").exists() and (work / "res/eval_avl/GAVL_w_0.json").exists()
    # the lip reader's reports come after every report of AVSR and its control (the run's question first)
    outs = [a for c in calls if c[2:3] == ["evaluate"] for a in c if a.endswith(".json")]
    lip = [i for i, o in enumerate(outs) if "/out/lips/" in o]
    avsr = [i for i, o in enumerate(outs) if "/out/avl/" in o or "/out/ctl/" in o]
    assert lip and avsr and min(lip) > max(avsr), outs
    assert (work / "out/lips/GV/STOPPED").exists() or (work / "out/lips/GV/final/model").exists()
    assert len([c for c in calls if c[2:3] == ["train"] and "/out/lips/" in " ".join(c)]) == 1  # trained once
    beams = [c for c in calls if "--num-beams" in c and c[c.index("--num-beams") + 1] == "8"]
    assert len(beams) == 1 and beams[0][beams[0].index("--model") + 1] == "out/lips/GV/best/model"
    assert (work / "res/eval_lips/GV_vsr_b8.json").exists()
    # a lip reader that fails leaves no AVSR and no control to train, and the job ends with DONE and a failure
    p, work, calls = run_job(tmp_path / "fail", {"MODE": "avsr", "ENC_POOL": "open", "LIP_T": "60", "FAKE_FAIL": "lips"})
    assert p.returncode != 0 and (work / "DONE").exists() and set(trainings(calls, work)) == {"lips/GV"}
    assert "no lip reader was trained" in (work / "log/ctl.log").read_text()
    # a staged lip reader beside LIP_T is a contradiction, named before any work
    (tmp_path / "both/work/lipreader").mkdir(parents=True)
    (tmp_path / "both/work/lipreader/config.json").write_text("{}")
    p, work, calls = run_job(tmp_path / "both", {"MODE": "avsr", "ENC_POOL": "open", "LIP_T": "60"})
    assert p.returncode == 2 and "holds a staged one" in p.stderr and not calls
    p, work, calls = run_job(tmp_path / "bad", {"MODE": "avsr", "ENC_POOL": "open", "LIP_T": "soon"})
    assert p.returncode == 2 and "LIP_T=soon" in p.stderr and not calls
