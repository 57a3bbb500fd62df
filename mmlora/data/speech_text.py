"""Sentences for TTS: Debian ``fortunes``, the King James Bible (``bible-kjv``), the example sentences
of WordNet 3.0 (``wordnet-base``: modern English) and any one-sentence-per-line files.

Cleaning keeps sentences a TTS voice reads exactly as written, so the text is the transcript:
ASCII only, no digits or symbols that voices expand differently (``$ % & / @ # ...``), no
abbreviations with dots, whitespace collapsed, ALL-CAPS words (``LORD``) title-cased, quotes and
brackets dropped, 4-20 words (configurable). Order is deterministic (sorted files, first
occurrence wins), so a seeded shuffle downstream is reproducible.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path

FORTUNE_DIR = Path("/usr/share/games/fortunes")
# Fortune files with mostly readable prose (skipped: ascii art, code, lists, offensive ones).
FORTUNE_FILES = (
    "computers", "cookie", "education", "food", "fortunes", "goedel", "humorists", "kids", "law",
    "literature", "love", "magic", "medicine", "miscellaneous", "news", "people", "pets",
    "platitudes", "pratchett", "riddles", "science", "sports", "startrek", "tao", "wisdom", "work",
)


@dataclass
class TextConfig:
    min_words: int = 4  # shortest sentence kept
    max_words: int = 20  # longest sentence kept
    max_chars: int = 140  # longest sentence kept, in characters
    max_proper_frac: float = 0.2  # reject sentences with more capitalized (non-first) words than this
    fortune_dir: str = str(FORTUNE_DIR)  # where the fortune files live
    fortune_files: tuple[str, ...] = field(default=FORTUNE_FILES)  # which fortune files to read
    bible_cmd: str = "bible"  # the bible-kjv reader (prints the text of a verse range)
    wordnet_dir: str = "/usr/share/wordnet"  # WordNet 3.0 (Debian wordnet-base): its example sentences are the
    # "wordnet" pool (modern English, ~25k clauses; empty when not installed)
    files: tuple[tuple[str, str], ...] = ()  # extra sentence pools (name, path): one sentence per line, cleaned


_SENT_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_DROP_CHARS = re.compile(r"[\"`()\[\]{}<>*_]")
_BAD = re.compile(r"[^A-Za-z ,.;:!?'\-]")  # anything else rejects the sentence
_ABBREV = re.compile(r"\b(?:[A-Za-z]\.){1,}[A-Za-z]?|\b(?:Mr|Mrs|Ms|Dr|St|Jr|Sr|Prof|vs|etc|Inc|Ltd|Co)\.")


def clean_sentence(s: str, cfg: TextConfig) -> str | None:
    """Normalize one sentence; None when it should not be read by a TTS voice."""
    s = s.replace("\u2019", "'").replace("--", ", ")
    s = _DROP_CHARS.sub("", s)
    s = " ".join(s.split())
    if not s or not s.isascii() or _BAD.search(s) or _ABBREV.search(s):
        return None
    s = s.strip(" ,;:-'")
    words = s.split()
    words = [w.capitalize() if len(w.strip(",.;:!?'-")) > 1 and w.isupper() else w for w in words]
    if not (cfg.min_words <= len(words) <= cfg.max_words):
        return None
    s = " ".join(words)
    if len(s) > cfg.max_chars or not s[0].isalpha() or "''" in s or " -" in s or "- " in s or ".." in s:
        return None
    caps = sum(w[0].isupper() and w not in ("I", "God", "Lord") for w in words[1:])
    if caps > max(1, cfg.max_proper_frac * len(words)):  # lists of names
        return None
    if s[-1] not in ".!?":
        s = s.rstrip(",;:") + "."
    return s[0].upper() + s[1:]


def split_sentences(text: str) -> list[str]:
    """Split prose into sentences at . ! ? followed by whitespace and a capital letter."""
    return [p for p in _SENT_END.split(" ".join(text.split())) if p]


_TITLES = re.compile(r"\b(Mr|Mrs)\.(?=\s)")
_SPOKEN_TITLE = {"Mr": "Mister", "Mrs": "Missus"}  # as readers say them (and LibriSpeech writes them)


def book_sentences(lines: list[str]) -> list[str]:
    """The sentences of a book given as its lines (blank lines between paragraphs): paragraphs joined,
    "Mr." / "Mrs." written as spoken ("Mister", "Missus": the dot would end the sentence there and a TTS
    voice might read the abbreviation otherwise), then :func:`split_sentences`. Not cleaned: the corpus
    cleans every pool with its own :class:`TextConfig`."""
    paras, cur = [], []
    for line in list(lines) + [""]:
        if line.strip():
            cur.append(line.strip())
        elif cur:
            paras.append(" ".join(cur))
            cur = []
    return [t for p in paras for t in split_sentences(_TITLES.sub(lambda m: _SPOKEN_TITLE[m.group(1)], p))]


def read_r_lazyload(prefix: str | Path) -> dict[str, list[str]]:
    """The objects of an R lazy-load database (``PREFIX.rdx``: gzip-compressed index, ``PREFIX.rdb``: one
    compressed serialized object per entry), e.g. an R data package's ``data/Rdata`` such as Debian's
    ``r-cran-janeaustenr`` (a character vector of lines per novel), converted by the ``rdata`` package
    (``pip install rdata``): {name: list of strings} for the character vectors. Each entry is a 4-byte
    big-endian length and a zlib stream, or (R's compression types 2 and 3) a type byte ``Z`` / ``2`` / ``X`` /
    ``0`` before zlib / bzip2 / xz / uncompressed data."""
    import bz2
    import gzip
    import lzma
    import zlib

    try:
        import rdata
    except ImportError as e:
        raise ImportError("reading an R lazy-load database needs the rdata package: pip install rdata") from e

    prefix = Path(prefix)
    rdx, rdb = prefix.with_name(prefix.name + ".rdx"), prefix.with_name(prefix.name + ".rdb")
    for f in (rdx, rdb):
        if not f.is_file():
            raise FileNotFoundError(f"{f}: no such file (an R lazy-load database is PREFIX.rdx + PREFIX.rdb)")

    def load(raw: bytes):
        with warnings.catch_warnings():  # raw serialized objects carry no file header: rdata says so
            warnings.filterwarnings("ignore", message="Unknown file type")
            return rdata.conversion.convert(rdata.parser.parse_data(raw))

    index = load(gzip.decompress(rdx.read_bytes()))
    blob = rdb.read_bytes()
    out: dict[str, list[str]] = {}
    for name, (off, length) in index["variables"].items():
        chunk = blob[int(off):int(off) + int(length)]
        kind, body = chunk[4:5], chunk[5:]
        if kind == b"2":
            data = bz2.decompress(body)
        elif kind == b"X":
            data = lzma.decompress(body)
        elif kind == b"0":
            data = body
        else:  # b"Z" + zlib, or (compression type 1) the zlib stream right after the length
            data = zlib.decompress(body if kind == b"Z" else chunk[4:])
        obj = load(data)
        if getattr(obj, "dtype", None) is not None and obj.dtype.kind in "OUS":
            out[str(name)] = [str(x) for x in obj]
    return out


def fortune_sentences(cfg: TextConfig) -> list[str]:
    """Sentences from the fortune files (entries are separated by lines holding '%')."""
    out: list[str] = []
    root = Path(cfg.fortune_dir)
    for name in cfg.fortune_files:
        f = root / name
        if not f.is_file():
            continue
        for entry in f.read_text(encoding="latin-1").split("\n%\n"):
            lines = [ln for ln in entry.splitlines() if not ln.strip().startswith(("--", "\t\t--"))]
            # skip dialogues, verse and lists: keep entries that read as running prose
            if any(re.match(r"^\s*[A-Z][A-Za-z]*:\s", ln) for ln in lines):
                continue
            for sent in split_sentences(" ".join(lines)):
                c = clean_sentence(sent, cfg)
                if c:
                    out.append(c)
    return out


def bible_sentences(cfg: TextConfig) -> list[str]:
    """Sentences from the KJV (verses, split further at sentence ends)."""
    exe = shutil.which(cfg.bible_cmd)
    if exe is None:
        return []
    text = subprocess.run(
        [exe, "-l0", "gen1:1-rev22:21"], check=True, capture_output=True, text=True, encoding="latin-1"
    ).stdout
    verses: list[str] = []
    for ln in text.splitlines():
        m = re.match(r"^\s+\d+\s+(.*)$", ln)
        if m:
            verses.append(m.group(1))
        elif ln and not ln.startswith(" ") and verses and not re.match(r"^[1-3 A-Za-z]+ \d+$", ln):
            verses[-1] += " " + ln
    out: list[str] = []
    for v in verses:
        for sent in re.split(r"(?<=[.!?:;])\s+(?=[A-Z])", v):
            c = clean_sentence(sent, cfg)
            if c:
                out.append(c)
    return out


def file_sentences(path: str | Path, cfg: TextConfig) -> list[str]:
    """Sentences of a text file, one per line (blank lines and ``#`` comments skipped), cleaned by
    :func:`clean_sentence`; lines it rejects are dropped."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"sentence file not found: {p}")
    out = []
    for ln in p.read_text(encoding="utf-8").splitlines():
        if ln.strip() and not ln.lstrip().startswith("#"):
            c = clean_sentence(ln, cfg)
            if c:
                out.append(c)
    return out


_CLAUSE_WORDS = frozenset("""is are was were be been being am has have had do does did will would can could should may
might must shall i you he she we they it me him her us them my your his our their there this that these those""".split())


def wordnet_examples(wordnet_dir: str | Path, clauses_only: bool = True) -> list[str]:
    """The example sentences of WordNet 3.0's glosses (the quoted strings after ``|`` in
    ``data.{noun,verb,adj,adv}``), first letter capitalised and a full stop added when missing.
    ``clauses_only`` keeps those that read as a clause (an auxiliary or pronoun, or a past-tense verb
    form after the first word: ``-ed`` of a WordNet verb, or an irregular form of ``verb.exc``) and drops
    noun-phrase fragments such as "a quick brush"."""
    d = Path(wordnet_dir)
    files = [d / f"data.{pos}" for pos in ("noun", "verb", "adj", "adv")]
    if not all(f.is_file() for f in files):
        raise FileNotFoundError(f"{d}: no WordNet data.noun/verb/adj/adv files (Debian wordnet-base: /usr/share/wordnet)")

    def first_words(name: str) -> set[str]:
        f = d / name
        return {ln.split()[0] for ln in f.read_text(encoding="latin-1").splitlines()
                if ln.strip() and not ln.startswith(" ")} if f.is_file() else set()

    lemmas, irregular = (first_words("index.verb"), first_words("verb.exc")) if clauses_only else (set(), set())

    def is_past(t: str) -> bool:  # "walked" (walk), "danced" (dance), "stopped" (stop), "ate" (verb.exc)
        return t in irregular or (t.endswith("ed") and any(t[:-k] in lemmas for k in (1, 2, 3)))

    out = []
    for f in files:
        for ln in f.read_text(encoding="latin-1").splitlines():
            if ln.startswith(" ") or "|" not in ln:  # the licence header lines start with spaces
                continue
            for q in re.findall(r'"([^"]+)"', ln.split("|", 1)[1]):
                q = " ".join(q.split())
                if not q or not q[0].isalpha():
                    continue
                q = q[0].upper() + q[1:] + ("" if q[-1] in ".?!" else ".")
                if clauses_only:
                    toks = [t.strip(".,;:!?'").lower() for t in q.replace("'", " '").split()]
                    if not (any(t in _CLAUSE_WORDS for t in toks) or any(is_past(t) for t in toks[1:])):
                        continue
                out.append(q)
    return out


def wordnet_sentences(cfg: TextConfig) -> list[str]:
    """:func:`wordnet_examples` of ``cfg.wordnet_dir`` cleaned by :func:`clean_sentence` ([] when WordNet is
    not installed)."""
    if not (Path(cfg.wordnet_dir) / "data.noun").is_file():
        return []
    return [c for c in (clean_sentence(s, cfg) for s in wordnet_examples(cfg.wordnet_dir)) if c]


def load_sentences(cfg: TextConfig, wordnet: bool = False) -> dict[str, list[str]]:
    """{'fortunes': [...], 'bible': [...], 'wordnet': [...] (only when ``wordnet``), <name of each cfg.files
    entry>: [...]} with duplicates removed across all pools (first occurrence kept, in that order). WordNet
    is parsed only when asked for: a corpus that does not use it stays the same (word-salad vocabulary
    included) whether or not wordnet-base is installed."""
    seen: set[str] = set()
    res: dict[str, list[str]] = {}
    sources = [("fortunes", fortune_sentences), ("bible", bible_sentences)]
    if wordnet:
        sources.append(("wordnet", wordnet_sentences))
    for name, path in cfg.files:
        if name in ("fortunes", "bible", "wordnet") or name in dict(sources):
            raise ValueError(f"sentence file name {name!r} is used twice or clashes with a built-in pool")
        sources.append((name, lambda c, path=path: file_sentences(path, c)))
    for name, fn in sources:
        uniq = []
        for s in fn(cfg):
            k = s.lower()
            if k not in seen:
                seen.add(k)
                uniq.append(s)
        res[name] = uniq
    return res
