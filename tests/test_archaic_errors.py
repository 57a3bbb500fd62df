"""scripts/archaic_errors.py: errors in the clips with the King James Bible's archaic forms, from either report."""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import archaic_errors  # noqa: E402


def test_counts_clips_with_archaic_forms_and_the_archaic_words_read_wrong(tmp_path, capsys):
    pairs = [("and he saith unto them", "and he says to them"),   # archaic clip: 2 errors, both archaic words
             ("the lord liveth", "the lord lives"),                # -eth: 1 error, an archaic word
             ("the best of times", "the best of time"),            # -est word: an archaic clip, 1 error, no archaic word
             ("a plain sentence", "a plane sentence here")]        # not archaic: 2 errors
    assert archaic_errors.count(pairs) == {"errors": 6, "clips": 3, "clip_errors": 4, "archaic_wrong": 3}
    utts = [{"ref_norm": r, "hyp_norm": h} for r, h in pairs]
    ev = tmp_path / "ev.json"
    ev.write_text(json.dumps({"utterances": utts}))
    probe = tmp_path / "probe.json"  # the probe's report: raw text, normalized here
    probe.write_text(json.dumps({"test": [{"ref": r.capitalize() + ".", "untrained": "", "trained": h}
                                          for r, h in pairs]}))
    assert archaic_errors.main([str(ev), str(probe)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("ev.json: 6 errors; 3 clips with archaic forms hold 4; 3 archaic words wrong")
    assert out[1].endswith("probe.json untrained: 15 errors; 3 clips with archaic forms hold 12; 3 archaic words wrong")
    assert out[2].endswith("probe.json trained: 6 errors; 3 clips with archaic forms hold 4; 3 archaic words wrong")
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert archaic_errors.main([str(bad)]) == 2
    assert "bad.json: neither an mmlora evaluate report" in capsys.readouterr().err
