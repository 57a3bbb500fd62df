"""scripts/release_rule.py: the ASR release rule on evaluation reports (nv9 WER strictly lower, no more word errors on
the human clips' two sets together), the paired bootstrap it reports, and the CPU evaluations it runs for missing
reports. Seconds on CPU: the reports are written here; evaluation is replaced where a report is missing."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import release_rule  # noqa: E402

from mmlora.metrics.wer import paired_bootstrap  # noqa: E402


def write_report(path: Path, errors: list[int], words: list[int]) -> Path:
    """An mmlora evaluate report whose utterance i has errors[i] substitutions among words[i] reference words."""
    path.parent.mkdir(parents=True, exist_ok=True)
    utts = [{"index": i, "id": f"u{i}", "ref_norm": " ".join(["w"] * n), "ref_words": n, "substitutions": e,
             "deletions": 0, "insertions": 0} for i, (e, n) in enumerate(zip(errors, words))]
    path.write_text(json.dumps({"wer": sum(errors) / sum(words), "substitutions": sum(errors), "deletions": 0,
                                "insertions": 0, "ref_words": sum(words), "utterances": utts}))
    return path


WORDS = {"nv9": [5, 5, 5, 5], "human_test": [4, 4], "human_extra": [6, 6, 6]}
RELEASE = {"nv9": [1, 1, 0, 1], "human_test": [1, 0], "human_extra": [2, 1, 0]}  # nv9 3 / 20, human 4 errors


def model(out: Path, name: str, errors: dict[str, list[int]]) -> dict[str, Path]:
    return {t: write_report(out / name / f"{t}_float32.json", errors[t], WORDS[t]) for t in WORDS}


def empty_manifests(tmp_path: Path) -> Path:
    """DATA/nv9.jsonl and DATA/human/{test,extra}.jsonl, empty: the rule only names them to the evaluation."""
    data = tmp_path / "data"
    for f in ("nv9.jsonl", "human/test.jsonl", "human/extra.jsonl"):
        (data / f).parent.mkdir(parents=True, exist_ok=True)
        (data / f).write_text("")
    return data


def fake_evaluate(calls: list, errors) -> object:
    """A stand-in for release_rule.evaluate: appends (model folder, manifest names, batch size, beams) to ``calls``
    and writes each report with ``errors(model folder)[tag]``'s errors."""
    def run(model_dir, pairs, batch_size, beams, cands=False):
        calls.append((str(model_dir), [Path(m).name for m, _ in pairs], batch_size, beams))
        for _, report in pairs:
            tag = report.stem.removesuffix("_float32").removesuffix(f"_beams{beams}")
            write_report(report, errors(model_dir)[tag], WORDS[tag])
            if cands:  # what evaluate --candidates writes beside the report
                release_rule.cands_of(report).write_text("{}")
    return run


@pytest.mark.parametrize("nv9, human, passes", [
    ([1, 1, 0, 0], {"human_test": [1, 1], "human_extra": [1, 1, 0]}, True),   # nv9 better, human errors equal
    ([1, 1, 0, 1], {"human_test": [0, 0], "human_extra": [0, 0, 0]}, False),  # nv9 only level: not better
    ([0, 0, 0, 0], {"human_test": [1, 1], "human_extra": [2, 1, 0]}, False),  # one human error more
])
def test_the_rule_and_its_paired_comparisons(tmp_path, nv9, human, passes):
    rel = model(tmp_path, "rel", RELEASE)
    cand = model(tmp_path, "cand", {"nv9": nv9, **human})
    v = release_rule.verdict(cand, rel, samples=200)
    assert v["passes"] is passes
    assert v["nv9_wer"] == pytest.approx(sum(nv9) / 20) and v["release_nv9_wer"] == pytest.approx(3 / 20)
    assert v["human_errors"] == sum(map(sum, human.values())) and v["release_human_errors"] == 4
    # the human clips' two sets are one test set: the bootstrap runs over all 5 clips at once
    joined = paired_bootstrap(RELEASE["human_test"] + RELEASE["human_extra"],
                              human["human_test"] + human["human_extra"], WORDS["human_test"] + WORDS["human_extra"],
                              samples=200)
    assert v["human_diff"] == pytest.approx(joined["diff"]) and v["human_p"] == pytest.approx(joined["p_two_sided"])


def test_cli_evaluates_missing_reports_on_the_cpu_and_reuses_the_others(tmp_path, monkeypatch, capsys):
    data = empty_manifests(tmp_path)
    out = tmp_path / "out"
    model(out, "rel", RELEASE)
    cand_dir = tmp_path / "cand_model"
    cand_dir.mkdir()
    cand = {"nv9": [0, 0, 0, 1], "human_test": [1, 0], "human_extra": [1, 1, 0]}
    write_report(out / "E2" / "human_test_float32.json", cand["human_test"], WORDS["human_test"])  # two of three missing
    (out / "E2" / "model_float32.sha256").write_text(release_rule.fingerprint(str(cand_dir)))  # made from these files
    write_report(out / "E2" / "nv9.json", [0, 0, 0, 0], WORDS["nv9"])  # decoded in bfloat16 before session 45: not used
    calls = []
    monkeypatch.setattr(release_rule, "evaluate", fake_evaluate(calls, lambda m: cand))
    argv = [f"E2={cand_dir}", "--release", f"rel={tmp_path}/rel_model", "--nv9", str(data / "nv9.jsonl"),
            "--human", str(data / "human"), "--out", str(out), "--samples", "200"]
    assert release_rule.main(argv) == 0
    # the release folder has no config.json: greedy
    assert calls == [(str(cand_dir), ["nv9.jsonl"], 32, 1), (str(cand_dir), ["extra.jsonl"], 8, 1)]
    lines = capsys.readouterr().out.splitlines()
    v = json.loads(lines[-1])
    assert v["candidate"] == "E2" and v["passes"] is True and v["human_errors"] == 3 and v["nv9_wer"] == 0.05
    assert any(line.startswith("| E2 | 5.0 % (-10.0, p ") and line.endswith("| yes |") for line in lines)
    calls.clear()  # a model with no reports: one call per batch size, the two human sets together
    cand2 = tmp_path / "cand2_model"
    cand2.mkdir()
    assert release_rule.main([f"E3={cand2}"] + argv[1:]) == 0
    assert calls == [(str(cand2), ["nv9.jsonl"], 32, 1), (str(cand2), ["test.jsonl", "extra.jsonl"], 8, 1)]
    capsys.readouterr()
    # a model that is neither a folder nor already evaluated is named
    assert release_rule.main([str(tmp_path / "nowhere")] + argv[1:]) == 2
    assert "nowhere: no such model folder" in capsys.readouterr().err


def test_reports_of_other_files_than_the_folders_are_decoded_again(tmp_path, monkeypatch, capsys):
    """Session 51 replaced the release in place and its reports of the release before stayed: a report is used again
    only where the folder's files are the ones it was decoded from (or the folder is gone); a changed file, or no
    record at all, decodes all three again."""
    data = empty_manifests(tmp_path)
    rel_dir = tmp_path / "rel_model"
    rel_dir.mkdir()
    (rel_dir / "w.safetensors").write_bytes(b"release 1")
    out = tmp_path / "out"
    model(out, "rel", RELEASE)  # reports with no record of what they were decoded from
    model(out, "E2", {"nv9": [0, 0, 0, 1], "human_test": [1, 0], "human_extra": [1, 1, 0]})
    calls = []
    monkeypatch.setattr(release_rule, "evaluate", fake_evaluate(calls, lambda m: RELEASE))
    argv = [f"E2={tmp_path}/gone", "--release", f"rel={rel_dir}", "--nv9", str(data / "nv9.jsonl"),
            "--human", str(data / "human"), "--out", str(out), "--samples", "200"]
    assert release_rule.main(argv) == 0  # unrecorded: decoded again; E2's folder is gone: its reports are used
    assert calls == [(str(rel_dir), ["nv9.jsonl"], 32, 1), (str(rel_dir), ["test.jsonl", "extra.jsonl"], 8, 1)]
    assert "unrecorded files" in capsys.readouterr().err
    assert (out / "rel" / "model_float32.sha256").read_text().split()[0] == release_rule.fingerprint(str(rel_dir))
    calls.clear()
    assert release_rule.main(argv) == 0 and calls == []  # the same files: used again
    (rel_dir / "w.safetensors").write_bytes(b"release 2")  # replaced in place
    assert release_rule.main(argv) == 0 and len(calls) == 2
    assert "other files" in capsys.readouterr().err
    # a guard set's report from earlier files goes too, though this run does not ask for it; other decodings stay
    write_report(out / "rel" / "natt9_float32.json", [0], [5])
    write_report(out / "rel" / "nv9_beams4_float32.json", [0], [5])
    (rel_dir / "w.safetensors").write_bytes(b"release 3")
    assert release_rule.main(argv) == 0
    assert not (out / "rel" / "natt9_float32.json").exists() and (out / "rel" / "nv9_beams4_float32.json").is_file()
    before = release_rule.fingerprint(str(rel_dir))
    (rel_dir / "sub").mkdir()
    (rel_dir / "sub" / "x").write_bytes(b"")  # a file more, even empty, is other files
    assert release_rule.fingerprint(str(rel_dir)) != before


def test_a_guard_set_fails_a_candidate_significantly_worse_on_it(tmp_path, monkeypatch, capsys):
    """--guard natt9=...: evaluated at batch 32 for both models; a candidate that passes nv9 and the human clips fails
    where it reads the guard set worse with p < 0.05, and passes where the guard's difference is within noise."""
    data = empty_manifests(tmp_path)
    (data / "natt9.jsonl").write_text("")
    rel_dir, cand_dir = tmp_path / "rel_model", tmp_path / "cand_model"
    for d in (rel_dir, cand_dir):
        d.mkdir()
    good = {"nv9": [1, 1, 0, 0], "human_test": [1, 0], "human_extra": [1, 1, 0]}  # passes the rule itself
    natt9 = {"rel_model": [0] * 40, "cand_model": [1] * 40}  # one error more on every clip: p < 0.05
    calls = []
    monkeypatch.setattr(release_rule, "evaluate", fake_evaluate(calls, lambda m: {
        **(RELEASE if Path(m).name == "rel_model" else good), "natt9": natt9[Path(m).name]}))
    monkeypatch.setitem(WORDS, "natt9", [5] * 40)
    out = tmp_path / "out"
    argv = [f"E2={cand_dir}", "--release", f"rel={rel_dir}", "--nv9", str(data / "nv9.jsonl"), "--human",
            str(data / "human"), "--out", str(out), "--samples", "500", "--guard", f"natt9={data / 'natt9.jsonl'}"]
    assert release_rule.main(argv) == 0
    assert sorted((Path(c[0]).name, c[1], c[2]) for c in calls) == sorted(
        [(m, ["nv9.jsonl", "natt9.jsonl"], 32) for m in ("rel_model", "cand_model")]
        + [(m, ["test.jsonl", "extra.jsonl"], 8) for m in ("rel_model", "cand_model")])
    lines = capsys.readouterr().out.splitlines()
    v = json.loads(lines[-1])
    assert v["passes"] is False and v["guards"]["natt9"]["worse"] is True and v["guards"]["natt9"]["p"] < 0.05
    assert any(line.startswith("E2 on natt9:") and line.endswith("significantly worse, fails") for line in lines)
    natt9["cand_model"] = [1] + [0] * 39  # one error more in all: within noise, the rule decides
    for f in (out / "E2").glob("natt9*"):
        f.unlink()
    (out / "E2" / "model_float32.sha256").write_text("other")  # decoded again from these files
    assert release_rule.main(argv) == 0
    v = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert v["passes"] is True and v["guards"]["natt9"]["worse"] is False
    with pytest.raises(SystemExit):  # a tag of the rule's own: refused
        release_rule.main(argv[:-2] + ["--guard", "nv9=x.jsonl"])
    assert "--guard: TAG=MANIFEST with a new tag" in capsys.readouterr().err


def test_every_model_decodes_as_the_release_saves_it_or_as_told(tmp_path, monkeypatch, capsys):
    """Since session 32 the release saves num_beams 4: the candidates decode with it too (a recipe-trained candidate
    saves greedy), their reports named TAG_beams4.json beside the greedy ones; --num-beams 1 goes back to those."""
    data = empty_manifests(tmp_path)
    rel_dir, cand_dir = tmp_path / "rel_model", tmp_path / "cand_model"
    for d, beams in ((rel_dir, 4), (cand_dir, 1)):
        d.mkdir()
        (d / "config.json").write_text(json.dumps({"pipeline": {"generation": {"num_beams": beams}}}))
    errors = {"rel_model": RELEASE, "cand_model": {"nv9": [0, 0, 0, 1], "human_test": [1, 0], "human_extra": [1, 1, 0]}}
    calls = []
    monkeypatch.setattr(release_rule, "evaluate", fake_evaluate(calls, lambda m: errors[Path(m).name]))
    out = tmp_path / "out"
    argv = [f"E2={cand_dir}", "--release", f"rel={rel_dir}", "--nv9", str(data / "nv9.jsonl"),
            "--human", str(data / "human"), "--out", str(out), "--samples", "200"]
    assert release_rule.main(argv) == 0
    assert sorted((Path(c[0]).name, c[3]) for c in calls) == [("cand_model", 4)] * 2 + [("rel_model", 4)] * 2
    assert sorted(p.name for p in (out / "E2").iterdir()) == ["human_extra_beams4_float32.json",
                                                              "human_test_beams4_float32.json",
                                                              "model_beams4_float32.sha256", "nv9_beams4_float32.json"]
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "decoding: 4 beams, every model; rule 1" and json.loads(lines[-1])["num_beams"] == 4
    calls.clear()
    assert release_rule.main(argv + ["--num-beams", "1"]) == 0
    assert sorted((Path(c[0]).name, c[3]) for c in calls) == [("cand_model", 1)] * 2 + [("rel_model", 1)] * 2
    assert (out / "E2" / "nv9_float32.json").is_file()
    assert release_rule.main(argv + ["--num-beams", "0"]) == 2
    assert "--num-beams must be at least 1" in capsys.readouterr().err


def test_real_evaluate_command_is_the_rules_cpu_measurement(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(release_rule.subprocess, "run", lambda cmd, **kw: seen.update(cmd=cmd, **kw))
    release_rule.evaluate("M", [(Path("h/test.jsonl"), tmp_path / "r" / "human_test.json"),
                                (Path("h/extra.jsonl"), tmp_path / "r" / "human_extra.json")], 8, 4)
    cmd = seen["cmd"]
    assert cmd[cmd.index("--num-beams") + 1] == "4"
    assert cmd[1:4] == ["-m", "mmlora.cli", "evaluate"] and seen["check"] is True
    assert [cmd[i + 1] for i, a in enumerate(cmd) if a == "--manifest"] == ["h/test.jsonl", "h/extra.jsonl"]
    assert [Path(cmd[i + 1]).name for i, a in enumerate(cmd) if a == "--out"] == ["human_test.json", "human_extra.json"]
    assert cmd[cmd.index("--device") + 1] == "cpu" and cmd[cmd.index("--batch-size") + 1] == "8"
    assert seen["env"]["OMP_NUM_THREADS"] == "1"  # threads change the rounding on the CPU: the rule pins one
    assert cmd[cmd.index("--dtype") + 1] == "float32"
    assert (tmp_path / "r").is_dir()


RULE2_WORDS = {"human_more": [10] * 60, "human_fourth": [6] * 20, "st_test": [5] * 30, "natt9": [5] * 30}
RULE2_RELEASE = {"human_more": [1] * 60, "human_fourth": [0] * 20, "st_test": [1] * 30, "natt9": [0] * 30}


@pytest.mark.parametrize("change, passes, why", [
    ({}, True, None),                                               # st/test better on every clip, the rest equal
    ({"st_test": [1] * 29 + [0]}, False, "st_test_better"),         # one error fewer: within noise
    ({"human_more": [2] * 60}, False, "human_close"),               # one error more on each of 60 human clips
    ({"human_more": [2] + [1] * 59}, True, None),                   # one more in all: inside the margin
    ({"human_fourth": [1] * 20}, False, "human_close"),             # the fourth set counts: one more on each of 20
    ({"natt9": [1] * 30}, False, "natt9"),                          # significantly worse on a guard
    ({"nv9": [3, 3, 3, 3]}, False, "nv9"),
])
def test_rule_2_target_margin_and_guards(tmp_path, monkeypatch, change, passes, why):
    """Rule 2: st/test lower with p < 0.05; the four human sets as one within --margin (the interval's upper end);
    nv9 and natt9 not significantly worse."""
    for t, w in RULE2_WORDS.items():
        monkeypatch.setitem(WORDS, t, w)
    rel = model(tmp_path, "rel", {**RELEASE, **RULE2_RELEASE})
    cand = model(tmp_path, "cand", {**RELEASE, **RULE2_RELEASE, "st_test": [0] * 30, **change})
    v = release_rule.verdict2(cand, rel, samples=500, margin=1.5)
    assert v["passes"] is passes and v["rule"] == 2 and v["human_words"] == 8 + 18 + 600 + 120
    assert v["release_human_errors"] == 1 + 3 + 60 and v["release_st_test_wer"] == pytest.approx(0.2)
    if why in ("st_test_better", "human_close"):
        assert v[why] is False
    elif why:
        assert v["guards"][why]["worse"] is True
    assert release_rule.HUMAN2 == ("human_test", "human_extra", "human_more", "human_fourth")
    joined = paired_bootstrap([x for t in release_rule.HUMAN2 for x in {**RELEASE, **RULE2_RELEASE}[t]],
                              [x for t in release_rule.HUMAN2 for x in {**RELEASE, **RULE2_RELEASE, **change}[t]],
                              [x for t in release_rule.HUMAN2 for x in WORDS[t]], samples=500)
    assert v["human_ci95"] == pytest.approx(joined["ci95"])  # the four sets resampled as one
    assert v["human_close"] is (joined["ci95"][1] < 0.015)


def test_cli_rule_2_decodes_its_sets_and_prints_the_interval(tmp_path, monkeypatch, capsys):
    for t, w in RULE2_WORDS.items():
        monkeypatch.setitem(WORDS, t, w)
    data = empty_manifests(tmp_path)
    for f in ("human/more.jsonl", "human/fourth.jsonl", "st_test.jsonl", "natt9.jsonl"):
        (data / f).write_text("")
    rel_dir, cand_dir = tmp_path / "rel_model", tmp_path / "cand_model"
    for d in (rel_dir, cand_dir):
        d.mkdir()
    calls = []
    monkeypatch.setattr(release_rule, "evaluate", fake_evaluate(calls, lambda m: {
        **RELEASE, **RULE2_RELEASE, **({"st_test": [0] * 30} if Path(m).name == "cand_model" else {})}))
    argv = [f"E2={cand_dir}", "--release", f"rel={rel_dir}", "--nv9", str(data / "nv9.jsonl"), "--human",
            str(data / "human"), "--out", str(tmp_path / "out"), "--samples", "300", "--rule", "2",
            "--st-test", str(data / "st_test.jsonl"), "--natt9", str(data / "natt9.jsonl")]
    assert release_rule.main(argv) == 0
    assert sorted((Path(c[0]).name, c[1], c[2]) for c in calls) == sorted(
        [(m, ["nv9.jsonl", "more.jsonl", "fourth.jsonl", "st_test.jsonl", "natt9.jsonl"], 32)
         for m in ("rel_model", "cand_model")]
        + [(m, ["test.jsonl", "extra.jsonl"], 8) for m in ("rel_model", "cand_model")])
    lines = capsys.readouterr().out.splitlines()
    v = json.loads(lines[-1])
    assert lines[0].endswith("rule 2") and v["passes"] is True and v["human_errors"] == v["release_human_errors"]
    assert any(line.startswith("| E2 | 0.0 % (-20.0, p ") and "(+0.0 points, [+0.0, +0.0])" in line
               and line.endswith("| yes |") for line in lines)
    with pytest.raises(SystemExit):
        release_rule.main(argv + ["--margin", "0"])
    assert "--margin: a positive number" in capsys.readouterr().err


def test_jobs_share_the_sets_among_processes_side_by_side(tmp_path, monkeypatch, capsys):
    """--jobs 2 (session 60): the missing sets shared between two evaluations by their clips (or their seconds of
    audio, where the manifests give them), each set decoded once, at its own batch size, the verdict the same as with
    one job."""
    for t, w in RULE2_WORDS.items():
        monkeypatch.setitem(WORDS, t, w)
    data = empty_manifests(tmp_path)
    sizes = {"nv9.jsonl": 120, "human/test.jsonl": 16, "human/extra.jsonl": 24, "human/more.jsonl": 103,
             "human/fourth.jsonl": 19, "st_test.jsonl": 300, "natt9.jsonl": 200}
    for f, n in sizes.items():
        (data / f).write_text("{}\n" * n)
    manifests = {"nv9": data / "nv9.jsonl", "st_test": data / "st_test.jsonl", "natt9": data / "natt9.jsonl",
                 "human_more": data / "human/more.jsonl", "human_test": data / "human/test.jsonl"}
    groups = release_rule.share(list(manifests), manifests, 2)
    assert groups == [["st_test", "human_more"], ["nv9", "natt9", "human_test"]]  # 403 and 336 clips
    assert release_rule.share(list(manifests), manifests, 1) == [list(manifests)]
    assert release_rule.share(["nv9"], manifests, 3) == [["nv9"]]  # no empty groups
    rel_dir, cand_dir = tmp_path / "rel_model", tmp_path / "cand_model"
    for d in (rel_dir, cand_dir):
        d.mkdir()
    verdicts = []
    for jobs in (1, 2):
        calls = []
        monkeypatch.setattr(release_rule, "evaluate", fake_evaluate(calls, lambda m: {
            **RELEASE, **RULE2_RELEASE, **({"st_test": [0] * 30} if Path(m).name == "cand_model" else {})}))
        argv = [f"E2={cand_dir}", "--release", f"rel={rel_dir}", "--nv9", str(data / "nv9.jsonl"), "--human",
                str(data / "human"), "--out", str(tmp_path / f"out{jobs}"), "--samples", "300", "--rule", "2",
                "--st-test", str(data / "st_test.jsonl"), "--natt9", str(data / "natt9.jsonl"), "--jobs", str(jobs)]
        assert release_rule.main(argv) == 0
        verdicts.append(json.loads(capsys.readouterr().out.splitlines()[-1]))
        for m in ("rel_model", "cand_model"):
            mine = [c for c in calls if Path(c[0]).name == m]
            # one job: a call per batch size; two: st/test + more (403 clips, batch 32) beside the other five
            # (379: nv9, natt9 and fourth at 32, test and extra at 8)
            assert len(mine) == {1: 2, 2: 3}[jobs]
            assert sorted(x for c in mine for x in c[1]) == sorted(Path(f).name for f in sizes)
            assert all(c[2] == (8 if c[1][0] in ("test.jsonl", "extra.jsonl") else 32) for c in mine)
    assert verdicts[0] == verdicts[1]
    assert release_rule.main(argv[:-1] + ["0"]) == 2
    assert "--jobs must be at least 1" in capsys.readouterr().err
    # manifests whose every line has a duration are shared by their seconds of audio instead
    for f, n, d in (("st_test.jsonl", 300, 3.4), ("natt9.jsonl", 200, 3.1), ("nv9.jsonl", 120, 2.5),
                    ("human/more.jsonl", 63, 5.0), ("human/test.jsonl", 16, 3.3)):
        (data / f).write_text((json.dumps({"duration": d}) + "\n") * n)
    # seconds: st 1020, natt9 620, more 315, nv9 300, test 52.8 (by clips it would be st + more against the rest)
    assert release_rule.share(list(manifests), manifests, 2) == [["st_test", "human_test"],
                                                                 ["nv9", "natt9", "human_more"]]
    (data / "human/test.jsonl").write_text(json.dumps({"duration": 3.3}) + "\n{}\n")  # one line without: its clips
    assert release_rule.share(["human_test"], manifests, 1) == [["human_test"]]
    assert release_rule.share(["nv9", "human_test"], manifests, 2) == [["nv9"], ["human_test"]]
    assert release_rule.work(data / "human/test.jsonl") == 2.0  # clips: not 3.3 s
    assert release_rule.work(data / "human/more.jsonl") == pytest.approx(315.0)  # seconds
    assert release_rule.work(data / "nowhere.jsonl") == 0.0


def test_a_run_stopped_midway_keeps_the_sets_it_finished(tmp_path, monkeypatch, capsys):
    """Session 63's rule was stopped after nv9 and session 64's decoded it again ('unrecorded files'): the folder's
    record is written before decoding, so a finished set is used again by the next run."""
    data = empty_manifests(tmp_path)
    cand_dir = tmp_path / "cand_model"
    cand_dir.mkdir()
    (cand_dir / "w.safetensors").write_bytes(b"candidate")
    out = tmp_path / "out"
    model(out, "rel", RELEASE)
    calls = []

    def stopped(model_dir, pairs, batch_size, beams, cands=False):
        fake_evaluate(calls, lambda m: RELEASE)(model_dir, pairs[:1], batch_size, beams)  # the first set, then stop
        raise KeyboardInterrupt

    monkeypatch.setattr(release_rule, "evaluate", stopped)
    argv = [f"E2={cand_dir}", "--release", f"rel={tmp_path}/gone", "--nv9", str(data / "nv9.jsonl"),
            "--human", str(data / "human"), "--out", str(out), "--samples", "200"]
    with pytest.raises(KeyboardInterrupt):
        release_rule.main(argv)
    assert calls == [(str(cand_dir), ["nv9.jsonl"], 32, 1)] and (out / "E2" / "nv9_float32.json").is_file()
    calls.clear()
    monkeypatch.setattr(release_rule, "evaluate", fake_evaluate(calls, lambda m: RELEASE))
    assert release_rule.main(argv) == 0
    assert calls == [(str(cand_dir), ["test.jsonl", "extra.jsonl"], 8, 1)]  # nv9 not decoded again
    assert "decoding them again" not in capsys.readouterr().err


def test_candidates_are_kept_beside_the_candidates_reports_and_missing_ones_decode_again(tmp_path, monkeypatch,
                                                                                          capsys):
    data = empty_manifests(tmp_path)
    rel_dir, cand_dir = tmp_path / "rel_model", tmp_path / "cand_model"
    for d in (rel_dir, cand_dir):
        d.mkdir()
    calls = []
    monkeypatch.setattr(release_rule, "evaluate", fake_evaluate(calls, lambda m: RELEASE))
    argv = [f"E2={cand_dir}", "--release", f"rel={rel_dir}", "--nv9", str(data / "nv9.jsonl"), "--human",
            str(data / "human"), "--out", str(tmp_path / "out"), "--samples", "50", "--num-beams", "4"]
    assert release_rule.main(argv) == 0  # without --candidates: reports only
    out = tmp_path / "out"
    assert not list(out.rglob("*.cands.json")) and len(calls) == 4
    calls.clear()
    assert release_rule.main(argv + ["--candidates"]) == 0  # the candidate's reports lack them: decoded again
    assert sorted({Path(c[0]).name for c in calls}) == ["cand_model"]
    assert sorted(p.name for p in (out / "E2").glob("*.cands.json")) == [
        f"{t}_beams4_float32.cands.json" for t in ("human_extra", "human_test", "nv9")]
    assert not list((out / "rel").glob("*.cands.json"))  # the release's reports are used as they are
    calls.clear()
    assert release_rule.main(argv + ["--candidates"]) == 0 and calls == []  # all there now
    (cand_dir / "config.json").write_text("{}")  # other files: reports and candidates dropped, decoded again
    assert release_rule.main(argv) == 0
    assert not list((out / "E2").glob("*.cands.json"))
    capsys.readouterr()


def test_real_evaluate_asks_for_the_candidates_beside_each_report(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(release_rule.subprocess, "run", lambda cmd, **kw: seen.update(cmd=cmd, **kw))
    release_rule.evaluate("M", [(Path("h/test.jsonl"), tmp_path / "nv9_beams8_float32.json")], 8, 8, cands=True)
    cmd = seen["cmd"]
    assert cmd[cmd.index("--candidates") + 1] == str(tmp_path / "nv9_beams8_float32.cands.json")
    assert cmd.index("--candidates") == cmd.index("--out") + 2


def test_release_candidates_alone_make_the_releases_reports_with_candidates(tmp_path, monkeypatch, capsys):
    """``--release-candidates`` without candidate models (session 69): the release's reports and kept candidates
    where a later rule reads the release, and no verdict; without either, the call is refused."""
    data = empty_manifests(tmp_path)
    rel_dir = tmp_path / "rel_model"
    rel_dir.mkdir()
    calls = []
    monkeypatch.setattr(release_rule, "evaluate", fake_evaluate(calls, lambda m: RELEASE))
    argv = ["--release", f"rel={rel_dir}", "--nv9", str(data / "nv9.jsonl"), "--human", str(data / "human"),
            "--out", str(tmp_path / "out"), "--samples", "50", "--num-beams", "4"]
    assert release_rule.main(argv + ["--release-candidates"]) == 0
    out = capsys.readouterr().out
    assert "passes" not in out and str(tmp_path / "out/rel/nv9_beams4_float32.json") in out
    assert sorted(p.name for p in (tmp_path / "out/rel").glob("*.cands.json")) == [
        f"{t}_beams4_float32.cands.json" for t in ("human_extra", "human_test", "nv9")]
    assert {c[0] for c in calls} == {str(rel_dir)}
    with pytest.raises(SystemExit):
        release_rule.main(argv)
    assert "at least one candidate" in capsys.readouterr().err
