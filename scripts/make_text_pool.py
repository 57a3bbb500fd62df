#!/usr/bin/env python3
"""Write a sentence pool for `mmlora make-speech-corpus --text-file NAME=PATH` (one sentence per line) from a
text package, for corpora that need sentences beyond fortunes, KJV and WordNet (whose 24,061 example clauses the
corpora of GPU runs 9-11 used up; docs/ASR.md "Next").

    python scripts/make_text_pool.py SOURCE --out data/text/SOURCE.txt [--skip BOOK,...] [--rdata PATH]

Sources (Debian packages of R data, fetched with `apt-get download` and unpacked into a temporary folder, never
installed: R is not needed; read with the rdata package):

  austen     Jane Austen's six novels (r-cran-janeaustenr). The default --skip leaves out Sense and
             Sensibility (sensesensibility): five of the 16 human test clips read it.
  gutenberg  three Project Gutenberg novels shipped with r-cran-tidytext (greatexpectations,
             twentythousandleaguesunderthesea, thewaroftheworlds) and a fourth, prideandprejudice, skipped by
             default (the austen pool has it).
  harvard    the 720 Harvard sentences (IEEE 1969 phonetically balanced lists) of r-cran-stringr.

--rdata PATH reads an unpacked copy instead (the lazy-load prefix, e.g. /usr/lib/R/site-library/janeaustenr/data/
Rdata, or tidytext's extdata/books.rda). Lines are the books' sentences (paragraphs joined, "Mr."/"Mrs." as
"Mister"/"Missus"), not yet cleaned: make-speech-corpus cleans each pool; the count that passes its default
cleaning (4-16 words) is printed per book.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mmlora.data.speech_text import TextConfig, book_sentences, clean_sentence, read_r_lazyload  # noqa: E402


@dataclass(frozen=True)
class Source:
    package: str  # the Debian package holding the data
    path: str  # the data inside it: a lazy-load prefix or an .rda file
    skip: str  # books left out by default
    read: str  # "lazyload": {name: lines}; "books.rda": a data frame of (text, title) lines; "sentences": one per line


SOURCES = {
    "austen": Source("r-cran-janeaustenr", "usr/lib/R/site-library/janeaustenr/data/Rdata", "sensesensibility", "lazyload"),
    "gutenberg": Source("r-cran-tidytext", "usr/lib/R/site-library/tidytext/extdata/books.rda", "prideandprejudice",
                        "books.rda"),
    "harvard": Source("r-cran-stringr", "usr/lib/R/site-library/stringr/data/Rdata", "", "sentences"),
}


def book_key(title: str) -> str:
    """A book's name for --skip: its title in lower-case letters and digits ("The War of the Worlds" ->
    "thewaroftheworlds")."""
    return re.sub(r"[^a-z0-9]", "", title.lower())


def fetch(package: str, tmp: Path) -> Path:
    """Unpack ``package`` (``apt-get download`` + ``dpkg-deb -x``) under ``tmp``; returns the unpacked root."""
    try:
        subprocess.run(["apt-get", "download", package], cwd=tmp, check=True, capture_output=True, text=True)
        deb = next(tmp.glob(f"{package}_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp / "x")], check=True, capture_output=True, text=True)
    except (subprocess.CalledProcessError, FileNotFoundError, StopIteration) as e:
        detail = getattr(e, "stderr", "") or str(e)
        raise SystemExit(f"make_text_pool: could not fetch {package} with apt-get download / dpkg-deb: "
                         f"{detail.strip()[:300]} (or pass --rdata PATH of an unpacked copy)")
    return tmp / "x"


def read_books(src: Source, path: Path) -> dict[str, list[str]]:
    """{book name: its lines (blank lines between paragraphs)} of one source's data at ``path``."""
    if src.read == "lazyload":
        return read_r_lazyload(path)
    if src.read == "sentences":  # one sentence per element: each its own paragraph
        sents = read_r_lazyload(path)["sentences"]
        return {"sentences": [line for s in sents for line in (s, "")]}
    import warnings

    import rdata

    if not path.is_file():
        raise SystemExit(f"make_text_pool: {path}: no such file")
    with warnings.catch_warnings():  # R classes rdata has no constructor for (tibbles): plain data frames
        warnings.simplefilter("ignore")
        frame = rdata.read_rda(str(path))["books"]
    books: dict[str, list[str]] = {}
    for title, text in zip(frame["title"], frame["text"]):
        books.setdefault(book_key(str(title)), []).append("" if text is None else str(text))
    return books


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", choices=sorted(SOURCES))
    p.add_argument("--out", required=True, help="sentence file to write (one per line)")
    p.add_argument("--skip", help="comma-separated books to leave out ('' for none; default: the source's)")
    p.add_argument("--rdata", help="the R data of an unpacked copy (lazy-load prefix or .rda); default: fetch the .deb")
    args = p.parse_args(argv)
    src = SOURCES[args.source]
    skip = {b for b in (src.skip if args.skip is None else args.skip).split(",") if b}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.rdata) if args.rdata else fetch(src.package, Path(tmp)) / src.path
        books = read_books(src, path)
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
