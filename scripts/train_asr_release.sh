#!/usr/bin/env bash
# Reproduce the released ASR checkpoint in one command (GPU): corpora -> assets -> feature cache -> train -> evaluate
# -> copy the best-validation model folder to checkpoints/. Every step is skipped when its output already exists.
#
#   bash scripts/train_asr_release.sh [DATA_DIR] [OUT_DIR] [key=value overrides for the recipe ...]
#
# Corpora (18,400 training clips): seed 1 (DATA/st: 3,400 train clips with lip videos, plus the validation and test
# splits on held-out voices) and the wide corpora of scripts/make_wide_speech_corpora.sh (DATA/w3: 5,000 audio clips,
# DATA/wv4..wv7: 4 x 2,500 with lip video and 30 % word sequences; 336 voices; none of st's val/test sentences or
# voices), merged into DATA/train_all.jsonl. The generator needs the TTS voices (bash scripts/setup_tts.sh); on a
# machine without them, make the corpora elsewhere and pass their parent.
# As released (GPU run 4, batch 64), the run stopped at step 2150 of 3000 (device budget) and the release is its best
# validation step, 2000; this script runs to step 3000 and releases the best validation step, which may come later.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-data/speech_release}; OUT=${2:-outputs/asr_smollm2_whisper_tiny}; shift $(( $# < 2 ? $# : 2 ))
PY=${PYTHON:-.venv/bin/python}
MM="$PY -m mmlora.cli"
WORKERS=${WORKERS:-$(nproc)}

[ -f "$DATA/st/train.jsonl" ] || nice -n 10 $MM make-speech-corpus --out "$DATA/st" --seed 1 --n-train 3400 \
    --n-val 150 --n-test 300 --max-words 16 --audio-format opus --noisy-splits test --workers "$WORKERS"
bash scripts/make_wide_speech_corpora.sh "$DATA/st" "$DATA" "$WORKERS"
$PY - "$DATA" <<'PY'
import json, sys
root = sys.argv[1]
with open(f"{root}/train_all.jsonl", "w") as out:
    for sub in ("st", "w3", "wv4", "wv5", "wv6", "wv7"):
        for line in open(f"{root}/{sub}/train.jsonl"):
            r = json.loads(line)
            r["id"], r["audio"] = f"{sub}-{r['id']}", f"{sub}/{r['audio']}"
            r["video"] = f"{sub}/{r['video']}" if r.get("video") else None
            out.write(json.dumps(r) + "\n")
PY
$MM assets get smollm2-135m whisper-tiny.en
ARGS=(recipes/asr_smollm2_whisper_tiny.yaml data.train_manifest="$DATA/train_all.jsonl" data.val_manifest="$DATA/st/val.jsonl"
      data.feature_cache="$OUT/feature_cache" train.output_dir="$OUT" "$@")
$MM cache-features "${ARGS[@]}" --workers "$WORKERS"
$MM train "${ARGS[@]}"
for m in test test_babble_snr0 test_babble_snr-5; do
  $MM evaluate --model "$OUT/best/model" --manifest "$DATA/st/$m.jsonl" --batch-size 64 --out "$OUT/eval_$m.json"
done
mkdir -p checkpoints && rm -rf checkpoints/asr-smollm2-whisper-tiny && cp -r "$OUT/best/model" checkpoints/asr-smollm2-whisper-tiny
echo "released: checkpoints/asr-smollm2-whisper-tiny"
