#!/usr/bin/env bash
# Does LoRA inside the Whisper encoder help ASR? (docs/ASR.md "Next", staged as GPU run 20.) Two continuations of the
# released checkpoint on the same clips, with stage 7's recipe (LoRA rank 16 on all seven linear layers, batch 256,
# speed and vocal-tract perturbation 0.85-1.15, room tone on half the clips, validation on nv9 every 250 steps):
#   E0  the release continued as it was trained (the control)
#   E1  the same plus LoRA on the encoder's attention and MLP (model.media.audio.encoder_lora, rank 8, alpha 16;
#       its own learning rate ENC_LR, default 3e-4 as the projector's), fresh: at step 0 both models are the release
#   E2  E1 with the LLM's LoRA held at the release's (train.group_lr.lora=0: AdamW leaves it unchanged), so the
#       language side cannot drift: only the audio projector and the encoder LoRA learn (GPU run 21)
#   E3  E2 with the projector held too: only the encoder LoRA learns, feeding the release's projector and LLM
#   EA  E2 with the key=value overrides in ARM last (split at spaces, so no value may hold one), e.g. an audio
#       projector at rate 2, fresh: ARM='model.media.audio.projector.rates=[2] train.init_map={"projectors.audio.":null}'
# -> each model's best-validation weights, and the release, on st/test (clean and babble 0 dB), natt9, nv9, the
# validation set when it is another (VAL) and the human clips where present -> `mmlora compare-wer` of E1 against
# E0, of E2 and E3 against E1, and of each against the release (OUT/eval/compare.txt).
# Every step is skipped when its output exists.
#
#   bash scripts/asr_encoder_lora.sh [DATA_DIR] [OUT_DIR] [key=value overrides for both trainings ...]
#
# DATA_DIR (default data/speech_release) must hold the corpora of scripts/train_asr_release.sh named below (its
# commands make them: st with AUDIO_ONLY=1 is enough, the wide w3, the stage-4 sets natt9 / nv9 and the natural n9 /
# n10); the training manifest is st + w3 + n9 + n10 (21,400 clips, rhvoice:clb left out; GPU run 20). MIX="SUB[xREP] ..."
# trains on those corpora instead (e.g. MIX="st w3 n9 n10 n14x2 n15x2", GPU run 21: n14 and n15 are the release
# script's modern-text corpora; its manifest is DATA/train_ab_<the parts joined by _>.jsonl). VAL=SUB/SPLIT (default
# nv9/test, the release rule's set) validates on DATA/SUB/SPLIT.jsonl instead (run 21: nv10/test, so that nv9 stays
# a test set the models were not chosen on). JOBS="E0 E1" (default)
# picks the models; MAX_STEPS (default 800); HUMAN=DIR (default data/human_speech, scripts/fetch_human_speech.py):
# its test.jsonl and extra.jsonl are evaluated too when present. A training stopped by SIGTERM (exit 3, e.g. a time
# limit) is evaluated at its best checkpoint so far (OUT/NAME/STOPPED marks it; delete it to resume instead). EVAL=0
# stops after the trainings.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-data/speech_release}; OUT=${2:-outputs/asr_encoder_lora}; shift $(( $# < 2 ? $# : 2 ))
PY=${PYTHON:-.venv/bin/python}; MM="$PY -m mmlora.cli"; JOBS=${JOBS:-E0 E1}
REL=${REL:-checkpoints/asr-smollm2-whisper-tiny}; HUMAN=${HUMAN:-data/human_speech}
if [[ " $JOBS " == *" EA "* ]] && [ -z "${ARM:-}" ]; then
  echo "asr_encoder_lora.sh: JOBS has EA, which needs ARM, the key=value overrides that make it (e.g." \
       "ARM='model.media.audio.projector.rates=[2] train.init_map={\"projectors.audio.\":null}')" >&2
  exit 2
fi
mkdir -p "$OUT/eval"
MIX=(${MIX:-st w3 n9 n10}); TRAIN=train_ab.jsonl
[ "${MIX[*]}" = "st w3 n9 n10" ] || TRAIN=$(IFS=_; echo "train_ab_${MIX[*]}.jsonl")
VAL=${VAL:-nv9/test}
NEED=(st/test st/test_babble_snr0 natt9/test nv9/test "$VAL")
for part in "${MIX[@]}"; do NEED+=("${part%x[0-9]*}/train"); done
for m in "${NEED[@]}"; do
  [ -f "$DATA/$m.jsonl" ] || { echo "asr_encoder_lora.sh: $DATA/$m.jsonl is missing: make it with the commands of" \
                                    "scripts/train_asr_release.sh (see this script's header)" >&2; exit 2; }
done
[ -f "$DATA/$TRAIN" ] || $PY scripts/merge_manifests.py "$DATA" "$TRAIN" "${MIX[@]}" --drop-voice rhvoice:clb
$MM assets get smollm2-135m whisper-tiny.en

# training (stage 7's recipe, docs/ASR_RUNS.md "Stage 7")
C=(train.init_from=$REL data.train_manifest="$DATA/$TRAIN" data.val_manifest="$DATA/$VAL.jsonl"
   data.feature_cache=null "model.target_modules=[q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]"
   "model.adapters={default: {rank: 16, alpha: 32, dropout: 0.05}}" train.batch_size=256 train.warmup_steps=50
   train.max_steps=${MAX_STEPS:-800} train.eval_every=250 train.save_every=250 train.log_every=25
   train.group_lr.projectors=3e-4 train.group_lr.lora=2e-4 "data.speed_range=[0.85,1.15]"
   "model.media.audio.vtlp=[0.85,1.15]" "data.pad_seconds=[0.2,1.2]" data.pad_prob=0.5 train.resume=auto)
source scripts/lib_train.sh  # want, best, train_job, ev_sets, pair
EXTRA=("$@")
train_job E0 asr_smollm2_whisper_tiny
ENC=("model.media.audio.encoder_lora={rank: 8, alpha: 16}" train.group_lr.encoder=${ENC_LR:-3e-4})
train_job E1 asr_smollm2_whisper_tiny "${ENC[@]}"
train_job E2 asr_smollm2_whisper_tiny "${ENC[@]}" train.group_lr.lora=0
train_job E3 asr_smollm2_whisper_tiny "${ENC[@]}" train.group_lr.lora=0 train.group_lr.projectors=0
train_job EA asr_smollm2_whisper_tiny "${ENC[@]}" train.group_lr.lora=0 ${ARM:-}

[ "${EVAL:-1}" = 1 ] || exit 0  # EVAL=0: train only (e.g. several trainings side by side, then one run evaluates)

# evaluation
SETS=(st "$DATA/st/test.jsonl" st_b0 "$DATA/st/test_babble_snr0.jsonl" natt9 "$DATA/natt9/test.jsonl"
      nv9 "$DATA/nv9/test.jsonl")
[ "$VAL" = nv9/test ] || SETS+=("$(echo "${VAL%/test}" | tr / _)" "$DATA/$VAL.jsonl")  # run 21: nv10
for h in test extra; do [ -f "$HUMAN/$h.jsonl" ] && SETS+=(human_$h "$HUMAN/$h.jsonl"); done
for J in E0 E1 E2 E3 EA REL; do  # the candidates first: a time limit cuts the release's reports, which exist elsewhere
  [ $J = REL ] || want $J || continue
  model=$REL; [ $J = REL ] || model=$(best $J)
  ev_sets $J "$model" "${SETS[@]}"
done
{
  for ((i = 0; i < ${#SETS[@]}; i += 2)); do
    s=${SETS[i]}; pair E0_$s E1_$s; pair E1_$s E2_$s; pair E1_$s E3_$s; pair E2_$s EA_$s
    for J in E0 E1 E2 E3 EA; do pair REL_$s ${J}_$s; done
  done
} | tee "$OUT/eval/compare.txt"
