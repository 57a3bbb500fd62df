"""scripts/remote/candidate_eval_job.sh (session 61: a GPU run's arms decoded whole on the lent GPU) started the way
remote.sh starts it, with `python3` a stand-in that records every command: one candidate per packed arm, then the
release and every candidate decoded on the GPU with the rule's beams and dtype on every set, release first."""
from __future__ import annotations

from pathlib import Path

from test_encoder_lora_job import run_remote_job
from test_train_grid_script import FAKE

EXTRA = r'''
if args[:2] == ["-m", "pip"] or args[2:4] == ["assets", "get"]:
    raise SystemExit(0)
if args[0].endswith("asr_candidate.py"):
    Path(args[3]).mkdir(parents=True)
    raise SystemExit(0)
if args[2:3] == ["evaluate"]:
    with open(os.environ["FAKE_LOG"] + ".threads", "a") as t:  # the thread count each decoding was given
        t.write(os.environ.get("OMP_NUM_THREADS", "") + "\n")
    if args[args.index("--model") + 1] == os.environ.get("FAIL_MODEL"):
        raise SystemExit(5)
    for i, a in enumerate(args):
        if a == "--out":
            Path(args[i + 1]).write_text("{}")
    raise SystemExit(0)
'''
FIRST = 'if args[0].endswith("make_text_pool.py"):'
FAKE_JOB = FAKE.replace(FIRST, EXTRA + "\n" + FIRST)


def run_job(tmp_path: Path, env: dict):
    work = tmp_path / "work"
    for a in ("ek2", "ekn"):  # a decoder job's packed/: an arm with its encoder LoRA, one without
        (work / "packed").mkdir(parents=True, exist_ok=True)
        (work / "packed" / f"{a}.safetensors").write_text("dec")
    (work / "packed/ek2_encoder").mkdir()
    return run_remote_job(tmp_path, "candidate_eval_job.sh", ("asr_candidate.py",), FAKE_JOB, env)


def test_every_arm_becomes_a_candidate_and_all_decode_on_the_gpu_as_the_rule_does(tmp_path):
    p, work, calls = run_job(tmp_path, {"SETS": "st/test.jsonl,st/val.jsonl"})
    assert p.returncode == 0, p.stderr[-2000:]
    assert (work / "DONE").exists() and "job ended, exit 0" in p.stdout
    rel = "repo/checkpoints/asr-smollm2-whisper-tiny"
    cands = [c for c in calls if c[0].endswith("asr_candidate.py")]
    assert cands == [["repo/scripts/asr_candidate.py", "packed", a, f"cand/{a}", "--release", rel, "--force"]
                     for a in ("ek2", "ekn")]
    evals = [c for c in calls if c[2:3] == ["evaluate"]]
    assert [e[e.index("--model") + 1] for e in evals] == [rel, "cand/ek2", "cand/ekn"]
    d = work / "data/speech_release"
    for e, name in zip(evals, ("release", "ek2", "ekn")):
        assert e[e.index("--device") + 1] == "cuda" and e[e.index("--num-beams") + 1] == "8"
        assert e[e.index("--dtype") + 1] == "float32" and e[e.index("--batch-size") + 1] == "32"
        pairs = [(e[i + 1], e[i + 3]) for i, a in enumerate(e) if a == "--manifest"]
        assert pairs == [(str(d / "st/test.jsonl"), f"res/{name}_st_test.json"),
                         (str(d / "st/val.jsonl"), f"res/{name}_st_val.json")]
        assert (work / f"res/{name}_st_val.json").is_file()
    assert "release: " in p.stdout and "ekn: " in p.stdout


def test_beams_dtype_and_batch_can_be_set(tmp_path):
    p, work, calls = run_job(tmp_path, {"BEAMS": "4", "DTYPE": "bfloat16", "BATCH": "8"})
    assert p.returncode == 0, p.stderr[-2000:]
    evals = [c for c in calls if c[2:3] == ["evaluate"]]
    assert len(evals) == 3
    for e in evals:
        assert (e[e.index("--num-beams") + 1], e[e.index("--dtype") + 1], e[e.index("--batch-size") + 1]) == \
            ("4", "bfloat16", "8")
        assert e.count("--manifest") == 1 and e[e.index("--manifest") + 1].endswith("st/test.jsonl")


def test_models_decode_side_by_side_with_their_share_of_threads_and_a_failure_fails_the_job(tmp_path):
    p, work, calls = run_job(tmp_path, {"PAR": "2", "THREADS": "7", "FAIL_MODEL": "cand/ek2"})
    assert p.returncode == 1 and "job ended, exit 1" in p.stdout
    evals = [c for c in calls if c[2:3] == ["evaluate"]]
    assert sorted(e[e.index("--model") + 1] for e in evals) == sorted(
        ["repo/checkpoints/asr-smollm2-whisper-tiny", "cand/ek2", "cand/ekn"])
    assert (tmp_path / "calls.jsonl.threads").read_text().split() == ["7"] * 3
    assert "ek2: " in p.stdout and "exit 5 (log/eval_ek2.log)" in p.stdout
    assert (work / "res/ekn_st_test.json").is_file() and (work / "res/release_st_test.json").is_file()


def test_more_models_as_overlays_of_the_release_with_their_own_sets_and_candidates(tmp_path):
    rel = tmp_path / "work/repo/checkpoints/asr-smollm2-whisper-tiny"  # what job_setup's copy of the repo holds
    ov = tmp_path / "work/ens"
    (ov / "second_judges/s1").mkdir(parents=True)
    (ov / "config.json").write_text('{"overlay": 1}')
    repo_rel = tmp_path / "repo/checkpoints/asr-smollm2-whisper-tiny"
    repo_rel.mkdir(parents=True)
    (repo_rel / "config.json").write_text('{"release": 1}')
    (repo_rel / "projectors.safetensors").write_text("w")
    p, work, calls = run_job(tmp_path, {"RELEASE": "0", "CANDS": "1", "SETS": "st/val.jsonl",
                                        "MODELS": "ENSa=ens:hv/val.jsonl,st/val.jsonl ENSb=ens:hk/val.jsonl"})
    assert p.returncode == 0, p.stderr[-2000:]
    assert (ov / "config.json").read_text() == '{"overlay": 1}'  # the overlay's own files stay
    assert (ov / "projectors.safetensors").read_text() == "w" and rel.is_dir()  # the rest is the release's
    evals = [c for c in calls if c[2:3] == ["evaluate"]]
    assert [e[e.index("--model") + 1] for e in evals] == ["cand/ek2", "cand/ekn", "ens", "ens"]
    d = work / "data/speech_release"
    trip = [(e[i + 1], e[i + 3], e[i + 5]) for e in evals[2:] for i, a in enumerate(e) if a == "--manifest"]
    assert trip == [(str(d / "hv/val.jsonl"), "res/ENSa_hv_val.json", "res/ENSa_hv_val.cands.json"),
                    (str(d / "st/val.jsonl"), "res/ENSa_st_val.json", "res/ENSa_st_val.cands.json"),
                    (str(d / "hk/val.jsonl"), "res/ENSb_hk_val.json", "res/ENSb_hk_val.cands.json")]
    assert all(e[e.index("--manifest") + 2] == "--out" for e in evals)


def test_a_missing_model_folder_is_named(tmp_path):
    p, work, calls = run_job(tmp_path, {"MODELS": "X=nowhere"})
    assert p.returncode == 2 and "X's folder nowhere is missing" in p.stderr
