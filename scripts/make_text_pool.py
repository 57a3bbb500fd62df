#!/usr/bin/env python3
"""Write a sentence pool for `mmlora make-speech-corpus --text-file NAME=PATH` (one sentence per line) from a
text package, for corpora that need sentences beyond fortunes, KJV and WordNet (whose 24,061 example clauses the
corpora of GPU runs 9-11 used up; docs/ASR_RUNS.md, plans after runs 9-11).

    python scripts/make_text_pool.py SOURCE --out data/text/SOURCE.txt [--skip BOOK,...] [--rdata PATH]

Sources (Debian packages of R data, each pinned to one bookworm version and its SHA-256 (SOURCES) so that a pool
is made again byte for byte: fetched with fetch_human_speech.fetch_deb, `apt-get download PACKAGE=VERSION` under a
private apt configuration of its own naming bookworm in a temporary folder (the system's sources and lists are
neither read nor changed), the SHA-256 checked, the data read from the .deb's data archive by
fetch_human_speech.read_deb (no dpkg); never installed: R is not needed; read with the rdata package):

  austen     Jane Austen's six novels (r-cran-janeaustenr). The default --skip leaves out Sense and
             Sensibility (sensesensibility): five of the 16 human test clips read it.
  gutenberg  three Project Gutenberg novels shipped with r-cran-tidytext (greatexpectations,
             twentythousandleaguesunderthesea, thewaroftheworlds) and a fourth, prideandprejudice, skipped by
             default (the austen pool has it).
  harvard    the 720 Harvard sentences (IEEE 1969 phonetically balanced lists) of r-cran-stringr.

and one dictionary (a dictd database, fetched and read the same way; no dictd needed):

  gcide      the quotations of the GNU Collaborative International Dictionary of English (dict-gcide: Webster
             1913 and later additions; "The climate affected their health and spirits. --Macaulay."): whole
             sentences of prose, author dropped; Bible verses (the KJV pool has them), verse, cut quotations,
             archaic ones (thee, hath, -eth), phrases without a verb and clauses without a main clause left out
             (gcide_quotations; counts printed).

and one grammar, no package:

  grid       the 64,000 sentences of the GRID audio-visual corpus's grammar (Cooke et al., 2006): command (bin lay
             place set), colour (blue green red white), preposition (at by in with), letter (A-Z without W), digit
             (zero-nine), adverb (again now please soon): "Place red by A zero please." A closed vocabulary of 51
             words, the usual first test of lip reading and audio-visual speech recognition with little data.

and a grammar of the same shape with larger word lists (WordNet, Debian wordnet-base, no fetch):

  gridwide   GRID's six slots with K words in each open one (--slot-words K, default 100): verb (command),
             adjective (colour), one of 20 prepositions, noun (letter), one of 28 numbers (zero-twenty, thirty-
             ninety: digit), adverb; the K most frequent single words of each part of speech by WordNet's sense-
             tagged counts (cntlist.rev), each word in one slot only. "Give small into house twelve very." K = 100:
             448 words. --n sentences (default 60,000), drawn with --seed (default 0), all different. A point between
             GRID's 51 words and open text, to find how far lip reading's help carries as the vocabulary grows.

and the same words without the grammar:

  freewords  the gridwide lexicon at --slot-words K (all six slots' words, one list) in free order: each sentence
             --length words (default 6, GRID's length; MIN,MAX for a range) drawn uniformly with repetition, so no
             slot tells the reader which words can come next. "Twelve very house give into small." The step after
             gridwide towards open text: the same vocabulary, no syntax.

--rdata PATH reads an unpacked copy instead (the lazy-load prefix, e.g. /usr/lib/R/site-library/janeaustenr/data/
Rdata, or tidytext's extdata/books.rda; for gcide /usr/share/dictd/gcide.dict.dz, or gcide.dict unpacked). Lines
are the books' sentences (paragraphs joined, "Mr."/"Mrs." as "Mister"/"Missus"), not yet cleaned: make-speech-corpus
cleans each pool; the count that passes its default cleaning (4-16 words) is printed per book.
"""
from __future__ import annotations

import argparse
import gzip
import re
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from fetch_human_speech import FetchError, check_sha256, fetch_deb, read_deb  # noqa: E402
from mmlora.data.speech_text import (TextConfig, book_sentences, clean_sentence, read_r_lazyload,  # noqa: E402
                                     split_sentences)


@dataclass(frozen=True)
class Source:
    package: str  # the Debian package holding the data (bookworm)
    version: str  # its pinned version (the one that made the pools in data/text)
    sha256: str  # of its .deb, as fetched
    path: str  # the data inside it: a lazy-load prefix or an .rda file
    skip: str  # books left out by default
    read: str  # "lazyload": {name: lines}; "books.rda": a data frame of (text, title) lines; "sentences": one per line;
    # "gcide": the quotations of a dictd dictionary (gcide_quotations)

    @property
    def deb(self) -> str:
        """The file ``apt-get download`` saves (all four packages are ``Architecture: all``, no epoch)."""
        return f"{self.package}_{self.version}_all.deb"


SOURCES = {
    "austen": Source("r-cran-janeaustenr", "1.0.0-1",
                     "df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95",
                     "usr/lib/R/site-library/janeaustenr/data/Rdata", "sensesensibility", "lazyload"),
    "gutenberg": Source("r-cran-tidytext", "0.4.1-1",
                        "8d693a8772b57e2dbdc907aa946fbeeefb03ba3eb2bbea86d5c888a4d15956ad",
                        "usr/lib/R/site-library/tidytext/extdata/books.rda", "prideandprejudice", "books.rda"),
    "harvard": Source("r-cran-stringr", "1.5.0-1", "f180d2e5f79b4aab871425898399d3bebbd6993262e692e166638a720879990e",
                      "usr/lib/R/site-library/stringr/data/Rdata", "", "sentences"),
    "gcide": Source("dict-gcide", "0.48.5+nmu2", "7b0af5cfde3cbdef5e9d6e78f92ec335ced7c2790f37a40f49bebc6f7347ac0f",
                    "usr/share/dictd/gcide.dict.dz", "", "gcide"),
}


GRID = (("bin", "lay", "place", "set"), ("blue", "green", "red", "white"), ("at", "by", "in", "with"),
        tuple("ABCDEFGHIJKLMNOPQRSTUVXYZ"),
        ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
        ("again", "now", "please", "soon"))


def grid_sentences() -> list[str]:
    """Every sentence of the GRID grammar, in grammar order ("Bin blue at A zero again." first)."""
    from itertools import product

    return [f"{t[0].upper()}{t[1:]}." for t in (" ".join(w) for w in product(*GRID))]


NUMBERS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
           "seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety").split()
PREPOSITIONS = ("about above across after against along among around at before behind below by down for from in "
                "into near over").split()
_POS = {"1": "noun", "2": "verb", "3": "adj", "4": "adv", "5": "adj"}  # sense-key ss_type (5: adjective satellite)


def wordnet_frequent(wordnet_dir: str | Path) -> dict[str, list[str]]:
    """Single lowercase words of each part of speech, most frequent first by the summed sense-tagged counts of
    WordNet's cntlist.rev ("give%2:40:00:: 3 1017"); ties alphabetically."""
    path = Path(wordnet_dir) / "cntlist.rev"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no WordNet sense counts (Debian wordnet-base: /usr/share/wordnet)")
    counts: dict[str, Counter] = {pos: Counter() for pos in ("noun", "verb", "adj", "adv")}
    for line in path.read_text().splitlines():
        key, _, cnt = line.split()
        lemma, _, rest = key.partition("%")
        if lemma.isalpha() and lemma.islower() and lemma.isascii() and len(lemma) >= 3:
            counts[_POS[rest[0]]][lemma] += int(cnt)
    return {pos: [w for w, _ in sorted(c.items(), key=lambda wc: (-wc[1], wc[0]))] for pos, c in counts.items()}


def grid_wide_slots(wordnet_dir: str | Path, k: int) -> list[list[str]]:
    """GRID's six slots with K WordNet words in each open one (verb, adjective, noun, adverb); the fixed slots keep
    a closed list (PREPOSITIONS, NUMBERS). A word is in one slot only: the fixed lists first, then verbs, adverbs,
    adjectives, nouns each take their K most frequent words not taken yet."""
    freq = wordnet_frequent(wordnet_dir)
    taken = set(NUMBERS) | set(PREPOSITIONS)
    open_slots = {}
    for pos in ("verb", "adv", "adj", "noun"):
        words = [w for w in freq[pos] if w not in taken][:k]
        if len(words) < k:
            raise ValueError(f"WordNet has only {len(words)} {pos}s for --slot-words {k}")
        taken.update(words)
        open_slots[pos] = words
    return [open_slots["verb"], open_slots["adj"], list(PREPOSITIONS), open_slots["noun"], list(NUMBERS),
            open_slots["adv"]]


def _distinct_sentences(draw, n: int, seed: int) -> list[str]:
    """N different word tuples from ``draw(rng)`` (rng = random.Random(seed)), in the order drawn, each written as
    a sentence: first letter upper-case, a full stop."""
    import random

    rng, seen, out = random.Random(seed), set(), []
    while len(out) < n:
        words = draw(rng)
        if words not in seen:
            seen.add(words)
            t = " ".join(words)
            out.append(f"{t[0].upper()}{t[1:]}.")
    return out


def grid_wide_sentences(slots: list[list[str]], n: int, seed: int) -> list[str]:
    """N different sentences, one word from each slot drawn uniformly (random.Random(seed))."""
    from math import prod

    if n > prod(len(s) for s in slots) // 2:
        raise ValueError(f"--n {n}: at most half of the grammar's {prod(len(s) for s in slots)} sentences are drawn")
    return _distinct_sentences(lambda rng: tuple(rng.choice(s) for s in slots), n, seed)


def free_word_sentences(words: list[str], n: int, seed: int, length: tuple[int, int] = (6, 6)) -> list[str]:
    """N different sentences of length[0]..length[1] words drawn uniformly, with repetition, from WORDS
    (random.Random(seed))."""
    lo, hi = length
    if not 1 <= lo <= hi:
        raise ValueError(f"--length {lo},{hi}: expected 1 <= MIN <= MAX")
    if n > len(set(words)) ** lo // 2:
        raise ValueError(f"--n {n}: at most half of the {len(set(words)) ** lo} shortest sentences are drawn")
    return _distinct_sentences(lambda rng: tuple(rng.choice(words) for _ in range(rng.randint(lo, hi))), n, seed)


def book_key(title: str) -> str:
    """A book's name for --skip: its title in lower-case letters and digits ("The War of the Worlds" ->
    "thewaroftheworlds")."""
    return re.sub(r"[^a-z0-9]", "", title.lower())


def fetch(src: Source, tmp: Path) -> Path:
    """The data of ``src`` from its pinned .deb, written under ``tmp / "x"`` as the package lays it out; returns that
    root. The .deb is fetched by :func:`fetch_human_speech.fetch_deb` (``apt-get download PACKAGE=VERSION`` under a
    private apt configuration in ``tmp / "apt"``, bookworm), its SHA-256 checked against ``src.sha256``, and the files
    of ``src.path`` (the file itself, or a lazy-load prefix's ``.rdb`` / ``.rdx`` / ``.rds``) read from its data
    archive by :func:`fetch_human_speech.read_deb` (no ``dpkg``). A failed download, a SHA-256 mismatch or a .deb
    without the data exits with a message naming PACKAGE=VERSION."""
    what, hint = f"{src.package}={src.version}", "(or pass --rdata PATH of an unpacked copy)"

    def want(name: str) -> bool:  # "./usr/.../Rdata.rdb" for the prefix "usr/.../Rdata"
        name = name.removeprefix("./")
        rest = name[len(src.path):]
        return name.startswith(src.path) and (rest == "" or (rest[0] == "." and "/" not in rest))

    try:
        deb = fetch_deb(src.package, src.version, tmp / "debs" / src.deb, tmp / "apt")
        check_sha256(deb, src.sha256, what)
        files = read_deb(deb, want)[1]
    except (FetchError, OSError) as e:  # OSError: no apt-get
        raise SystemExit(f"make_text_pool: could not fetch {what}: {str(e).removeprefix(what + ': ')} {hint}")
    if not files:
        raise SystemExit(f"make_text_pool: {what}: no {src.path} in {deb.name} {hint}")
    root = tmp / "x"
    for name, data in files.items():
        dest = root / name.removeprefix("./")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
    return root


# GCIDE (dictd text of Webster 1913 + additions). An entry is a headword line ("Affect \Af*fect"\, v. t. [imp. & p. p.
# {Affected}; ...]") and its senses (indented 3, continued at 6); each sense and each quotation ends with a source
# line ("[1913 Webster]", "[PJC]", ...). A quotation is a paragraph indented 9 or more (12 under a numbered sense),
# its author after "--" at its end or right-aligned on lines of their own (column 50).
_GCIDE_SOURCE_LINE = re.compile(r"^\s*\[[^\]]*\]\s*$")
_GCIDE_HEADWORD = re.compile(r"^\S[^\\\n]* \\[^\\\n]+\\")
_GCIDE_ATTRIBUTION = re.compile(r"(?:^|\s)--(?:[^\s-].*)?$")  # "--Shak.", "--Acts xxxvi. 13.", a bare "--"
_GCIDE_MARKUP = re.compile(r"[\[\]{}<>|\\=^~`*#]")  # pronunciation and Greek marks ([=a], ['e], [alpha]), cross refs
_GCIDE_GAP = re.compile(r"\?\w|\. \. \.|\.\.|\. [a-z]")  # "?" for a lost character ("imperial ?way"); ". . ." (cut
# quotation); a period before a small letter ("I pray, sir. why am I beaten?", "i. e.")
_GCIDE_ABBREV = re.compile(r"\b(?:Cf|cf|viz|Obs|Gr|Lat|OE|AS|Fr|Ger|Heb|Icel|Goth|Sax|Skr|Prov|Eng|Scot|Colloq|Ps|Gen|"
                           r"Matt|Deut|Rom|Cor|Rev|Ex|Is|Jer|ch|vol|pp|pl|sing|esp|fig|prob|Syn)\.(?=\s|$)")
_GCIDE_ARCHAIC = re.compile(r"\b(?:thee|thou|thy|thine|thyself|hath|doth|ye|hast|dost|didst|hadst|shalt|wilt|canst|"
                            r"wouldst|couldst|shouldst|wast|wert|ere|o'er|ne'er|e'er|(?-i:[a-z]{3,}(?<!i)eth))\b"
                            r"|(?<!\w)'t(?:is|was)?\b", re.I)  # "-eth" verbs (not "twentieth"), "'t is", "'Twas"
_GCIDE_BIBLE = re.compile(  # an attribution to a book of the Bible, chapter in Roman numerals: "--1 Cor. xiii. 4."
    r"--\s*(?:[1-4]\s*)?(?:Gen|Exod?|Lev|Levit|Numb?|Deut|Josh|Judg|Judges|Ruth|Sam|Kings|Chron|Ezra|Neh|Esth|Esther|"
    r"Job|Ps|Prov|Eccl|Eccles|Cant|Isa?|Jer|Lam|Ezek|Dan|Hos|Hosea|Joel|Amos|Jonah|Mic|Micah|Nah|Nahum|Hab|Zeph|Zech|"
    r"Mal|Matt|Math|Mark|Luke|John|Acts|Rom|Romans|Cor|Gal|Eph|Phil|Philip|Col|Thess?|Tim|Tit|Titus|Heb|James|Jas|"
    r"Pet|Peter|Jude|Rev|Wisd|Wisdom|Ecclus|Macc?|Esd|Tobit|Judith|Baruch)\.?\s+[ivxlc]+\b")
GCIDE_QUOTE_FILTERS = ("bible", "markup", "gap", "verse")  # gcide_quotations' reasons, in the order applied
GCIDE_SENTENCE_FILTERS = ("not whole", "abbreviation", "cleaning", "archaic", "no verb", "fragment", "duplicate")
_GCIDE_WIDTH = 64  # the wrap column of quotation prose: a line ending earlier than the next word needs is verse
# Words that GCIDE also lists as (obsolete) verbs ("The, v. i. to thrive") but never are one in a quotation.
_FUNCTION_WORDS = frozenset("""the a an of and or nor but to in on at by for with from into upon over under this that
    these those his her its my our their your no not all some any each every such what which who whom whose as than so
    then there here now very most more much many well ill one""".split())
_AUXILIARIES = frozenset("""is are was were am has have had do does did will would shall should can could may might must
    ain't won't can't don't doesn't didn't isn't aren't wasn't weren't hasn't haven't hadn't wouldn't shouldn't
    couldn't mustn't""".split())
_SUBJECTS = frozenset("i we you they he she it".split())
_SUBORDINATORS = frozenset("""to if when till until though although because whether unless while whilst lest which
    whose whom wherein whereby where as than""".split())  # first, and no comma: no main clause ("To do some ...")
_MODIFIERS = frozenset("""the a an his her its my our their your this that these those and or with by so very most
    more well ill half all some any no every each""".split())  # before an "-ed" word: a participle, not a verb


def gcide_verbs(text: str) -> tuple[frozenset[str], frozenset[str]]:
    """(verbs, past forms) in lower case from GCIDE's own entries: headwords marked "v. t." / "v. i.", and the forms
    of their "[imp. & p. p. {Abdicated}; p. pr. ...]" and "[imp. {Came}; p. p. {Come} ...]" brackets."""
    verbs = {m.group(1).lower() for m in re.finditer(
        r"^([A-Za-z]+) \\[^\\\n]*\\(?:\s*\([^)\n]*\))?,\s+v\. [ti]\.", text, re.M)}
    past = {re.sub(r"[^a-z]", "", w.lower()) for m in re.finditer(r"\[imp\.([^\]]*)", text)
            for w in re.findall(r"\{([^}]*)\}", m.group(1))}
    past = {w for w in past if w and not w.endswith("ing")}
    return frozenset(verbs - _FUNCTION_WORDS), frozenset(past - _FUNCTION_WORDS)


def has_finite_verb(sentence: str, verbs: frozenset[str], past: frozenset[str]) -> bool:
    """Whether ``sentence`` has a verb that makes it a clause, not a phrase ("The flightness of her temper."): an
    auxiliary, a past form (not after an article or a possessive: "the premised flames"), a third-person "-s" form,
    a contraction ("that's", "we'll"), a verb after a subject pronoun, or a verb first (an imperative: "Take heed that
    ...")."""
    ws = [w.strip(",.;:!?'").lower() for w in sentence.split()]
    for i, w in enumerate(ws):
        prev = ws[i - 1] if i else ""
        if w in _AUXILIARIES or re.search(r"\w'(?:re|ve|ll|d|t)$|^(?:it|he|she|that|there|here|what|who|where|let)'s$",
                                          w):  # "you'll", "that's", not "the poet's"
            return True
        if prev not in _MODIFIERS and (w in past or w.endswith("ed") and (w[:-2] in verbs or w[:-1] in verbs)):
            return True
        if i and prev not in _MODIFIERS and w.endswith("s") and not w.endswith("ss") and (
                w[:-1] in verbs or w.endswith("es") and w[:-2] in verbs or w.endswith("ies") and w[:-3] + "y" in verbs):
            return True
        if w in verbs and (i == 0 or prev in _SUBJECTS or i == 1 and ws[0] in ("and", "but", "or", "nor", "then")):
            return True
    return False


def gcide_quotations(text: str, cfg: TextConfig | None = None) -> tuple[list[str], Counter]:
    """The whole modern sentences of the quotations in GCIDE's dictd text (``gcide.dict``, unpacked): each block
    quotation without its "--Author.", joined, split into sentences. Removed, counted by reason in the Counter (the
    first reason that applies, in this order): "bible" (quoting the Bible, "--Gen. xxiv. 1.": the KJV pool has those
    verses already), "markup" (brackets, braces, pronunciation marks, non-ASCII), "gap" (". . .", a lost character,
    a period before a small letter), "verse" (lines broken before the wrap column: poetry), then per sentence "not
    whole" (not starting with a capital or not ending with . ! ?), "abbreviation" (Cf., Obs., Gen., ...), "cleaning"
    (``clean_sentence`` with ``cfg``, default 4-16 words), "archaic" (thee, thou, hath, "-eth" verbs, o'er, ...),
    "no verb" (a phrase: :func:`has_finite_verb`), "fragment" (with no comma, starting with a past form, "Delivered
    him to ...", with "To" or a subordinate clause, "If I can fasten but one cup upon him.") and "duplicate" (the same
    cleaned sentence again). Sentences are returned as written (not cleaned), but for contractions closed up ("we
    'll" -> "we'll")."""
    cfg = cfg or TextConfig(max_words=16)
    verbs, past = gcide_verbs(text)
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if _GCIDE_HEADWORD.match(line)), len(lines))  # after the preamble
    paras, cur = [], []
    for line in lines[start:] + [""]:
        if _GCIDE_SOURCE_LINE.match(line) or not line.strip():
            if cur:
                paras.append(cur)
            cur = []
        else:
            cur.append(line)
    indent = lambda line: len(line) - len(line.lstrip(" "))  # noqa: E731
    counts: Counter = Counter()
    out, seen = [], set()
    for para in paras:
        first = indent(para[0])
        if first < 9:  # headword, definition, note, synonyms, sub-sense
            continue
        body = []  # the quotation's lines: its author's right-aligned lines left out, up to a line indented less
        for line in para:
            if indent(line) >= 40:
                continue
            if indent(line) < first:
                break
            body.append(line)
        if not body:
            continue
        counts["quotations"] += 1
        if _GCIDE_BIBLE.search(" ".join(line.strip() for line in para)):
            counts["bible"] += 1
            continue
        quote = _GCIDE_ATTRIBUTION.sub("", " ".join(re.sub(r"\s{2,}--.*$", "", line.strip()) for line in body)).strip()
        quote = re.sub(r"(?<=\w) '(?=(?:ll|s|re|ve|d)\b)", "'", quote)  # "we 'll" (not "on 't": archaic)
        if _GCIDE_MARKUP.search(quote) or not quote.isascii():
            counts["markup"] += 1
            continue
        if _GCIDE_GAP.search(quote):
            counts["gap"] += 1
            continue
        if any(len(a.rstrip()) + 1 + len(b.split()[0]) <= _GCIDE_WIDTH for a, b in zip(body, body[1:])):
            counts["verse"] += 1
            continue
        for sent in split_sentences(quote):
            counts["sentences"] += 1
            clean = clean_sentence(sent, cfg) if sent[0].isupper() and sent[-1] in ".!?" else None
            words = clean.split() if clean else []
            first_word = words[0].strip(",;:'").lower() if words else ""
            reason = ("not whole" if not (sent[0].isupper() and sent[-1] in ".!?") else
                      "abbreviation" if _GCIDE_ABBREV.search(sent) else
                      "cleaning" if clean is None else
                      "archaic" if _GCIDE_ARCHAIC.search(clean) else
                      "no verb" if not has_finite_verb(clean, verbs, past) else
                      "fragment" if "," not in clean and ((first_word in past or first_word.endswith("ed")) and
                                                          first_word not in verbs | _AUXILIARIES or
                                                          first_word in _SUBORDINATORS and clean[-1] != "?") else
                      "duplicate" if clean in seen else "")
            if reason:
                counts[reason] += 1
                continue
            seen.add(clean)
            out.append(sent)
    return out, counts


def read_books(src: Source, path: Path) -> dict[str, list[str]]:
    """{book name: its lines (blank lines between paragraphs)} of one source's data at ``path``."""
    if src.read == "lazyload":
        return read_r_lazyload(path)
    if src.read == "sentences":  # one sentence per element: each its own paragraph
        sents = read_r_lazyload(path)["sentences"]
        return {"sentences": [line for s in sents for line in (s, "")]}
    if src.read == "gcide":  # dictzip is gzip (with an index in its header): .dict.dz, or an unpacked .dict
        if not path.is_file():
            raise SystemExit(f"make_text_pool: {path}: no such file")
        raw = gzip.decompress(path.read_bytes()) if path.suffix in (".dz", ".gz") else path.read_bytes()
        sents, counts = gcide_quotations(raw.decode("utf-8", errors="replace"))  # 3 stray cp1252 bytes
        removed = lambda reasons: ", ".join(f"{k} {counts[k]}" for k in reasons)  # noqa: E731
        print(f"gcide: {counts['quotations']} quotations; removed {removed(GCIDE_QUOTE_FILTERS)}; "
              f"{counts['sentences']} sentences in the rest; removed {removed(GCIDE_SENTENCE_FILTERS)}; "
              f"kept {len(sents)}")
        return {"quotations": [line for s in sents for line in (s, "")]}
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
    p.add_argument("source", choices=sorted([*SOURCES, "grid", "gridwide", "freewords"]))
    p.add_argument("--out", required=True, help="sentence file to write (one per line)")
    p.add_argument("--skip", help="comma-separated books to leave out ('' for none; default: the source's)")
    p.add_argument("--rdata", help="the data of an unpacked copy (R lazy-load prefix or .rda; for gcide the dictd "
                   "gcide.dict.dz or unpacked gcide.dict); default: fetch the .deb")
    p.add_argument("--slot-words", type=int, default=100, help="gridwide, freewords: words in each open slot")
    p.add_argument("--n", type=int, default=60000, help="gridwide, freewords: sentences to draw")
    p.add_argument("--seed", type=int, default=0, help="gridwide, freewords: random seed")
    p.add_argument("--length", default="6", help="freewords: words per sentence, N or MIN,MAX")
    p.add_argument("--wordnet", default="/usr/share/wordnet", help="gridwide, freewords: WordNet's dict folder")
    args = p.parse_args(argv)
    if args.source in ("grid", "gridwide", "freewords"):  # grammars: no package to fetch
        if args.source == "grid":
            lines = grid_sentences()
            what = f"{len(lines)} GRID sentences"
        elif args.source == "freewords":
            try:
                bounds = [int(x) for x in args.length.split(",")]
                length = (bounds[0], bounds[-1]) if len(bounds) in (1, 2) else None
            except ValueError:
                length = None
            if length is None:
                raise SystemExit(f"make_text_pool: --length {args.length!r}: expected N or MIN,MAX")
            words = [w for slot in grid_wide_slots(args.wordnet, args.slot_words) for w in slot]
            lines = free_word_sentences(words, args.n, args.seed, length)
            what = (f"{len(lines)} sentences of {length[0]}-{length[1]} free words from a {len(words)}-word "
                    f"lexicon")
        else:
            slots = grid_wide_slots(args.wordnet, args.slot_words)
            lines = grid_wide_sentences(slots, args.n, args.seed)
            what = (f"{len(lines)} sentences of a {sum(map(len, slots))}-word grammar "
                    f"({' / '.join(str(len(s)) for s in slots)} words per slot)")
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(lines) + "\n")
        print(f"wrote {what} to {args.out}")
        return 0
    src = SOURCES[args.source]
    skip = {b for b in (src.skip if args.skip is None else args.skip).split(",") if b}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.rdata) if args.rdata else fetch(src, Path(tmp)) / src.path
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
