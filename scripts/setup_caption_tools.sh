#!/usr/bin/env bash
# Install the Debian/Ubuntu packages the caption corpus and metrics use. Idempotent; needs root (or sudo).
#   espeak-ng                 spoken words in the clips' soundtracks
#                             (without it `mmlora make-caption-corpus` makes tones only and warns)
#   openjdk-17-jre-headless   Java for pycocoevalcap's PTB tokenizer and METEOR
#                             (without it `mmlora score-captions` tokenizes in Python and skips METEOR)
#
#   bash scripts/setup_caption_tools.sh           # install what is missing
#   bash scripts/setup_caption_tools.sh --check   # only report (exit 1 if something is missing)
set -euo pipefail

missing=()
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
java -version >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)

SETUP_MODE="${1:-}"
source "$(dirname "$0")/apt_install_missing.sh"
apt_install_missing "espeak-ng and java" "${missing[@]}"
