"""scripts/bench_video_encoder.py on the CPU at toy sizes: every path runs and reads the same features as the first
(the folded program), LoRA inside included (fresh adapters change nothing), and the table comes out. No timing is
checked: speed is for docs/PERFORMANCE.md."""
from __future__ import annotations

import re

from conftest import load_script


def test_every_path_reads_as_the_folded_program(tmp_path, capsys):
    bench = load_script("bench_video_encoder")
    out = tmp_path / "r.md"
    assert bench.main(["--clips", "2", "--frames", "3", "--size", "32", "--image-size", "32", "--chunks", "4",
                       "--repeats", "1", "--paths", "folded,plain,lora,lora-train,lora-train-plain", "--no-autocast",
                       "--out", str(out)]) == 0
    rows = [line for line in out.read_text().splitlines() if re.match(r"\| (folded|plain|lora)", line)]
    assert [r.split(" | ")[0][2:] for r in rows] == ["folded", "plain", "lora", "lora-train", "lora-train-plain"]
    diffs = [float(d) for d in re.findall(r"max rel\. diff to the first row ([0-9.e+-]+)", capsys.readouterr().out)]
    assert len(diffs) == 5 and max(diffs) < 1e-4
