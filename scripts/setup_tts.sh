#!/usr/bin/env bash
# Install the Debian/Ubuntu packages that `mmlora make-speech-corpus` needs: TTS voices
# (espeak-ng, flite, festival + three festival voices) and public-domain text (fortunes,
# bible-kjv-text). Idempotent: packages already present are skipped by apt. Needs root (or sudo).
#
#   bash scripts/setup_tts.sh           # install
#   bash scripts/setup_tts.sh --check   # only report what is missing (exit 1 if anything is)
set -euo pipefail

PKGS=(
  espeak-ng            # many voice variants (en+m1..m7, en+f1..f5, en-us, en-gb-scotland, ...)
  flite                # voices kal, kal16, awb, rms, slt
  festival             # phone timings (utt.save.segs) for the lip video
  festvox-kallpc16k    # festival voice kal_diphone
  festvox-kdlpc16k     # festival voice ked_diphone
  festvox-us-slt-hts   # festival voice cmu_us_slt_arctic_hts
  fortunes             # public-domain-ish short texts (/usr/share/games/fortunes)
  fortunes-min
  bible-kjv-text       # King James Bible text (compressed, /usr/lib/bible.data)
  bible-kjv            # `bible` program that decompresses it
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

SETUP_MODE="${1:-}"
source "$(dirname "$0")/apt_install_missing.sh"
apt_install_missing "TTS packages" "${missing[@]}"
