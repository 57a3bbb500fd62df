# Sourced by scripts/train_asr_release.sh and scripts/make_encoder_lora_corpora.sh: the corpus commands both run, kept
# in one place so that both make the same seeded clips. The caller sets MM (the mmlora command) and WORKERS first.
NV=rhvoice:alan,rhvoice:bdl,rhvoice:slt,piper:joe  # the natural training voices (rhvoice:clb is held out for natt*)
# stage 4's options for the natural corpora (GPU runs 9 and 10 onwards): audio only, no noisy copies
NAT9=(--n-val 0 --n-test 0 --audio-format opus --no-video --max-words 16 --noisy-splits '' --workers "$WORKERS"
      --text-weights wordnet=0.85,fortunes=0.15)
ex9() { echo "$1/st/val.jsonl,$1/st/test.jsonl,$1/natt9/test.jsonl,$1/nv9/test.jsonl"; }  # DATA: stage 4's held-out text
corpus_st() {  # DATA [more options, e.g. --no-video]: the seed-1 corpus (3,400 training clips, held-out val/test voices)
  [ -f "$1/st/train.jsonl" ] || nice -n 10 $MM make-speech-corpus --out "$1/st" --seed 1 --n-train 3400 --n-val 150 \
      --n-test 300 --max-words 16 --audio-format opus --noisy-splits test --workers "$WORKERS" "${@:2}"
}
corpora_stage4() {  # DATA: held-out natt9 (rhvoice:clb) and nv9 (unseen sentences), natural n9 / n10
  local d=$1
  [ -f "$d/natt9/test.jsonl" ] || $MM make-speech-corpus --out "$d/natt9" --seed 33 --n-train 0 "${NAT9[@]}" \
      --n-test 200 --voices rhvoice:clb --test-voices rhvoice:clb --exclude-text "$d/st/val.jsonl,$d/st/test.jsonl"
  [ -f "$d/nv9/test.jsonl" ] || $MM make-speech-corpus --out "$d/nv9" --seed 35 --n-train 0 "${NAT9[@]}" \
      --n-test 120 --voices $NV --test-voices $NV --engine-weights rhvoice=0.75,piper=0.25 \
      --exclude-text "$d/st/val.jsonl,$d/st/test.jsonl,$d/natt9/test.jsonl"
  [ -f "$d/n9/train.jsonl" ] || $MM make-speech-corpus --out "$d/n9" --seed 31 --n-train 6000 "${NAT9[@]}" \
      --voices $NV --engine-weights rhvoice=0.75,piper=0.25 --exclude-text "$(ex9 "$d")"
  [ -f "$d/n10/train.jsonl" ] || $MM make-speech-corpus --out "$d/n10" --seed 41 --n-train 7000 "${NAT9[@]}" \
      --voices $NV --engine-weights rhvoice=0.75,piper=0.25 --exclude-text "$(ex9 "$d"),$d/n9/train.jsonl"
}
