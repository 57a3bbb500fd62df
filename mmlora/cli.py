"""The ``mmlora`` command. Each sub-command lives in its own module as ``main(argv) -> int``
(argparse inside), registered here by import path so ``mmlora --help`` stays fast."""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> ("module:function", one-line help). Modules are imported only when called.
COMMANDS: dict[str, tuple[str, str]] = {
    "assets": ("mmlora.assets:main", "install/convert the offline pretrained weights and show their status"),
    "train": ("mmlora.tasks.cli:train", "train a task from a YAML recipe: mmlora train RECIPE.yaml key=value ..."),
    "evaluate": ("mmlora.tasks.cli:evaluate", "evaluate a trained model on a manifest (WER, caption metrics)"),
    "cache-features": ("mmlora.tasks.cli:cache_features", "fill a recipe's data.feature_cache before training (parallel decoding)"),
    "transcribe": ("mmlora.tasks.cli:transcribe", "transcribe audio (and optional lip video) files"),
    "average-models": ("mmlora.train.checkpoint:average_main", "average the weights of model folders (weight-space ensemble)"),
    "compare-wer": ("mmlora.metrics.wer:compare_main", "is one evaluation report's WER different from another's (paired bootstrap)"),
    "make-speech-corpus": ("mmlora.data.speech_corpus:main", "generate a TTS speech (+ lip video) corpus"),
    "make-caption-corpus": ("mmlora.data.caption_world:main", "generate procedural audio-visual caption clips"),
    "score-captions": ("mmlora.metrics.caption:main", "score captions: COCO metrics + event-level rates"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="mmlora", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    if argv[0] == "--version":
        from . import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        parser.error(f"unknown command {name!r}; choose from {', '.join(COMMANDS)}")
    target, _ = COMMANDS[name]
    mod_name, fn_name = target.split(":")
    fn = getattr(importlib.import_module(mod_name), fn_name)
    return int(fn(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
