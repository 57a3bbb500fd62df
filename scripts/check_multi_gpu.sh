#!/usr/bin/env bash
# The multi-GPU check (docs/ASR.md#multi-gpu): for DDP and FSDP, train the tiny recipe 12 steps on
# NPROC GPUs, launch again to resume from checkpoint-12 to step 24, then evaluate final/model.
#   bash scripts/check_multi_gpu.sh [OUT_DIR]          # NPROC=2 CONFIGS="ddp fsdp" PYTHON=python3
# Prints one line per step; the logs are OUT_DIR/<config>.part{1,2}.log. Needs NPROC GPUs; DDP also runs
# on CPU (ACCELERATE_USE_CPU=true CONFIGS=ddp PYTHON=.venv/bin/python, ~1 min); FSDP cannot (docs/TRAINING.md).
set -u
OUT=${1:-outputs/multi_gpu_check}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
status=0
for k in ${CONFIGS:-ddp fsdp}; do
  O=$OUT/$k
  rm -rf "$O"
  run() {
    $PY -m accelerate.commands.launch --config_file recipes/accelerate/$k.yaml --num_processes "${NPROC:-2}" \
      -m mmlora.cli train recipes/asr_tiny.yaml data.train_manifest=tests/data/speech/train.jsonl \
      train.output_dir="$O" train.log_every=4 train.save_every=12 train.keep_last=3 "$@"
  }
  if ! run train.max_steps=12 > "$O.part1.log" 2>&1; then echo "$k: 12 steps FAILED ($O.part1.log)"; status=1; continue; fi
  echo "$k: 12 steps done"
  if ! run train.max_steps=24 > "$O.part2.log" 2>&1; then echo "$k: resume to 24 FAILED ($O.part2.log)"; status=1; continue; fi
  echo "$k: $(grep -o 'resumed from .*' "$O.part2.log" | head -1 | cut -c1-120), reached step 24"
  if ! $PY -m mmlora.cli evaluate --model "$O/final/model" --manifest tests/data/speech/test.jsonl --batch-size 8 \
      > "$O.eval.log" 2>&1; then echo "$k: evaluating final/model FAILED ($O.eval.log)"; status=1; continue; fi
  echo "$k: final/model evaluates: $(tail -1 "$O.eval.log" | cut -c1-100)"
done
exit $status
