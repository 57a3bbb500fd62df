# Sourced by scripts/remote/stage_lips.sh (here) and scripts/remote/lips_job.sh (on the lent machine, from its copy of
# the repository): the corpus of each lip pool, as scripts/train_grid.sh names it (POOL=gridwide / freewords with
# SLOT_WORDS=300; POOL=open).
declare -A CORPUS=([gridwide]=gw300 [freewords]=fw300 [open]=op12)
