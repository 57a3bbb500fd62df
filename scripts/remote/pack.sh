#!/usr/bin/env bash
# Split a folder into numbered pieces for a remote machine that takes files only in small copies (each call of a
# batch runner, a size-limited upload): tar STAGE, cut it into PIECE-sized parts PIECES/p00, p01, ..., and write
# their count to PIECES/npieces. scripts/remote/remote.sh puts them back together on the other side.
#
#   bash scripts/remote/pack.sh STAGE_DIR PIECES_DIR [PIECE_SIZE]     # PIECE_SIZE as for split -b
#
# The device runner's call carries at most 64 MiB: the repository's tracked files and one piece together. Without a
# PIECE_SIZE the pieces take what the tracked files leave, less 2 MiB (session 37: the released checkpoints had grown
# to 39 MB, and the fixed 29M pieces of sessions 30-36 no longer fit a call).
set -euo pipefail
STAGE=${1:?stage folder}; PIECES=${2:?pieces folder}; SIZE=${3:-}
if [ -z "$SIZE" ]; then
  tracked=$(cd "$(dirname "$0")/../.." && { git ls-files -z 2>/dev/null || true; } | du -cb --files0-from=- | tail -1 | cut -f1)
  SIZE=$(( (64 * 1024 * 1024 - tracked) / 1024 / 1024 - 2 ))M
  [ "${SIZE%M}" -ge 4 ] || { echo "pack.sh: the tracked files ($tracked bytes) leave no room for a piece" >&2; exit 2; }
fi
[ -d "$STAGE" ] || { echo "pack.sh: $STAGE is not a folder" >&2; exit 2; }
# a call carries every file of the repository that git does not ignore: pieces there must be ignored (session 38: a
# fresh checkout had lost the local exclude that ignored .gpu/, now in .gitignore)
root=$(cd "$(dirname "$0")/../.." && pwd -P); abs=$(realpath -m "$PIECES")
if [ -e "$root/.git" ] && [[ "$abs/" == "$root/"* ]] && ! git -C "$root" check-ignore -q "$abs/p00"; then
  echo "pack.sh: $PIECES is inside the repository and git does not ignore it, so every device call would carry" \
       "the pieces: put them under .gpu/ (ignored) or ignore the folder" >&2
  exit 2
fi
mkdir -p "$PIECES"; rm -f "$PIECES"/p[0-9][0-9] "$PIECES/npieces"
tar -cf - -C "$STAGE" . | split -b "$SIZE" -d -a 2 - "$PIECES/p"
ls "$PIECES" | grep -c '^p[0-9][0-9]$' > "$PIECES/npieces"
echo "$(cat "$PIECES/npieces") pieces of at most $SIZE in $PIECES ($(du -sh "$STAGE" | cut -f1) staged)"
