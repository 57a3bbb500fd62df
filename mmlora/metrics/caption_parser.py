"""Deterministic parser: caption text → events of the procedural caption world.

The parser is the default judge of the event metric (``event_metric``). It knows the world's
vocabulary (``mmlora.data.caption_events``) and many more phrasings than the caption grammar
uses, and works in three steps:

1. normalise: lower case, ``color``→``colour``, ``grey``→``gray``, curly→straight quotes,
   ``n't``→`` not``, possessive ``'s`` → ``_s``; split into sentences at ``. ! ? ; :``;
2. chunk: greedy longest match of word sequences against a phrase lexicon, each phrase mapped to a
   typed chunk (``COLOUR red``, ``SHAPE circle``, ``MOVE``, ``DIR left``, ``RECOLOUR``, ...);
3. interpret each sentence left to right: noun phrases (``det? size? colour? shape``) collect as
   subjects; a verb takes them (or, when there are none, the subjects of the previous clause:
   "... moves left and turns blue"; for ``appear`` the noun phrases that follow it: "there appears
   a red circle") plus its arguments (direction, colour, collided object, cue sound, word).
   ``it``/``they`` refer to the previous clause's subjects, whose colour follows any recolour
   stated since. Noun phrases left without a verb at the end of a sentence are ``present``
   ("There are a red circle and a blue square on a black background.").

Negated clauses ("the circle does not move") state nothing. Words the lexicon does not know
(and that are not filler such as "then", "quickly", "in the corner") make an *unparsed segment*
(one per run of such words); the metric counts each as a hallucination.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from mmlora.data.caption_events import BACKGROUNDS, COLOURS, SHAPES, Event, Obj

# ------------------------------------------------------------------------------------- lexicon
_LEX: dict[tuple[str, ...], tuple[str, str | None]] = {}


def _add(kind: str, phrases: str | list[str], value: str | None = None) -> None:
    for ph in [phrases] if isinstance(phrases, str) else phrases:
        _LEX[tuple(ph.split())] = (kind, value)


def _verb(base: str, third: str, past: str, ing: str, rest: str = "") -> list[str]:
    tail = f" {rest}" if rest else ""
    return [f"{w}{tail}" for w in (base, third, past, ing)]


for _c in list(COLOURS) + list(BACKGROUNDS):
    _add("COLOUR", _c, _c)
_add("COLOUR", ["dark blue", "navy blue"], "navy")
_add("COLOUR", ["violet"], "purple")
for _s in SHAPES:
    _add("SHAPE", [_s, _s + "s"], _s)
_add("SHAPE", ["disc", "disk", "ball", "dot"], "circle")
_add("SHAPE", ["rhombus", "lozenge"], "diamond")
_add("SIZE", ["small", "little", "tiny", "smaller"], "small")
_add("SIZE", ["large", "big", "huge", "larger", "bigger"], "large")
_add("DET", ["a", "an", "the", "another", "one", "some"])
_add("PRON_IT", ["it", "this shape", "that shape", "the shape", "the object", "this object"])
_add("PRON_THEY", ["they", "both of them", "the two shapes", "the two objects"])
_add("BG", ["background", "backdrop", "background colour", "backdrop colour", "background _s colour", "screen"])
_add("APPEAR", _verb("appear", "appears", "appeared", "appearing") + _verb("show", "shows", "showed", "showing", "up")
     + _verb("come", "comes", "came", "coming", "into view") + _verb("pop", "pops", "popped", "popping", "up")
     + _verb("pop", "pops", "popped", "popping", "into view") + _verb("emerge", "emerges", "emerged", "emerging")
     + _verb("enter", "enters", "entered", "entering") + _verb("enter", "enters", "entered", "entering", "the scene")
     + ["is added", "are added", "joins", "join", "joined"])
_add("LEAVE", _verb("disappear", "disappears", "disappeared", "disappearing")
     + _verb("vanish", "vanishes", "vanished", "vanishing") + _verb("leave", "leaves", "left", "leaving", "the scene")
     + _verb("leave", "leaves", "left", "leaving", "the frame") + ["leave", "leaves", "leaving"]
     + _verb("go", "goes", "went", "going", "away") + _verb("fade", "fades", "faded", "fading", "away")
     + _verb("fade", "fades", "faded", "fading", "out") + _verb("exit", "exits", "exited", "exiting")
     + ["is gone", "are gone", "is removed"])
_add("MOVE", _verb("move", "moves", "moved", "moving") + _verb("slide", "slides", "slid", "sliding")
     + _verb("glide", "glides", "glided", "gliding") + _verb("drift", "drifts", "drifted", "drifting")
     + _verb("travel", "travels", "travelled", "travelling") + ["traveled", "traveling"]
     + _verb("head", "heads", "headed", "heading") + _verb("shift", "shifts", "shifted", "shifting")
     + _verb("go", "goes", "went", "going") + _verb("roll", "rolls", "rolled", "rolling"))
for _d, _ws in {"left": ["left", "leftward", "leftwards", "to the left", "toward the left", "towards the left"],
                "right": ["right", "rightward", "rightwards", "to the right", "toward the right", "towards the right"],
                "up": ["up", "upward", "upwards", "toward the top", "towards the top", "to the top"],
                "down": ["down", "downward", "downwards", "toward the bottom", "towards the bottom",
                         "to the bottom"]}.items():
    _add("DIR", _ws, _d)
_add("RECOLOUR", _verb("turn", "turns", "turned", "turning") + _verb("become", "becomes", "became", "becoming")
     + _verb("change", "changes", "changed", "changing") + _verb("change", "changes", "changed", "changing", "colour")
     + _verb("change", "changes", "changed", "changing", "its colour")
     + _verb("change", "changes", "changed", "changing", "their colour")
     + _verb("switch", "switches", "switched", "switching") + ["is now", "goes from", "is recoloured"])
_add("FROM", "from")
_add("TO", ["to", "into"])
_add("GROW", _verb("grow", "grows", "grew", "growing") + _verb("grow", "grows", "grew", "growing", "larger")
     + _verb("grow", "grows", "grew", "growing", "bigger") + _verb("grow", "grows", "grew", "growing", "in size")
     + _verb("get", "gets", "got", "getting", "bigger") + _verb("get", "gets", "got", "getting", "larger")
     + _verb("become", "becomes", "became", "becoming", "larger") + _verb("become", "becomes", "became", "becoming", "bigger")
     + _verb("expand", "expands", "expanded", "expanding") + _verb("enlarge", "enlarges", "enlarged", "enlarging")
     + _verb("increase", "increases", "increased", "increasing", "in size") + ["grows up"])
_add("SHRINK", _verb("shrink", "shrinks", "shrank", "shrinking") + _verb("shrink", "shrinks", "shrank", "shrinking", "down")
     + ["shrunk"] + _verb("get", "gets", "got", "getting", "smaller")
     + _verb("become", "becomes", "became", "becoming", "smaller")
     + _verb("decrease", "decreases", "decreased", "decreasing", "in size")
     + _verb("contract", "contracts", "contracted", "contracting"))
_add("COLLIDE", _verb("collide", "collides", "collided", "colliding", "with")
     + _verb("bump", "bumps", "bumped", "bumping", "into") + _verb("crash", "crashes", "crashed", "crashing", "into")
     + _verb("run", "runs", "ran", "running", "into") + _verb("hit", "hits", "hit", "hitting")
     + _verb("strike", "strikes", "struck", "striking") + _verb("collide", "collides", "collided", "colliding")
     + _verb("crash", "crashes", "crashed", "crashing") + _verb("bump", "bumps", "bumped", "bumping")
     + ["is hit by", "are hit by", "gets hit by", "was hit by", "is struck by", "was struck by",
        "is bumped by", "makes contact with", "make contact with", "touches", "touch", "touched"]
     + _verb("bounce", "bounces", "bounced", "bouncing", "off") + _verb("bounce", "bounces", "bounced", "bouncing", "into")
     + _verb("knock", "knocks", "knocked", "knocking", "into") + _verb("smash", "smashes", "smashed", "smashing", "into"))
_add("WITH", ["with", "accompanied by", "along with", "together with", "followed by a sound of"])
_add("SOUNDN", ["bell", "bells"], "bell")
_add("SOUNDN", ["whistle", "whistles"], "whistle")
_add("SOUNDN", ["buzzer", "buzzers", "buzz"], "buzzer")
_add("SOUNDN", ["chime", "chiming sound"], "chime")
_add("SOUNDN", ["pop", "popping sound", "pop sound"], "pop")
_add("SOUNDN", ["thud", "thump", "bang"], "thud")
_add("SOUNDV", ["rings", "rang", "ringing", "sounds", "sounded", "sounding", "blows", "blew", "blowing",
               "goes off", "go off", "went off", "going off", "buzzes", "buzzed", "buzzing", "chimes", "chimed",
               "is heard", "are heard", "was heard", "can be heard", "could be heard", "is audible", "plays"])
_add("HEAR", ["you hear", "you can hear", "we hear", "we can hear", "one can hear", "hear", "hears", "heard",
              "there is the sound of", "there is a sound of"])
_add("SAY", _verb("say", "says", "said", "saying") + _verb("speak", "speaks", "spoke", "speaking")
     + _verb("utter", "utters", "uttered", "uttering") + _verb("announce", "announces", "announced", "announcing")
     + ["is spoken", "are spoken", "was spoken", "is said", "was said", "can be heard saying", "is heard saying",
        "is pronounced"])
_add("WORDINTRO", ["the word", "word", "a word", "the words"])
_add("NEG", ["not", "no", "never", "nothing", "nobody", "none"])
_add("AND", ["and", "as well as", "plus"])
_add("FILLER", (
    "then next after that afterwards afterward later moment first firstly second secondly finally in end "
    "at start beginning meanwhile same time while as soon before eventually also again too still now just "
    "suddenly quickly slowly gradually smoothly steadily briefly gently immediately shortly quietly loudly "
    "there is are was were be been being this these those of on against onto its their which where when who "
    "video clip image picture frame scene scenes view shape shapes object objects visible seen "
    "shows show showing see sees we you can could contains depicts features displays which here "
    "about around roughly approximately seconds sec s mark point instant by so it_s _s "
    "voice someone person speaker man woman narrator each other another both all whole entire "
    "corner center centre middle edge side top bottom area part way somewhat slightly little bit "
    "has have having had does do did will would whilst during throughout until through over across "
    "other one else happens happen happened occurs occur sits sit sitting rests lies stands remains stays "
    "placed located dark light bright coloured two three four five six several many few begins starts "
    "ends opens").split())
for _n in range(0, 61):
    _add("FILLER", str(_n))
_add("FILLER", ["the colour of", "the color of", "_s colour", "colour of", "each other", "one another",
                "the sound of", "a sound of", "sound of", "the same time", "a moment", "for a moment",
                "the rest of", "in the scene", "on screen", "on the screen", "in view", "in the frame"])
_MAXLEN = max(len(k) for k in _LEX)
_NP_START = ("DET", "SIZE", "COLOUR", "SHAPE", "BG")
_VERBS = ("APPEAR", "LEAVE", "MOVE", "RECOLOUR", "GROW", "SHRINK", "COLLIDE", "SOUNDV", "HEAR", "SAY")
_OBJ_VERBS = {"APPEAR": "appear", "LEAVE": "leave", "MOVE": "move", "RECOLOUR": "recolour",
              "GROW": "grow", "SHRINK": "shrink", "COLLIDE": "collide"}


@dataclass
class Chunk:
    kind: str            # lexicon type, "QUOTE", "PUNCT" or "WORD" (unknown)
    value: str | None    # the type's value (colour, shape, direction, word, ...)
    text: str            # the words covered


def normalise(text: str) -> str:
    t = text.lower()
    for a, b in (("\u201c", '"'), ("\u201d", '"'), ("\u2018", "'"), ("\u2019", "'"), ("\u2014", ","), ("\u2013", ",")):
        t = t.replace(a, b)
    t = re.sub(r"\bcolor", "colour", t)
    t = re.sub(r"\bgrey\b", "gray", t)
    t = re.sub(r"n't\b", " not", t)
    t = re.sub(r"(?<![\w])'([^'\"]+?)'(?![\w])", r'"\1"', t)  # 'apple' -> "apple"
    t = re.sub(r"(\w)'s\b", r"\1 _s", t)
    t = t.replace("-", " ")
    return t


def chunk(sentence: str) -> list[Chunk]:
    """Greedy longest-match chunking of one normalised sentence."""
    toks = re.findall(r'"[^"]*"|[a-z0-9_]+|[,]', sentence)
    out: list[Chunk] = []
    i = 0
    while i < len(toks):
        tok = toks[i]
        if tok.startswith('"'):
            out.append(Chunk("QUOTE", tok.strip('"').strip(" .,!?"), tok))
            i += 1
            continue
        if tok == ",":
            out.append(Chunk("PUNCT", ",", tok))
            i += 1
            continue
        for n in range(min(_MAXLEN, len(toks) - i), 0, -1):
            key = tuple(toks[i:i + n])
            if key in _LEX:
                kind, value = _LEX[key]
                out.append(Chunk(kind, value, " ".join(key)))
                i += n
                break
        else:
            out.append(Chunk("WORD", tok, tok))
            i += 1
    return out


@dataclass
class _Entity:
    """An object the caption talks about; its colour follows stated recolours."""

    colour: str | None
    shape: str


@dataclass
class ParsedCaption:
    """What a caption states: events (text order), the sentence of each, and unparsed segments."""

    events: list[Event] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)   # the sentence each event came from
    unparsed: list[str] = field(default_factory=list)  # text the parser could not map to an event


class CaptionParser:
    """Caption → :class:`ParsedCaption`. Stateless between calls; deterministic."""

    def parse(self, text: str) -> ParsedCaption:
        out = ParsedCaption()
        self._entities: list[_Entity] = []
        self._last: list[_Entity] = []
        for sent in re.split(r"[.!?;\n]+", normalise(text)):
            if sent.strip():
                self._sentence(sent.strip(), out)
        return out

    # -- helpers ------------------------------------------------------------------------------
    def _entity(self, colour: str | None, shape: str) -> tuple[_Entity, str | None]:
        """Find (or create) the entity a noun phrase names; infer a missing colour when unambiguous."""
        same_shape = [e for e in self._entities if e.shape == shape]
        if colour is None:
            if len(same_shape) == 1:
                return same_shape[0], same_shape[0].colour
            ent = _Entity(None, shape)
        else:
            for e in same_shape:
                if e.colour == colour:
                    return e, colour
            ent = _Entity(colour, shape)
        self._entities.append(ent)
        return ent, colour

    def _np(self, ch: list[Chunk], i: int):
        """Parse ``det* (size|colour)* (shape|background)`` at i → (("obj", ent, Obj) | ("bg", colour), next i)."""
        j, size, colour = i, None, None
        while j < len(ch) and ch[j].kind in ("DET", "SIZE", "COLOUR"):
            if ch[j].kind == "SIZE":
                size = ch[j].value
            elif ch[j].kind == "COLOUR":
                colour = ch[j].value
            j += 1
        if j < len(ch) and ch[j].kind == "SHAPE":
            ent, colour = self._entity(colour, ch[j].value)
            return ("obj", ent, Obj(colour, ch[j].value, size)), j + 1
        if j < len(ch) and ch[j].kind == "BG" and size is None:
            return ("bg", colour), j + 1
        return None, i

    def _np_list(self, ch: list[Chunk], i: int, used: list[bool], most: int = 99):
        """Up to ``most`` noun phrases joined by commas / "and" starting at i → ([(ent, Obj)], next i)."""
        found, j = [], i
        while len(found) < most:
            res, k = self._np(ch, j)
            if res is None or res[0] != "obj":
                break
            found.append((res[1], res[2]))
            for m in range(j, k):
                used[m] = True
            j = k
            if (len(found) < most and j + 1 < len(ch) and ch[j].kind in ("AND", "PUNCT")
                    and ch[j + 1].kind in _NP_START):
                used[j] = True
                j += 1
            else:
                break
        return found, j

    @staticmethod
    def _skip(ch: list[Chunk], i: int, kinds=("FILLER", "DET")) -> int:
        while i < len(ch) and ch[i].kind in kinds:
            i += 1
        return i

    # -- one sentence --------------------------------------------------------------------------
    def _sentence(self, sent: str, out: ParsedCaption) -> None:
        ch = chunk(sent)
        used = [False] * len(ch)
        subjects: list[tuple[_Entity, Obj]] = []
        sound_subj: str | None = None
        bg_subj = False
        word: str | None = None
        neg = False
        last_emitted: list[int] = []

        def emit(ev: Event) -> None:
            if not neg:
                out.events.append(ev)
                out.sources.append(sent)
                last_emitted.append(len(out.events) - 1)

        def pronoun_refs() -> list[tuple[_Entity, Obj]]:
            return [(e, Obj(e.colour, e.shape, None)) for e in self._last]

        i = 0
        while i < len(ch):
            c = ch[i]
            k = c.kind
            if k in _NP_START:
                res, j = self._np(ch, i)
                if res is not None:
                    for m in range(i, j):
                        used[m] = True
                    if res[0] == "obj":
                        subjects.append((res[1], res[2]))
                        bg_subj = False
                    elif res[1] is not None:
                        last_emitted.clear()
                        emit(Event("background", value=res[1]))
                    else:
                        bg_subj = True
                    i = j
                    continue
                if k == "COLOUR" and bg_subj:  # "the background is gray"
                    used[i] = True
                    last_emitted.clear()
                    emit(Event("background", value=c.value))
                    bg_subj = False
                elif k == "DET":
                    used[i] = True
                i += 1
                continue
            if k == "PRON_IT":
                if len(self._last) == 1:
                    subjects += pronoun_refs()
                    used[i] = True
                i += 1
                continue
            if k == "PRON_THEY":
                if self._last:
                    subjects += pronoun_refs()
                    used[i] = True
                i += 1
                continue
            if k == "SOUNDN":
                sound_subj, used[i] = c.value, True
            elif k == "QUOTE":
                word, used[i] = c.value, True
            elif k == "WORDINTRO":
                used[i] = True
                if i + 1 < len(ch) and ch[i + 1].kind in ("QUOTE", "WORD"):
                    word, used[i + 1] = ch[i + 1].value, True
                    i += 1
            elif k == "WITH":
                j = self._skip(ch, i + 1, ("DET",))
                if j < len(ch) and ch[j].kind == "SOUNDN" and last_emitted:
                    for m in range(i, j + 1):
                        used[m] = True
                    for idx in last_emitted:
                        out.events[idx] = replace(out.events[idx], sound=ch[j].value)
                    i = j + 1
                    continue
                if j < len(ch) and ch[j].kind in _NP_START:
                    used[i] = True
            elif k in _VERBS:
                last_emitted.clear()
                nxt = self._verb(ch, i, used, subjects, sound_subj, bg_subj, word, emit, pronoun_refs)
                if neg:  # "does not move": the negated verb states nothing, and is not unparsed text
                    used[i] = True
                i = nxt
                subjects, sound_subj, bg_subj, word, neg = [], None, False, None, False
                continue
            elif k == "NEG":
                neg, used[i] = True, True
            elif k in ("FILLER", "AND", "PUNCT"):
                used[i] = True
            i += 1
        # noun phrases, sounds and words left without a verb
        for _, obj in subjects:
            emit(Event("present", obj=obj))
        if subjects:
            self._last = [e for e, _ in subjects]
        if sound_subj:
            emit(Event("sound", value=sound_subj))
        if word:
            emit(Event("speak", value=word))
        # unparsed segments: runs of chunks nobody used
        run: list[str] = []
        for c, u in zip(ch, used):
            if not u:
                run.append(c.text)
            elif run:
                out.unparsed.append(" ".join(run))
                run = []
        if run:
            out.unparsed.append(" ".join(run))

    def _verb(self, ch, i, used, subjects, sound_subj, bg_subj, word, emit, pronoun_refs) -> int:
        """Interpret the verb chunk at i with its subjects and arguments; return the next index."""
        k = ch[i].kind
        j = i + 1
        if k in ("SOUNDV", "HEAR", "SAY"):
            if k == "HEAR":
                m = self._skip(ch, j)
                if m < len(ch) and ch[m].kind == "SAY":  # "we hear someone saying ..."
                    for n in range(i, m):
                        used[n] = True
                    return m
                if m < len(ch) and ch[m].kind == "SOUNDN":
                    sound_subj, j = ch[m].value, m + 1
                elif m < len(ch) and ch[m].kind in ("QUOTE", "WORDINTRO"):
                    k = "SAY"
            if k == "SAY" and word is None:
                m = self._skip(ch, j, ("FILLER", "DET", "WORDINTRO"))
                if m < len(ch) and ch[m].kind in ("QUOTE", "WORD"):
                    word, j = ch[m].value, m + 1
            if k == "SAY" and word is not None:
                ev = Event("speak", value=word)
            elif k in ("SOUNDV", "HEAR") and sound_subj is not None:
                ev = Event("sound", value=sound_subj)
            elif k == "SOUNDV" and word is not None:  # 'the word "apple" is heard'
                ev = Event("speak", value=word)
            else:
                return i + 1  # verb without a sound or word: stays unparsed
            for m in range(i, j):
                used[m] = True
            emit(ev)
            return j
        action = _OBJ_VERBS[k]
        subj = list(subjects)
        if not subj and k == "APPEAR":  # "there appears a red circle", "... appear: a red circle and a blue square"
            trial, end = self._np_list(ch, j, list(used))
            most = len(trial) - 1 if len(trial) > 1 and end < len(ch) and ch[end].kind in _VERBS else len(trial)
            subj, j = self._np_list(ch, j, used, most=max(most, 1))
        if not subj and not (bg_subj and k == "RECOLOUR"):
            subj = pronoun_refs()  # "... moves left and turns blue"
        if not subj and not (bg_subj and k == "RECOLOUR"):
            return i + 1
        value, other, cue = None, None, None
        if k == "MOVE":
            m = self._skip(ch, j)
            if m + 1 < len(ch) and ch[m].kind == "FROM" and ch[m + 1].kind == "DIR":  # "from left to right"
                m = self._skip(ch, m + 2, ("FILLER", "DET", "TO"))
            if m >= len(ch) or ch[m].kind != "DIR":
                return i + 1
            value, j = ch[m].value, m + 1
        elif k in ("APPEAR", "LEAVE"):  # "enters from the left", "leaves to the right": where, not what
            m = self._skip(ch, j, ("FILLER", "DET", "FROM", "TO"))
            if m < len(ch) and ch[m].kind == "DIR" and m > j:
                j = m + 1
        elif k == "RECOLOUR":
            m = self._skip(ch, j)
            src = None
            if m < len(ch) and ch[m].kind == "FROM" and m + 1 < len(ch) and ch[m + 1].kind == "COLOUR":
                src, m = ch[m + 1].value, m + 2
            m = self._skip(ch, m, ("FILLER", "DET", "TO"))
            if m >= len(ch) or ch[m].kind != "COLOUR":
                return i + 1
            value, j = ch[m].value, m + 1
            if bg_subj and not subjects:
                for n in range(i, j):
                    used[n] = True
                emit(Event("background", value=value))
                return j
            if src is not None:
                subj = [(e, replace(o, colour=src)) for e, o in subj]  # an explicit "from" wins
        elif k == "COLLIDE":
            m = self._skip(ch, j, ("FILLER",))
            objs, m2 = self._np_list(ch, m, used, most=1)
            if objs:
                other, j = objs[0], m2
            elif len(subj) == 2:
                subj, other = [subj[0]], subj[1]
                n = self._skip(ch, m, ("DET",))
                if ch[i].text.endswith(" with") and n < len(ch) and ch[n].kind == "SOUNDN":
                    cue, j = ch[n].value, n + 1  # "they collide with a thud"
            else:
                return i + 1
        for n in range(i, j):
            used[n] = True
        for ent, obj in subj:
            if k == "COLLIDE":
                emit(Event("collide", obj=obj, other=other[1], sound=cue))
            else:
                emit(Event(action, obj=obj, value=value))
            if k == "RECOLOUR":
                if ent.colour is None:
                    ent.colour = obj.colour
                ent.colour = value
        self._last = [e for e, _ in subj]
        return j
