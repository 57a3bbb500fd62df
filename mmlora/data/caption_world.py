"""Procedural audio-visual caption corpus: a small world of coloured shapes whose events are known.

::

    objects (colour, shape, size) ──▶ timeline of atomic events (appear, move, recolour, grow,
    shrink, collide, leave, background, sound, speak) ──▶ frames (numpy, 25 fps) ──▶ h264 .mp4 (PyAV)
                                                      ──▶ soundtrack (tones + espeak-ng words) ──▶ .flac
                                                      ──▶ captions (caption_grammar) ──▶ manifest.jsonl

Every clip's manifest line holds the exact event list (``"events"``, see ``caption_events.Event``),
so a caption can be scored for what it missed and what it invented (``mmlora score-captions``).
Still images (one frame, objects listed as ``present`` events) form an image-captioning set.

Clip ``i`` is drawn from ``numpy.random.default_rng([seed, i])``: the same seed gives the same
events, captions, audio bytes and decoded frames, and a larger corpus starts with the clips of a
smaller one.

Example (CPU, a few seconds)::

    mmlora make-caption-corpus --out runs/captions --clips 8 --images 8 --size 96 --seed 0
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from .caption_audio import SoundConfig, mix, speak, tone, tts_available, tts_version
from .caption_events import (BACKGROUNDS, COLOURS, CUE_SOUNDS, DIRECTIONS, SHAPES, SIZES, SOUNDS, WORDS,
                             Event, Obj)
from .caption_grammar import GrammarConfig, caption_clip, caption_image


@dataclass(frozen=True)
class WorldConfig:
    """Sizes and rates of the procedural world."""

    size: int = 96                  # frame side in pixels (even, 64..128 is the intended range)
    fps: int = 25                   # frames per second (DESIGN.md: 25)
    min_duration: float = 3.0       # shortest clip [s]
    max_duration: float = 8.0       # longest clip [s]
    max_objects: int = 4            # most objects on screen at once
    max_initial: int = 3            # most objects already there at t=0 (at least 1)
    gap: tuple[float, float] = (0.25, 0.7)  # pause between visual events [s]
    speed: float = 0.35             # motion speed, frame sides per second
    p_cue: float = 0.6              # chance an appear/leave/collide after t=0 makes its cue sound
    audio_rate: float = 0.3         # audible-only events (sounds, words) per second
    p_word: float = 0.5             # share of audible-only events that are spoken words
    max_background_changes: int = 1  # background colour changes per clip


# ----------------------------------------------------------------------------------- simulation
@dataclass
class _Track:
    """One object's life: keyframes (t, x, y, radius) interpolated linearly, colour steps."""

    shape: str
    appear: float
    leave: float
    keys: list[tuple[float, float, float, float]] = field(default_factory=list)
    colours: list[tuple[float, str]] = field(default_factory=list)
    size_name: str = "small"

    def state(self, t: float) -> tuple[float, float, float, str]:
        ks = self.keys
        if t <= ks[0][0]:
            x, y, r = ks[0][1:]
        elif t >= ks[-1][0]:
            x, y, r = ks[-1][1:]
        else:
            j = max(i for i, k in enumerate(ks) if k[0] <= t)
            (t0, x0, y0, r0), (t1, x1, y1, r1) = ks[j], ks[j + 1]
            a = 0.0 if t1 == t0 else (t - t0) / (t1 - t0)
            x, y, r = x0 + a * (x1 - x0), y0 + a * (y1 - y0), r0 + a * (r1 - r0)
        colour = [c for tc, c in self.colours if tc <= t + 1e-9][-1]
        return x, y, r, colour

    def obj(self, t: float) -> Obj:
        """The object's description at time t (colour and size at that instant)."""
        return Obj(self.state(t)[3], self.shape, self.size_name_at(t))

    def size_name_at(self, t: float) -> str:
        r = self.state(t)[2]
        return min(SIZES, key=lambda s: abs(SIZES[s] - r))


@dataclass
class Scene:
    """A simulated clip: object tracks, background steps and the ground-truth events."""

    duration: float
    tracks: list[_Track]
    backgrounds: list[tuple[float, str]]
    events: list[Event]


def _frame_time(t: float, fps: int) -> float:
    return round(t * fps) / fps


def simulate(rng: np.random.Generator, cfg: WorldConfig) -> Scene:
    """Draw one clip's timeline. Positions are in frame-side units (0..1), radii too."""
    fps = cfg.fps
    duration = _frame_time(float(rng.uniform(cfg.min_duration, cfg.max_duration)), fps)
    tracks: list[_Track] = []
    events: list[Event] = []
    used: set[tuple[str, str]] = set()  # (colour, shape) pairs ever used in this clip
    bg = str(rng.choice(list(BACKGROUNDS)))
    backgrounds = [(0.0, bg)]
    events.append(Event("background", value=bg, start=0.0, end=0.0))

    def visible(t: float) -> list[_Track]:
        return [k for k in tracks if k.appear <= t < k.leave]

    def free_pair() -> tuple[str, str] | None:
        pairs = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in used]
        return pairs[int(rng.integers(len(pairs)))] if pairs else None

    def place(t: float, r: float) -> tuple[float, float] | None:
        for _ in range(60):
            x, y = rng.uniform(r + 0.02, 1 - r - 0.02, size=2)
            if all(np.hypot(x - k.state(t)[0], y - k.state(t)[1]) > r + k.state(t)[2] + 0.05 for k in visible(t)):
                return float(x), float(y)
        return None

    def add_object(t: float, cue: bool) -> bool:
        pair = free_pair()
        size_name = str(rng.choice(list(SIZES)))
        pos = place(t, SIZES[size_name]) if pair else None
        if pair is None or pos is None:
            return False
        used.add(pair)
        tr = _Track(pair[1], t, duration + 1.0, [(t, pos[0], pos[1], SIZES[size_name])], [(t, pair[0])], size_name)
        tracks.append(tr)
        snd = CUE_SOUNDS["appear"] if cue else None
        events.append(Event("appear", obj=tr.obj(t), sound=snd, start=t, end=t,
                            modality="audiovisual" if snd else "visual"))
        return True

    for _ in range(int(rng.integers(1, cfg.max_initial + 1))):
        add_object(0.0, cue=False)

    t = _frame_time(float(rng.uniform(*cfg.gap)) + 0.2, fps)
    last = duration - 0.12  # every event ends before this
    n_bg = 0
    while t < duration - 0.6:
        vis = visible(t)
        options: dict[str, float] = {"move": 3.0, "recolour": 1.5, "grow": 1.0, "shrink": 1.0}
        if len(vis) < cfg.max_objects:
            options["appear"] = 2.0
        if len(vis) >= 2:
            options["collide"] = 1.5
            options["leave"] = 1.0
        if n_bg < cfg.max_background_changes:
            options["background"] = 0.6
        names = list(options)
        p = np.array([options[n] for n in names])
        action = names[int(rng.choice(len(names), p=p / p.sum()))]
        end = t
        cue = bool(rng.random() < cfg.p_cue)
        done = False
        if action == "appear":
            done = add_object(t, cue)
        elif action == "background":
            new = str(rng.choice([b for b in BACKGROUNDS if b != backgrounds[-1][1]]))
            backgrounds.append((t, new))
            events.append(Event("background", value=new, start=t, end=t))
            n_bg += 1
            done = True
        elif vis:
            k = vis[int(rng.integers(len(vis)))]
            x, y, r, colour = k.state(t)
            before = k.obj(t)
            if action == "leave":
                k.leave = t
                snd = CUE_SOUNDS["leave"] if cue else None
                events.append(Event("leave", obj=before, sound=snd, start=t, end=t,
                                    modality="audiovisual" if snd else "visual"))
                done = True
            elif action == "move":
                dist = float(rng.uniform(0.18, 0.3))
                dirs = [d for d, (dx, dy) in DIRECTIONS.items()
                        if r + 0.01 <= x + dx * dist <= 1 - r - 0.01 and r + 0.01 <= y + dy * dist <= 1 - r - 0.01]
                end = _frame_time(t + dist / cfg.speed, fps)
                if dirs and end <= last:
                    d = dirs[int(rng.integers(len(dirs)))]
                    dx, dy = DIRECTIONS[d]
                    k.keys += [(t, x, y, r), (end, x + dx * dist, y + dy * dist, r)]
                    events.append(Event("move", obj=before, value=d, start=t, end=end))
                    done = True
            elif action == "recolour":
                choices = [c for c in COLOURS if (c, k.shape) not in used]
                if choices:
                    new = choices[int(rng.integers(len(choices)))]
                    used.add((new, k.shape))
                    k.keys.append((t, x, y, r))
                    k.colours.append((t, new))
                    events.append(Event("recolour", obj=before, value=new, start=t, end=t))
                    done = True
            elif action in ("grow", "shrink"):
                want_from = "small" if action == "grow" else "large"
                target = "large" if action == "grow" else "small"
                r1 = SIZES[target]
                end = _frame_time(t + 0.5, fps)
                if before.size == want_from and r1 + 0.01 <= min(x, y, 1 - x, 1 - y) and end <= last:
                    k.keys += [(t, x, y, r), (end, x, y, r1)]
                    events.append(Event(action, obj=before, start=t, end=end))
                    done = True
            elif action == "collide":
                others = [o for o in vis if o is not k]
                o = others[int(rng.integers(len(others)))]
                ox, oy, orr, _ = o.state(t)
                dist = float(np.hypot(ox - x, oy - y)) - (r + orr)
                end = _frame_time(t + max(dist / cfg.speed, 0.2), fps)
                if dist > 0.04 and end <= last:
                    ux, uy = (ox - x) / np.hypot(ox - x, oy - y), (oy - y) / np.hypot(ox - x, oy - y)
                    k.keys += [(t, x, y, r), (end, x + ux * dist, y + uy * dist, r)]
                    o.keys.append((end, ox, oy, orr))
                    snd = CUE_SOUNDS["collide"] if cue else None
                    events.append(Event("collide", obj=before, other=o.obj(t), sound=snd, start=t, end=end,
                                        modality="audiovisual" if snd else "visual"))
                    done = True
        if done:
            t = _frame_time(end + float(rng.uniform(*cfg.gap)), fps)
        else:
            t = _frame_time(t + 0.2, fps)
    for k in tracks:  # close every track: hold the last state until it leaves
        k.keys.sort(key=lambda kk: kk[0])
    return Scene(duration, tracks, backgrounds, events)


def add_audio_events(scene: Scene, rng: np.random.Generator, cfg: WorldConfig, snd: SoundConfig,
                     voices: list[str]) -> list[tuple[float, np.ndarray]]:
    """Add audible-only events (sounds, spoken words) in gaps of the cue sounds; return placed waveforms."""
    sr = snd.sample_rate
    placed: list[tuple[float, np.ndarray]] = []
    busy: list[tuple[float, float]] = []
    for e in scene.events:
        if e.sound:
            at = e.end if e.action == "collide" else e.start
            y = tone(e.sound, sr)
            placed.append((at, y))
            busy.append((at - 0.1, at + len(y) / sr + 0.1))
    n = int(rng.poisson(cfg.audio_rate * scene.duration))
    for _ in range(n):
        if voices and rng.random() < cfg.p_word:
            word, voice = str(rng.choice(WORDS)), str(rng.choice(voices))
            y, ev = speak(word, voice, snd), Event("speak", value=word, modality="audio")
        else:
            kind = str(rng.choice(SOUNDS))
            y, ev = tone(kind, sr), Event("sound", value=kind, modality="audio")
        length = len(y) / sr
        for _ in range(30):
            at = _frame_time(float(rng.uniform(0.1, max(0.1, scene.duration - length - 0.1))), cfg.fps)
            if all(at + length + 0.1 <= a or at - 0.1 >= b for a, b in busy):
                break
        else:
            continue
        busy.append((at, at + length))
        placed.append((at, y))
        scene.events.append(replace(ev, start=at, end=round(at + length, 3)))
    scene.events.sort(key=lambda e: (e.start, e.end))
    return placed


# ------------------------------------------------------------------------------------ rendering
def shape_mask(shape: str, xx: np.ndarray, yy: np.ndarray, x: float, y: float, r: float) -> np.ndarray:
    """Boolean mask of a shape centred at (x, y) with radius r (all in pixels)."""
    dx, dy = xx - x, yy - y
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) <= 0.85 * r
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= 1.15 * r
    if shape == "triangle":  # apex up; base at +0.75 r
        depth = (dy + r) / (1.75 * r)
        return (dy >= -r) & (dy <= 0.75 * r) & (np.abs(dx) <= depth * r)
    raise ValueError(f"unknown shape {shape!r}")


def render_frame(scene: Scene, t: float, size: int) -> np.ndarray:
    """RGB uint8 frame [size, size, 3] of the scene at time t."""
    bg = ([c for tc, c in scene.backgrounds if tc <= t + 1e-9] or [scene.backgrounds[0][1]])[-1]
    img = np.empty((size, size, 3), np.uint8)
    img[:] = BACKGROUNDS[bg]
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    for k in scene.tracks:
        if k.appear <= t + 1e-9 < k.leave:
            x, y, r, colour = k.state(t)
            img[shape_mask(k.shape, xx, yy, x * size, y * size, r * size)] = COLOURS[colour]
    return img


def rgb_to_yuv420p(img: np.ndarray) -> np.ndarray:
    """RGB uint8 [H, W, 3] → planar yuv420p uint8 [H·3/2, W]: BT.601 limited range (what decoders
    assume for untagged SD video), chroma = mean of each 2×2 block.

    Done in numpy rather than by libswscale, whose rgb24 path reads row padding and so made the
    encoded bytes depend on the process's memory history."""
    x = img.astype(np.float64)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0
    cb = 128.0 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255.0
    cr = 128.0 + (112.0 * r - 93.786 * g - 18.214 * b) / 255.0
    h, w = y.shape

    def sub(c: np.ndarray) -> np.ndarray:
        return c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)).reshape(-1)

    planes = np.concatenate([y.reshape(-1), sub(cb), sub(cr)])
    return np.clip(np.round(planes), 0, 255).astype(np.uint8).reshape(h * 3 // 2, w)


def write_video(path: Path, frames: list[np.ndarray], fps: int) -> None:
    """h264 (libx264, yuv420p, CRF 23, one thread) via PyAV. The same frames always decode to the same
    pictures; the bytes can differ slightly between processes (libx264 internals)."""
    import av

    h, w = frames[0].shape[:2]
    if h % 2 or w % 2:
        raise ValueError(f"{path}: h264 yuv420p needs even frame sides, got {w}x{h}")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": "23", "preset": "medium", "threads": "1"}
        for img in frames:
            frame = av.VideoFrame.from_ndarray(rgb_to_yuv420p(img), format="yuv420p")
            for pkt in stream.encode(frame):
                container.mux(pkt)
        for pkt in stream.encode():
            container.mux(pkt)


# ------------------------------------------------------------------------------------- corpus
@dataclass(frozen=True)
class CorpusConfig:
    """What ``make-caption-corpus`` writes."""

    out: str                        # output folder (manifest.jsonl, images.jsonl, clips/, images/)
    clips: int = 16                 # number of video clips
    images: int = 16                # number of still images
    seed: int = 0                   # master seed
    references: int = 5             # caption paraphrases per clip (the first is the training target)
    audio_format: str = "flac"      # "flac" or "wav" (16-bit PCM either way)
    world: WorldConfig = field(default_factory=WorldConfig)
    sound: SoundConfig = field(default_factory=SoundConfig)
    grammar: GrammarConfig = field(default_factory=GrammarConfig)


CLIP_PROMPT = "<video><audio>Describe everything that happens in this clip, including the sounds."
IMAGE_PROMPT = "<image>Describe this image."


def resolve_voices(snd: SoundConfig) -> tuple[list[str], str]:
    """The voices to use and the manifest's ``tts`` tag; warns when speech is unavailable."""
    if snd.tts == "none":
        return [], "none"
    if tts_available():
        return list(snd.voices), "espeak-ng"
    if snd.tts == "espeak-ng":
        raise RuntimeError("tts='espeak-ng' but the espeak-ng program is not installed; "
                           "run scripts/setup_caption_tools.sh or pass --tts none")
    warnings.warn("espeak-ng not found: clips get tones only, no spoken words "
                  "(install it with scripts/setup_caption_tools.sh)", stacklevel=2)
    return [], "none"


def make_clip(index: int, cfg: CorpusConfig, voices: list[str]) -> tuple[Scene, np.ndarray, list[np.ndarray]]:
    """Simulate clip ``index``: scene (with all events), soundtrack and frames."""
    rng = np.random.default_rng([cfg.seed, index])
    scene = simulate(rng, cfg.world)
    placed = add_audio_events(scene, rng, cfg.world, cfg.sound, voices)
    audio = mix(scene.duration, placed, cfg.sound)
    n_frames = int(round(scene.duration * cfg.world.fps))
    frames = [render_frame(scene, i / cfg.world.fps, cfg.world.size) for i in range(n_frames)]
    return scene, audio, frames


def clip_record(index: int, scene: Scene, cfg: CorpusConfig, tts: str) -> dict:
    """The manifest line of clip ``index`` (media paths relative to the manifest's folder)."""
    rng = random.Random(f"{cfg.seed}-{index}-captions")
    refs = [caption_clip(scene.events, "detailed", rng, cfg.grammar).text for _ in range(max(1, cfg.references))]
    cid = f"clip_{index:05d}"
    ext = cfg.audio_format
    return {
        "id": cid,
        "messages": [{"role": "user", "content": CLIP_PROMPT}, {"role": "assistant", "content": refs[0]}],
        "videos": [f"clips/{cid}.mp4"], "audios": [f"clips/{cid}.{ext}"], "images": [],
        "events": [e.to_json() for e in scene.events],
        "references": refs,
        "captions": {lvl: caption_clip(scene.events, lvl, rng, cfg.grammar).text for lvl in ("brief", "visual")},
        "duration": scene.duration, "fps": cfg.world.fps, "size": cfg.world.size,
        "sample_rate": cfg.sound.sample_rate, "tts": tts,
    }


def make_image(index: int, cfg: CorpusConfig) -> tuple[np.ndarray, list[Event]]:
    """A still image: 1..4 non-overlapping objects on a background; events are ``present`` + ``background``."""
    rng = np.random.default_rng([cfg.seed, 1_000_000 + index])
    bg = str(rng.choice(list(BACKGROUNDS)))
    scene = Scene(1.0, [], [(0.0, bg)], [Event("background", value=bg)])
    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    order = rng.permutation(len(pairs))
    for j in order[: int(rng.integers(1, 5))]:
        colour, shape = pairs[j]
        size_name = str(rng.choice(list(SIZES)))
        r = SIZES[size_name]
        for _ in range(60):
            x, y = (float(v) for v in rng.uniform(r + 0.02, 1 - r - 0.02, size=2))
            if all(np.hypot(x - k.keys[0][1], y - k.keys[0][2]) > r + k.keys[0][3] + 0.04 for k in scene.tracks):
                scene.tracks.append(_Track(shape, 0.0, 2.0, [(0.0, x, y, r)], [(0.0, colour)], size_name))
                scene.events.append(Event("present", obj=Obj(colour, shape, size_name)))
                break
    return render_frame(scene, 0.0, cfg.world.size), scene.events


def write_audio(path: Path, audio: np.ndarray, sr: int) -> None:
    import soundfile as sf

    sf.write(str(path), audio, sr, subtype="PCM_16", format=path.suffix[1:].upper())


def make_corpus(cfg: CorpusConfig) -> dict:
    """Write the corpus; return the summary that also goes to ``corpus.json``."""
    from PIL import Image

    out = Path(cfg.out)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir(parents=True, exist_ok=True)
    if cfg.audio_format not in ("flac", "wav"):
        raise ValueError(f"audio_format must be 'flac' or 'wav', got {cfg.audio_format!r}")
    voices, tts = resolve_voices(cfg.sound)
    n_events = 0
    with open(out / "manifest.jsonl", "w") as f:
        for i in range(cfg.clips):
            scene, audio, frames = make_clip(i, cfg, voices)
            rec = clip_record(i, scene, cfg, tts)
            write_video(out / rec["videos"][0], frames, cfg.world.fps)
            write_audio(out / rec["audios"][0], audio, cfg.sound.sample_rate)
            f.write(json.dumps(rec) + "\n")
            n_events += len(scene.events)
    with open(out / "images.jsonl", "w") as f:
        for i in range(cfg.images):
            img, events = make_image(i, cfg)
            iid = f"img_{i:05d}"
            Image.fromarray(img).save(out / "images" / f"{iid}.png", optimize=True)
            rng = random.Random(f"{cfg.seed}-{i}-image")
            refs = [caption_image(events, rng, cfg.grammar).text for _ in range(max(1, cfg.references))]
            rec = {"id": iid,
                   "messages": [{"role": "user", "content": IMAGE_PROMPT}, {"role": "assistant", "content": refs[0]}],
                   "images": [f"images/{iid}.png"], "videos": [], "audios": [],
                   "events": [e.to_json() for e in events], "references": refs, "size": cfg.world.size,
                   "objects": [e.obj.to_json() for e in events if e.obj is not None]}
            f.write(json.dumps(rec) + "\n")
    summary = {"clips": cfg.clips, "images": cfg.images, "events": n_events, "tts": tts, "voices": voices,
               "tts_version": tts_version() if tts != "none" else None, "config": asdict(cfg)}
    (out / "corpus.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    """``mmlora make-caption-corpus``: write clips, images and manifests; print a one-line summary."""
    p = argparse.ArgumentParser(prog="mmlora make-caption-corpus", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--clips", type=int, default=16, help="number of video clips")
    p.add_argument("--images", type=int, default=16, help="number of still images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=96, help="frame side in pixels (even)")
    p.add_argument("--min-duration", type=float, default=3.0, help="seconds")
    p.add_argument("--max-duration", type=float, default=8.0, help="seconds")
    p.add_argument("--max-objects", type=int, default=4)
    p.add_argument("--references", type=int, default=5, help="caption paraphrases per clip")
    p.add_argument("--audio-format", choices=("flac", "wav"), default="flac")
    p.add_argument("--tts", choices=("auto", "espeak-ng", "none"), default="auto",
                   help="spoken words: auto = espeak-ng when installed, else tones only with a warning")
    p.add_argument("--voices", default=",".join(SoundConfig.voices),
                   help="comma-separated espeak-ng voices the spoken words are drawn from")
    a = p.parse_args(argv)
    if a.size % 2 or a.size < 16:
        p.error(f"--size must be even and >= 16, got {a.size}")
    if not 0 < a.min_duration <= a.max_duration:
        p.error("need 0 < --min-duration <= --max-duration")
    world = WorldConfig(size=a.size, min_duration=a.min_duration, max_duration=a.max_duration,
                        max_objects=a.max_objects)
    cfg = CorpusConfig(out=a.out, clips=a.clips, images=a.images, seed=a.seed, references=a.references,
                       audio_format=a.audio_format, world=world,
                       sound=SoundConfig(tts=a.tts, voices=tuple(v for v in a.voices.split(",") if v)))
    summary = make_corpus(cfg)
    print(json.dumps({k: summary[k] for k in ("clips", "images", "events", "tts")} | {"out": a.out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
