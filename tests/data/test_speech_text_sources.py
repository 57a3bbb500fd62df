"""Sentence pools beyond fortunes and the KJV: WordNet's example sentences, sentence files, and the
per-pool shares of make-speech-corpus (--text-file / --text-weights)."""
from __future__ import annotations

from collections import Counter

import pytest

from conftest import deb_bytes, load_script, tar_bytes
from mmlora.data import speech_corpus as C
from mmlora.data.speech_text import TextConfig, clean_sentence, file_sentences, load_sentences, wordnet_examples

HEADER = "  1 This software and database is being provided to you, the LICENSEE, by Princeton University\n"


def fake_wordnet(d):
    d.mkdir()
    noun = (HEADER + '00001740 03 n 01 brush 0 000 | a quick brushing; "he gave his hair a quick brush"; '
            '"a quick brush"\n'
            '00001741 03 n 01 day 0 000 | a period; "I\'ve had an exasperating day"\n')
    verb = (HEADER + '00002000 29 v 01 walk 0 000 | use one\'s feet; "the children walked home"; "walk slowly!"\n'
            '00002001 29 v 01 eat 0 000 | take in food; "the dog ate the bone"; "1990 was a good year"\n')
    (d / "data.noun").write_text(noun)
    (d / "data.verb").write_text(verb)
    (d / "data.adj").write_text(HEADER + '00003000 00 a 01 placid 0 000 | calm; "a placid temperament"; '
                                         '"Not everyone shared his placid temperament."\n')
    (d / "data.adv").write_text(HEADER)
    (d / "index.verb").write_text(HEADER + "walk v 1 0 1 0 00002000\neat v 1 0 1 0 00002001\n")
    (d / "verb.exc").write_text("ate eat\n")
    return d


def test_wordnet_examples_keep_clauses_and_drop_fragments(tmp_path):
    d = fake_wordnet(tmp_path / "wn")
    allq = wordnet_examples(d, clauses_only=False)
    assert allq == ["He gave his hair a quick brush.", "A quick brush.", "I've had an exasperating day.",
                    "The children walked home.", "Walk slowly!", "The dog ate the bone.",
                    "A placid temperament.", "Not everyone shared his placid temperament."]  # "1990 ..." starts with a digit
    clauses = wordnet_examples(d)
    # "walked" (walk + ed) and "ate" (verb.exc) are past tenses, "his"/"I" clause words; fragments go
    assert clauses == ["He gave his hair a quick brush.", "I've had an exasperating day.", "The children walked home.",
                       "The dog ate the bone.", "Not everyone shared his placid temperament."]
    with pytest.raises(FileNotFoundError, match="wordnet-base"):
        wordnet_examples(tmp_path)


def test_sentence_files_are_cleaned_and_pools_deduplicated(tmp_path):
    f = tmp_path / "mine.txt"
    f.write_text("# a comment\n\nThe birch canoe slid on the smooth planks.\nToo short.\nCosts $5 at 10% off today.\n"
                 "Glue the sheet to the dark blue background.\n")
    cfg = TextConfig(fortune_dir=str(tmp_path / "none"), bible_cmd="no-such-bible", wordnet_dir=str(tmp_path / "none"))
    assert file_sentences(f, cfg) == ["The birch canoe slid on the smooth planks.",
                                      "Glue the sheet to the dark blue background."]
    g = tmp_path / "other.txt"
    g.write_text("glue the sheet to the dark blue background.\nRice is often served in round bowls.\n")
    pools = load_sentences(TextConfig(**{**cfg.__dict__, "files": (("mine", str(f)), ("other", str(g)))}), wordnet=True)
    assert pools["fortunes"] == pools["bible"] == pools["wordnet"] == []
    assert pools["other"] == ["Rice is often served in round bowls."]  # the duplicate (any case) stays in "mine"
    with pytest.raises(ValueError, match="clashes"):
        load_sentences(TextConfig(**{**cfg.__dict__, "files": (("bible", str(f)),)}))
    with pytest.raises(FileNotFoundError, match="sentence file not found"):
        file_sentences(tmp_path / "missing.txt", cfg)


def test_wordnet_is_read_only_when_a_corpus_asks_for_it(tmp_path, monkeypatch):
    """Without a wordnet share the pools (and so the word-salad vocabulary) do not depend on
    whether WordNet is installed; with one it is read."""
    cfg = TextConfig(fortune_dir=str(tmp_path / "none"), bible_cmd="no-such-bible",
                     wordnet_dir=str(fake_wordnet(tmp_path / "wn")))
    assert set(load_sentences(cfg)) == {"fortunes", "bible"}
    assert load_sentences(cfg, wordnet=True)["wordnet"] == [
        "He gave his hair a quick brush.", "I've had an exasperating day.", "The children walked home.",
        "The dog ate the bone.", "Not everyone shared his placid temperament."]
    asked = []
    monkeypatch.setattr(C, "load_sentences", lambda c, wordnet=False: asked.append(wordnet) or pools(200))
    voices = {"train": ["flite:awb"], "val": ["flite:rms"], "test": ["espeak:en-029"]}
    C._plan(C.CorpusConfig(n={"train": 10, "val": 0, "test": 0}), voices)
    C._plan(C.CorpusConfig(n={"train": 10, "val": 0, "test": 0}, text_weights={"wordnet": 1.0}), voices)
    assert asked == [False, True]


def pools(n=400):
    return {"fortunes": [f"Fortune {i} is a short line." for i in range(n)],
            "bible": [f"Verse {i} says a short thing." for i in range(n)],
            "wordnet": [f"Example {i} reads like modern speech." for i in range(n)]}


def test_text_weights_set_the_share_of_each_pool(monkeypatch):
    monkeypatch.setattr(C, "load_sentences", lambda cfg, **kw: pools(2000))
    voices = {"train": ["flite:awb"], "val": ["flite:rms"], "test": ["espeak:en-029"]}
    cfg = C.CorpusConfig(n={"train": 600, "val": 0, "test": 0}, text_weights={"wordnet": 3.0, "fortunes": 1.0})
    plan, _ = C._plan(cfg, voices)
    share = Counter(u.source for u in plan["train"])
    assert set(share) == {"wordnet", "fortunes"} and abs(share["wordnet"] / 600 - 0.75) < 0.06, share
    # a pool that runs out hands over to the others
    small = pools(2000) | {"wordnet": ["Example one reads like modern speech.", "Example two reads like modern speech."]}
    monkeypatch.setattr(C, "load_sentences", lambda cfg, **kw: small)
    plan, babble = C._plan(cfg, voices)
    share = Counter(u.source for lst in (plan["train"], *babble.values()) for u in lst)  # babble pools draw text too
    n_babble = sum(len(lst) for lst in babble.values())
    assert share["wordnet"] == 2 and share["fortunes"] == 600 + n_babble - 2 and not share["bible"]
    # without weights: the old fortunes/KJV split, never the new pool
    plan, _ = C._plan(C.CorpusConfig(n={"train": 300, "val": 0, "test": 0}), voices)
    assert set(Counter(u.source for u in plan["train"])) == {"fortunes", "bible"}
    with pytest.raises(SystemExit, match="unknown: \\['news'\\]"):
        C._plan(C.CorpusConfig(n={"train": 10, "val": 0, "test": 0}, text_weights={"news": 1.0}), voices)


def test_cli_text_options_name_bad_items(tmp_path):
    with pytest.raises(SystemExit, match="--text-file 'wordnet' is not NAME=PATH"):
        C._text_files(["wordnet"])
    with pytest.raises(SystemExit, match="no such file"):
        C._text_files([f"mine={tmp_path / 'nope.txt'}"])
    with pytest.raises(SystemExit, match="--text-weights item 'wordnet' is not NAME=WEIGHT"):
        C._weights("wordnet", "--text-weights")
    assert C._weights("wordnet=0.5, fortunes=0.3", "--text-weights") == {"wordnet": 0.5, "fortunes": 0.3}


def test_book_sentences_join_paragraphs_and_say_the_titles():
    from mmlora.data.speech_text import book_sentences

    lines = ["CHAPTER I", "", "Mr. Knightley came in. He", "sat  down.", "", "", "Mrs. Elton spoke! Mr.Smith stayed."]
    assert book_sentences(lines) == ["CHAPTER I", "Mister Knightley came in.", "He sat down.", "Missus Elton spoke!",
                                     "Mr.Smith stayed."]


def _write_lazyload(folder, objects: dict) -> None:
    """``folder/Rdata.rdx`` + ``.rdb`` as R lays out a lazy-load database: a gzip index of offsets, one
    length-prefixed compressed object per entry. ``objects``: {name: (value, pack)}, pack(bytes) -> stored bytes."""
    import gzip
    import struct

    import numpy as np
    rdata = pytest.importorskip("rdata")

    def rds(obj) -> bytes:
        rdata.write_rds(folder / "o.rds", obj, compression=None)
        return (folder / "o.rds").read_bytes()

    blob, where = b"", {}
    for name, (value, pack) in objects.items():
        raw = rds(np.array(value, dtype=object) if isinstance(value, list) else value)
        chunk = struct.pack(">I", len(raw)) + pack(raw)
        where[name] = np.array([len(blob), len(chunk)], dtype=np.int32)
        blob += chunk
    (folder / "Rdata.rdb").write_bytes(blob)
    (folder / "Rdata.rdx").write_bytes(gzip.compress(rds({"variables": where, "references": {}, "compressed": True})))


def test_read_r_lazyload_returns_the_character_vectors_of_each_compression(tmp_path):
    """An R lazy-load database written here as R lays it out (zlib without a type byte, and bzip2 /
    uncompressed with one); a numeric object is left out."""
    import bz2
    import zlib

    import numpy as np
    from mmlora.data.speech_text import read_r_lazyload

    _write_lazyload(tmp_path, {"emma": (["EMMA", "", "By Jane Austen"], lambda b: zlib.compress(b)),
                               "persuasion": (["Chapter 1", "Sir Walter Elliot."], lambda b: b"2" + bz2.compress(b)),
                               "plain": (["one line"], lambda b: b"0" + b),
                               "numbers": (np.array([1.5, 2.5]), lambda b: zlib.compress(b))})
    got = read_r_lazyload(tmp_path / "Rdata")
    assert got == {"emma": ["EMMA", "", "By Jane Austen"], "persuasion": ["Chapter 1", "Sir Walter Elliot."],
                   "plain": ["one line"]}
    with pytest.raises(FileNotFoundError, match="Missing.rdx"):
        read_r_lazyload(tmp_path / "Missing")


def _text_pool():
    return load_script("make_text_pool")


def test_text_pool_gutenberg_books_by_title_with_the_default_skip(tmp_path, capsys):
    """tidytext's books.rda (a data frame of line, title) written here with rdata: each title's lines become
    sentences; Pride and Prejudice (in the austen pool already) is left out unless --skip says otherwise."""
    import pandas as pd
    rdata = pytest.importorskip("rdata")

    frame = pd.DataFrame({"gutenberg_id": [36, 36, 36, 36, 1342],
                          "text": ["CHAPTER I", "", "No one would have believed in the last", "years of the century.",
                                   "It is a truth universally acknowledged."],
                          "title": ["The War of the Worlds"] * 4 + ["Pride and Prejudice"]})
    rdata.write_rda(tmp_path / "books.rda", {"books": frame})
    out = tmp_path / "g.txt"
    pool = _text_pool()
    assert pool.main(["gutenberg", "--rdata", str(tmp_path / "books.rda"), "--out", str(out)]) == 0
    assert out.read_text().splitlines() == ["CHAPTER I", "No one would have believed in the last years of the century."]
    assert "thewaroftheworlds: 2 sentences, 1 pass" in capsys.readouterr().out
    assert pool.main(["gutenberg", "--rdata", str(tmp_path / "books.rda"), "--out", str(out), "--skip", ""]) == 0
    assert out.read_text().splitlines()[0] == "It is a truth universally acknowledged."  # books in name order
    with pytest.raises(SystemExit, match="no such book"):
        pool.main(["gutenberg", "--rdata", str(tmp_path / "books.rda"), "--out", str(out), "--skip", "emma"])


def test_text_pool_harvard_sentences_one_per_element(tmp_path):
    import zlib

    _write_lazyload(tmp_path, {"sentences": (["The birch canoe slid on the smooth planks.", "Glue the sheet to the"
                                              " dark blue background."], lambda b: zlib.compress(b)),
                               "words": (["a", "able"], lambda b: zlib.compress(b))})
    out = tmp_path / "h.txt"
    assert _text_pool().main(["harvard", "--rdata", str(tmp_path / "Rdata"), "--out", str(out)]) == 0
    assert out.read_text().splitlines() == ["The birch canoe slid on the smooth planks.",
                                            "Glue the sheet to the dark blue background."]  # never joined


def _deb(members: dict[str, bytes]) -> bytes:
    """A .deb whose data.tar.xz holds ``members`` (named ``./usr/...``), beside a control.tar.xz."""
    return deb_bytes({"control.tar.xz": tar_bytes({"./control": b"Package: fake\n"}, "w:xz"),
                      "data.tar.xz": tar_bytes(members, "w:xz")})


HARVARD = ["The birch canoe slid on the smooth planks.", "Glue the sheet to the dark blue background."]


def _fake_stringr(tmp_path) -> bytes:
    """r-cran-stringr's .deb with the Harvard sentences in its lazy-load database, beside files the pool never
    reads (another database's ``Rdata2``, the package's copyright)."""
    import zlib

    (tmp_path / "lazy").mkdir()
    _write_lazyload(tmp_path / "lazy", {"sentences": (HARVARD, lambda b: zlib.compress(b))})
    data = "./usr/lib/R/site-library/stringr/data/"
    return _deb({f"{data}Rdata.rdb": (tmp_path / "lazy" / "Rdata.rdb").read_bytes(),
                 f"{data}Rdata.rdx": (tmp_path / "lazy" / "Rdata.rdx").read_bytes(), f"{data}Rdata.rds": b"rds",
                 f"{data}Rdata2.rdb": b"not read", "./usr/share/doc/r-cran-stringr/copyright": b"GPL-2"})


def _fake_apt(monkeypatch, payload: bytes | None, calls: list, download_rc: int = 0) -> None:
    """Every subprocess but apt-get refused; ``apt-get download`` saves ``payload`` under the name it is asked for
    (PACKAGE_VERSION_all.deb), or fails with ``download_rc``. ``calls``: (command, the sources.list it names)."""
    import subprocess
    from pathlib import Path

    def run(cmd, **kw):
        assert cmd[0] == "apt-get", f"no process but apt-get may be started: {cmd}"
        sources = next(o.removeprefix("Dir::Etc::SourceList=") for o in cmd if o.startswith("Dir::Etc::SourceList="))
        calls.append((cmd, Path(sources).read_text()))
        if "download" in cmd and download_rc:
            return subprocess.CompletedProcess(cmd, download_rc, "", "E: Can't find a source to download version")
        if "download" in cmd:
            package, version = cmd[-1].split("=")
            (Path(kw["cwd"]) / f"{package}_{version}_all.deb").write_bytes(payload)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", run)
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: pytest.fail(f"no process may be started: {a}"))


def test_text_pool_pins_each_package_and_fetches_it_with_fetch_human_speech(tmp_path, monkeypatch, capsys):
    """Without --rdata the package is fetched at its pinned version by fetch_human_speech.fetch_deb (its private apt
    configuration: bookworm, the system's sources unread), its SHA-256 checked, and read by read_deb (no dpkg): only
    the data's own files are written out, and the pool is made from them."""
    import hashlib
    import re
    from dataclasses import replace

    pool = _text_pool()
    assert pool.fetch_deb.__module__ == pool.read_deb.__module__ == "fetch_human_speech"
    pins = {name: (s.package, s.version) for name, s in pool.SOURCES.items()}
    assert pins == {"austen": ("r-cran-janeaustenr", "1.0.0-1"), "gutenberg": ("r-cran-tidytext", "0.4.1-1"),
                    "harvard": ("r-cran-stringr", "1.5.0-1"), "gcide": ("dict-gcide", "0.48.5+nmu2")}
    assert all(re.fullmatch(r"[0-9a-f]{64}", s.sha256) for s in pool.SOURCES.values())
    payload = _fake_stringr(tmp_path)
    monkeypatch.setitem(pool.SOURCES, "harvard",
                        replace(pool.SOURCES["harvard"], sha256=hashlib.sha256(payload).hexdigest()))
    calls = []
    _fake_apt(monkeypatch, payload, calls)
    out = tmp_path / "h.txt"
    assert pool.main(["harvard", "--out", str(out)]) == 0
    assert out.read_text().splitlines() == HARVARD
    assert [c[0][-2:] for c in calls] == [["update", "-qq"], ["download", "r-cran-stringr=1.5.0-1"]]
    assert all("Dir::Etc::SourceParts=/dev/null" in cmd for cmd, _ in calls)  # the system's sources unread
    assert {sources for _, sources in calls} == {"deb http://deb.debian.org/debian bookworm main\n"}
    assert "downloading r-cran-stringr=1.5.0-1" in capsys.readouterr().err
    root = pool.fetch(pool.SOURCES["harvard"], tmp_path / "t")  # the files fetch writes out: the database's only
    assert sorted(str(f.relative_to(root)) for f in root.rglob("*") if f.is_file()) == [
        f"usr/lib/R/site-library/stringr/data/Rdata.{ext}" for ext in ("rdb", "rds", "rdx")]
    assert (tmp_path / "t" / "debs" / "r-cran-stringr_1.5.0-1_all.deb").read_bytes() == payload
    calls.clear()  # --rdata: an unpacked copy, nothing fetched
    assert pool.main(["harvard", "--rdata", str(root / pool.SOURCES["harvard"].path), "--out", str(out)]) == 0
    assert out.read_text().splitlines() == HARVARD and calls == []


def test_text_pool_a_failed_download_or_a_wrong_sha_256_names_the_package_and_version(tmp_path, monkeypatch):
    from dataclasses import replace

    pool = _text_pool()
    out, calls = tmp_path / "h.txt", []
    payload = _fake_stringr(tmp_path)
    _fake_apt(monkeypatch, payload, calls)  # not the pinned .deb
    with pytest.raises(SystemExit, match=r"^make_text_pool: could not fetch r-cran-stringr=1\.5\.0-1: "
                       r".*/r-cran-stringr_1\.5\.0-1_all\.deb has SHA-256 [0-9a-f]{64}, expected "
                       + pool.SOURCES["harvard"].sha256 + r" \(or pass --rdata PATH"):
        pool.main(["harvard", "--out", str(out)])
    _fake_apt(monkeypatch, payload, calls, download_rc=100)
    with pytest.raises(SystemExit, match=r"^make_text_pool: could not fetch r-cran-stringr=1\.5\.0-1: apt-get download "
                       r"r-cran-stringr=1\.5\.0-1 failed \(exit 100\): E: Can't find a source"):
        pool.main(["harvard", "--out", str(out)])
    import hashlib
    import subprocess

    empty = _deb({"./usr/share/doc/r-cran-stringr/copyright": b"GPL-2"})  # the right package, no data in it
    monkeypatch.setitem(pool.SOURCES, "harvard",
                        replace(pool.SOURCES["harvard"], sha256=hashlib.sha256(empty).hexdigest()))
    _fake_apt(monkeypatch, empty, calls)
    with pytest.raises(SystemExit, match=r"^make_text_pool: r-cran-stringr=1\.5\.0-1: no usr/lib/R/site-library/"
                       r"stringr/data/Rdata in r-cran-stringr_1\.5\.0-1_all\.deb"):
        pool.main(["harvard", "--out", str(out)])
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: (_ for _ in ()).throw(FileNotFoundError(cmd[0])))
    with pytest.raises(SystemExit, match=r"^make_text_pool: could not fetch r-cran-stringr=1\.5\.0-1: apt-get"):
        pool.main(["harvard", "--out", str(out)])  # no apt-get on this machine
    assert not out.exists()


def test_text_pool_grid_is_the_whole_grammar_and_passes_the_corpus_cleaning(tmp_path, capsys):
    out = tmp_path / "grid.txt"
    assert _text_pool().main(["grid", "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == len(set(lines)) == 4 * 4 * 4 * 25 * 10 * 4
    assert lines[0] == "Bin blue at A zero again." and lines[-1] == "Set white with Z nine soon."
    assert {w.strip(".").lower() for t in lines for w in t.split()} == {
        *"bin lay place set blue green red white at by in with again now please soon".split(),
        *"zero one two three four five six seven eight nine".split(), *"abcdefghijklmnopqrstuvxyz"}  # 51 words, no w
    cfg = TextConfig(max_words=16)
    assert all(clean_sentence(t, cfg) == t for t in lines[::997])  # the corpus reads them as written
    assert "wrote 64000 GRID sentences" in capsys.readouterr().out


def test_text_pool_gridwide_fills_each_slot_by_wordnet_frequency(tmp_path, capsys):
    tp = _text_pool()
    # cntlist.rev lines as WordNet writes them; counts summed over a lemma's senses per part of speech
    rows = ["give%2:40:00:: 1 50", "give%2:40:01:: 2 60", "take%2:40:05:: 1 100", "run%2:38:00:: 1 30",
            "run%1:04:00:: 1 500", "take%1:04:00:: 1 600", "house%1:06:00:: 1 40", "cat%1:05:00:: 1 45", "big%3:00:01:: 1 9",
            "red%5:00:00:chromatic:00 1 8", "old%3:00:02:: 1 7", "very%4:02:00:: 1 90", "soon%4:02:01:: 1 20",
            "now%4:02:05:: 1 99", "New_York%1:15:00:: 1 999", "an%1:10:00:: 1 999", "four%1:23:00:: 1 999",
            "up%4:02:00:: 1 5"]
    (tmp_path / "cntlist.rev").write_text("\n".join(rows) + "\n")
    assert tp.wordnet_frequent(tmp_path)["verb"] == ["give", "take", "run"]  # 110 > 100 > 30
    slots = tp.grid_wide_slots(tmp_path, 2)
    # "take", the most frequent noun, is a verb already (verbs choose first); "run", not among the 2 verbs, is a
    # noun; "four" (a number) and "New_York" / "an" (not single lowercase words of 3+ letters) are in no open slot
    assert slots == [["give", "take"], ["big", "red"], tp.PREPOSITIONS, ["run", "cat"], tp.NUMBERS, ["now", "very"]]
    lines = tp.grid_wide_sentences(slots, 300, seed=3)
    assert len(set(lines)) == 300 and lines == tp.grid_wide_sentences(slots, 300, seed=3)
    assert lines != tp.grid_wide_sentences(slots, 300, seed=4)
    for t in lines:
        words = t.rstrip(".").lower().split()
        assert len(words) == 6 and all(w in s for w, s in zip(words, slots))
        assert clean_sentence(t, TextConfig(max_words=16)) == t
    with pytest.raises(ValueError, match="at most half of the grammar's 8960 sentences"):
        tp.grid_wide_sentences(slots, 4481, seed=0)  # 2 x 2 x 20 x 2 x 28 x 2: drawing more would crawl
    with pytest.raises(ValueError, match="only 2 nouns"):
        tp.grid_wide_slots(tmp_path, 3)
    out = tmp_path / "gw.txt"
    assert tp.main(["gridwide", "--wordnet", str(tmp_path), "--slot-words", "2", "--n", "50", "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 50
    assert "56-word grammar (2 / 2 / 20 / 2 / 28 / 2 words per slot)" in capsys.readouterr().out
    # freewords: the same lexicon without the slots, free order, seeded, each sentence once
    lex = [w for slot in slots for w in slot]
    free = tp.free_word_sentences(lex, 400, seed=1, length=(4, 8))
    assert len(set(free)) == 400 and free == tp.free_word_sentences(lex, 400, seed=1, length=(4, 8))
    sizes = [len(t.rstrip(".").split()) for t in free]
    assert min(sizes) == 4 and max(sizes) == 8 and all(clean_sentence(t, TextConfig(max_words=16)) == t for t in free)
    assert {w for t in free for w in t.rstrip(".").lower().split()} == set(lex)  # every word, in any position
    assert any(t.rstrip(".").lower().split()[0] in tp.NUMBERS for t in free)  # a number first: no slot order
    with pytest.raises(ValueError, match="at most half"):
        tp.free_word_sentences(["a", "b"], 3, seed=0, length=(2, 2))
    out = tmp_path / "fw.txt"
    assert tp.main(["freewords", "--wordnet", str(tmp_path), "--slot-words", "2", "--n", "30", "--out", str(out)]) == 0
    assert [len(t.split()) for t in out.read_text().splitlines()] == [6] * 30
    assert "30 sentences of 6-6 free words from a 56-word lexicon" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--length 'x'"):
        tp.main(["freewords", "--wordnet", str(tmp_path), "--length", "x", "--out", str(out)])


# Four entries of Debian dict-gcide 0.48.5 (usr/share/dictd/gcide.dict.dz, unpacked), verbatim, after the start of
# its dictd header: definitions, etymologies, notes and synonyms around quotations with their authors (at the end
# of the line or right-aligned below it), Bible verses, verse, a cut quotation and a phrase.
GCIDE_EXCERPT = r"""00-database-short
   The Collaborative International Dictionary of English v.0.48

Accept \Ac*cept"\ ([a^]k*s[e^]pt"), v. t. [imp. & p. p.
   {Accepted}; p. pr. & vb. n. {Accepting}.] [F. accepter, L.
   acceptare, freq. of accipere; ad + capere to take; akin to E.
   heave.]
   [1913 Webster]
   1. To receive with a consenting mind (something offered); as,
      to accept a gift; -- often followed by of.
      [1913 Webster]

            If you accept them, then their worth is great.
                                                  --Shak.
      [1913 Webster]

            To accept of ransom for my son.       --Milton.
      [1913 Webster]

            She accepted of a treat.              --Addison.
      [1913 Webster]

   2. To receive with favor; to approve.
      [1913 Webster]

            The Lord accept thy burnt sacrifice. --Ps. xx. 3.
      [1913 Webster]

            Peradventure he will accept of me. --Gen. xxxii. 20.
      [1913 Webster]

   3. To receive or admit and agree to; to assent to; as, I
      accept your proposal, amendment, or excuse.
      [1913 Webster]

   4. To take by the mind; to understand; as, How are these
      words to be accepted?
      [1913 Webster]

   5. (Com.) To receive as obligatory and promise to pay; as, to
      accept a bill of exchange. --Bouvier.
      [1913 Webster]

   6. In a deliberate body, to receive in acquittance of a duty
      imposed; as, to accept the report of a committee. [This
      makes it the property of the body, and the question is
      then on its adoption.]
      [1913 Webster]

   {To accept a bill} (Law), to agree (on the part of the
      drawee) to pay it when due.

   {To accept service} (Law), to agree that a writ or process
      shall be considered as regularly served, when it has not
      been.

   {To accept the person} (Eccl.), to show favoritism. "God
      accepteth no man's person." --Gal. ii. 6.
      [1913 Webster]

   Syn: To receive; take; admit. See {Receive}.
        [1913 Webster]

Affect \Af*fect"\, v. t. [imp. & p. p. {Affected}; p. pr. & vb.
   n. {Affecting}.] [L. affectus, p. p. of afficere to affect by
   active agency; ad + facere to make: cf. F. affectere, L.
   affectare, freq. of afficere. See {Fact}.]
   1. To act upon; to produce an effect or change upon.
      [1913 Webster]

            As might affect the earth with cold heat. --Milton.
      [1913 Webster]

            The climate affected their health and spirits.
                                                  --Macaulay.
      [1913 Webster]

   2. To influence or move, as the feelings or passions; to
      touch.
      [1913 Webster]

            A consideration of the rationale of our passions
            seems to me very necessary for all who would affect
            them upon solid and pure principles.
      [1913 Webster]

   3. To love; to regard with affection. [Obs.]
      [1913 Webster]

            As for Queen Katharine, he rather respected than
            affected, rather honored than loved, her. --Fuller.
      [1913 Webster]

   4. To show a fondness for; to like to use or practice; to
      choose; hence, to frequent habitually.
      [1913 Webster]

            For he does neither affect company, nor is he fit
            for it, indeed.                       --Shak.
      [1913 Webster]

            Do not affect the society of your inferiors in rank,
            nor court that of the great. --Hazlitt.
      [1913 Webster]

   5. To dispose or incline.
      [1913 Webster]

            Men whom they thought best affected to religion and
            their country's liberty.              --Milton.
      [1913 Webster]

   6. To aim at; to aspire; to covet. [Obs.]
      [1913 Webster]

            This proud man affects imperial ?way. --Dryden.
      [1913 Webster]

   7. To tend to by affinity or disposition.
      [1913 Webster]

            The drops of every fluid affect a round figure.
                                                  --Newton.
      [1913 Webster]

   8. To make a show of; to put on a pretense of; to feign; to
      assume; as, to affect ignorance.
      [1913 Webster]

            Careless she is with artful care,
            Affecting to seem unaffected.         --Congreve.
      [1913 Webster]

            Thou dost affect my manners.          --Shak.
      [1913 Webster]

   9. To assign; to appoint. [R.]
      [1913 Webster]

            One of the domestics was affected to his special
            service.                              --Thackeray.
      [1913 Webster]

   Syn: To influence; operate; act on; concern; move; melt;
        soften; subdue; overcome; pretend; assume.
        [1913 Webster]

Ail \Ail\ ([=a]l), v. t. [imp. & p. p. {Ailed} ([=a]ld); p. pr.
   & vb. n. {Ailing}.] [OE. eilen, ailen, AS. eglan to trouble,
   pain; akin to Goth. us-agljan to distress, agls troublesome,
   irksome, aglo, aglitha, pain, and prob. to E. awe. [root]3.]
   To affect with pain or uneasiness, either physical or mental;
   to trouble; to be the matter with; -- used to express some
   uneasiness or affection, whose cause is unknown; as, what
   ails the man? I know not what ails him.
   [1913 Webster]

         What aileth thee, Hagar?                 --Gen. xxi.
                                                  17.
   [1913 Webster]

   Note: It is never used to express a specific disease. We do
         not say, a fever ails him; but, something ails him.
         [1913 Webster]

Ail \Ail\, v. i.
   To be affected with pain or uneasiness of any sort; to be ill
   or indisposed or in trouble.
   [1913 Webster]

         When he ails ever so little . . . he is so peevish.
                                                  --Richardson.
   [1913 Webster]

Flightiness \Flight"i*ness\, n.
   The state or quality of being flighty.
   [1913 Webster]

         The flightness of her temper.            --Hawthorne.

   Syn: Levity; giddiness; volatility; lightness; wildness;
        eccentricity. See {Levity}.
        [1913 Webster]
"""


def test_text_pool_gcide_keeps_whole_quotations_without_author_definition_or_etymology(tmp_path, capsys):
    """The dictd text, compressed as the package ships it (dictzip is gzip) or unpacked: only the quotations'
    whole sentences come out, their authors dropped; the definitions ("To receive with favor; to approve."), the
    etymologies ("[F. accepter, L. ..."), the note and the synonyms never; Bible verses, verse, the archaic "Thou
    dost affect my manners.", the cut "When he ails ever so little . . ." and phrases ("The flightness of her
    temper.", "To accept of ransom for my son.") are left out and counted."""
    import gzip

    kept = ["If you accept them, then their worth is great.",  # author on a line of its own
            "She accepted of a treat.",
            "The climate affected their health and spirits.",
            "As for Queen Katharine, he rather respected than affected, rather honored than loved, her.",
            "For he does neither affect company, nor is he fit for it, indeed.",
            "Do not affect the society of your inferiors in rank, nor court that of the great.",
            "Men whom they thought best affected to religion and their country's liberty.",
            "One of the domestics was affected to his special service."]
    pool = _text_pool()
    (tmp_path / "gcide.dict.dz").write_bytes(gzip.compress(GCIDE_EXCERPT.encode()))
    (tmp_path / "gcide.dict").write_text(GCIDE_EXCERPT)
    for name in ("gcide.dict.dz", "gcide.dict"):
        out = tmp_path / f"{name}.txt"
        assert pool.main(["gcide", "--rdata", str(tmp_path / name), "--out", str(out)]) == 0
        assert out.read_text().splitlines() == kept
        printed = capsys.readouterr().out
        assert ("gcide: 20 quotations; removed bible 3, markup 0, gap 2, verse 1; 14 sentences in the rest; "
                "removed not whole 0, abbreviation 0, cleaning 1, archaic 1, no verb 3, fragment 1, duplicate 0; "
                "kept 8") in printed
        assert f"wrote 8 sentences (8 usable) to {out}" in printed
    sents, counts = pool.gcide_quotations(GCIDE_EXCERPT)
    assert sents == kept and counts["verse"] == 1  # "Careless she is with artful care, / Affecting to seem ..."
    assert pool.gcide_verbs(GCIDE_EXCERPT) == ({"accept", "affect", "ail"}, {"accepted", "affected", "ailed"})
