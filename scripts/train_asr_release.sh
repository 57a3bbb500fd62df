#!/usr/bin/env bash
# Reproduce the released ASR checkpoint in one command (GPU): corpus -> assets -> train -> evaluate
# -> copy the model folder to checkpoints/. Every step is skipped when its output already exists.
#
#   bash scripts/train_asr_release.sh [DATA_DIR] [OUT_DIR] [key=value overrides for the recipe ...]
#
# The corpus needs the TTS voices (bash scripts/setup_tts.sh); on a machine without them, make the
# corpus elsewhere and pass its folder as DATA_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-data/speech}; OUT=${2:-outputs/asr_smollm2_whisper_tiny}; shift $(( $# < 2 ? $# : 2 ))
PY=${PYTHON:-.venv/bin/python}
MM="$PY -m mmlora.cli"

[ -f "$DATA/train.jsonl" ] || nice -n 10 $MM make-speech-corpus --out "$DATA" --seed 1 --n-train 3400 \
    --n-val 150 --n-test 300 --max-words 16 --audio-format opus --noisy-splits test
$MM assets get smollm2-135m whisper-tiny.en
$MM train recipes/asr_smollm2_whisper_tiny.yaml data.train_manifest="$DATA/train.jsonl" \
    data.val_manifest="$DATA/val.jsonl" train.output_dir="$OUT" "$@"
for m in test test_babble_snr0 test_babble_snr-5; do
  if [ -f "$DATA/$m.jsonl" ]; then
    $MM evaluate --model "$OUT/final/model" --manifest "$DATA/$m.jsonl" --batch-size 64 --out "$OUT/eval_$m.json"
  fi
done
mkdir -p checkpoints && rm -rf checkpoints/asr-smollm2-whisper-tiny && cp -r "$OUT/final/model" checkpoints/asr-smollm2-whisper-tiny
echo "released: checkpoints/asr-smollm2-whisper-tiny"
