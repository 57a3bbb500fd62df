#!/usr/bin/env bash
# The corpora of GPU run 21 (docs/ASR.md "LoRA inside the Whisper encoder"), in one command on a fresh machine:
# st (audio only), w3, natt9, nv9, n9 and n10 with the commands of scripts/train_asr_release.sh, the human test clips,
# then n14, n15 and the validation set nv10 as made in session 26 (train_asr_release.sh's n14 / n15 commands, whose
# exclusion lists name corpora not made here, so they list only what is). Every corpus is seeded and byte-reproducible;
# each step is skipped when its manifest exists. About 90 min on 2 cores (st 8, w3 10, natt9 + nv9 1, n9 15, n10 19,
# n14 17, n15 13 min; PICO=1 adds p16, KJV=1 k49: 4 min, KJV=2 k49, k50 and kn50: 17 min; ACCENTS=1 a62, which
# excludes the sentences of k49, k50 and kn50: with KJV=2; ACCENTS=2 a64 as well, 6 min; HV67=1 the held-out
# validation set hv67, 3 min).
# Needs the TTS voices: bash scripts/setup_tts.sh && bash scripts/setup_tts.sh --natural.
#
#   bash scripts/make_encoder_lora_corpora.sh [DATA_DIR] [HUMAN_DIR]    # defaults data/speech_release data/human_speech
#
# PLAN_ONLY=1 writes only the sentences each corpus would read (scripts/plan_corpus.sh; seconds, no TTS audio), as
# manifests named like the corpora's, into DATA_DIR (use another one than the real corpora's): what train_grid.sh
# POOL=open needs to leave out the release corpora's sentences on a machine that lacks them (OPEN_EXCLUDE).
# The human clips are fetched for real (they are small).
#
# Then: MIX="st w3 n9 n10 n14x2 n15x2" VAL=nv10/test JOBS="E1 E2" bash scripts/asr_encoder_lora.sh DATA_DIR OUT
set -euo pipefail
cd "$(dirname "$0")/.."
D=${1:-data/speech_release}; H=${2:-data/human_speech}
PY=${PYTHON:-.venv/bin/python}; MM="$PY -m mmlora.cli"; WORKERS=${WORKERS:-$(nproc)}
if [ "${PLAN_ONLY:-0}" != 0 ]; then  # plans named like manifests: never where the real corpora belong
  [ $# -ge 1 ] && [ "$(realpath -m "$D")" != "$(realpath -m data/speech_release)" ] || {
    echo "make_encoder_lora_corpora.sh: PLAN_ONLY=1 writes sentence plans named like the corpora's manifests: give" \
         "it a DATA_DIR of its own (e.g. data/release_plans), not data/speech_release" >&2; exit 2; }
  export MM="bash scripts/plan_corpus.sh"  # make_wide_speech_corpora.sh reads it too
fi
source scripts/lib_speech_corpora.sh  # corpus_st, corpora_stage4, NAT9, NV (train_asr_release.sh's commands)
step() { echo "$(date +%T) $*"; }
step st; corpus_st "$D" --no-video  # AUDIO_ONLY, as train_asr_release.sh runs it: no lip videos, the same audio
[ -f "$D/w3/train.jsonl" ] || { step w3; W3_ONLY=1 bash scripts/make_wide_speech_corpora.sh "$D/st" "$D" "$WORKERS"; }
step natt9 nv9 n9 n10; corpora_stage4 "$D"
# the human clips (their sentences are excluded from n14 / n15; they are test sets of the run)
[ -f "$H/test.jsonl" ] || { step human; $PY scripts/fetch_human_speech.py --out "$H"; }
[ -f "$H/extra.jsonl" ] || { step human extra; $PY scripts/fetch_human_speech.py --set extra --out "$H"; }
# the third and fourth human sets (sessions 57, 58): not excluded by the corpora below (made before them; none shares
# a sentence with them), read by the release rule's rule 2
[ -f "$H/more.jsonl" ] || { step human more; $PY scripts/fetch_human_speech.py --set more --out "$H"; }
[ -f "$H/fourth.jsonl" ] || { step human fourth; $PY scripts/fetch_human_speech.py --set fourth --out "$H"; }
for p in austen gutenberg harvard gcide; do [ -f data/text/$p.txt ] || $PY scripts/make_text_pool.py $p --out data/text/$p.txt; done
# session 26's n14, n15 and nv10 (RUN21=0 leaves them out: the decoder runs since GPU run 44 read none of them, and
# they take 30 min; PICO=1 needs them)
if [ "${RUN21:-1}" = 0 ] && [ "${PICO:-0}" != 0 ]; then
  echo "make_encoder_lora_corpora.sh: PICO=1 leaves out the sentences of n14, n15 and nv10: it needs them (RUN21=1)" >&2
  exit 2
fi
if [ "${RUN21:-1}" != 0 ]; then
N=("${NAT9[@]}" --voices $NV --engine-weights rhvoice=0.75,piper=0.25)
EX="$D/st/val.jsonl,$D/st/test.jsonl,$D/natt9/test.jsonl,$D/nv9/test.jsonl,$H/test.jsonl,$H/extra.jsonl"
[ -f "$D/n14/train.jsonl" ] || { step n14; $MM make-speech-corpus --out "$D/n14" --seed 81 --n-train 4500 "${N[@]}" \
    --text-file gutenberg=data/text/gutenberg.txt --text-file harvard=data/text/harvard.txt \
    --text-file austen=data/text/austen.txt --text-weights gutenberg=0.8,harvard=0.08,austen=0.12 --exclude-text "$EX"; }
[ -f "$D/n15/train.jsonl" ] || { step n15; $MM make-speech-corpus --out "$D/n15" --seed 91 --n-train 5000 "${N[@]}" \
    --text-file gcide=data/text/gcide.txt --text-weights gcide=1 --exclude-text "$EX,$D/n14/train.jsonl"; }
[ -f "$D/nv10/test.jsonl" ] || { step nv10; $MM make-speech-corpus --out "$D/nv10" --seed 36 --n-train 0 "${N[@]}" \
    --n-test 120 --test-voices $NV --exclude-text \
    "$EX,$D/n9/train.jsonl,$D/n10/train.jsonl,$D/n14/train.jsonl,$D/n15/train.jsonl,$D/st/train.jsonl,$D/w3/train.jsonl"; }
fi
# PICO=1: p16 (session 57), SVOX Pico's two voices reading NAT9's text mix, none of the sentences above: training
# speech from an engine the other corpora lack (the voices of session 19's unseen-voice check, which it then ends)
if [ "${PICO:-0}" != 0 ] && [ ! -f "$D/p16/train.jsonl" ]; then
  step p16; $MM make-speech-corpus --out "$D/p16" --seed 161 --n-train 6000 "${NAT9[@]}" \
    --voices pico:en-US,pico:en-GB --exclude-text \
    "$EX,$D/nv10/test.jsonl,$D/n9/train.jsonl,$D/n10/train.jsonl,$D/n14/train.jsonl,$D/n15/train.jsonl"
fi
# KJV=1: k49 (session 60, GPU run 49's ed3k, the release since then), 2,400 clips of King James Bible sentences read by
# st's training voices (the default engines and held-out voices), none of the sentences of st, w3 or any test set.
# KJV=2 also k50 and kn50 (session 61, GPU run 50): 2,400 more King James sentences read by the same voices, and 2,400
# more read by the natural training voices ($NV) at up to 24 words (the Bible's sentences of at most 16 words that no
# corpus or test set here holds run out at 1,682), none of k49's or each other's sentences
EXK="$D/st/train.jsonl,$D/st/val.jsonl,$D/st/test.jsonl,$D/w3/train.jsonl,$D/natt9/test.jsonl,$D/nv9/test.jsonl"
EXK="$EXK,$H/test.jsonl,$H/extra.jsonl,$H/more.jsonl,$H/fourth.jsonl"
TOPT=(--n-train 2400 --n-val 0 --n-test 0 --audio-format opus --no-video --noisy-splits '' --workers "$WORKERS")
KOPT=("${TOPT[@]}" --text-weights bible=1)
if [ "${KJV:-0}" != 0 ] && [ ! -f "$D/k49/train.jsonl" ]; then
  step k49; $MM make-speech-corpus --out "$D/k49" --seed 49 --max-words 16 "${KOPT[@]}" --exclude-text "$EXK"
fi
if [ "${KJV:-0}" = 2 ] && [ ! -f "$D/k50/train.jsonl" ]; then
  step k50; $MM make-speech-corpus --out "$D/k50" --seed 50 --max-words 16 "${KOPT[@]}" \
    --exclude-text "$EXK,$D/k49/train.jsonl"
fi
if [ "${KJV:-0}" = 2 ] && [ ! -f "$D/kn50/train.jsonl" ]; then
  step kn50; $MM make-speech-corpus --out "$D/kn50" --seed 51 --max-words 24 "${KOPT[@]}" --voices $NV \
    --engine-weights rhvoice=0.75,piper=0.25 --exclude-text "$EXK,$D/k49/train.jsonl,$D/k50/train.jsonl"
fi
# ACCENTS=1: a62 (session 62, GPU run 51), 2,400 clips read by espeak-ng accents of our own (mmlora.data.speech_tts.
# ESPEAK_ACCENTS: six of espeak-ng's English accents with th-stopping, g- or h-dropping, th-fronting) with the wide
# corpora's 55 variants, st's text (fortunes and KJV), none of the sentences of st, w3, k49, k50, kn50 or a test set
# ACCENTS=2 also a64 (session 64): 2,400 more by the same voices, seed 64, none of a62's sentences either
AV=  # not the caller's: accent_voices fills it once
accent_voices() {  # AV, once: a62 and a64 are read by the same voices
  [ -n "${AV:-}" ] && return 0
  source scripts/wide_voices.sh  # WIDE_VARIANTS
  AV=; for a in $($PY -c "from mmlora.data.speech_tts import ESPEAK_ACCENTS as A; print(*A)"); do
    for v in $WIDE_VARIANTS; do AV="$AV,espeak:$a+$v"; done; done
}
if [ "${ACCENTS:-0}" != 0 ] && [ ! -f "$D/a62/train.jsonl" ]; then
  accent_voices
  step a62; $MM make-speech-corpus --out "$D/a62" --seed 62 --max-words 16 "${TOPT[@]}" --voices "${AV#,}" \
    --exclude-text "$EXK,$D/k49/train.jsonl,$D/k50/train.jsonl,$D/kn50/train.jsonl"
fi
if [ "${ACCENTS:-0}" = 2 ] && [ ! -f "$D/a64/train.jsonl" ]; then
  accent_voices
  step a64; $MM make-speech-corpus --out "$D/a64" --seed 64 --max-words 16 "${TOPT[@]}" --voices "${AV#,}" \
    --exclude-text "$EXK,$D/k49/train.jsonl,$D/k50/train.jsonl,$D/kn50/train.jsonl,$D/a62/train.jsonl"
fi
# HV67=1 (session 67): hv67p, hv67s and hv67k, a validation set read by held-out voices: the 240 sentences of st's
# pools (fortunes, bible; at most 16 words) that no corpus above or test set holds, each read three times, by
# pico:en-GB (heard by no model), espeak-ng en-gb-scotland with eight variants and festival ked_diphone (st/val's
# accent and voice), 720 clips; needs KJV=2 and ACCENTS=2 (their sentences are excluded). 3 min.
if [ "${HV67:-0}" != 0 ] && [ ! -f "$D/hv67k/val.jsonl" ]; then
  for c in n9/train k49/train k50/train kn50/train a62/train a64/train; do
    [ -f "$D/$c.jsonl" ] || { echo "make_encoder_lora_corpora.sh: HV67=1 excludes $D/$c.jsonl's sentences:" \
      "make it first (KJV=2 ACCENTS=2)" >&2; exit 2; }; done
  EXH="$EXK,$D/n9/train.jsonl,$D/n10/train.jsonl,$D/k49/train.jsonl,$D/k50/train.jsonl,$D/kn50/train.jsonl"
  EXH="$EXH,$D/a62/train.jsonl,$D/a64/train.jsonl"
  SC=; for v in m1 m3 m6 f2 f3 klatt2 Andy Annie; do SC="$SC,espeak:en-gb-scotland+$v"; done
  HO=(--n-train 0 --n-val 240 --n-test 0 --max-words 16 --audio-format opus --no-video --noisy-splits ''
      --babble-pool 0 --workers "$WORKERS" --text-weights fortunes=0.5,bible=0.5 --exclude-text "$EXH")
  for x in "p 67 pico:en-GB" "s 68 ${SC#,}" "k 69 festival:ked_diphone"; do
    set -- $x
    [ -f "$D/hv67$1/val.jsonl" ] || { step "hv67$1"; $MM make-speech-corpus --out "$D/hv67$1" --seed "$2" \
      --voices "$3" --val-voices "$3" "${HO[@]}"; }
  done
fi
step done
