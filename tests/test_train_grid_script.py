"""scripts/train_grid.sh (GPU runs 16-18) run against a stand-in for Python that records every command and makes
the files each one would: the corpora and models it asks for, the order of the jobs, what GAVL starts from, how a
training stopped by a time limit is evaluated, and which reports are compared. No model runs; seconds on CPU."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FAKE = r'''
import json, os, sys
from pathlib import Path
args = sys.argv[1:]
if args[:1] == ["-"]:  # a here-document for Python: run it as Python would
    sys.argv = args
    exec(compile(sys.stdin.read(), "<stdin>", "exec"))
    raise SystemExit(0)
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps(args) + "\n")
def opt(name):
    return args[args.index(name) + 1]
def over(key):
    return next((a.split("=", 1)[1] for a in args if a.startswith(key + "=")), None)
def manifest(path, n):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("".join(json.dumps({"id": f"u{i}", "audio": f"a{i}.flac", "video": f"v{i}.mp4",
                                              "text": "x"}) + "\n" for i in range(n)))
if args[0].endswith("make_text_pool.py"):
    Path(opt("--out")).parent.mkdir(parents=True, exist_ok=True)
    Path(opt("--out")).write_text("Give small into house twelve very.\n")
elif args[0].endswith("merge_manifests.py"):
    manifest(Path(args[1]) / args[2], 4)
elif args[:2] == ["-m", "mmlora.cli"]:
    cmd = args[2]
    if cmd == "make-speech-corpus":
        for split in ("train", "val", "test"):
            manifest(Path(opt("--out")) / f"{split}.jsonl", 3)
    elif cmd == "train":
        out = Path(over("train.output_dir"))
        name = out.name
        if name in os.environ.get("FAKE_NO_VAL", "").split():  # stopped before its first validation
            for step in (50, 200, 100):
                (out / f"checkpoint-{step}/model").mkdir(parents=True, exist_ok=True)
            raise SystemExit(3)
        (out / "best/model").mkdir(parents=True, exist_ok=True)
        if name in os.environ.get("FAKE_STOP_LATE", "").split():  # stopped by SIGTERM: best/ at FAKE_BEST_STEP,
            (out / "best/info.json").write_text(json.dumps({"step": int(os.environ["FAKE_BEST_STEP"])}))
            for step in (1000, 1187, 250):  # checkpoints every 250 steps and the one SIGTERM wrote, no final/
                (out / f"checkpoint-{step}/model").mkdir(parents=True, exist_ok=True)
            raise SystemExit(3)
        if name in os.environ.get("FAKE_STOP", "").split():
            raise SystemExit(3)  # stopped by SIGTERM after a checkpoint
        (out / "final/model").mkdir(parents=True, exist_ok=True)
        if os.environ.get("FAKE_BEST_STEP"):  # best/ at that step, final/ at step 1500 (the trainer's info.json)
            (out / "best/info.json").write_text(json.dumps({"step": int(os.environ["FAKE_BEST_STEP"])}))
            (out / "final/info.json").write_text(json.dumps({"step": 1500}))
        if any(s in str(out) for s in os.environ.get("FAKE_BEST_LAST", "").split()):  # validation's best: the last step
            for d in ("best", "final"):
                (out / f"{d}/info.json").write_text(json.dumps({"step": 1500}))
            mean = ["checkpoint-1300", "checkpoint-1400", "checkpoint-1500"]
            if os.environ.get("FAKE_AVERAGED"):  # final/: the mean of the last 3 checkpoints (train.average_last=3)
                (out / "final/info.json").write_text(json.dumps({"step": 1500, "averaged": mean}, indent=2))
            if os.environ.get("FAKE_AVERAGED") == "best":  # the last validation read that mean, and best/ says so
                (out / "best/info.json").write_text(json.dumps({"step": 1500, "averaged": mean}, indent=2))
            elif os.environ.get("FAKE_AVERAGED") == "other":  # best/: the mean of other checkpoints
                (out / "best/info.json").write_text(json.dumps({"step": 1500, "averaged": mean[:2]}, indent=2))
    elif cmd == "evaluate":  # one report and summary line per --out (several --manifest / --out pairs: one call)
        for i, a in enumerate(args):
            if a == "--out":
                Path(args[i + 1]).write_text(json.dumps({"wer": 0.5, "model": opt("--model")}))
                print(json.dumps({"wer": 0.5}))
    elif cmd == "compare-wer":
        print(json.dumps({"a": args[3], "b": args[4], "diff": 0.0}))
'''


def run_grid(tmp_path: Path, jobs: str, *extra: str, env: dict | None = None, check: bool = True):
    fake = tmp_path / "fake_python.py"
    fake.write_text(FAKE)
    e = {**os.environ, "PYTHON": f"{sys.executable} {fake}", "FAKE_LOG": str(tmp_path / "calls.jsonl"),
         "POOL": "gridwide", "JOBS": jobs, **(env or {})}
    # the script runs in a tree of links to it, so that the sentence file it writes (data/text/) lands there
    repo = tmp_path / "repo"
    if not repo.exists():
        (repo / "scripts").mkdir(parents=True)
        for f in ("train_grid.sh", "wide_voices.sh", "lib_train.sh"):
            (repo / "scripts" / f).symlink_to(ROOT / "scripts" / f)
        (repo / "recipes").symlink_to(ROOT / "recipes")
    p = subprocess.run(["bash", str(repo / "scripts/train_grid.sh"), str(tmp_path / "data"), str(tmp_path / "out"),
                        *extra], env=e, text=True, capture_output=True, timeout=120, cwd=repo)
    if check:
        assert p.returncode == 0, p.stderr[-2000:]
    log = Path(e["FAKE_LOG"])
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return p, calls


def trainings(calls):
    return {next(a.split("=", 1)[1] for a in c if a.startswith("train.output_dir=")).rsplit("/", 1)[1]: c
            for c in calls if c[:3] == ["-m", "mmlora.cli", "train"]}


def reports(calls):
    """Every report the evaluate calls write, by name: its model, manifest and condition (an evaluate call pairs
    each --out with the --manifest, --snr, --noise and --noise-talkers at the same position, or takes one for all;
    the stand-in reads them as mmlora evaluate does), and the call's --zero-modality."""
    got = {}
    for c in calls:
        if c[2:3] != ["evaluate"]:
            continue
        opt = {k: [c[i + 1] for i, a in enumerate(c) if a == k]
               for k in ("--out", "--manifest", "--snr", "--noise", "--noise-talkers", "--zero-modality")}
        for n, out in enumerate(opt["--out"]):
            def at(k, default=None):
                v = opt[k]
                return v[n] if len(v) == len(opt["--out"]) else (v[0] if v else default)
            got[Path(out).stem] = {"model": c[c.index("--model") + 1], "manifest": at("--manifest"),
                                   "snr": at("--snr", "none"), "noise": at("--noise", "babble"),
                                   "talkers": at("--noise-talkers", "3,6"), "zero": opt["--zero-modality"]}
    return got


def test_vocabulary_point_gavl_from_the_lip_reader_and_its_noise_validated_control(tmp_path):
    p, calls = run_grid(tmp_path, "GV GAVL GAOL", "train.num_workers=4", env={"SLOT_WORDS": "300"})
    pool = next(c for c in calls if c[0].endswith("make_text_pool.py"))
    assert pool[pool.index("--slot-words") + 1] == "300"
    corpus = next(c for c in calls if c[2:3] == ["make-speech-corpus"])
    assert corpus[corpus.index("--out") + 1].endswith("/data/gw300") and corpus[corpus.index("--seed") + 1] == "300"
    t = trainings(calls)
    assert list(t) == ["GV", "GAVL", "GAOL"]  # GAVL after the lip reader it starts from
    out = tmp_path / "out"
    gavl, gaol = t["GAVL"], t["GAOL"]
    assert f"train.init_from={out}/GV/best/model" in gavl and "model.media.audio.dropout=0.3" in gavl
    assert any(a.startswith("train.init_projectors={audio: ") for a in gavl)
    for c in (gavl, gaol):  # chosen the same way: 200 validation clips with one competing talker at 0 dB
        assert {"data.val_snr=0", "data.val_noise_talkers=[1,1]", "data.val_samples=200",
                "train.num_workers=4"} <= set(c)
        assert c.index("train.num_workers=4") > c.index("data.val_samples=200")  # the caller's overrides win
    assert "data.val_snr=0" not in t["GV"] and f"data.val_manifest={tmp_path}/data/gw300/val.jsonl" in t["GV"]
    evals = reports(calls)
    assert {"GAVL_clean", "GAVL_t1_0", "GAVL_b_-5", "GAVL_w_-5", "GAVL_vsr", "GAVL_b_0_wrong_lips",
            "GAVL_final_t1_0", "GAOL_final_b_0", "GV_vsr", "GV_vsr_wrong_lips"} <= set(evals)
    assert "GAOL_vsr" not in evals
    assert evals["GAVL_t1_0"]["model"] == f"{out}/GAVL/best/model"
    assert evals["GAVL_final_t1_0"]["model"] == f"{out}/GAVL/final/model"
    test, wrong = f"{tmp_path}/data/gw300/test.jsonl", f"{tmp_path}/data/gw300/test_wrong_lips.jsonl"
    cond = lambda r: (r["manifest"], r["snr"], r["noise"], r["talkers"], r["zero"])  # noqa: E731
    for j in ("GAVL", "GAOL"):  # each report in its own condition, whichever call wrote it
        assert cond(evals[f"{j}_clean"]) == (test, "none", "babble", "3,6", [])
        assert cond(evals[f"{j}_t1_-5"]) == (test, "-5", "babble", "1,1", [])
        assert cond(evals[f"{j}_b_0"]) == (test, "0", "babble", "3,6", [])
        assert cond(evals[f"{j}_w_-5"]) == (test, "-5", "white", "3,6", [])
        assert cond(evals[f"{j}_final_t1_0"]) == (test, "0", "babble", "1,1", [])
    assert cond(evals["GAVL_b_-5_wrong_lips"]) == (wrong, "-5", "babble", "3,6", [])
    assert cond(evals["GAVL_vsr"]) == (test, "none", "babble", "3,6", ["audio"])
    assert cond(evals["GV_vsr_wrong_lips"]) == (wrong, "none", "babble", "3,6", [])
    # the lip reader's last weights too (its best/ is an earlier step here), with its right lips
    assert evals["GV_final_vsr"]["model"] == f"{out}/GV/final/model" and evals["GV_vsr"]["model"] == f"{out}/GV/best/model"
    assert cond(evals["GV_final_vsr"]) == (test, "none", "babble", "3,6", [])
    n_calls = len([c for c in calls if c[2:3] == ["evaluate"]])
    # GAVL: 9 reports, its final 7, its VSR; GAOL: 7, its final 7; GV: 2, its final 1 (34 reports, one call each before)
    assert n_calls == 7
    wrong = [json.loads(x) for x in (tmp_path / "data/gw300/test_wrong_lips.jsonl").read_text().splitlines()]
    assert [r["video"] for r in wrong] == ["v1.mp4", "v2.mp4", "v0.mp4"]  # each clip with the next clip's lips
    compare = (out / "eval/compare.txt").read_text().splitlines()
    assert "GAOL_t1_-5 - GAVL_t1_-5: " in "\n".join(compare) and "GAO_" not in "\n".join(compare)
    assert len([x for x in compare if x.startswith("GAOL_final_")]) == 7
    assert cond(evals["GAOL_final_w_-5"]) == (test, "-5", "white", "3,6", [])
    # a second run finds everything made: nothing trains or evaluates again
    _, again = run_grid(tmp_path, "GV GAVL GAOL", env={"SLOT_WORDS": "300", "FAKE_LOG": str(tmp_path / "again")})
    assert not [c for c in again if c[2:3] in (["train"], ["evaluate"], ["make-speech-corpus"])]


def test_a_training_stopped_by_time_is_evaluated_at_its_best_checkpoint(tmp_path):
    p, calls = run_grid(tmp_path, "GV GAVL", env={"FAKE_STOP": "GV"})
    out = tmp_path / "out"
    assert (out / "GV/STOPPED").exists() and "GV stopped early" in p.stdout
    assert f"train.init_from={out}/GV/best/model" in trainings(calls)["GAVL"]
    _, again = run_grid(tmp_path, "GV GAVL", env={"FAKE_LOG": str(tmp_path / "again")})
    assert "GV" not in trainings(again)  # STOPPED: not resumed unless the marker is deleted


def test_a_training_stopped_before_its_first_validation_is_evaluated_at_its_latest_checkpoint(tmp_path):
    # run 25: GAVL stopped at step 231 of a 250-step validation interval, with no best/ and no final/, and its
    # evaluations died on final/model; now they read the latest checkpoint's weights (200, not 50 or 100)
    p, calls = run_grid(tmp_path, "GV GAVL GAOL", env={"FAKE_NO_VAL": "GAVL"})
    out = tmp_path / "out"
    assert f"GAVL stopped before its first validation: evaluating {out}/GAVL/checkpoint-200/model" in p.stdout
    evals = {k: r["model"] for k, r in reports(calls).items()}
    assert evals["GAVL_clean"] == evals["GAVL_b_-5"] == f"{out}/GAVL/checkpoint-200/model"
    assert "GAVL_final_clean" not in evals and evals["GAOL_clean"] == f"{out}/GAOL/best/model"
    assert "GAOL_b_-5 - GAVL_b_-5: " in (out / "eval/compare.txt").read_text()


def test_free_words_pool_makes_its_own_corpus(tmp_path):
    _, calls = run_grid(tmp_path, "GV", env={"POOL": "freewords", "SLOT_WORDS": "300"})
    pool = next(c for c in calls if c[0].endswith("make_text_pool.py"))
    assert pool[1] == "freewords" and pool[pool.index("--slot-words") + 1] == "300"
    assert pool[pool.index("--out") + 1] == "data/text/freewords300.txt"
    corpus = next(c for c in calls if c[2:3] == ["make-speech-corpus"])
    assert corpus[corpus.index("--out") + 1].endswith("/data/fw300") and corpus[corpus.index("--seed") + 1] == "1300"
    assert "fw=data/text/freewords300.txt" in corpus
    assert f"data.val_manifest={tmp_path}/data/fw300/val.jsonl" in trainings(calls)["GV"]


def test_open_text_pool_reads_novels_and_leaves_out_the_release_corpora_sentences(tmp_path):
    ex = [tmp_path / "rel_a.jsonl", tmp_path / "rel_b.jsonl"]
    for f in ex:
        f.write_text("")
    _, calls = run_grid(tmp_path, "GV", env={"POOL": "open", "OPEN_EXCLUDE": ",".join(map(str, ex))})
    assert {c[1] for c in calls if c[0].endswith("make_text_pool.py")} == {"gutenberg", "austen"}
    corpus = next(c for c in calls if c[2:3] == ["make-speech-corpus"])
    assert corpus[corpus.index("--out") + 1].endswith("/data/op12") and corpus[corpus.index("--seed") + 1] == "2012"
    assert corpus[corpus.index("--text-weights") + 1] == "gutenberg=0.5,austen=0.5"
    assert corpus[corpus.index("--exclude-text") + 1] == ",".join(map(str, ex))
    assert corpus[corpus.index("--max-words") + 1] == "16" and corpus[corpus.index("--n-train") + 1] == "12000"
    assert "--no-video" not in corpus and corpus[corpus.index("--test-voices") + 1]  # lips, held-out voices
    assert f"data.val_manifest={tmp_path}/data/op12/val.jsonl" in trainings(calls)["GV"]


def test_open_text_pool_with_one_more_training_corpus_of_new_sentences(tmp_path):
    """OPEN_MORE=1: op13, training clips only, leaving out the sentences of op12 (all splits: op12's test sentences
    never train) and OPEN_EXCLUDE's, with gcide's quotations beside the novels; the models train on op12 + op13 and
    validate on op12."""
    ex = tmp_path / "rel.jsonl"
    ex.write_text("")
    _, calls = run_grid(tmp_path, "GV", env={"POOL": "open", "OPEN_EXCLUDE": str(ex), "OPEN_MORE": "1"})
    corpora = {Path(c[c.index("--out") + 1]).name: c for c in calls if c[2:3] == ["make-speech-corpus"]}
    assert list(corpora) == ["op12", "op13"]
    assert {c[1] for c in calls if c[0].endswith("make_text_pool.py")} == {"gutenberg", "austen", "gcide"}
    d = tmp_path / "data"
    op12, op13 = corpora["op12"], corpora["op13"]
    assert op12[op12.index("--text-weights") + 1] == "gutenberg=0.5,austen=0.5"  # op12 as it was made
    assert "gcide=data/text/gcide.txt" not in op12 and "gcide=data/text/gcide.txt" in op13
    assert op13[op13.index("--text-weights") + 1] == "gutenberg=1,austen=1,gcide=1"
    assert op13[op13.index("--seed") + 1] == "2013" and op13[op13.index("--n-train") + 1] == "11000"
    assert op13[op13.index("--n-val") + 1] == "0" and op13[op13.index("--n-test") + 1] == "0"
    assert op13[op13.index("--test-voices") + 1] == op12[op12.index("--test-voices") + 1]
    want = [f"{d}/op12/{s}.jsonl" for s in ("train", "val", "test")] + [str(ex)]
    assert op13[op13.index("--exclude-text") + 1].split(",") == want
    merge = next(c for c in calls if c[0].endswith("merge_manifests.py"))
    assert merge[1:] == [str(d), "train_more1.jsonl", "op12", "op13", "--video"]
    gv = trainings(calls)["GV"]
    assert f"data.train_manifest={d}/train_more1.jsonl" in gv and f"data.val_manifest={d}/op12/val.jsonl" in gv
    p, _ = run_grid(tmp_path, "GV", env={"POOL": "open", "OPEN_MORE": "2"}, check=False)
    assert p.returncode == 2 and "OPEN_MORE=2: 0 or 1" in p.stderr


def test_open_text_pool_stops_where_a_manifest_to_leave_out_is_missing(tmp_path):
    p, calls = run_grid(tmp_path, "GV", env={"POOL": "open", "OPEN_EXCLUDE": str(tmp_path / "gone.jsonl")},
                        check=False)
    assert p.returncode == 2 and "gone.jsonl, which is missing" in p.stderr and "OPEN_EXCLUDE" in p.stderr
    assert not [c for c in calls if c[2:3] == ["make-speech-corpus"]]
    _, calls = run_grid(tmp_path, "GV", env={"POOL": "open", "OPEN_EXCLUDE": ""})  # '' leaves nothing out
    assert "--exclude-text" not in next(c for c in calls if c[2:3] == ["make-speech-corpus"])
    # a corpus already made (staged on the lent machine, which has no release corpora) needs no manifest to leave out
    p, calls = run_grid(tmp_path, "GV", env={"POOL": "open", "OPEN_EXCLUDE": str(tmp_path / "gone.jsonl"),
                                             "FAKE_LOG": str(tmp_path / "again.jsonl")}, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    assert not [c for c in calls if c[2:3] == ["make-speech-corpus"]]


@pytest.mark.parametrize("jobs,env,message", [
    ("GAVL", {}, "train GV first"),
    ("GV", {"SLOT_WORDS": "abc"}, "SLOT_WORDS=abc"),
    ("GV", {"POOL": "words"}, "POOL=words"),
    ("GAOL", {"EVAL_FIRST": "w_0 white_0"}, "no test condition white_0 (there are: clean t1_0 t1_-5 b_0 b_-5 w_0 w_-5)"),
])
def test_bad_settings_stop_with_a_message(tmp_path, jobs, env, message):
    p, calls = run_grid(tmp_path, jobs, env=env, check=False)
    assert p.returncode == 2 and message in p.stderr
    if "EVAL_FIRST" in env:  # checked before any corpus or training, not after an hour of them
        assert not calls


def test_eval_first_writes_those_reports_first_and_every_other_one_after(tmp_path):
    def outs(env):
        where = tmp_path / ("first" if env else "default")
        where.mkdir()
        _, calls = run_grid(where, "GV GAVL GAOL", env={"SLOT_WORDS": "300", **env})
        return [[Path(c[i + 1]).stem for i, a in enumerate(c) if a == "--out"] for c in calls if c[2:3] == ["evaluate"]]
    default, first = outs({}), outs({"EVAL_FIRST": "w_-5 w_0 w_-5"})  # a repeat is written once
    assert default[0][:2] == ["GAVL_clean", "GAVL_t1_0"]
    assert first[0][:3] == ["GAVL_w_-5", "GAVL_w_0", "GAVL_clean"]
    gaol = next(o for o in first if o[0].startswith("GAOL_"))
    assert gaol[:2] == ["GAOL_w_-5", "GAOL_w_0"]
    assert [sorted(o) for o in first] == [sorted(o) for o in default]  # the same reports, only their order differs


def test_final_weights_are_evaluated_only_where_best_is_an_earlier_step(tmp_path):
    def finals(step):
        d = tmp_path / step
        d.mkdir()
        _, calls = run_grid(d, "GV GAVL GAOL", env={"SLOT_WORDS": "300", "FAKE_BEST_STEP": step})
        outs = [Path(c[i + 1]).stem for c in calls if c[2:3] == ["evaluate"] for i, a in enumerate(c) if a == "--out"]
        assert "GAVL_clean" in outs and "GAOL_t1_0" in outs
        return sorted(o for o in outs if "_final_" in o)
    assert finals("1500") == []  # best/ is the final step: its weights were evaluated already
    assert finals("750") == sorted([f"{j}_final_{c}" for j in ("GAVL", "GAOL") for c in ("clean", "t1_0", "t1_-5", "b_0", "b_-5", "w_0", "w_-5")]
                                   + ["GV_final_vsr"])  # the lip reader's last weights too (run 29)


def test_averaged_final_weights_are_evaluated_unless_best_is_that_mean(tmp_path):
    # run 35: both trainings' best/ said "step 700" and final/ held the mean of the last three checkpoints; taken for
    # the same weights, final/ went unevaluated. Run 36 showed they were: the trainer's last validation reads that
    # mean, and best/ now names it ("averaged"); a best/ that does not is evaluated beside final/
    def finals(averaged):
        d = tmp_path / f"averaged{averaged}"
        d.mkdir()
        _, calls = run_grid(d, "GV GAVL GAOL", env={"SLOT_WORDS": "300", "FAKE_BEST_LAST": "GV GAVL GAOL",
                                                    "FAKE_AVERAGED": averaged})
        return {k: r["model"] for k, r in reports(calls).items() if "_final_" in k}, d / "out"
    got, _ = finals("")
    assert got == {}  # best/ is final/'s step and final/ is that step's weights
    got, out = finals("1")
    assert sorted(got) == sorted([f"{j}_final_{c}" for j in ("GAVL", "GAOL")
                                  for c in ("clean", "t1_0", "t1_-5", "b_0", "b_-5", "w_0", "w_-5")] + ["GV_final_vsr"])
    assert got["GAVL_final_w_0"] == f"{out}/GAVL/final/model" and got["GAOL_final_w_0"] == f"{out}/GAOL/final/model"
    assert "GAOL_final_w_0 - GAVL_final_w_0: " in (out / "eval/compare.txt").read_text()
    got, _ = finals("best")
    assert got == {}  # best/ is final/'s mean
    got, _ = finals("other")
    assert len(got) == 15  # the mean of other checkpoints: 7 conditions for each AVSR arm, and the lip reader's


@pytest.mark.parametrize("best_step", ["250", "1187"])
def test_a_noise_validated_training_stopped_by_time_is_also_evaluated_at_its_latest_checkpoint(tmp_path, best_step):
    # runs 25-26: GAOL stopped by T at step 1,831 with best/ at 250 and no final/; its last weights went unevaluated.
    # Now the latest checkpoint stands in for final/, unless best/ is that step
    p, calls = run_grid(tmp_path, "GV GAVL GAOL", env={"SLOT_WORDS": "300", "FAKE_STOP_LATE": "GAVL GAOL",
                                                       "FAKE_BEST_STEP": best_step})
    assert "No such file" not in p.stderr  # a checkpoint has no info.json: its step comes from its name (run 37's log)
    out = tmp_path / "out"
    evals = {k: r["model"] for k, r in reports(calls).items()}
    finals = sorted(k for k in evals if "_final_" in k and not k.startswith("GV_"))  # GV ran to its end here
    if best_step == "1187":
        assert finals == []
    else:
        assert finals == sorted(f"{j}_final_{c}" for j in ("GAVL", "GAOL") for c in ("clean", "t1_0", "t1_-5", "b_0", "b_-5", "w_0", "w_-5"))
        assert evals["GAOL_final_clean"] == f"{out}/GAOL/checkpoint-1187/model"
        assert evals["GAVL_final_b_0"] == f"{out}/GAVL/checkpoint-1187/model"
        assert "GAOL_final_clean - GAVL_final_clean: " in (out / "eval/compare.txt").read_text()
    assert evals["GAVL_clean"] == f"{out}/GAVL/best/model" and evals["GAOL_b_-5"] == f"{out}/GAOL/best/model"
