"""mmlora.fsutil: a write that fails midway leaves the old file (or none) under the final name, and no temporary."""
from __future__ import annotations

import pytest

from mmlora.fsutil import replace_dir, replace_file, replace_text


def test_replace_file_swaps_in_the_whole_file_and_leaves_no_temporary(tmp_path):
    final = tmp_path / "sub" / "x.json"  # the folder is made
    with replace_file(final) as tmp:
        assert tmp.parent == final.parent and tmp.name.startswith(".x.json.") and tmp.name.endswith(".tmp")
        tmp.write_text("new")
        assert not final.exists()  # nothing under the final name until the block ends
    assert final.read_text() == "new"
    assert sorted(p.name for p in final.parent.iterdir()) == ["x.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    final = replace_text(tmp_path / "x.txt", "old")
    with pytest.raises(RuntimeError):
        with replace_file(final) as tmp:
            tmp.write_text("half")
            raise RuntimeError("stopped midway")
    assert final.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]


def test_suffix_keeps_the_extension_a_writer_reads_the_format_from(tmp_path):
    sf = pytest.importorskip("soundfile")
    import numpy as np

    final = tmp_path / "a.wav"
    with replace_file(final, suffix=".wav") as tmp:
        assert tmp.suffix == ".wav"
        sf.write(tmp, np.zeros(160, dtype="float32"), 16000, subtype="PCM_16")
    assert sf.info(final).frames == 160


def test_two_writers_never_share_a_temporary(tmp_path):
    with replace_file(tmp_path / "x") as a, replace_file(tmp_path / "x") as b:
        assert a != b
        a.write_text("a")
        b.write_text("b")
    assert (tmp_path / "x").read_text() == "a"  # the outer block ends last: its file is the one left


def test_replace_dir_swaps_folders(tmp_path):
    final, new = tmp_path / "out", tmp_path / ".new"
    final.mkdir(); (final / "f").write_text("old")
    new.mkdir(); (new / "f").write_text("new")
    replace_dir(new, final)
    assert (final / "f").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
