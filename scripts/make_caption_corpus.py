#!/usr/bin/env python
"""Thin wrapper: same as ``mmlora make-caption-corpus`` (logic in mmlora/data/caption_world.py).

Example (CPU, seconds)::

    python scripts/make_caption_corpus.py --out runs/captions --clips 8 --images 8 --size 96 --seed 0
"""
import sys

from mmlora.data.caption_world import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
