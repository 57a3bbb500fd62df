#!/usr/bin/env bash
# Shared by the set-up scripts: `apt_install_missing CHECK_MESSAGE PKG...` installs (apt-get, as root or
# through sudo) the Debian packages given; with "--check" as the script's first argument it only
# reports them. Sourced, not run.
apt_install_missing() {
  local what="$1"; shift
  local missing=("$@")
  if [[ "${SETUP_MODE:-}" == "--check" ]]; then
    if ((${#missing[@]})); then echo "missing: ${missing[*]}"; return 1; fi
    echo "$what: all installed"; return 0
  fi
  if ((${#missing[@]} == 0)); then
    echo "$what: already installed"; return 0
  fi
  local SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  echo "installed: ${missing[*]}"
}
