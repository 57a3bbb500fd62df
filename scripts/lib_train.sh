# Sourced by the experiment scripts (train_grid.sh, asr_encoder_lora.sh): named trainings that a time limit may stop,
# their evaluations into OUT/eval/TAG.json (ev; ev_many, ev_sets: one model on several manifests and conditions in one
# call; all through evaluate) and paired comparisons of two of those. The caller sets MM (the mmlora command), OUT
# (the run folder), JOBS (the names to run), C (the overrides every training shares) and EXTRA (the command line's
# overrides, last).
want() { [[ " $JOBS " == *" $1 "* ]]; }
last() {  # NAME: the last weights a training left: final/model, else (stopped by a time limit) the latest checkpoint's
  # model/; nothing where there are none
  local d n top=-1
  [ -d "$OUT/$1/final/model" ] && { echo "$OUT/$1/final/model"; return 0; }
  for d in "$OUT/$1"/checkpoint-[0-9]*/model; do
    [ -d "$d" ] || continue; n=${d%/model}; n=${n##*/checkpoint-}; [ "$n" -gt "$top" ] && top=$n
  done
  [ "$top" -lt 0 ] || echo "$OUT/$1/checkpoint-$top/model"
}
best() {  # NAME: the weights to evaluate: best/ (validation's choice), else last's (a training stopped before its first
  # validation, run 25's GAVL: the latest checkpoint); else final/model, whose absence evaluate names
  local l
  [ -d "$OUT/$1/best/model" ] && { echo "$OUT/$1/best/model"; return; }
  l=$(last "$1"); echo "${l:-$OUT/$1/final/model}"
}
step_of() {  # DIR (a best/, final/ or checkpoint-N/ folder): its training step, from its info.json, else N
  local s
  s=$(sed -n 's/.*"step": *\([0-9]*\).*/\1/p' "$1/info.json" 2>/dev/null | head -n 1)
  [ -n "$s" ] || [[ ! $1 =~ /checkpoint-([0-9]+)/?$ ]] || s=${BASH_REMATCH[1]}
  echo "$s"
}
averaged_of() {  # DIR: the checkpoints its weights are the mean of (info.json's "averaged", train.average_last), as
  # one word; nothing for one step's weights or a checkpoint-N/ (no info.json; the 2>/dev/null goes before the <, which
  # bash reports when the file is missing)
  tr -d ' \n' 2>/dev/null < "$1/info.json" | sed -n 's/.*"averaged":\(\[[^]]*\]\).*/\1/p'
}
same_step() {  # DIR_A DIR_B: both hold the same weights: the same training step (a best/ that is the last weights),
  # or the mean of the same checkpoints (the trainer's last validation reads final/'s mean and names it in best/
  # since session 40; an older best/ did not name it, and is evaluated beside final/: at worst the same weights twice,
  # as run 36's GAOL was)
  local a b
  [ "$(averaged_of "$1")" = "$(averaged_of "$2")" ] || return 1
  a=$(step_of "$1"); b=$(step_of "$2")
  [ -n "$a" ] && [ "$a" = "$b" ]
}
later_last() {  # NAME: last's weights where they are a later step than best/ (worth evaluating too); nothing otherwise
  local l
  l=$(last "$1")
  [ -d "$OUT/$1/best/model" ] && [ -n "$l" ] && ! same_step "$OUT/$1/best" "${l%/model}" && echo "$l"
  return 0
}
train_job() {  # NAME RECIPE [overrides]: recipes/RECIPE.yaml into OUT/NAME, unless done or stopped before
  local name=$1 recipe=$2; shift 2
  want "$name" || return 0
  [ -d "$OUT/$name/final/model" ] || [ -e "$OUT/$name/STOPPED" ] || $MM train "recipes/$recipe.yaml" "${C[@]}" "$@" \
      train.output_dir="$OUT/$name" "${EXTRA[@]}" || {
    local rc=$?  # 3: stopped by SIGTERM (a time limit), checkpoint written: evaluate its best weights so far
    [ $rc -eq 3 ] && touch "$OUT/$name/STOPPED" && echo "$name stopped early: evaluating its best checkpoint" || exit $rc
    [ -d "$OUT/$name/best/model" ] || echo "$name stopped before its first validation: evaluating $(best "$name")"
  }
}
evaluate() {  # MODEL [evaluate args]: `mmlora evaluate` as every experiment script runs it (GPU batch 100), every
  # model with the same search, NUM_BEAMS (default 1, greedy) and CTC_WEIGHT (default 0, off): a saved model's own
  # default differs (the release decodes with 4 beams since session 32 and rescores them with its CTC head since
  # session 36, its trainings' models greedily; GPU run 32 compared them so by mistake)
  $MM evaluate --model "$1" --batch-size 100 --num-beams "${NUM_BEAMS:-1}" --ctc-weight "${CTC_WEIGHT:-0}" "${@:2}"
}
ev() {  # TAG MODEL [evaluate args]: OUT/eval/TAG.json, unless there
  local tag=$1 model=$2; shift 2
  [ -f "$OUT/eval/$tag.json" ] || evaluate "$model" --out "$OUT/eval/$tag.json" "$@" | tail -n 1
}
ev_many() {  # MODEL TAG MANIFEST SNR NOISE TALKERS [TAG ...]: OUT/eval/TAG.json for each report not there yet, in
  # one `mmlora evaluate` call (the model loads once, where each call also pays Python's and CUDA's start), each in
  # its own condition (SNR in dB or none, NOISE babble or white, TALKERS LO,HI: evaluate's per-manifest options)
  local model=$1 args=(); shift
  while [ $# -ge 5 ]; do
    [ -f "$OUT/eval/$1.json" ] || args+=(--manifest "$2" --out "$OUT/eval/$1.json" --snr "$3" --noise "$4"
                                         --noise-talkers "$5")
    shift 5
  done
  [ ${#args[@]} -eq 0 ] || evaluate "$model" "${args[@]}" | grep '^{'
}
ev_sets() {  # PREFIX MODEL TAG MANIFEST [TAG MANIFEST ...]: ev_many of clean PREFIX_TAG reports
  local prefix=$1 model=$2 args=(); shift 2
  while [ $# -ge 2 ]; do args+=("${prefix}_$1" "$2" none babble 3,6); shift 2; done
  ev_many "$model" "${args[@]}"
}
pair() {  # A B: "B - A: {compare-wer JSON}" where both reports exist
  [ -f "$OUT/eval/$1.json" ] && [ -f "$OUT/eval/$2.json" ] || return 0
  echo "$2 - $1: $($MM compare-wer "$OUT/eval/$1.json" "$OUT/eval/$2.json" | tail -n 1)"
}
