"""scripts/remote/decoder_job.sh (Whisper's decoder trained on a lent GPU, docs/ASR.md) started the way remote.sh
starts it, with `python3` a stand-in that records every command: one probe per arm with the arm's corpora merged, its
own learning rate and KL weight or the job's, every validation manifest, the guard and the validation interval; each
chosen decoder packed in 4 bits; DONE with the exit status."""
from __future__ import annotations

from pathlib import Path

from test_encoder_lora_job import run_remote_job
from test_train_grid_script import FAKE

EXTRA = r'''
if args[:2] == ["-m", "pip"] or args[2:4] == ["assets", "get"]:
    raise SystemExit(0)
if args[0].endswith("whisper_decoder_probe.py"):
    for f in (opt("--save"), opt("--out")):
        Path(f).parent.mkdir(parents=True, exist_ok=True)
        Path(f).write_text("{}")
    if "--save-encoder" in args:
        Path(opt("--save-encoder")).mkdir(parents=True)
        (Path(opt("--save-encoder")) / "adapters.safetensors").write_text("lora " + opt("--encoder-lr"))
    print(json.dumps({"summary": Path(opt("--out")).stem}))
    raise SystemExit(0)
if args[0].endswith("asr_candidate.py"):
    Path(args[3]).mkdir(parents=True)
    raise SystemExit(0)
if args[2:3] == ["evaluate"]:
    if os.environ.get("FAKE_EVAL_WAITS_FOR"):  # a decoding that outlasts the training: done once this file exists
        import time
        for _ in range(100):
            if Path(os.environ["FAKE_EVAL_WAITS_FOR"]).exists():
                break
            time.sleep(0.1)
        else:
            raise SystemExit(1)
    Path(opt("--out")).write_text("{}")
    raise SystemExit(0)
if args[0].endswith("pack_whisper_decoder.py"):
    Path(args[2]).write_text("packed " + Path(args[1]).name)
    raise SystemExit(0)
'''
FIRST = 'if args[0].endswith("make_text_pool.py"):'  # the stand-in's first handler: these come before it
FAKE_JOB = FAKE.replace(FIRST, EXTRA + "\n" + FIRST)


def run_decoder_job(tmp_path: Path, manifests: tuple[str, ...], env: dict):
    """decoder_job.sh in tmp_path/work with a one-line manifest for each of ``manifests`` (under
    data/speech_release); returns run_remote_job's (process, work folder, the stand-in's calls)."""
    for m in manifests:
        f = tmp_path / "work/data/speech_release" / f"{m}.jsonl"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text('{"id": "u0", "audio": "a.flac", "text": "x"}\n')
    return run_remote_job(tmp_path, "decoder_job.sh",
                          ("whisper_decoder_probe.py", "merge_manifests.py", "pack_whisper_decoder.py",
                           "remote/candidate_eval_job.sh", "asr_candidate.py"), FAKE_JOB, env)


def test_each_arm_trains_on_its_corpora_with_its_settings_and_comes_back_packed(tmp_path):
    env = {"ARMS": "a:st+w3+n9:1:0.5 b:st+w3+n9:1.5:0.5:3e-5:1 c:st+w3+n9:2:0.5:::cross "
                   "e:st+w3+n9:2:0.5::0.5:none:3e-4:base f:st+w3+n9:2:0.5:::all:3e-4::2:7",
           "VAL": "st/val.jsonl,natt9/test.jsonl",
           "MAX_S": "800", "EVAL_EVERY": "200", "THREADS": "5", "STOP_STEP": "1728"}
    p, work, calls = run_decoder_job(tmp_path, ("st/train", "st/val", "st/test", "w3/train", "n9/train",
                                                "natt9/test"), env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert (work / "DONE").exists() and "job ended, exit 0" in p.stdout
    d = work / "data/speech_release"
    merges = [c for c in calls if c[0].endswith("merge_manifests.py")]
    assert merges == [["repo/scripts/merge_manifests.py", str(d), "train_dec_st_w3_n9.jsonl", "st", "w3", "n9"]]
    probes = {c[c.index("--out") + 1]: c for c in calls if c[0].endswith("whisper_decoder_probe.py")}
    assert set(probes) == {str(work / f"res/{n}.json") for n in "abcef"}

    def opt(c, name):
        return c[c.index(name) + 1]
    a, b, x, e, f = (probes[str(work / f"res/{n}.json")] for n in "abcef")
    for c in (a, b, x, e):
        assert opt(c, "--train") == str(d / "train_dec_st_w3_n9.jsonl")
        assert opt(c, "--val") == f"{d}/st/val.jsonl,{d}/natt9/test.jsonl"
        assert (opt(c, "--max-seconds"), opt(c, "--eval-every"), opt(c, "--threads")) == ("800", "200", "5")
        assert opt(c, "--stop-step") == "1728"
        assert opt(c, "--device") == "cuda" and opt(c, "--test") == str(d / "st/test.jsonl")
    assert (opt(a, "--epochs"), opt(a, "--lr"), opt(a, "--kl")) == ("1", "1e-4", "0")  # the job's LR, no KL
    assert (opt(b, "--epochs"), opt(b, "--lr"), opt(b, "--kl")) == ("1.5", "3e-5", "1")  # the arm's own
    assert (opt(a, "--train-part"), opt(b, "--train-part")) == ("all", "all")
    assert (opt(x, "--lr"), opt(x, "--kl"), opt(x, "--train-part")) == ("1e-4", "0", "cross")  # empty: the job's
    for c in (a, b, x):  # no encoder learning rate: the model's encoder as it is
        assert "--encoder-lr" not in c and "--save-encoder" not in c and "--kl-view" not in c and "--anchor" not in c
    assert (opt(e, "--train-part"), opt(e, "--encoder-lr"), opt(e, "--save-encoder")) == \
        ("none", "3e-4", str(work / "out/e_encoder"))
    assert (opt(e, "--kl"), opt(e, "--kl-view")) == ("0.5", "base")  # the KL's teacher reads the encoder before
    assert "--anchor" not in e and "--kl-view" not in f  # field 10: the anchor's weight on the staged anchor speech
    assert (opt(f, "--anchor"), opt(f, "--anchor-kl")) == (str(work / "data/anchor_speech/tuxpaint.jsonl"), "2")
    assert opt(f, "--seed") == "7" and not [c for c in (a, b, x, e) if "--seed" in c]  # field 11; else the probe's
    for name in "abcef":
        assert (work / "packed" / f"{name}.safetensors").read_text() == f"packed {name}.safetensors"
    assert sorted(p.name for p in (work / "packed").glob("*_encoder")) == ["e_encoder", "f_encoder"]  # their LoRAs
    assert (work / "packed/e_encoder/adapters.safetensors").read_text() == "lora 3e-4"


def test_without_max_s_there_is_no_guard(tmp_path):
    p, work, calls = run_decoder_job(tmp_path, ("st/train", "st/val", "st/test"), {"ARMS": "s:st:1:0"})
    assert p.returncode == 0, p.stderr[-2000:]
    probe = next(c for c in calls if c[0].endswith("whisper_decoder_probe.py"))
    assert "--max-seconds" not in probe and "--stop-step" not in probe
    assert probe[probe.index("--val") + 1] == str(work / "data/speech_release/st/val.jsonl")
    assert probe[probe.index("--eval-every") + 1] == "100"


def test_eval_sets_decode_the_release_and_every_packed_arm_after_training(tmp_path):
    p, work, calls = run_decoder_job(tmp_path, ("st/train", "w3/train", "st/val", "st/test"), {
        "ARMS": "a:st:1:0:::all:3e-4 b:st+w3:1:0", "EVAL_SETS": "st/test.jsonl", "PAR": "3", "EVAL_THREADS": "4"})
    assert p.returncode == 0, p.stderr[-2000:]
    names = [c[0].rsplit("/", 1)[-1] for c in calls if c[0].endswith(".py")]
    assert names.index("asr_candidate.py") > max(i for i, n in enumerate(names) if n == "pack_whisper_decoder.py")
    evals = [c for c in calls if c[2:3] == ["evaluate"]]
    assert sorted(e[e.index("--model") + 1] for e in evals) == sorted(
        ["repo/checkpoints/asr-smollm2-whisper-tiny", "cand/a", "cand/b"])
    assert (work / "res/b_st_test.json").is_file() and "PAR=3 THREADS=4" in p.stdout
    assert (work / "log/a.log").is_file() and (work / "log/eval_a.log").is_file()  # training logs kept
    assert len([c for c in calls if c[:3] == ["-m", "pip", "install"]]) == 1  # WORK set up once
    assert p.stdout.count("job ended") == 1


def test_without_eval_sets_nothing_is_decoded(tmp_path):
    p, work, calls = run_decoder_job(tmp_path, ("st/train", "st/val", "st/test"), {"ARMS": "a:st:1:0"})
    assert p.returncode == 0 and not [c for c in calls if c[2:3] == ["evaluate"] or c[0].endswith("asr_candidate.py")]


def test_eval_beside_decodes_the_release_while_the_arms_train_with_one_setup(tmp_path):
    p, work, calls = run_decoder_job(tmp_path, ("st/train", "st/val", "st/test", "hv/val"), {
        "ARMS": "a:st:1:0 b:st:1:0", "EVAL_BESIDE": "hv/val.jsonl,st/val.jsonl", "CANDS": "1", "PAR": "2",
        "EVAL_THREADS": "3"})
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.count("job ended") == 1  # the decoding marks no DONE of its own
    assert len([c for c in calls if c[:3] == ["-m", "pip", "install"]]) == 1  # WORK set up once
    evals = [c for c in calls if c[2:3] == ["evaluate"]]
    assert [e[e.index("--model") + 1] for e in evals] == ["repo/checkpoints/asr-smollm2-whisper-tiny"]  # no arm
    assert evals[0][evals[0].index("--candidates") + 1] == "res/release_hv_val.cands.json"
    assert [a for e, a in zip(evals[0], evals[0][1:]) if e == "--out"] == ["res/release_hv_val.json",
                                                                          "res/release_st_val.json"]
    assert not [c for c in calls if c[0].endswith("asr_candidate.py")]
    assert "PAR=2 THREADS=3" in (work / "log/eval_beside.log").read_text()
    assert (work / "packed/a.safetensors").is_file() and (work / "packed/b.safetensors").is_file()


def test_a_failed_decoding_beside_fails_the_job(tmp_path):
    p, work, calls = run_decoder_job(tmp_path, ("st/train", "st/val", "st/test"), {
        "ARMS": "a:st:1:0", "EVAL_BESIDE": "missing/val.jsonl", "MODELS": "x=nowhere"})
    assert p.returncode != 0 and "eval beside: failed" in p.stdout and (work / "DONE").exists()
    assert (work / "packed/a.safetensors").is_file()  # the arm still trained and was packed


def test_the_arms_are_packed_before_the_decoding_beside_is_waited_for(tmp_path):
    """A decoding beside that outlasts the training does not hold back the packed arms (session 69: the device time
    ran out while hv67 still decoded, and the arms had to be packed by hand): here the decoding ends only once the
    arm is packed, so a job that waited for it first would fail."""
    work = tmp_path / "work"
    p, work, calls = run_decoder_job(tmp_path, ("st/train", "st/val", "st/test"), {
        "ARMS": "a:st:1:0", "EVAL_BESIDE": "st/val.jsonl", "FAKE_EVAL_WAITS_FOR": str(work / "packed/a.safetensors")})
    assert p.returncode == 0, p.stdout[-2000:]
    assert (work / "packed/a.safetensors").is_file() and (work / "res/release_st_val.json").is_file()
