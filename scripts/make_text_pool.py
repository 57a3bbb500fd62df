#!/usr/bin/env python3
"""Write a sentence pool for `mmlora make-speech-corpus --text-file NAME=PATH` (one sentence per line) from a
text package, for corpora that need sentences beyond fortunes, KJV and WordNet (whose 24,061 example clauses the
corpora of GPU runs 9-11 used up; docs/ASR.md "Next").

    python scripts/make_text_pool.py austen --out data/text/austen.txt [--skip sensesensibility] [--rdata PREFIX]

austen: Jane Austen's six novels from Debian's r-cran-janeaustenr (an R lazy-load database, read with the
rdata package). Without --rdata the .deb is fetched with `apt-get download` and unpacked into a temporary folder
(never installed: R is not needed). --skip leaves novels out by name (emma, mansfieldpark, northangerabbey,
persuasion, prideprejudice, sensesensibility): five of the 16 human test clips read Sense and Sensibility,
so the default skips it. Lines are the books' sentences ("Mr."/"Mrs." as "Mister"/"Missus"), not yet cleaned:
make-speech-corpus cleans each pool; the count that passes its default cleaning (4-16 words) is printed.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mmlora.data.speech_text import TextConfig, book_sentences, clean_sentence, read_r_lazyload  # noqa: E402

AUSTEN_DB = "usr/lib/R/site-library/janeaustenr/data/Rdata"


def fetch_austen(tmp: Path) -> Path:
    try:
        subprocess.run(["apt-get", "download", "r-cran-janeaustenr"], cwd=tmp, check=True, capture_output=True, text=True)
        deb = next(tmp.glob("r-cran-janeaustenr_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp / "x")], check=True, capture_output=True, text=True)
    except (subprocess.CalledProcessError, FileNotFoundError, StopIteration) as e:
        detail = getattr(e, "stderr", "") or str(e)
        raise SystemExit(f"make_text_pool: could not fetch r-cran-janeaustenr with apt-get download / dpkg-deb: "
                         f"{detail.strip()[:300]} (or pass --rdata PREFIX of an unpacked copy)")
    return tmp / "x" / AUSTEN_DB


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", choices=["austen"])
    p.add_argument("--out", required=True, help="sentence file to write (one per line)")
    p.add_argument("--skip", default="sensesensibility", help="comma-separated books to leave out ('' for none)")
    p.add_argument("--rdata", help=f"the lazy-load database prefix (e.g. /{AUSTEN_DB}); default: fetch the .deb")
    args = p.parse_args(argv)
    skip = {b for b in args.skip.split(",") if b}
    with tempfile.TemporaryDirectory() as tmp:
        prefix = Path(args.rdata) if args.rdata else fetch_austen(Path(tmp))
        books = read_r_lazyload(prefix)
    unknown = sorted(skip - set(books))
    if unknown:
        raise SystemExit(f"make_text_pool: --skip {unknown}: no such book (have {sorted(books)})")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cfg = TextConfig(max_words=16)
    lines, kept = [], 0
    for name in sorted(set(books) - skip):
        sents = book_sentences(books[name])
        ok = sum(clean_sentence(s, cfg) is not None for s in sents)
        print(f"{name}: {len(sents)} sentences, {ok} pass the corpus cleaning at 4-16 words")
        lines += sents
        kept += ok
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {len(lines)} sentences ({kept} usable) to {out}; skipped: {sorted(skip) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
