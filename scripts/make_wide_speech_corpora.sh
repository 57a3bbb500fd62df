#!/usr/bin/env bash
# The wider training corpora for the next ASR/AVSR run (docs/ASR_RUNS.md, the plans after each run): 336 voices (flite and festival training
# voices + 6 espeak-ng English accents x 55 variants), no sentence of the first corpus's val/test splits, and (for the
# clips with lip video) 30 % random word sequences. Seeds 3-7, byte-reproducible like every corpus.
#
#   bash scripts/make_wide_speech_corpora.sh FIRST_CORPUS_DIR OUT_PARENT [WORKERS [MORE_EXCLUDE [STAGE4_EXCLUDE [STAGE5_EXCLUDE [STAGE6]]]]]
#
# FIRST_CORPUS_DIR: the seed-1 corpus of scripts/train_asr_release.sh (its val/test sentences are excluded, its held-out
# voices stay held out). Writes OUT_PARENT/w3 (5,000 clips, audio only) and OUT_PARENT/wv4..wv7 (2,500 each, with video;
# MORE_LIPS=N adds N more such, wv201 ...; W3_ONLY=1 stops after w3).
# With MORE_EXCLUDE (comma-separated manifests whose sentences to leave out too, e.g. the natural-voice test set) it
# also writes OUT_PARENT/w8: 10,000 audio clips of the same voices reading mostly modern text (70 % WordNet example
# sentences, 20 % fortunes, 10 % KJV; stage 3 of the release). With STAGE4_EXCLUDE (the stage-4 held-out sets natt9 and
# nv9; OUT_PARENT/n9 must exist, scripts/train_asr_release.sh makes it first) it also writes OUT_PARENT/w9 (6,000 clips,
# none of n9's sentences) and OUT_PARENT/w10 (8,000, none of w9's) with the same text mix (stage 4, GPU runs 9 and 10).
# With STAGE5_EXCLUDE as well (the human clips' manifest; OUT_PARENT/n13 and data/text/austen.txt must exist) it writes
# stage 5's OUT_PARENT/w11 and w12 (6,000 each, w10's text mix, none of w9-w11's sentences) and OUT_PARENT/w13 (4,000,
# Jane Austen's sentences, scripts/make_text_pool.py, none of n13's; GPU run 12). With STAGE6=1 as well (OUT_PARENT/n14
# and n15 and the text pools data/text/{gutenberg,harvard,austen,gcide}.txt must exist) it writes stage 6's
# OUT_PARENT/w14 (3,500 clips: 80 % Gutenberg novels, 8 % Harvard sentences, 12 % Austen; none of n13/w13/n14's) and,
# once OUT_PARENT/n15 exists, OUT_PARENT/w15 (4,000: dictionary quotations, gcide; none of n15's; GPU run 14).
set -euo pipefail
cd "$(dirname "$0")/.."
FIRST=${1:?first corpus folder}; OUT=${2:?output parent folder}; WORKERS=${3:-2}; MORE_EXCLUDE=${4:-}; STAGE4_EXCLUDE=${5:-}
STAGE5_EXCLUDE=${6:-}; STAGE6=${7:-}
PY=${PYTHON:-.venv/bin/python}; MM=${MM:-$PY -m mmlora.cli}  # MM: scripts/plan_corpus.sh plans instead
NOVID=(); [ -n "${AUDIO_ONLY:-}" ] && NOVID=(--no-video)  # AUDIO_ONLY=1: wv4..wv7 (and wv201 ...) without lip videos, same audio
source scripts/wide_voices.sh  # WIDE_VOICES (336), WIDE_VAL_VOICES, WIDE_TEST_VOICES
COMMON=(--max-words 16 --audio-format opus --noisy-splits '' --n-val 1 --n-test 1 --voices "$WIDE_VOICES"
        --val-voices "$WIDE_VAL_VOICES" --test-voices "$WIDE_TEST_VOICES"
        --exclude-text "$FIRST/val.jsonl,$FIRST/test.jsonl" --engine-weights flite=1,festival=1,espeak=2 --workers "$WORKERS")
[ -f "$OUT/w3/train.jsonl" ] || nice -n 10 $MM make-speech-corpus --out "$OUT/w3" --seed 3 --n-train 5000 \
    --no-video "${COMMON[@]}"
[ -z "${W3_ONLY:-}" ] || exit 0  # W3_ONLY=1: w3 alone (the ASR runs 20-21 read no lip videos)
# MORE_LIPS=N: N more lip-video corpora of wv4-7's recipe, OUT_PARENT/wv201 ... (seeds 201 ...; session 22, for GPU
# run 17's open-text AVSR)
for s in 4 5 6 7 $(seq 201 $((200 + ${MORE_LIPS:-0}))); do
  [ -f "$OUT/wv$s/train.jsonl" ] || nice -n 10 $MM make-speech-corpus --out "$OUT/wv$s" --seed $s \
      --n-train 2500 --word-salad-frac 0.3 "${COMMON[@]}" "${NOVID[@]}"
done
if [ -n "$MORE_EXCLUDE" ] && [ ! -f "$OUT/w8/train.jsonl" ]; then
  nice -n 10 $MM make-speech-corpus --out "$OUT/w8" --seed 8 --n-train 10000 --no-video "${COMMON[@]}" \
      --exclude-text "$FIRST/val.jsonl,$FIRST/test.jsonl,$MORE_EXCLUDE" --text-weights wordnet=0.7,fortunes=0.2,bible=0.1
fi
if [ -n "$STAGE4_EXCLUDE" ]; then
  MODERN=(--n-val 0 --n-test 0 --no-video --text-weights wordnet=0.7,fortunes=0.2,bible=0.1)
  [ -f "$OUT/w9/train.jsonl" ] || nice -n 10 $MM make-speech-corpus --out "$OUT/w9" --seed 9 --n-train 6000 \
      "${COMMON[@]}" "${MODERN[@]}" --exclude-text "$FIRST/val.jsonl,$FIRST/test.jsonl,$STAGE4_EXCLUDE,$OUT/n9/train.jsonl"
  [ -f "$OUT/w10/train.jsonl" ] || nice -n 10 $MM make-speech-corpus --out "$OUT/w10" --seed 40 --n-train 8000 \
      "${COMMON[@]}" "${MODERN[@]}" --exclude-text "$FIRST/val.jsonl,$FIRST/test.jsonl,$STAGE4_EXCLUDE,$OUT/w9/train.jsonl"
fi
if [ -n "$STAGE4_EXCLUDE" ] && [ -n "$STAGE5_EXCLUDE" ]; then
  EX4="$FIRST/val.jsonl,$FIRST/test.jsonl,$STAGE4_EXCLUDE"
  [ -f "$OUT/w11/train.jsonl" ] || nice -n 10 $MM make-speech-corpus --out "$OUT/w11" --seed 50 --n-train 6000 \
      "${COMMON[@]}" "${MODERN[@]}" --exclude-text "$EX4,$OUT/w9/train.jsonl,$OUT/w10/train.jsonl"
  [ -f "$OUT/w12/train.jsonl" ] || nice -n 10 $MM make-speech-corpus --out "$OUT/w12" --seed 60 --n-train 6000 \
      "${COMMON[@]}" "${MODERN[@]}" --exclude-text "$EX4,$OUT/w9/train.jsonl,$OUT/w10/train.jsonl,$OUT/w11/train.jsonl"
  [ -f "$OUT/w13/train.jsonl" ] || nice -n 10 $MM make-speech-corpus --out "$OUT/w13" --seed 70 --n-train 4000 \
      "${COMMON[@]}" --n-val 0 --n-test 0 --no-video --text-file austen=data/text/austen.txt --text-weights austen=1 \
      --exclude-text "$EX4,$STAGE5_EXCLUDE,$OUT/n13/train.jsonl"
fi
if [ -n "$STAGE4_EXCLUDE" ] && [ -n "$STAGE5_EXCLUDE" ] && [ -n "$STAGE6" ]; then
  EX5="$EX4,$STAGE5_EXCLUDE,$OUT/n13/train.jsonl,$OUT/w13/train.jsonl"
  [ -f "$OUT/w14/train.jsonl" ] || nice -n 10 $MM make-speech-corpus --out "$OUT/w14" --seed 80 --n-train 3500 \
      "${COMMON[@]}" --n-val 0 --n-test 0 --no-video --text-file gutenberg=data/text/gutenberg.txt \
      --text-file harvard=data/text/harvard.txt --text-file austen=data/text/austen.txt \
      --text-weights gutenberg=0.8,harvard=0.08,austen=0.12 --exclude-text "$EX5,$OUT/n14/train.jsonl"
  # w15 once n15 exists (n15 excludes w14's sentences, w15 n15's: scripts/train_asr_release.sh calls this twice)
  [ -f "$OUT/w15/train.jsonl" ] || [ ! -f "$OUT/n15/train.jsonl" ] || nice -n 10 $MM make-speech-corpus --out "$OUT/w15" --seed 90 --n-train 4000 \
      "${COMMON[@]}" --n-val 0 --n-test 0 --no-video --text-file gcide=data/text/gcide.txt --text-weights gcide=1 \
      --exclude-text "$EX5,$OUT/n14/train.jsonl,$OUT/w14/train.jsonl,$OUT/n15/train.jsonl"
fi
