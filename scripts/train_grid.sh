#!/usr/bin/env bash
# Lip reading and audio-visual recognition on the GRID grammar in one command (GPU run 16; docs/ASR.md "VSR and AVSR
# on GRID"): the GRID text pool -> corpora g16 (6,000 training clips with lip video; 200 validation and 300 test
# clips of held-out voices and faces) and g17 (12,000 more training clips, none of g16's sentences) -> three models
# from the released ASR checkpoint, batch 64, 1,500 steps, validation on g16/val every 250:
#   GV   VSR (lips only)
#   GAV  AVSR, audio dropout 0.3, one competing talker at -5 / 0 / 5 dB on half the training clips
#   GAO  its ASR control (the same noise)
# -> each model's best-validation weights on g16/test: clean; at 0 and -5 dB with one competing talker, babble of 3-6
# talkers and white noise; as VSR; and the wrong-lips control (every test clip given the next clip's lip video)
# -> `mmlora compare-wer` of AVSR against ASR in every condition and of each lip reader against its wrong-lips
# control (OUT/eval/compare.txt). Every step is skipped when its output exists.
#
#   bash scripts/train_grid.sh [DATA_DIR] [OUT_DIR] [key=value overrides for the three trainings ...]
#
# POOL=gridwide does the same on a grammar of GRID's shape with 448 words (make_text_pool.py gridwide, K=100;
# GPU runs 17-18): one corpus gw18 of 12,000 training clips and the same validation / test splits; SLOT_WORDS=K
# takes K words per open slot instead (K=300: 1,248 words, corpus gw300). POOL=freewords: the same K's words in free
# order, six per sentence (make_text_pool.py freewords; corpus fwK), the step after the grammars towards open text.
# POOL=open: open text (novels' sentences, none of the ASR release corpora's, up to 16 words; corpus op12, about
# 25 minutes on 2 cores), what the issue's targets ask of VSR and AVSR; OPEN_MORE=1 adds a training corpus of new
# sentences (op13; the models then train on train_more1.jsonl, op12's validation and test clips as before).
# A training stopped by SIGTERM (exit 3, e.g. a time limit) is evaluated at its best checkpoint so far, or at its
# latest checkpoint where it stopped before its first validation (OUT/NAME/STOPPED marks it; delete that file to
# resume the training instead).
# JOBS="GV GAV GAO" (default) picks the models; GAVL (AVSR from GV's lips and the release's audio projector,
# validated in noise; after GV), GAVLD (the same, audio dropout 0.5) and GAOL (their ASR control, validated the same
# way) are the others; WORKERS=N corpus processes (default 2); EVAL_FIRST="w_0 w_-5" writes those test conditions'
# reports first; TRAIN_ONLY=1 trains and writes none. The corpora need the TTS
# voices (bash scripts/setup_tts.sh): g16 + g17 are 18,000 clips, about 45 minutes on 2 cores. Run 16 ran the three
# jobs side by side on one H200 for 560 s each, stopping by time at steps 1,260 (GV), 1,137 (GAV) and 1,497 (GAO)
# of the 1,500 their schedules were sized for; this script runs them one after the other to step 1,500.
# Run 16 started from the release of its day (session 20's mean of stages 5 and 6); this script starts from
# today's checkpoints/asr-smollm2-whisper-tiny (REL=... to choose another). Since session 28 that release has LoRA
# inside the Whisper encoder: the models that read audio take it with the release's weights (train.init_from and
# init_projectors give it) and train it at the run's learning rate (train.group_lr.encoder=0 holds it); GV, which
# reads no audio, leaves it out.
set -euo pipefail
cd "$(dirname "$0")/.."
POOL=${POOL:-grid}; DATA=${1:-data/$POOL}; OUT=${2:-outputs/$POOL}; shift $(( $# < 2 ? $# : 2 ))
PY=${PYTHON:-.venv/bin/python}; MM="$PY -m mmlora.cli"; WORKERS=${WORKERS:-2}; JOBS=${JOBS:-GV GAV GAO}
REL=${REL:-checkpoints/asr-smollm2-whisper-tiny}
source scripts/wide_voices.sh  # WIDE_VOICES (336), WIDE_VAL_VOICES, WIDE_TEST_VOICES
# the test conditions (evaluation, below)
COND=(clean none babble 3,6 t1_0 0 babble 1,1 t1_-5 -5 babble 1,1 b_0 0 babble 3,6 b_-5 -5 babble 3,6
      w_0 0 white 3,6 w_-5 -5 white 3,6)  # NAME SNR NOISE TALKERS: clean, one competing talker, babble, white noise
NAMES=(); for ((i = 0; i < ${#COND[@]}; i += 4)); do NAMES+=("${COND[i]}"); done
# CONDS: every test condition by NAME, in the order the reports are written; EVAL_FIRST="w_0 ..." puts those first
# (GPU run 38: the device time ended while AVSR's reports were written, before the one condition the run asked about)
CONDS=(); for c in ${EVAL_FIRST:-} "${NAMES[@]}"; do
  [[ " ${NAMES[*]} " == *" $c "* ]] || { echo "train_grid.sh: EVAL_FIRST=${EVAL_FIRST:-}: no test condition $c" \
      "(there are: ${NAMES[*]})" >&2; exit 2; }
  [[ " ${CONDS[*]} " == *" $c "* ]] || CONDS+=("$c")
done
mkdir -p "$DATA" "$OUT/eval"

# corpora (POOL=grid: g16 + g17; POOL=gridwide: gw18, the same generator on the 448-word grammar)
pool() {  # NAME [make_text_pool args]: the sentence file, made once
  local name=$1; shift
  [ -s data/text/$name.txt ] || $PY scripts/make_text_pool.py "$@" --out data/text/$name.txt
}
G=(--max-words 16 --audio-format opus --noisy-splits '' --engine-weights flite=1,festival=1,espeak=2
   --workers "$WORKERS" --voices "$WIDE_VOICES")
SPLITS=(--n-val 200 --n-test 300 --val-voices "$WIDE_VAL_VOICES" --test-voices "$WIDE_TEST_VOICES")
if [ "$POOL" = grid ]; then
  C0=g16; G+=(--text-file grid=data/text/grid.txt --text-weights grid=1)
  [ -f "$DATA/g16/train.jsonl" ] || { pool grid grid; $MM make-speech-corpus --out "$DATA/g16" --seed 161 \
      --n-train 6000 "${SPLITS[@]}" "${G[@]}"; }
  [ -f "$DATA/g17/train.jsonl" ] || { pool grid grid; $MM make-speech-corpus --out "$DATA/g17" --seed 171 \
      --n-train 12000 --n-val 0 --n-test 0 --val-voices '' --test-voices '' "${G[@]}" \
      --exclude-text "$DATA/g16/val.jsonl,$DATA/g16/test.jsonl,$DATA/g16/train.jsonl"; }
  [ -f "$DATA/train.jsonl" ] || $PY scripts/merge_manifests.py "$DATA" train.jsonl g16 g17 --video
elif [ "$POOL" = gridwide ] || [ "$POOL" = freewords ]; then
  # K words per open slot: K=100 (448 words) is run 17's gw18 (seed 181); another K makes gwK with seed K.
  # freewords: the same K's lexicon in free order (make_text_pool.py freewords), corpus fwK with seed 1000 + K
  K=${SLOT_WORDS:-100}; [[ $K =~ ^[1-9][0-9]*$ ]] || { echo "train_grid.sh: SLOT_WORDS=$K: a positive integer" >&2; exit 2; }
  if [ "$POOL" = freewords ]; then C0=fw$K; SEED=$((1000 + K)); TAG=fw
  elif [ "$K" = 100 ]; then C0=gw18; SEED=181; TAG=gw
  else C0=gw$K; SEED=$K; TAG=gw; fi
  G+=(--text-file $TAG=data/text/$POOL$K.txt --text-weights $TAG=1)
  [ -f "$DATA/$C0/train.jsonl" ] || { pool $POOL$K $POOL --slot-words "$K" --n 60000 --seed 0
      $MM make-speech-corpus --out "$DATA/$C0" --seed "$SEED" --n-train 12000 "${SPLITS[@]}" "${G[@]}"; }
  [ -f "$DATA/train.jsonl" ] || $PY scripts/merge_manifests.py "$DATA" train.jsonl "$C0" --video
elif [ "$POOL" = open ]; then
  # open text (session 30): novels' sentences (half Project Gutenberg, half Jane Austen, make_text_pool.py), at most
  # 16 words, the same voices and splits; one corpus op12 (seed 2012) of 12,000 training clips with lip video. Not the
  # ASR release's WordNet / fortunes / KJV mix: its corpora read most of those sentences, so the LLM's LoRA would know
  # the test sentences (a first op12 from that mix shared 156 of its 300 test sentences with the release corpora on
  # this machine alone). OPEN_EXCLUDE (comma-separated manifests; default: the release corpora that
  # make_encoder_lora_corpora.sh makes and the human clips) leaves their sentences out; '' for none.
  C0=op12
  EXCL=${OPEN_EXCLUDE-data/speech_release/st/train.jsonl,data/speech_release/w3/train.jsonl,data/speech_release/n9/train.jsonl,data/speech_release/n10/train.jsonl,data/speech_release/n14/train.jsonl,data/speech_release/n15/train.jsonl,data/human_speech/test.jsonl,data/human_speech/extra.jsonl}
  NOVELS=(--text-file gutenberg=data/text/gutenberg.txt --text-file austen=data/text/austen.txt)
  open_text() {  # before making a corpus (a staged one needs none of this: the lent machine has no release corpora)
    local f
    for f in ${EXCL//,/ }; do
      [ -f "$f" ] || { echo "train_grid.sh: POOL=open leaves out the sentences of $f, which is missing: make it" \
                            "(scripts/make_encoder_lora_corpora.sh) or set OPEN_EXCLUDE ('' for none)" >&2; exit 2; }
    done
    pool gutenberg gutenberg; pool austen austen
  }
  if [ ! -f "$DATA/$C0/train.jsonl" ]; then
    open_text
    $MM make-speech-corpus --out "$DATA/$C0" --seed 2012 --n-train 12000 "${SPLITS[@]}" "${G[@]}" "${NOVELS[@]}" \
        --text-weights gutenberg=0.5,austen=0.5 ${EXCL:+--exclude-text "$EXCL"}
  fi
  # OPEN_MORE=1 (session 31): one more training corpus op13 (seed 2013, 11,000 clips, no val or test clips, the same
  # held-out voices and faces left out) of sentences that op12 (all its splits) and OPEN_EXCLUDE's do not read, merged
  # with op12's training clips into train_more1.jsonl; validated and tested on op12. After op12 and the release
  # corpora here the novels hold few unread sentences of 4-16 words (44 Gutenberg, 1,548 Austen), so op13 draws on
  # the dictionary quotations of gcide too (10,195 unread; make_text_pool.py), equal weights among the pools that
  # still have sentences: about 86 % of op13 is gcide.
  MORE=${OPEN_MORE:-0}; [[ $MORE =~ ^[01]$ ]] || { echo "train_grid.sh: OPEN_MORE=$MORE: 0 or 1 (the sentences" \
                                                         "for one more corpus)" >&2; exit 2; }
  if [ "$MORE" = 1 ]; then
    if [ ! -f "$DATA/op13/train.jsonl" ]; then
      open_text; pool gcide gcide
      $MM make-speech-corpus --out "$DATA/op13" --seed 2013 --n-train 11000 --n-val 0 --n-test 0 \
          --val-voices "$WIDE_VAL_VOICES" --test-voices "$WIDE_TEST_VOICES" "${G[@]}" "${NOVELS[@]}" \
          --text-file gcide=data/text/gcide.txt --text-weights gutenberg=1,austen=1,gcide=1 \
          --exclude-text "$DATA/$C0/train.jsonl,$DATA/$C0/val.jsonl,$DATA/$C0/test.jsonl${EXCL:+,$EXCL}"
    fi
    TRAIN=train_more1.jsonl
    [ -f "$DATA/$TRAIN" ] || $PY scripts/merge_manifests.py "$DATA" "$TRAIN" "$C0" op13 --video
  else
    [ -f "$DATA/train.jsonl" ] || $PY scripts/merge_manifests.py "$DATA" train.jsonl "$C0" --video
  fi
else
  echo "train_grid.sh: POOL=$POOL: grid, gridwide, freewords or open" >&2; exit 2
fi
T=$DATA/$C0/test.jsonl; TR=$DATA/$C0/test_wrong_lips.jsonl
[ -f "$TR" ] || $PY - "$T" "$TR" <<'PY'
import json, sys  # the wrong-lips control: every test clip with the next clip's lip video (the same audio and noise)
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
with open(sys.argv[2], "w") as out:
    for i, r in enumerate(rows):
        out.write(json.dumps({**r, "video": rows[(i + 1) % len(rows)]["video"]}) + "\n")
PY
$MM assets get smollm2-135m whisper-tiny.en efficientnet-lite0

# training
C=(train.init_from=$REL data.feature_cache=null data.train_manifest="$DATA/${TRAIN:-train.jsonl}" data.val_manifest="$DATA/$C0/val.jsonl"
   "model.target_modules=[q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]"
   "model.adapters={default: {rank: 16, alpha: 32, dropout: 0.05}}" train.max_steps=1500 train.warmup_steps=30
   train.log_every=25 train.eval_every=250 train.save_every=250 train.batch_size=64 train.group_lr.projectors=5e-4
   train.group_lr.lora=2.5e-4 train.resume=auto)
NOISE=("model.media.audio.vtlp=[0.85,1.15]" "data.noise_snrs=[-5,0,5]" data.noise_prob=0.5 "data.noise_talkers=[1,1]")
source scripts/lib_train.sh  # want, best, train_job, ev, pair
EXTRA=("$@")
train_job GV vsr_smollm2
train_job GAV avsr_smollm2_whisper_tiny "${NOISE[@]}" model.media.audio.dropout=0.3
train_job GAO asr_smollm2_whisper_tiny "${NOISE[@]}"
# GAVL (session 23): AVSR that starts reading both, its LoRA and lip projector from GV's best weights and its audio
# projector from the release; validated on all 200 validation clips (the others: 64) in one-talker noise at 0 dB
# (clean validation picked GAV's step 500 of 1,500 in run 17, where it hardly read lips). Needs GV first.
# GAVLD: the same with audio dropout 0.5. GAOL: their ASR control, from the release, chosen by the same validation.
VALN=(data.val_snr=0 "data.val_noise_talkers=[1,1]" data.val_samples=200)
for J in GAVL GAVLD; do
  want $J || continue
  [ -d "$(best GV)" ] || { echo "train_grid.sh: $J starts from GV's weights: train GV first (JOBS=\"GV $J\")" >&2; exit 2; }
  drop=0.3; [ $J = GAVLD ] && drop=0.5
  train_job $J avsr_smollm2_whisper_tiny "${NOISE[@]}" model.media.audio.dropout=$drop train.init_from="$(best GV)" \
      "train.init_projectors={audio: $REL}" "${VALN[@]}"
done
train_job GAOL asr_smollm2_whisper_tiny "${NOISE[@]}" "${VALN[@]}"

# TRAIN_ONLY=1: the trainings alone; a second call without it (the trainings done or STOPPED) writes the reports
# (lips_job.sh: the lip reader's, after the AVSR reports that its run asks for)
[ "${TRAIN_ONLY:-0}" = 0 ] || exit 0
# evaluation: each model's reports in as few `mmlora evaluate` calls as their options allow (ev_many: one model load
# for all its conditions)
conds() {  # PREFIX MANIFEST NAME ...: append to EVS, for ev_many, PREFIX_NAME$SUFFIX on MANIFEST in each condition
  local prefix=$1 man=$2 c i; shift 2
  for c in "$@"; do
    for ((i = 0; i < ${#COND[@]}; i += 4)); do
      [ "${COND[i]}" != "$c" ] || EVS+=("${prefix}_$c${SUFFIX:-}" "$man" "${COND[@]:i+1:3}")
    done
  done
}
for J in GAV GAO GAVL GAVLD GAOL; do
  want $J || continue
  EVS=(); conds $J "$T" "${CONDS[@]}"
  if [[ " GAV GAVL GAVLD " == *" $J "* ]]; then  # AVSR: the babble with the next clip's lips too
    SUFFIX=_wrong_lips conds $J "$TR" b_0 b_-5
  fi
  ev_many "$(best $J)" "${EVS[@]}"
  # the noise-validated models: their last weights too (final/, or the latest checkpoint of a training stopped by a
  # time limit, as runs 25-26's were), where best/ is an earlier step, in every condition (run 28: the best and the
  # last weights of the same two trainings disagreed on white noise at -5 dB, a condition the last ones lacked)
  L=$(later_last $J)
  if [[ " GAVL GAVLD GAOL " == *" $J "* ]] && [ -n "$L" ]; then
    EVS=(); conds ${J}_final "$T" "${CONDS[@]}"
    ev_many "$L" "${EVS[@]}"
  fi
  [[ " GAV GAVL GAVLD " != *" $J "* ]] || ev ${J}_vsr "$(best $J)" --manifest "$T" --zero-modality audio
done
if want GV; then
  ev_sets GV "$(best GV)" vsr "$T" vsr_wrong_lips "$TR"
  # its last weights too, where best/ is an earlier step (run 29: two lip readers 4.0 points apart at their best
  # steps, 0.7 at their last weights)
  L=$(later_last GV)
  [ -z "$L" ] || ev_sets GV "$L" final_vsr "$T"
fi
{
  for J in GAV GAVL GAVLD; do
    ctl=GAO; [ $J = GAV ] || ctl=GAOL  # each AVSR model against the ASR control chosen the same way
    for c in "${CONDS[@]}" "${CONDS[@]/#/final_}"; do pair ${J}_$c ${ctl}_$c; done
    pair ${J}_b_0 ${J}_b_0_wrong_lips; pair ${J}_b_-5 ${J}_b_-5_wrong_lips
  done
  pair GV_vsr GV_vsr_wrong_lips
} | tee "$OUT/eval/compare.txt"
