"""scripts/remote: a folder cut into pieces, put back together in order on the other side, a job started
detached, waited for and collected (what the GPU runs of docs/ASR_RUNS.md use)."""
from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACK, REMOTE = ROOT / "scripts/remote/pack.sh", ROOT / "scripts/remote/remote.sh"


def sh(*args, cwd: Path, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", *map(str, args)], cwd=cwd, env={**os.environ, **(env or {})}, text=True,
                          capture_output=True, check=check, timeout=60)


@pytest.fixture
def packed(tmp_path):
    stage = tmp_path / "stage"
    (stage / "data/sub").mkdir(parents=True)
    blobs = {"data/a.bin": os.urandom(70_000), "data/sub/b.bin": os.urandom(123_457), "c.txt": b"hello\n"}
    for rel, b in blobs.items():
        (stage / rel).write_bytes(b)
    repo = tmp_path / "repo"
    (repo / "pk").mkdir(parents=True)
    out = sh(PACK, stage, repo / "pk", "50K", cwd=tmp_path)
    pieces = sorted(p.name for p in (repo / "pk").glob("p[0-9][0-9]"))
    assert (repo / "pk/npieces").read_text().strip() == str(len(pieces)) and len(pieces) >= 4, out.stdout
    assert all((repo / "pk" / p).stat().st_size <= 50 * 1024 for p in pieces)
    return tmp_path, repo, pieces, blobs


def test_pieces_go_back_together_in_order_only(packed):
    tmp, repo, pieces, blobs = packed
    env = {"WORK": str(tmp / "work")}
    bad = sh(REMOTE, "put", f"pk/{pieces[1]}", cwd=repo, env=env, check=False)
    assert bad.returncode == 2 and "out of order" in bad.stderr and "the next is p00" in bad.stderr
    for p in pieces[:2]:
        sh(REMOTE, "put", f"pk/{p}", cwd=repo, env=env)
    with open(tmp / "work/all.tar", "ab") as f:  # what a call killed in the middle of an append leaves behind
        f.write(os.urandom(5000))
    again = sh(REMOTE, "put", f"pk/{pieces[1]}", cwd=repo, env=env)  # a call repeated after a failed transfer
    assert "already there" in again.stdout
    skip = sh(REMOTE, "put", f"pk/{pieces[3]}", cwd=repo, env=env, check=False)
    assert skip.returncode == 2 and f"the next is {pieces[2]}" in skip.stderr
    for p in pieces[2:]:
        last = sh(REMOTE, "put", f"pk/{p}", cwd=repo, env=env)
    assert "unpacked" in last.stdout
    for rel, b in blobs.items():
        assert (tmp / "work" / rel).read_bytes() == b


def test_a_piece_carried_without_the_count_is_refused_by_name(packed):
    tmp, repo, pieces, _ = packed
    (repo / "pk/npieces").unlink()
    out = sh(REMOTE, "put", f"pk/{pieces[0]}", cwd=repo, env={"WORK": str(tmp / "work")}, check=False)
    assert out.returncode == 2 and "pk/npieces is not here" in out.stderr and "carry it with every piece" in out.stderr
    assert not (tmp / "work/got" / pieces[0]).exists()


def test_job_starts_after_the_last_piece_and_is_collected(packed):
    tmp, repo, pieces, _ = packed
    (repo / "job.sh").write_text('set -e\necho "repo=$REPO" > log/j.log\ncat c.txt > res/copy.txt\ntouch DONE\n')
    env = {"WORK": str(tmp / "work")}
    for p in pieces:
        out = sh(REMOTE, "put", f"pk/{p}", "job.sh", cwd=repo, env=env)
    assert "started job.sh" in out.stdout
    waited = sh(REMOTE, "wait", "30", cwd=repo, env=env)
    assert waited.stdout.startswith("DONE") and f"repo={repo}" in waited.stdout
    sh(REMOTE, "ship", tmp / "out", cwd=repo, env=env)  # no folders named: the logs and results alone
    with tarfile.open(tmp / "out/state.tgz") as t:
        assert t.extractfile("res/copy.txt").read() == b"hello\n"
        assert "log/j.log" in t.getnames()


def test_a_job_started_by_a_later_call_once_every_piece_is_unpacked(packed):
    """``start JOB.sh`` (session 69): the pieces put by calls that carry no job, the job by another call; refused
    before the pieces are all there and a second time."""
    tmp, repo, pieces, _ = packed
    (repo / "job.sh").write_text('echo "repo=$REPO" > log/j.log\ncat c.txt > res/copy.txt\ntouch DONE\n')
    env = {"WORK": str(tmp / "work")}
    early = sh(REMOTE, "start", "job.sh", cwd=repo, env=env, check=False)
    assert early.returncode == 2 and "put them first" in early.stderr
    for p in pieces[:-1]:
        sh(REMOTE, "put", f"pk/{p}", cwd=repo, env=env)
    half = sh(REMOTE, "start", "job.sh", cwd=repo, env=env, check=False)
    assert half.returncode == 2 and not (tmp / "work/job.sh").exists()
    last = sh(REMOTE, "put", f"pk/{pieces[-1]}", cwd=repo, env=env)
    assert "unpacked" in last.stdout and "started job" not in last.stdout
    assert "started job.sh" in sh(REMOTE, "start", "job.sh", cwd=repo, env=env).stdout
    waited = sh(REMOTE, "wait", "30", cwd=repo, env=env)
    assert waited.stdout.startswith("DONE") and f"repo={repo}" in waited.stdout
    assert (tmp / "work/res/copy.txt").read_text() == "hello\n"
    again = sh(REMOTE, "start", "job.sh", cwd=repo, env=env, check=False)
    assert again.returncode == 2 and "started in" in again.stderr


def test_wait_on_a_machine_without_the_job_ends_at_once(tmp_path):
    # a lease that ended between calls leaves a bare machine: the wait must say so, not sit out its seconds
    out = sh(REMOTE, "wait", "600", cwd=tmp_path, env={"WORK": str(tmp_path / "work")}, check=False)
    assert out.returncode == 3 and "fresh machine" in out.stderr and not (tmp_path / "work").exists()


def test_ship_brings_back_what_is_there_so_far_across_calls_and_join_unpacks_it(tmp_path):
    # a machine can be lost between calls (the lease ends 30 s after one): every call brings back the logs and the
    # folders written so far (e.g. a training's best weights), in parts small enough for a call's $OUT
    work = tmp_path / "work"
    for d in ("log", "res", "out/E1/best/model"):
        (work / d).mkdir(parents=True)
    (work / "log/E1.log").write_text("step 250\n")
    (work / "res/big.bin").write_bytes(os.urandom(3 * 1024 * 1024))  # over 2 MB: left out of state.tgz
    w1 = os.urandom(100_000)
    (work / "out/E1/best/model/w.bin").write_bytes(w1)
    (work / "out/E1/best/info.json").write_text('{"step": 250}')
    env = {"WORK": str(work), "PIECE": "40K", "MAXBYTES": str(90 * 1024)}
    o1 = sh(REMOTE, "ship", tmp_path / "c1", "out/E1/best", "out/E2/best", cwd=tmp_path, env=env)
    assert "queued out/E1/best" in o1.stdout and "E2" not in o1.stdout  # a folder not there yet is skipped
    with tarfile.open(tmp_path / "c1/state.tgz") as t:
        assert set(t.getnames()) == {"log/E1.log"}
    got1 = sorted(p.name for p in (tmp_path / "c1").iterdir() if p.name != "state.tgz")
    assert len(got1) == 2 and all(n.startswith("out_E1_best.") and n.endswith("-of-03") for n in got1), got1
    part = sh(REMOTE, "join", tmp_path / "here", tmp_path / "c1", cwd=tmp_path)
    assert "2 of 3 parts so far" in part.stdout and [p.name for p in (tmp_path / "here").iterdir()] == ["parts"]
    o2 = sh(REMOTE, "ship", tmp_path / "c2", "out/E1/best", cwd=tmp_path, env=env)  # unchanged: nothing queued
    assert "queued" not in o2.stdout and "1 part(s); 0 left" in o2.stdout
    done = sh(REMOTE, "join", tmp_path / "here", tmp_path / "c1", tmp_path / "c2", cwd=tmp_path)
    (first,) = [p for p in (tmp_path / "here").iterdir() if p.name.startswith("out_E1_best.")]
    assert "unpacked" in done.stdout and (first / "out/E1/best/model/w.bin").read_bytes() == w1
    # a new best replaces the folder: shipped again under a new signature, and unpacked beside the old one
    w2 = os.urandom(1000)
    (work / "out/E1/best/model/w.bin").write_bytes(w2)
    (work / "out/E1/best/info.json").write_text('{"step": 500}')
    o3 = sh(REMOTE, "ship", tmp_path / "c3", "out/E1/best", cwd=tmp_path, env=env)
    assert "queued out/E1/best" in o3.stdout and "1 part(s); 0 left" in o3.stdout
    sh(REMOTE, "join", tmp_path / "here", tmp_path / "c1", tmp_path / "c2", tmp_path / "c3", cwd=tmp_path)
    new = [p for p in (tmp_path / "here").iterdir() if p.name.startswith("out_E1_best.") and p != first]
    assert len(new) == 1 and (new[0] / "out/E1/best/model/w.bin").read_bytes() == w2
    assert (first / "out/E1/best/model/w.bin").read_bytes() == w1
    # a folder rewritten while parts of its older version wait in the queue: the older parts are dropped
    (work / "out/E1/best/model/w.bin").write_bytes(os.urandom(100_000))
    (work / "out/E1/best/info.json").write_text('{"step": 750}')
    sh(REMOTE, "ship", tmp_path / "c4", "out/E1/best", cwd=tmp_path, env=env)  # 2 of 3 parts go, 1 waits
    (work / "out/E1/best/info.json").write_text('{"step": 1000}')
    o5 = sh(REMOTE, "ship", tmp_path / "c5", "out/E1/best", cwd=tmp_path, env=env)
    sigs = {p.name.split(".")[1] for p in (tmp_path / "c5").iterdir() if p.name != "state.tgz"}
    assert len(sigs) == 1 and "1 left" in o5.stdout
    assert not any(p.name.split(".")[1] in sigs for p in (tmp_path / "c4").iterdir() if p.name != "state.tgz")


def test_ship_also_brings_back_the_folders_a_job_listed(tmp_path):
    # a job names in WORK/ship_also what a later part starts from (lips_job.sh: the lip reader), so that every watch
    # call ships it without being asked, and a machine lost afterwards need not train it again (GPU run 41)
    work = tmp_path / "work"
    (work / "out/lips/GV/best/model").mkdir(parents=True)
    w = os.urandom(5000)
    (work / "out/lips/GV/best/model/w.bin").write_bytes(w)
    env = {"WORK": str(work)}
    o0 = sh(REMOTE, "ship", tmp_path / "c0", cwd=tmp_path, env=env)  # no list yet: nothing but state.tgz
    assert "queued" not in o0.stdout and [p.name for p in (tmp_path / "c0").iterdir()] == ["state.tgz"]
    (work / "ship_also").write_text("out/lips/GV/best/model\n\nout/not/yet\n")
    o1 = sh(REMOTE, "ship", tmp_path / "c1", cwd=tmp_path, env=env)  # not named by the call: listed is enough
    assert o1.stdout.count("queued out/lips/GV/best/model") == 1 and "out/not/yet" not in o1.stdout
    sh(REMOTE, "join", tmp_path / "here", tmp_path / "c1", cwd=tmp_path)
    (got,) = [p for p in (tmp_path / "here").iterdir() if p.name.startswith("out_lips_GV_best_model.")]
    assert (got / "out/lips/GV/best/model/w.bin").read_bytes() == w
    o2 = sh(REMOTE, "ship", tmp_path / "c2", cwd=tmp_path, env=env)  # unchanged since: not again
    assert "queued" not in o2.stdout
    (work / "out/lips/GV/best/model/w.bin").write_bytes(os.urandom(6000))  # a new best, named by the call too: once
    o3 = sh(REMOTE, "ship", tmp_path / "c3", "out/lips/GV/best/model", cwd=tmp_path, env=env)
    assert o3.stdout.count("queued out/lips/GV/best/model") == 1


def test_join_refuses_parts_that_do_not_make_an_archive(tmp_path):
    calls = tmp_path / "c1"
    calls.mkdir()
    (calls / "out_E1_best.abcd1234.00-of-02").write_bytes(os.urandom(10_000))  # not a tar: a damaged transfer
    (calls / "out_E1_best.abcd1234.01-of-02").write_bytes(os.urandom(10_000))
    bad = sh(REMOTE, "join", tmp_path / "here", calls, cwd=tmp_path, check=False)
    assert bad.returncode == 4 and "do not make a whole archive" in bad.stderr
    assert not (tmp_path / "here/out_E1_best.abcd1234").exists()  # never a half-unpacked folder under the set's name


def test_ship_waits_for_a_folder_rewritten_while_it_is_packed(tmp_path):
    # a training may replace best/ while the call packs it: the parts must not mix two versions
    work = tmp_path / "work"
    (work / "out/E1/best").mkdir(parents=True)
    (work / "out/E1/best/w.bin").write_bytes(os.urandom(1000))
    shim = tmp_path / "bin"
    shim.mkdir()
    real_tar = subprocess.run(["bash", "-c", "command -v tar"], capture_output=True, text=True).stdout.strip()
    (shim / "tar").write_text(f'#!/bin/bash\n[ "$1" = -cf ] && echo new >> "$WORK/out/E1/best/info.json"\n'
                              f'exec {real_tar} "$@"\n')
    (shim / "tar").chmod(0o755)
    env = {"WORK": str(work), "PATH": f"{shim}:{os.environ['PATH']}"}
    o = sh(REMOTE, "ship", tmp_path / "c1", "out/E1/best", cwd=tmp_path, env=env)
    assert "out/E1/best: changing, next call" in o.stdout and "0 part(s)" in o.stdout
    o2 = sh(REMOTE, "ship", tmp_path / "c2", "out/E1/best", cwd=tmp_path, env={"WORK": str(work)})
    assert "queued out/E1/best" in o2.stdout and "1 part(s)" in o2.stdout  # quiet now: it goes


def test_pieces_without_a_size_fit_a_call_beside_the_tracked_files(tmp_path):
    """The device runner carries 64 MiB a call, the repository's tracked files included: pack.sh's default piece is
    what they leave, less 2 MiB."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: no tracked files to size the pieces by")
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    tracked = sum((ROOT / n.decode()).stat().st_size for n in names if n and (ROOT / n.decode()).is_file())
    want = (64 * 1024 * 1024 - tracked) // (1024 * 1024) - 2
    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / "a.bin").write_bytes(os.urandom(1000))
    out = sh(PACK, stage, tmp_path / "pk", cwd=tmp_path)
    assert f"of at most {want}M" in out.stdout


def test_pieces_inside_the_repository_must_be_ignored_by_git(tmp_path):
    """A device call carries every file git does not ignore: pack.sh refuses a pieces folder in the repository that
    git would carry (a fresh checkout once lacked the exclude that ignored .gpu/), before writing anything."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / "a.bin").write_bytes(b"x" * 100)
    carried = ROOT / "pk_carried_by_every_call"
    out = sh(PACK, stage, carried, "1K", cwd=tmp_path, check=False)
    assert out.returncode == 2 and "git does not ignore it" in out.stderr and not carried.exists()
    assert subprocess.run(["git", "check-ignore", "-q", str(ROOT / ".gpu/pk/p00")], cwd=ROOT).returncode == 0
