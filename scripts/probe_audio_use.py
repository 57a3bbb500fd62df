"""Does a trained speech model use its audio? Loss on a batch with its own audio, with the audio
rotated between samples, and with silence (lower = better; equal losses = audio ignored).

    python scripts/probe_audio_use.py MODEL_DIR tests/data/speech/test.jsonl [N]
"""
import sys

import torch

from mmlora.data.collate import collate_samples
from mmlora.pipelines import load_pipeline
from mmlora.tasks.speech import SpeechDataset, read_manifest


def main(argv):
    model_dir, manifest = argv[0], argv[1]
    n = int(argv[2]) if len(argv) > 2 else 6
    m = load_pipeline(model_dir, device="cpu", dtype="float32").model
    recs = read_manifest(manifest)[:n]
    ds = SpeechDataset(recs, ("audio",), m.pipeline_info.get("instruction", "Transcribe the speech."))
    samples = [ds[i] for i in range(len(recs))]
    variants = {
        "own audio": samples,
        "rotated audio": [dict(s, audios=samples[(i + 1) % len(samples)]["audios"]) for i, s in enumerate(samples)],
        "silence": [dict(s, audios=[s["audios"][0] * 0]) for s in samples],
    }
    with torch.no_grad():
        for name, batch in variants.items():
            print(f"{name:14s} loss {float(m(collate_samples(batch, m.prompts))['loss']):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
