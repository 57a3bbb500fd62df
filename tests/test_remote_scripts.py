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


def test_job_starts_after_the_last_piece_and_is_collected(packed):
    tmp, repo, pieces, _ = packed
    (repo / "job.sh").write_text('set -e\necho "repo=$REPO" > log/j.log\ncat c.txt > res/copy.txt\ntouch DONE\n')
    env = {"WORK": str(tmp / "work")}
    for p in pieces:
        out = sh(REMOTE, "put", f"pk/{p}", "job.sh", cwd=repo, env=env)
    assert "started job.sh" in out.stdout
    waited = sh(REMOTE, "wait", "30", cwd=repo, env=env)
    assert waited.stdout.startswith("DONE") and f"repo={repo}" in waited.stdout
    sh(REMOTE, "collect", tmp / "out", cwd=repo, env=env)
    with tarfile.open(tmp / "out/res.tgz") as t:
        assert t.extractfile("res/copy.txt").read() == b"hello\n"
        assert "log/j.log" in t.getnames()


def test_wait_on_a_machine_without_the_job_ends_at_once(tmp_path):
    # a lease that ended between calls leaves a bare machine: the wait must say so, not sit out its seconds
    out = sh(REMOTE, "wait", "600", cwd=tmp_path, env={"WORK": str(tmp_path / "work")}, check=False)
    assert out.returncode == 3 and "fresh machine" in out.stderr and not (tmp_path / "work").exists()
