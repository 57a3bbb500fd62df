#!/usr/bin/env bash
# The remote side of scripts/remote/pack.sh: put the pieces back together, start a job detached, watch it, collect it.
# WORK (default /root/mmlora_remote) survives between calls as long as the machine does; the job keeps running
# between calls (setsid), so a call can end while training goes on.
#
#   bash scripts/remote/remote.sh put PIECES/pNN [JOB.sh]  # append piece NN (in order; a repeat is ignored); after the
#                                                          # last one unpack into WORK and start JOB.sh there, detached
#   bash scripts/remote/remote.sh start JOB.sh             # start JOB.sh in WORK, detached, once every piece is there
#                                                          # and unpacked (session 69: pieces put by calls that carry
#                                                          # less, the job by a call with the whole repository)
#   bash scripts/remote/remote.sh wait SECONDS             # until WORK/DONE exists or SECONDS pass; tails of WORK/log/*
#                                                          # (exit 3 at once where no job was started: a fresh machine)
#   bash scripts/remote/remote.sh ship OUT_DIR [FOLDER ...] # what is there so far, for a call's $OUT: the small files
#                                                          # (< 2 MB) of SMALL (default "log res") -> OUT_DIR/state.tgz,
#                                                          # and each FOLDER (relative to WORK, e.g. out/E1/best) that is
#                                                          # new or changed since it was last queued, as PIECE-sized parts
#                                                          # NAME.SIG.NN-of-MM; as many queued parts as one call brings
#                                                          # back (7 files, MAXBYTES, 60 MiB), the rest in the next call;
#                                                          # also each folder a job listed in WORK/ship_also (one a line,
#                                                          # e.g. a lip reader that a later part starts from), so that a
#                                                          # machine lost afterwards need not train it again
#   bash scripts/remote/remote.sh join DEST SRC_DIR ...    # here: gather the parts from the calls' folders into DEST/parts
#                                                          # and unpack each complete set into DEST/NAME.SIG/
#
# The job runs with WORK as its working directory and the caller's repository in $REPO; it writes its logs to
# WORK/log, its results to WORK/res and touches WORK/DONE at the end. Set OMP_NUM_THREADS in it when it starts
# several processes: torch takes one thread per core in each, and a few jobs on 16 cores then run 5x slower.
set -euo pipefail
WORK=${WORK:-/root/mmlora_remote}
if [ "${1:-}" = join ]; then  # runs here, not on the machine: touches no WORK
  dest=${2:?destination folder}; shift 2; mkdir -p "$dest/parts"
  for src in "$@"; do find "$src" -maxdepth 1 -type f -name '*.[0-9][0-9]-of-[0-9][0-9]' -exec cp -n {} "$dest/parts/" \;; done
  for first in "$dest"/parts/*.00-of-[0-9][0-9]; do
    [ -e "$first" ] || continue
    base=$(basename "$first"); set_=${base%.00-of-*}; n=${base##*-of-}; n=$((10#$n))
    [ -d "$dest/$set_" ] && { echo "$set_: unpacked before"; continue; }
    have=$(ls "$dest/parts" | grep -c "^$set_\.[0-9][0-9]-of-") || true
    [ "$have" -eq "$n" ] || { echo "$set_: $have of $n parts so far"; continue; }
    mkdir -p "$dest/$set_.tmp"
    cat "$dest/parts/$set_".[0-9][0-9]-of-* | tar -xf - -C "$dest/$set_.tmp" && mv "$dest/$set_.tmp" "$dest/$set_" \
      && echo "$set_: unpacked into $dest/$set_" || { echo "$set_: the parts do not make a whole archive" >&2; exit 4; }
  done
  exit 0
fi
# a machine given back between calls comes back bare: waiting there for a job's DONE would spend the whole wait
if [ "${1:-}" = wait ] && [ ! -e "$WORK/job.sh" ]; then
  echo "remote.sh: no job in $WORK: a fresh machine (the previous one was given back); send the pieces again" >&2; exit 3
fi
mkdir -p "$WORK/got" "$WORK/log" "$WORK/res"
tails() {
  for f in "$WORK"/log/*.log; do [ -f "$f" ] && { echo "== $(basename "$f")"; tail -n "${TAILN:-4}" "$f" | cut -c1-300; }; done
  return 0
}
start_job() {  # JOB.sh: copied into WORK and started there, detached, with this call's repository as $REPO
  cp "$1" "$WORK/job.sh"
  REPO=$(pwd) setsid nohup bash -c 'cd "$0" && bash job.sh' "$WORK" > "$WORK/log/job.log" 2>&1 < /dev/null &
  echo "started $1 (log: $WORK/log/job.log)"
}
case "${1:-}" in
  put)
    piece=${2:?piece file}; job=${3:-}; name=$(basename "$piece"); dir=$(dirname "$piece")
    [ -f "$dir/npieces" ] || {  # session 59: a call that carried the piece alone
      echo "remote.sh: $dir/npieces is not here: carry it with every piece (carry [\"$piece\", \"$dir/npieces\"])" >&2
      exit 2; }
    need=$(cat "$dir/npieces"); have=$(ls "$WORK/got" | wc -l)
    if [ -e "$WORK/got/$name" ]; then echo "$name: already there ($have / $need)"; exit 0; fi
    if [ "$name" != "$(printf 'p%02d' "$have")" ]; then
      echo "remote.sh: $name is out of order: $have piece(s) there, the next is $(printf 'p%02d' "$have")" >&2; exit 2
    fi
    # cut off whatever an interrupted earlier append left behind: the archive holds exactly the pieces marked got
    size=0; for m in "$WORK"/got/p*; do [ -f "$m" ] && size=$((size + $(cat "$m"))); done
    touch "$WORK/all.tar"; truncate -s "$size" "$WORK/all.tar"
    cat "$piece" >> "$WORK/all.tar"; stat -c %s "$piece" > "$WORK/got/$name"; have=$((have + 1)); echo "$name: $have / $need"
    if [ "$have" -eq "$need" ]; then
      tar -xf "$WORK/all.tar" -C "$WORK" && rm "$WORK/all.tar"; echo "unpacked into $WORK"
      [ -z "$job" ] || start_job "$job"
    fi ;;
  start)
    job=${2:?job script}
    if [ -e "$WORK/all.tar" ] || [ -z "$(ls "$WORK/got")" ]; then  # got/ was made above: empty on a fresh machine
      echo "remote.sh: the pieces are not all there and unpacked in $WORK: put them first" >&2; exit 2
    fi
    if [ -e "$WORK/job.sh" ]; then echo "remote.sh: a job was started in $WORK before" >&2; exit 2; fi
    start_job "$job" ;;
  wait)
    left=${2:?seconds}; while [ "$left" -gt 0 ] && [ ! -e "$WORK/DONE" ]; do sleep 5; left=$((left - 5)); done
    [ -e "$WORK/DONE" ] && echo "DONE" || echo "still running"; tails ;;
  ship)
    out=${2:?output folder}; shift 2; mkdir -p "$out" "$WORK/ship/q" "$WORK/ship/sig"
    (cd "$WORK" && { find ${SMALL:-log res} -type f -size -2M 2>/dev/null || true; } | tar -czf "$out/state.tgz" -T -)
    sig() { (cd "$WORK" && find "$1" -type f -printf '%P %s %T@\n' | sort | md5sum | cut -c1-8); }  # FOLDER's files
    also=(); [ ! -f "$WORK/ship_also" ] || mapfile -t also < <(grep -v '^[[:space:]]*$' "$WORK/ship_also")
    for f in "$@" "${also[@]}"; do  # queue a folder's new contents (a second look after tar: not rewritten meanwhile)
      [ -d "$WORK/$f" ] || continue
      name=$(echo "$f" | tr -c 'A-Za-z0-9_\n' '_'); s1=$(sig "$f")
      [ "$(cat "$WORK/ship/sig/$name" 2>/dev/null)" = "$s1" ] && continue
      tar -cf "$WORK/ship/t.tar" -C "$WORK" "$f" 2>/dev/null && [ "$(sig "$f")" = "$s1" ] || { echo "$f: changing, next call"; continue; }
      rm -f "$WORK/ship/q/$name".*  # an older version still queued is no longer wanted
      split -b "${PIECE:-15M}" -d -a 2 "$WORK/ship/t.tar" "$WORK/ship/t.part."; parts=("$WORK"/ship/t.part.*)
      for ((i = 0; i < ${#parts[@]}; i++)); do
        mv "${parts[i]}" "$WORK/ship/q/$(printf '%s.%s.%02d-of-%02d' "$name" "$s1" "$i" "${#parts[@]}")"
      done
      rm -f "$WORK/ship/t.tar"; echo "$s1" > "$WORK/ship/sig/$name"; echo "queued $f ($s1, ${#parts[@]} part(s))"
    done
    left=$(( ${MAXBYTES:-62914560} - $(stat -c %s "$out/state.tgz") )); n=0
    for q in $(ls "$WORK/ship/q" | sort); do  # in order, so a set's parts go together
      sz=$(stat -c %s "$WORK/ship/q/$q"); [ $n -lt 7 ] && [ "$sz" -le "$left" ] || break
      cp "$WORK/ship/q/$q" "$out/$q" && rm "$WORK/ship/q/$q"; n=$((n + 1)); left=$((left - sz)); echo "shipped $q"
    done
    echo "ship: state.tgz + $n part(s); $(ls "$WORK/ship/q" | wc -l) left for the next call" ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 2 ;;  # the header
esac
