#!/usr/bin/env bash
# Stage GPU runs 23-27 (the lips without a grammar; scripts/remote/lips_job.sh says what it expects) for a machine that
# cannot download: the wheels its image lacks (decord, which reads the lip videos, and av), the converted Whisper and
# EfficientNet encoders, and the corpora gw300 and fw300 with their merged training manifests, hard-linked into
# STAGE, then cut into pieces with scripts/remote/pack.sh.
#
#   bash scripts/remote/stage_lips.sh STAGE PIECES [GW_DATA [FW_DATA]]   # pieces sized by pack.sh (PIECE=...)
#
# GW_DATA (default data/gridwide) and FW_DATA (default data/freewords) are the DATA_DIRs of
#   POOL=gridwide  SLOT_WORDS=300 JOBS=NONE bash scripts/train_grid.sh data/gridwide  outputs/gw300_corpus
#   POOL=freewords SLOT_WORDS=300 JOBS=NONE bash scripts/train_grid.sh data/freewords outputs/fw300_corpus
# (each about 22 minutes on 2 cores with the TTS voices): DATA/train.jsonl and DATA/gw300|fw300/ with its splits.
# POOLS (default "gridwide freewords") names the corpora to stage; open (op12) comes from OPEN_DATA (default data/open):
#   POOL=open JOBS=NONE bash scripts/train_grid.sh data/open outputs/open_corpus   # 24.7 min on 2 cores (session 30)
# OPEN_MORE=1 stages op13 and train_more1.jsonl with op12 (train_grid.sh's OPEN_MORE; lips_job.sh MODE=more):
#   POOL=open OPEN_MORE=1 JOBS=NONE bash scripts/train_grid.sh data/open outputs/open_corpus   # op13, 21.8 min
# LIPREADER=DIR adds a lip reader's model folder as STAGE/lipreader (lips_job.sh MODE=avsr starts AVSR from it),
# e.g. run 26's (run 25's LoRA lip reader on open text):
#   POOLS=open LIPREADER=outputs/lipreader_r25 bash scripts/remote/stage_lips.sh .gpu/st26 .gpu/pk26
set -euo pipefail
cd "$(dirname "$0")/../.."
STAGE=${1:?stage folder}; PIECES=${2:?pieces folder}; GW=${3:-data/gridwide}; FW=${4:-data/freewords}
POOLS=${POOLS:-gridwide freewords}; LR=${LIPREADER:-}
declare -A DIR=([gridwide]=$GW [freewords]=$FW [open]=${OPEN_DATA:-data/open})
source scripts/remote/lip_corpora.sh  # CORPUS: each pool's corpus
MORE=${OPEN_MORE:-0}; [[ $MORE =~ ^[01]$ ]] || { echo "stage_lips.sh: OPEN_MORE=$MORE: 0 or 1" >&2; exit 2; }
declare -A TRAINS=([gridwide]=train.jsonl [freewords]=train.jsonl [open]=train.jsonl) EXTRA=()
[ "$MORE" = 0 ] || { TRAINS[open]="train.jsonl train_more1.jsonl"; EXTRA[open]=op13; }  # MODE=more reads both
for pool in $POOLS; do
  [ -n "${DIR[$pool]:-}" ] || { echo "stage_lips.sh: POOLS=$POOLS: each is gridwide, freewords or open" >&2; exit 2; }
  d=${DIR[$pool]} c=${DIR[$pool]}/${CORPUS[$pool]} need=()
  for t in ${TRAINS[$pool]}; do need+=("$d/$t"); done
  need+=("$c/val.jsonl" "$c/test.jsonl" "$c/test_wrong_lips.jsonl")
  for e in ${EXTRA[$pool]:-}; do need+=("$d/$e/train.jsonl"); done
  for f in "${need[@]}"; do
    [ -f "$f" ] || { echo "stage_lips.sh: $f is missing: make it with the command in this script's header" >&2; exit 2; }
  done
done
[ -z "$LR" ] || [ -f "$LR/config.json" ] || { echo "stage_lips.sh: LIPREADER=$LR: no config.json there (a model folder)" >&2; exit 2; }
source scripts/remote/lib_stage.sh  # BASE_WHEELS, stage_wheels, stage_assets
rm -rf "$STAGE"; mkdir -p "$STAGE/data"
stage_wheels "$STAGE" "${BASE_WHEELS[@]}" decord==0.6.0 av==18.1.0  # av: the tests' lip-video fixture writes mp4
stage_assets "$STAGE" whisper-tiny.en efficientnet-lite0
for pool in $POOLS; do
  mkdir -p "$STAGE/data/$pool"
  for c in ${CORPUS[$pool]} ${EXTRA[$pool]:-}; do cp -al "${DIR[$pool]}/$c" "$STAGE/data/$pool/"; done
  for t in ${TRAINS[$pool]}; do cp "${DIR[$pool]}/$t" "$STAGE/data/$pool/"; done
done
[ -z "$LR" ] || cp -rL "$LR" "$STAGE/lipreader"
bash scripts/remote/pack.sh "$STAGE" "$PIECES" ${PIECE:+"$PIECE"}
