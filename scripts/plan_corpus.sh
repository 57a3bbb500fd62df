#!/usr/bin/env bash
# Stands in for `mmlora` in the corpus scripts when only their sentences are wanted (PLAN_ONLY=1
# scripts/make_encoder_lora_corpora.sh): `plan_corpus.sh make-speech-corpus --out DIR ARGS...` runs
# `mmlora make-speech-corpus --plan-only` with the same arguments and names each split's plan DIR/<split>.jsonl, as a
# manifest would be named, so that the next corpus's --exclude-text and the scripts' "is it made?" checks read it.
# Such a folder holds sentences only (DIR/PLAN_ONLY marks it): it rebuilds another corpus's exclusion list in seconds
# (train_grid.sh POOL=open leaves out the release corpora's sentences) and is never training data.
set -euo pipefail
[ "${1:-}" = make-speech-corpus ] || { echo "plan_corpus.sh: only make-speech-corpus is planned, got: ${1:-nothing}" >&2; exit 2; }
shift
out=; prev=
for a in "$@"; do [ "$prev" = --out ] && out=$a; prev=$a; done
[ -n "$out" ] || { echo "plan_corpus.sh: make-speech-corpus needs --out" >&2; exit 2; }
[ ! -d "$out/audio" ] || { echo "plan_corpus.sh: $out holds a real corpus (audio/): plan into another folder" >&2; exit 2; }
"${PYTHON:-.venv/bin/python}" -m mmlora.cli make-speech-corpus --plan-only "$@"
for f in "$out"/plan_*.jsonl; do mv "$f" "$out/${f##*/plan_}"; done
touch "$out/PLAN_ONLY"
