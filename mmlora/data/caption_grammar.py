"""Captions of the procedural world, rendered from its event list with paraphrase variety.

Three levels of detail for clips and one for still images:

- ``brief``: one sentence naming every object and the background
  ("A red circle, a small blue square and a green diamond appear on a gray background.");
- ``visual``: every visible event in time order, no sounds (for vision-only models);
- ``detailed``: every event, with the cue sounds of visible events and the audible-only ones
  ("... The red circle slides to the left and then turns yellow. Meanwhile, a voice says "apple".");
- images: the objects in the picture and the background ("There are a large pink square and a
  white circle on a navy background.").

Variety comes from synonyms (``slides``/``drifts``/``moves``), word order (inverted and passive
forms, fronted temporal phrases), joins (``, and then``, ``, after which``, pronouns and elided
subjects), optional temporal words and times, optional sizes and cue sounds.

Each render returns the text *and* the events it states, in text order, carrying only the
attributes the text states (size / cue sound left out → None). The caption parser of the event
metric must recover exactly that list (tested on thousands of captions).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from .caption_events import Event, Obj


@dataclass(frozen=True)
class GrammarConfig:
    """Paraphrase choices (probabilities)."""

    p_temporal: float = 0.5   # a sentence opens with a temporal phrase ("Then,", "After that,")
    p_time: float = 0.15      # that phrase is an explicit time ("After about 3 seconds,")
    p_join: float = 0.45      # the next event goes into the same sentence
    p_pronoun: float = 0.6    # a repeated subject becomes "it" (or is elided in a join)
    p_size: float = 0.3       # an object's size is stated in a clip caption
    p_size_image: float = 0.6  # ... in an image caption
    p_cue: float = 0.7        # a heard cue sound is mentioned ("appears with a chime")


@dataclass
class Caption:
    """A rendered caption and the events it states (text order, only stated attributes)."""

    text: str
    events: list[Event] = field(default_factory=list)


DIR_WORDS = {"left": ["left", "to the left", "leftward"], "right": ["right", "to the right", "rightward"],
             "up": ["up", "upward", "toward the top"], "down": ["down", "downward", "toward the bottom"]}
MOVE_VERBS = ["moves", "slides", "glides", "drifts", "travels", "heads"]
APPEAR_SG = ["appears", "shows up", "comes into view", "pops up"]
APPEAR_PL = ["appear", "show up", "come into view"]
LEAVE_VERBS = ["disappears", "vanishes", "leaves the scene", "goes away", "leaves"]
GROW_VERBS = ["grows", "gets bigger", "grows larger", "becomes larger", "expands", "increases in size"]
SHRINK_VERBS = ["shrinks", "gets smaller", "becomes smaller", "decreases in size", "shrinks down"]
SOUND_VERBS = {"bell": ["rings", "sounds"], "whistle": ["blows", "sounds"], "buzzer": ["sounds", "goes off", "buzzes"]}
OPENERS = ["Then", "Next", "After that", "Afterwards", "Later", "A moment later", "Soon after"]
FINAL_OPENERS = ["Finally", "In the end", "At the end"]
OVERLAP_OPENERS = ["Meanwhile", "At the same time"]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


class _Renderer:
    """Holds the random source and the running state (which object the last clause was about)."""

    def __init__(self, rng: random.Random, cfg: GrammarConfig, with_sound: bool):
        self.rng, self.cfg, self.with_sound = rng, cfg, with_sound
        self.last_subject: tuple[str | None, str] | None = None  # (colour, shape) of the last single subject

    def p(self, prob: float) -> bool:
        return self.rng.random() < prob

    def pick(self, options: list[str]) -> str:
        return options[self.rng.randrange(len(options))]

    def np(self, obj: Obj, definite: bool, p_size: float | None = None) -> tuple[str, Obj]:
        """A noun phrase for ``obj`` and the object as the phrase states it."""
        stated_size = obj.size if obj.size and self.p(self.cfg.p_size if p_size is None else p_size) else None
        words = [w for w in (stated_size, obj.colour, obj.shape) if w]
        det = "the" if definite else _article(words[0])
        return f"{det} {' '.join(words)}", Obj(obj.colour, obj.shape, stated_size)

    def cue(self, e: Event) -> tuple[str, str | None]:
        if self.with_sound and e.sound and self.p(self.cfg.p_cue):
            form = self.pick([" with a {}", ", accompanied by a {}"])
            return form.format(e.sound), e.sound
        return "", None

    def subject(self, obj: Obj, definite: bool, mode: str) -> tuple[str, Obj]:
        if mode == "ellipsis":
            return "", Obj(obj.colour, obj.shape, None)
        if mode == "pronoun":
            return "it", Obj(obj.colour, obj.shape, None)
        return self.np(obj, definite)

    def clause(self, e: Event, mode: str = "np") -> tuple[str, Event]:
        """Render one event. ``mode``: "np" (full subject), "pronoun" ("it") or "ellipsis" (none)."""
        a = e.action
        if a in ("appear", "leave", "move", "recolour", "grow", "shrink"):
            subj_text, subj = self.subject(e.obj, a != "appear", mode)
            if a == "appear":
                if mode == "np" and self.p(0.2):
                    text = f"there {self.pick(['appears', 'comes'])} {subj_text}"
                    if text.startswith("there comes"):
                        text = "there appears " + subj_text
                else:
                    text = f"{subj_text} {self.pick(APPEAR_SG)}"
            elif a == "leave":
                text = f"{subj_text} {self.pick(LEAVE_VERBS)}"
            elif a == "move":
                text = f"{subj_text} {self.pick(MOVE_VERBS)} {self.pick(DIR_WORDS[e.value])}"
            elif a == "recolour":
                form = self.rng.randrange(5)
                if form == 3 and mode == "np":
                    subj = Obj(e.obj.colour, e.obj.shape, None)
                    text = f"the {e.obj.shape} changes from {e.obj.colour} to {e.value}"
                elif form == 4 and mode == "np":
                    text = f"the colour of {subj_text} changes to {e.value}"
                else:
                    verb = self.pick(["turns", "becomes", "changes colour to", "changes to", "turns"])
                    text = f"{subj_text} {verb} {e.value}"
            else:
                text = f"{subj_text} {self.pick(GROW_VERBS if a == 'grow' else SHRINK_VERBS)}"
            cue_text, snd = self.cue(e) if a in ("appear", "leave") else ("", None)
            self.last_subject = (e.value if a == "recolour" else e.obj.colour, e.obj.shape)
            return (text + cue_text).strip(), Event(a, obj=subj, value=e.value, sound=snd)
        if a == "collide":
            form = self.rng.randrange(7) if mode == "np" else self.rng.randrange(4)
            subj_text, subj = self.subject(e.obj, True, mode)
            obj_text, other = self.np(e.other, True)
            if form < 4:
                verb = ["collides with", "bumps into", "crashes into", "hits"][form]
                text = f"{subj_text} {verb} {obj_text}"
            elif form == 4:
                text = f"{subj_text} and {obj_text} collide"
            elif form == 5:
                text = f"{subj_text} and {obj_text} bump into each other"
            else:
                text = f"{obj_text} is hit by {subj_text}"
            cue_text, snd = self.cue(e)
            self.last_subject = None
            return (text + cue_text).strip(), Event("collide", obj=subj, other=other, sound=snd)
        self.last_subject = None
        if a == "background":
            text = self.pick(["the background turns {}", "the background changes to {}",
                              "the background colour changes to {}", "the backdrop becomes {}",
                              "the background becomes {}"]).format(e.value)
            return text, Event("background", value=e.value)
        if a == "sound":
            k = e.value
            text = self.pick([f"a {k} {self.pick(SOUND_VERBS[k])}", f"a {k} can be heard",
                              f"the sound of a {k} is heard", f"you can hear a {k}"])
            return text, Event("sound", value=k)
        if a == "speak":
            w = e.value
            text = self.pick([f'a voice says "{w}"', f'someone says "{w}"', f'the word "{w}" is spoken',
                              f'a voice can be heard saying "{w}"', f'a speaker says the word "{w}"'])
            return text, Event("speak", value=w)
        raise ValueError(f"cannot caption action {a!r}")

    def np_list(self, objs: list[Obj], definite: bool, p_size: float | None = None) -> tuple[str, list[Obj]]:
        parts = [self.np(o, definite, p_size) for o in objs]
        texts = [t for t, _ in parts]
        joined = texts[0] if len(texts) == 1 else ", ".join(texts[:-1]) + " and " + texts[-1]
        return joined, [o for _, o in parts]

    def intro(self, objs: list[Obj], bg: str | None, at_start: bool = True) -> tuple[str, list[Event]]:
        """First sentence: the objects there at the start (or all of them, for ``brief``) and the background."""
        nps, stated = self.np_list(objs, definite=False)
        plural = len(objs) > 1
        verb = self.pick(APPEAR_PL if plural else APPEAR_SG)
        bg_events = [Event("background", value=bg)] if bg else []
        appear = [Event("appear", obj=o) for o in stated]
        if bg is None:
            return f"{nps} {verb}.", appear
        form = self.rng.randrange(5 if at_start else 4)
        if not at_start and form == 3:
            form = 4
        backdrop = self.pick(["background", "backdrop"])
        if form == 0:
            return f"On a {bg} {backdrop}, {nps} {verb}.", bg_events + appear
        if form == 1:
            return f"{nps} {verb} against a {bg} {backdrop}.", appear + bg_events
        if form == 2:
            return f"The background is {bg}, and {nps} {verb}.", bg_events + appear
        if form == 3:
            be = self.pick(["are there", "can be seen"] if plural else ["is there", "can be seen"])
            present = [Event("present", obj=o) for o in stated]
            return f"At the start, {nps} {be} on a {bg} background.", bg_events + present
        return f"{nps} {verb} on a {bg} {backdrop}.", appear + bg_events


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def caption_clip(events: list[Event], level: str, rng: random.Random, cfg: GrammarConfig | None = None) -> Caption:
    """Render a clip's ground-truth ``events`` at ``level`` ("brief", "visual" or "detailed")."""
    cfg = cfg or GrammarConfig()
    if level not in ("brief", "visual", "detailed"):
        raise ValueError(f"level must be 'brief', 'visual' or 'detailed', got {level!r}")
    r = _Renderer(rng, cfg, with_sound=level == "detailed")
    bg0 = next((e.value for e in events if e.action == "background" and e.start == 0.0), None)
    if level == "brief":
        objs = [e.obj for e in events if e.action == "appear"]
        text, stated = r.intro(objs, bg0, at_start=False)
        return Caption(_cap(text), stated)
    initial = [e for e in events if e.action == "appear" and e.start == 0.0]
    rest = [e for e in events if not (e.start == 0.0 and e.action in ("appear", "background"))
            and (level == "detailed" or e.modality != "audio")]
    first, stated = r.intro([e.obj for e in initial], bg0) if initial else ("", [])
    sentences = [_cap(first)] if first else []
    i = 0
    prev_end = 0.0
    while i < len(rest):
        e = rest[i]
        overlap = e.start < prev_end - 1e-9
        opener = ""
        if overlap and r.p(0.7):
            opener = r.pick(OVERLAP_OPENERS) + ", "
        elif r.p(cfg.p_temporal):
            if r.p(cfg.p_time) and e.start >= 1.0:
                opener = f"{r.pick(['After about', 'At around', 'At about'])} {round(e.start)} seconds, "
            elif i == len(rest) - 1 and len(rest) > 1:
                opener = r.pick(FINAL_OPENERS) + ", "
            else:
                opener = r.pick(OPENERS) + ", "
        same = e.obj is not None and r.last_subject == (e.obj.colour, e.obj.shape) and e.action != "appear"
        mode = "pronoun" if same and r.p(cfg.p_pronoun) else "np"
        text, ev = r.clause(e, mode)
        parts, evs = [text], [ev]
        prev_end = max(prev_end, e.end)
        i += 1
        # Join the next event into this sentence?
        if i < len(rest) and r.p(cfg.p_join):
            n = rest[i]
            n_overlap = n.start < prev_end - 1e-9
            same = n.obj is not None and r.last_subject == (n.obj.colour, n.obj.shape) and n.action != "appear"
            if n_overlap:
                joiner, mode = ", while ", "np"
            elif same and r.p(cfg.p_pronoun):
                joiner, mode = r.pick([(" and ", "ellipsis"), (" and then ", "ellipsis"), (", then ", "pronoun")])
            else:
                joiner, mode = r.pick([", and then ", ", then ", " and ", ", after which "]), "np"
            t2, ev2 = r.clause(n, mode)
            parts.append(joiner + t2)
            evs.append(ev2)
            prev_end = max(prev_end, n.end)
            i += 1
        sentences.append(_cap(opener + "".join(parts)) + ".")
        stated += evs
    return Caption(" ".join(sentences), stated)


def caption_image(events: list[Event], rng: random.Random, cfg: GrammarConfig | None = None) -> Caption:
    """Render a still image's ``present`` + ``background`` events as one or two sentences."""
    cfg = cfg or GrammarConfig()
    r = _Renderer(rng, cfg, with_sound=False)
    objs = [e.obj for e in events if e.action == "present"]
    bg = next((e.value for e in events if e.action == "background"), None)
    nps, stated = r.np_list(objs, definite=False, p_size=cfg.p_size_image)
    present = [Event("present", obj=o) for o in stated]
    bg_ev = [Event("background", value=bg)] if bg else []
    be = "are" if len(objs) > 1 else "is"
    if not bg:
        return Caption(_cap(f"there {be} {nps}."), present)
    form = rng.randrange(6)
    if form == 0:
        return Caption(_cap(f"{nps} on a {bg} background."), bg_ev + present)
    if form == 1:
        return Caption(f"There {be} {nps} on a {bg} background.", bg_ev + present)
    if form == 2:
        return Caption(f"The image shows {nps} against a {bg} backdrop.", bg_ev + present)
    if form == 3:
        return Caption(f"On a {bg} background, we see {nps}.", bg_ev + present)
    if form == 4:
        return Caption(f"A {bg} background with {nps}.", bg_ev + present)
    return Caption(f"The background is {bg}. {_cap(nps)} {'are' if len(objs) > 1 else 'is'} visible.",
                   bg_ev + present)


def _fake_event(rng: random.Random, events: list[Event], avoid: list[Event]) -> Event:
    """An event of the world's vocabulary that matches none of ``avoid`` (for perturbed captions)."""
    from .caption_events import BACKGROUNDS, COLOURS, DIRECTIONS, SHAPES, SOUNDS, WORDS, event_compatible

    objs = [e.obj for e in events if e.obj is not None]
    for _ in range(1000):
        kind = rng.choice(["appear", "move", "recolour", "leave", "sound", "speak", "background", "grow"])
        obj = rng.choice(objs) if objs and rng.random() < 0.7 else Obj(rng.choice(list(COLOURS)), rng.choice(SHAPES))
        obj = Obj(obj.colour, obj.shape, None)
        value = {"move": rng.choice(list(DIRECTIONS)), "recolour": rng.choice(list(COLOURS)),
                 "sound": rng.choice(SOUNDS), "speak": rng.choice(WORDS),
                 "background": rng.choice(list(BACKGROUNDS))}.get(kind)
        if kind == "recolour" and value == obj.colour:
            continue
        ev = Event(kind, obj=None if kind in ("sound", "speak", "background") else obj, value=value,
                   modality="audio" if kind in ("sound", "speak") else "visual")
        if not any(event_compatible(ev, a) or event_compatible(a, ev) for a in avoid):
            return ev
    raise RuntimeError("could not draw an event absent from the clip")


def perturbed_caption(events: list[Event], rng: random.Random, n_drop: int = 0, n_add: int = 0,
                      n_repeat: int = 0, cfg: GrammarConfig | None = None) -> tuple[Caption, dict[str, int]]:
    """A detailed caption that drops ``n_drop`` events, states ``n_add`` events that did not happen
    and repeats ``n_repeat`` events; returns it with the counts an exact judge must find
    (``missing``, ``hallucinated``, ``repeated``). Used to test the metric and to make ranked
    caption pairs (DPO) with a known quality order."""
    keys = [e.key() for e in events]
    later = [i for i, e in enumerate(events) if not (e.start == 0.0 and e.action in ("appear", "background"))
             and keys.count(e.key()) == 1]  # unique events only, so the expected counts are exact
    n_drop = min(n_drop, len(later))
    drop = set(rng.sample(later, n_drop))
    kept = [e for i, e in enumerate(events) if i not in drop]
    body = [e for e in kept if not (e.start == 0.0 and e.action in ("appear", "background"))]
    head = [e for e in kept if e not in body]
    fakes: list[Event] = []
    for _ in range(n_add):
        fakes.append(_fake_event(rng, events, list(events) + fakes))
    unique = [e for e in body if keys.count(e.key()) == 1]
    repeats = [rng.choice(unique) for _ in range(n_repeat)] if unique else []
    for ev in fakes + repeats:
        k = rng.randrange(len(body) + 1)
        start = body[k - 1].end if k > 0 else 0.5
        body.insert(k, Event(ev.action, obj=ev.obj, value=ev.value, other=ev.other, sound=ev.sound,
                             start=start, end=start, modality=ev.modality))
    cap = caption_clip(head + body, "detailed", rng, cfg)
    return cap, {"missing": n_drop, "hallucinated": n_add, "repeated": len(repeats)}
