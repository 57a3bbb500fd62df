#!/usr/bin/env bash
# Stage GPU run 23 (the lips without a grammar; scripts/remote/lips_job.sh says what it expects) for a machine that
# cannot download: the wheels its image lacks (decord, which reads the lip videos, and av), the converted Whisper and
# EfficientNet encoders, and the corpora gw300 and fw300 with their merged training manifests, hard-linked into
# STAGE, then cut into pieces with scripts/remote/pack.sh.
#
#   bash scripts/remote/stage_lips.sh STAGE PIECES [GW_DATA [FW_DATA]]   # pieces of 29M (PIECE=...)
#
# GW_DATA (default data/gridwide) and FW_DATA (default data/freewords) are the DATA_DIRs of
#   POOL=gridwide  SLOT_WORDS=300 JOBS=NONE bash scripts/train_grid.sh data/gridwide  outputs/gw300_corpus
#   POOL=freewords SLOT_WORDS=300 JOBS=NONE bash scripts/train_grid.sh data/freewords outputs/fw300_corpus
# (each about 22 minutes on 2 cores with the TTS voices): DATA/train.jsonl and DATA/gw300|fw300/ with its splits.
set -euo pipefail
cd "$(dirname "$0")/../.."
STAGE=${1:?stage folder}; PIECES=${2:?pieces folder}; GW=${3:-data/gridwide}; FW=${4:-data/freewords}
for c in "$GW/gw300" "$FW/fw300"; do
  for f in "$(dirname "$c")/train.jsonl" "$c/val.jsonl" "$c/test.jsonl" "$c/test_wrong_lips.jsonl"; do
    [ -f "$f" ] || { echo "stage_lips.sh: $f is missing: make it with the command in this script's header" >&2; exit 2; }
  done
done
source scripts/remote/lib_stage.sh  # BASE_WHEELS, stage_wheels, stage_assets
rm -rf "$STAGE"; mkdir -p "$STAGE/data/gridwide" "$STAGE/data/freewords"
stage_wheels "$STAGE" "${BASE_WHEELS[@]}" decord==0.6.0 av==18.1.0  # av: the tests' lip-video fixture writes mp4
stage_assets "$STAGE" whisper-tiny.en efficientnet-lite0
cp -al "$GW/gw300" "$STAGE/data/gridwide/gw300"; cp "$GW/train.jsonl" "$STAGE/data/gridwide/"
cp -al "$FW/fw300" "$STAGE/data/freewords/fw300"; cp "$FW/train.jsonl" "$STAGE/data/freewords/"
bash scripts/remote/pack.sh "$STAGE" "$PIECES" "${PIECE:-29M}"
