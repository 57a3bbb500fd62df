#!/usr/bin/env bash
# Split a folder into numbered pieces for a remote machine that takes files only in small copies (each call of a
# batch runner, a size-limited upload): tar STAGE, cut it into PIECE-sized parts PIECES/p00, p01, ..., and write
# their count to PIECES/npieces. scripts/remote/remote.sh puts them back together on the other side.
#
#   bash scripts/remote/pack.sh STAGE_DIR PIECES_DIR [PIECE_SIZE]     # PIECE_SIZE as for split -b (default 44M)
set -euo pipefail
STAGE=${1:?stage folder}; PIECES=${2:?pieces folder}; SIZE=${3:-44M}
[ -d "$STAGE" ] || { echo "pack.sh: $STAGE is not a folder" >&2; exit 2; }
mkdir -p "$PIECES"; rm -f "$PIECES"/p[0-9][0-9] "$PIECES/npieces"
tar -cf - -C "$STAGE" . | split -b "$SIZE" -d -a 2 - "$PIECES/p"
ls "$PIECES" | grep -c '^p[0-9][0-9]$' > "$PIECES/npieces"
echo "$(cat "$PIECES/npieces") pieces of at most $SIZE in $PIECES ($(du -sh "$STAGE" | cut -f1) staged)"
