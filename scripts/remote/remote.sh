#!/usr/bin/env bash
# The remote side of scripts/remote/pack.sh: put the pieces back together, start a job detached, watch it, collect it.
# WORK (default /root/mmlora_remote) survives between calls as long as the machine does; the job keeps running
# between calls (setsid), so a call can end while training goes on.
#
#   bash scripts/remote/remote.sh put PIECES/pNN [JOB.sh]  # append piece NN (in order; a repeat is ignored); after the
#                                                          # last one unpack into WORK and start JOB.sh there, detached
#   bash scripts/remote/remote.sh wait SECONDS             # until WORK/DONE exists or SECONDS pass; tails of WORK/log/*
#                                                          # (exit 3 at once where no job was started: a fresh machine)
#   bash scripts/remote/remote.sh collect OUT_DIR          # WORK/res and WORK/log -> OUT_DIR/res.tgz
#
# The job runs with WORK as its working directory and the caller's repository in $REPO; it writes its logs to
# WORK/log, its results to WORK/res and touches WORK/DONE at the end. Set OMP_NUM_THREADS in it when it starts
# several processes: torch takes one thread per core in each, and a few jobs on 16 cores then run 5x slower.
set -euo pipefail
WORK=${WORK:-/root/mmlora_remote}
# a machine given back between calls comes back bare: waiting there for a job's DONE would spend the whole wait
if [ "${1:-}" = wait ] && [ ! -e "$WORK/job.sh" ]; then
  echo "remote.sh: no job in $WORK: a fresh machine (the previous one was given back); send the pieces again" >&2; exit 3
fi
mkdir -p "$WORK/got" "$WORK/log" "$WORK/res"
tails() {
  for f in "$WORK"/log/*.log; do [ -f "$f" ] && { echo "== $(basename "$f")"; tail -n "${TAILN:-4}" "$f" | cut -c1-300; }; done
  return 0
}
case "${1:-}" in
  put)
    piece=${2:?piece file}; job=${3:-}; name=$(basename "$piece"); dir=$(dirname "$piece")
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
      if [ -n "$job" ]; then
        cp "$job" "$WORK/job.sh"
        REPO=$(pwd) setsid nohup bash -c 'cd "$0" && bash job.sh' "$WORK" > "$WORK/log/job.log" 2>&1 < /dev/null &
        echo "started $job (log: $WORK/log/job.log)"
      fi
    fi ;;
  wait)
    left=${2:?seconds}; while [ "$left" -gt 0 ] && [ ! -e "$WORK/DONE" ]; do sleep 5; left=$((left - 5)); done
    [ -e "$WORK/DONE" ] && echo "DONE" || echo "still running"; tails ;;
  collect)
    out=${2:?output folder}; mkdir -p "$out"; tar -czf "$out/res.tgz" -C "$WORK" res log; ls -la "$out/res.tgz" ;;
  *) sed -n '2,12p' "$0"; exit 2 ;;
esac
