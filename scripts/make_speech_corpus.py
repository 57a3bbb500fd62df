#!/usr/bin/env python
"""Thin wrapper: same as ``mmlora make-speech-corpus`` (see mmlora/data/speech_corpus.py, docs/DATA.md).

    python scripts/make_speech_corpus.py --out /tmp/sc --n-train 8 --n-val 2 --n-test 2
"""
import sys

from mmlora.data.speech_corpus import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
