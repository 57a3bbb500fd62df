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

if [[ "${1:-}" == "--check" ]]; then
  if ((${#missing[@]})); then echo "missing: ${missing[*]}"; exit 1; fi
  echo "espeak-ng and java are installed"; exit 0
fi
if ((${#missing[@]} == 0)); then
  echo "espeak-ng and java are already installed"; exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "installed: ${missing[*]}"
