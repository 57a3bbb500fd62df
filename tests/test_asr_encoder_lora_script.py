"""scripts/asr_encoder_lora.sh (GPU runs 20 and 21) run against test_train_grid_script's stand-in for Python: the
corpora it needs, the two trainings and what differs between them, what is evaluated and compared. Seconds on CPU."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from test_train_grid_script import FAKE, ROOT, trainings

NEED = ["st/train", "st/test", "st/test_babble_snr0", "w3/train", "natt9/test", "nv9/test", "n9/train", "n10/train"]


def run_ab(tmp_path: Path, *extra: str, env: dict | None = None, skip: str = "", more: tuple = ()):
    tmp_path.mkdir(parents=True, exist_ok=True)
    fake = tmp_path / "fake_python.py"
    fake.write_text(FAKE)
    data, human = tmp_path / "data", tmp_path / "human"
    for m in NEED + list(more):
        if m != skip:
            (data / m).parent.mkdir(parents=True, exist_ok=True)
            (data / f"{m}.jsonl").write_text('{"id": "u0", "audio": "a.flac", "text": "x"}\n')
    human.mkdir(exist_ok=True)
    (human / "test.jsonl").write_text('{"id": "h0", "audio": "h.flac", "text": "x"}\n')
    e = {**os.environ, "PYTHON": f"{sys.executable} {fake}", "FAKE_LOG": str(tmp_path / "calls.jsonl"),
         "HUMAN": str(human), **(env or {})}
    p = subprocess.run(["bash", str(ROOT / "scripts/asr_encoder_lora.sh"), str(data), str(tmp_path / "out"), *extra],
                       env=e, text=True, capture_output=True, timeout=120)
    log = Path(e["FAKE_LOG"])
    return p, [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []


def test_two_continuations_differ_only_by_the_encoder_lora_and_are_compared(tmp_path):
    p, calls = run_ab(tmp_path, "train.num_workers=12")
    assert p.returncode == 0, p.stderr[-2000:]
    merge = next(c for c in calls if c[0].endswith("merge_manifests.py"))
    assert merge[2:] == ["train_ab.jsonl", "st", "w3", "n9", "n10", "--drop-voice", "rhvoice:clb"]
    t = trainings(calls)
    assert list(t) == ["E0", "E1"]
    e0, e1 = (set(c) - {f"train.output_dir={tmp_path}/out/{n}"} for n, c in t.items())
    assert e1 - e0 == {"model.media.audio.encoder_lora={rank: 8, alpha: 16}", "train.group_lr.encoder=3e-4"}
    assert e0 <= e1 and "train.init_from=checkpoints/asr-smollm2-whisper-tiny" in e0 and "train.num_workers=12" in e0
    assert f"data.val_manifest={tmp_path}/data/nv9/test.jsonl" in e0  # the release rule's set, by default
    assert t["E1"][-1] == "train.num_workers=12"  # the caller's overrides come last: they win
    ev_calls = [c for c in calls if c[2:3] == ["evaluate"]]
    evals = {Path(c[i + 1]).stem: c[c.index("--model") + 1] for c in ev_calls for i, a in enumerate(c) if a == "--out"}
    sets = ["st", "st_b0", "natt9", "nv9", "human_test"]
    assert set(evals) == {f"{j}_{s}" for j in ("REL", "E0", "E1") for s in sets}  # human_extra absent: not there
    assert len(ev_calls) == 3  # one call per model: its test sets in one go (the model loads once)
    for c in ev_calls:  # one search for all: the release's own default (4 beams) is not its trainings' (greedy)
        assert c[c.index("--num-beams") + 1] == "1" and c[c.index("--ctc-weight") + 1] == "0"
    assert [c[c.index("--model") + 1] for c in ev_calls] == [f"{tmp_path}/out/E0/best/model",
                                                             f"{tmp_path}/out/E1/best/model",
                                                             "checkpoints/asr-smollm2-whisper-tiny"]  # the release last
    st = ev_calls[2]
    assert st[st.index("--manifest") + 1].endswith("/st/test.jsonl") and st[st.index("--out") + 1].endswith("/REL_st.json")
    assert evals["E1_nv9"] == f"{tmp_path}/out/E1/best/model"
    assert evals["REL_st"] == "checkpoints/asr-smollm2-whisper-tiny"
    compare = (tmp_path / "out/eval/compare.txt").read_text()
    assert "E1_st - E0_st: " in compare and "E0_human_test - REL_human_test: " in compare
    assert len(compare.splitlines()) == 3 * len(sets)
    (tmp_path / "out/eval/E1_nv9.json").unlink()  # run again: only the missing report is made, in one call
    (tmp_path / "calls.jsonl").unlink()
    p, calls = run_ab(tmp_path, "train.num_workers=12")
    ev_calls = [c for c in calls if c[2:3] == ["evaluate"]]
    assert p.returncode == 0 and not trainings(calls) and len(ev_calls) == 1
    assert ev_calls[0].count("--out") == 1 and ev_calls[0][ev_calls[0].index("--out") + 1].endswith("/E1_nv9.json")


def test_a_missing_corpus_is_named_and_a_stopped_training_is_evaluated_at_its_best(tmp_path):
    p, calls = run_ab(tmp_path, skip="nv9/test")
    assert p.returncode == 2 and "nv9/test.jsonl is missing" in p.stderr and not calls
    p, calls = run_ab(tmp_path / "b", env={"FAKE_STOP": "E1", "JOBS": "E1", "ENC_LR": "1e-3"})
    assert p.returncode == 0 and "E1 stopped early" in p.stdout
    assert list(trainings(calls)) == ["E1"] and "train.group_lr.encoder=1e-3" in trainings(calls)["E1"]
    assert (tmp_path / "b/out/E1/STOPPED").exists()
    p, calls = run_ab(tmp_path / "c", env={"EVAL": "0"})
    assert p.returncode == 0 and list(trainings(calls)) == ["E0", "E1"]
    assert not [c for c in calls if c[2:3] in (["evaluate"], ["compare-wer"])]


def test_a_corpus_mix_and_the_runs_that_hold_the_language_side_at_the_release(tmp_path):
    """GPU run 21: MIX names the corpora (xREP repeats one); E2 holds the LLM's LoRA at lr 0, E3 the projector too,
    each otherwise E1; E2 and E3 are compared with E1 and with the release."""
    p, calls = run_ab(tmp_path, skip="n9/train", more=("n14/train", "nv10/test"),
                      env={"JOBS": "E1 E2 E3", "MIX": "st n14x2", "VAL": "nv10/test"})
    assert p.returncode == 0, p.stderr[-2000:]
    merge = next(c for c in calls if c[0].endswith("merge_manifests.py"))
    assert merge[2:] == ["train_ab_st_n14x2.jsonl", "st", "n14x2", "--drop-voice", "rhvoice:clb"]
    t = trainings(calls)
    assert list(t) == ["E1", "E2", "E3"]
    assert f"data.train_manifest={tmp_path}/data/train_ab_st_n14x2.jsonl" in t["E1"]
    assert f"data.val_manifest={tmp_path}/data/nv10/test.jsonl" in t["E1"]  # VAL: nv9 stays a test set only
    e1, e2, e3 = (set(c) - {f"train.output_dir={tmp_path}/out/{n}"} for n, c in t.items())
    assert e2 - e1 == {"train.group_lr.lora=0"} and e1 <= e2
    assert e3 - e1 == {"train.group_lr.lora=0", "train.group_lr.projectors=0"} and e1 <= e3
    assert "model.media.audio.encoder_lora={rank: 8, alpha: 16}" in e1
    reports = {p.stem for p in (tmp_path / "out/eval").glob("*.json")}
    assert {"E1_nv10", "E2_nv10", "REL_nv10", "E3_nv9"} <= reports  # the validation set is a test set too
    compare = (tmp_path / "out/eval/compare.txt").read_text().splitlines()
    st = [line.split(":")[0] for line in compare if line.startswith("E") and "_st - " in line]
    assert st == ["E2_st - E1_st", "E3_st - E1_st", "E1_st - REL_st", "E2_st - REL_st", "E3_st - REL_st"]
    p, calls = run_ab(tmp_path / "b", env={"MIX": "st n15x2"})
    assert p.returncode == 2 and "n15/train.jsonl is missing" in p.stderr and not calls
    p, calls = run_ab(tmp_path / "c", env={"VAL": "nv10/test"})
    assert p.returncode == 2 and "nv10/test.jsonl is missing" in p.stderr and not calls


def test_an_arm_of_overrides_beside_e2(tmp_path):
    """EA: E2 with ARM's overrides last (e.g. the audio projector at rate 2, fresh), compared with E2 and the release;
    JOBS with EA and no ARM stops before any work."""
    arm = ["model.media.audio.projector.rates=[2]", 'train.init_map={"projectors.audio.":null}']
    p, calls = run_ab(tmp_path, env={"JOBS": "E2 EA", "ARM": " ".join(arm)})
    assert p.returncode == 0, p.stderr[-2000:]
    t = trainings(calls)
    assert list(t) == ["E2", "EA"]
    i = t["EA"].index("train.group_lr.lora=0")  # after E2's own settings, so that they win over them
    assert t["EA"][i + 1:i + 1 + len(arm)] == arm and not set(arm) & set(t["E2"])
    e2, ea = (set(c) - {f"train.output_dir={tmp_path}/out/{n}"} for n, c in t.items())
    assert ea - e2 == set(arm) and e2 <= ea
    compare = [line.split(":")[0] for line in (tmp_path / "out/eval/compare.txt").read_text().splitlines()]
    assert "EA_st - E2_st" in compare and "EA_st - REL_st" in compare and "EA_human_test - E2_human_test" in compare
    p, calls = run_ab(tmp_path / "b", env={"JOBS": "E2 EA"})
    assert p.returncode == 2 and "JOBS has EA, which needs ARM" in p.stderr and not calls
