# Sourced by the experiment scripts (train_grid.sh, asr_encoder_lora.sh): named trainings that a time limit may stop.
# The caller sets MM (the mmlora command), OUT (the run folder), JOBS (the names to run), C (the overrides every
# training shares) and EXTRA (the command line's overrides, last).
want() { [[ " $JOBS " == *" $1 "* ]]; }
best() { [ -d "$OUT/$1/best/model" ] && echo "$OUT/$1/best/model" || echo "$OUT/$1/final/model"; }
train_job() {  # NAME RECIPE [overrides]: recipes/RECIPE.yaml into OUT/NAME, unless done or stopped before
  local name=$1 recipe=$2; shift 2
  want "$name" || return 0
  [ -d "$OUT/$name/final/model" ] || [ -e "$OUT/$name/STOPPED" ] || $MM train "recipes/$recipe.yaml" "${C[@]}" "$@" \
      train.output_dir="$OUT/$name" "${EXTRA[@]}" || {
    local rc=$?  # 3: stopped by SIGTERM (a time limit), checkpoint written: evaluate its best weights so far
    [ $rc -eq 3 ] && touch "$OUT/$name/STOPPED" && echo "$name stopped early: evaluating its best checkpoint" || exit $rc
  }
}
