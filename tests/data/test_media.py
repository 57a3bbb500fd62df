"""Media decoding: audio resampled to 16 kHz mono, video frames picked at 25 fps, images; clear errors."""
from __future__ import annotations

import math

import av
import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from mmlora.data.media import (AudioConfig, MediaError, VideoConfig, frame_indices, load_audio, load_image, load_video,
                               split_at_pauses)


def test_stereo_44k1_becomes_16k_mono_sine(tmp_path):
    sr, f0, n = 44100, 440.0, 44100
    t = np.arange(n) / sr
    left, right = 0.6 * np.sin(2 * np.pi * f0 * t), 0.3 * np.sin(2 * np.pi * f0 * t)
    sf.write(tmp_path / "a.wav", np.stack([left, right], 1).astype(np.float32), sr, subtype="FLOAT")
    wav = load_audio(tmp_path / "a.wav")
    assert wav.dtype == torch.float32 and wav.dim() == 1
    assert wav.numel() == math.ceil(n * 16000 / sr)
    t16 = torch.arange(wav.numel(), dtype=torch.float64) / 16000
    expect = 0.45 * torch.sin(2 * math.pi * f0 * t16)  # channel mean, same tone on the 16 kHz grid
    inner = slice(200, -200)  # the resampling filter's edges aside
    assert (wav[inner].double() - expect[inner]).abs().max() < 5e-3
    short = load_audio(tmp_path / "a.wav", AudioConfig(max_seconds=0.25))
    assert short.numel() == 4000 and torch.equal(short, wav[:4000])


def test_16k_flac_is_read_exactly(tmp_path):
    pcm = (np.random.default_rng(0).integers(-20000, 20000, 8000)).astype(np.int16)
    sf.write(tmp_path / "b.flac", pcm, 16000, subtype="PCM_16")
    wav = load_audio(tmp_path / "b.flac")
    assert torch.equal(wav, torch.from_numpy(pcm.astype(np.float32) / 32768))


def test_audio_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        load_audio(tmp_path / "missing.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(MediaError, match=r"empty\.wav: empty file"):
        load_audio(tmp_path / "empty.wav")
    (tmp_path / "junk.wav").write_bytes(b"RIFF not really a wave file" * 10)
    with pytest.raises(MediaError, match=r"junk\.wav: cannot decode audio"):
        load_audio(tmp_path / "junk.wav")
    sf.write(tmp_path / "nan.wav", np.array([0.0, np.nan, 0.1], np.float32), 16000, subtype="FLOAT")
    with pytest.raises(MediaError, match=r"nan\.wav: audio contains NaN"):
        load_audio(tmp_path / "nan.wav")


def write_video(path, n_frames: int, fps: int, w: int = 32, h: int = 24):
    """Lossless (FFV1) clip whose frame i is the solid gray level 4·i."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "bgr0"
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(np.full((h, w, 3), 4 * i, np.uint8), format="rgb24")
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def test_video_30fps_is_resampled_to_25fps(tmp_path):
    write_video(tmp_path / "v.mkv", 60, 30)  # 2.0 s
    frames = load_video(tmp_path / "v.mkv")
    assert frames.shape == (50, 24, 32, 3) and frames.dtype == torch.uint8
    src = [int(math.floor(j * 30 / 25 + 1e-6)) for j in range(50)]  # frame shown at t = j / 25
    assert frames[:, 0, 0, 0].tolist() == [4 * i for i in src]
    small = load_video(tmp_path / "v.mkv", VideoConfig(width=16, height=12, max_seconds=1.0))
    assert small.shape == (25, 12, 16, 3) and torch.equal(small[:, 5, 7, 1], frames[:25, 0, 0, 1])  # solid frames
    assert load_video(tmp_path / "v.mkv", VideoConfig(width=8)).shape == (50, 6, 8, 3)  # aspect kept
    write_video(tmp_path / "w.mkv", 10, 25)
    assert load_video(tmp_path / "w.mkv")[:, 0, 0, 0].tolist() == [4 * i for i in range(10)]


def test_frame_indices():
    assert frame_indices(60, 30.0, 25.0).tolist() == [int(j * 1.2 + 1e-6) for j in range(50)]
    assert frame_indices(10, 25.0, 25.0).tolist() == list(range(10))
    assert frame_indices(20, 50.0, 25.0).tolist() == list(range(0, 20, 2))
    assert frame_indices(1, 25.0, 25.0).tolist() == [0]
    assert frame_indices(100, 25.0, 25.0, max_seconds=1.0).tolist() == list(range(25))


def test_video_and_image_errors_name_the_file(tmp_path):
    (tmp_path / "junk.mp4").write_bytes(b"\x00\x01 definitely not a video" * 50)
    with pytest.raises(MediaError, match=r"junk\.mp4: cannot decode video"):
        load_video(tmp_path / "junk.mp4")
    with pytest.raises(FileNotFoundError, match="video file not found: .*nope.mp4"):
        load_video(tmp_path / "nope.mp4")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(MediaError, match=r"junk\.png: cannot decode image"):
        load_image(tmp_path / "junk.png")


def test_image_rgba_to_rgb(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (5, 7, 4), dtype=np.uint8)
    Image.fromarray(arr, "RGBA").save(tmp_path / "i.png")
    img = load_image(tmp_path / "i.png")
    assert img.shape == (5, 7, 3) and img.dtype == torch.uint8
    assert torch.equal(img, torch.from_numpy(np.array(Image.fromarray(arr, "RGBA").convert("RGB"))))


def test_split_at_pauses_cuts_in_the_silences_and_loses_nothing():
    sr = 16000
    rng = np.random.default_rng(0)
    parts, gaps = [], []
    for k in range(8):  # 1.1-1.6 s of "speech" (noise), then 0.3 s of silence
        parts.append(torch.from_numpy(rng.uniform(-0.5, 0.5, int(sr * (1.1 + 0.07 * k))).astype(np.float32)))
        start = sum(p.numel() for p in parts)
        parts.append(torch.zeros(int(0.3 * sr)))
        gaps.append((start, start + int(0.3 * sr)))
    wav = torch.cat(parts)
    limit = int(4.0 * sr)  # searched: 2 s around each cut, longer than any speech part and the pause after it
    pieces = split_at_pauses(wav, limit, sr, search_s=2.0)
    assert len(pieces) >= 4 and all(0 < p.numel() <= limit for p in pieces)
    assert torch.equal(torch.cat(pieces), wav)
    cuts = np.cumsum([p.numel() for p in pieces])[:-1]
    assert all(any(a <= c < b for a, b in gaps) for c in cuts), (cuts, gaps)
    assert split_at_pauses(wav[:limit], limit, sr)[0].numel() == limit  # within the limit: whole
    with pytest.raises(ValueError, match="1-D"):
        split_at_pauses(torch.zeros(2, 10), 5)


def test_split_at_pauses_leaves_no_sliver_of_a_recording_just_over_the_limit():
    # 6.05 s: speech, a pause at 2.8-3.1 s, speech to 5.5 s, then 0.55 s of trailing silence; limit 6 s.
    # Cutting at the quietest point before the limit gave 5.99 + 0.06 s, and the 60 ms piece was decoded on its own.
    sr = 16000
    rng = np.random.default_rng(1)
    speech = lambda s: torch.from_numpy(rng.uniform(-0.5, 0.5, int(sr * s)).astype(np.float32))  # noqa: E731
    pause = speech(0.3) * 0.002  # a pause between words is quiet, the digital silence at the end is quieter
    wav = torch.cat([speech(2.8), pause, speech(2.4), torch.zeros(int(0.55 * sr))])
    pieces = split_at_pauses(wav, 6 * sr, sr)
    assert len(pieces) == 2 and torch.equal(torch.cat(pieces), wav)
    assert int(2.8 * sr) <= pieces[0].numel() < int(3.1 * sr)  # in the pause near the middle, not in the tail
    # any length: no piece longer than the limit, none shorter than a quarter of it, nothing lost
    for seconds in (6.01, 7.4, 12.05, 13.0, 17.5, 30.2):
        x = torch.cat([wav] * 6)[: int(seconds * sr)]
        sizes = [p.numel() for p in split_at_pauses(x, 6 * sr, sr)]
        assert max(sizes) <= 6 * sr and min(sizes) >= 6 * sr // 4 and sum(sizes) == x.numel(), (seconds, sizes)
