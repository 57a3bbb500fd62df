"""The vocabulary and event schema of the procedural caption world.

Every clip of ``mmlora make-caption-corpus`` comes with its exact list of atomic events. An event is
one thing that happens (or, for still images, one thing that is there)::

    Event(action="recolour", obj=Obj("red", "circle", "small"), value="blue", start=1.2, end=1.2)

``action`` is one of :data:`ACTIONS`. ``obj`` / ``other`` are the objects involved, described by
their attributes *at the start of the event* (so after "the red circle turns blue" the same
object is "the blue circle"). ``value`` holds the action's argument (direction, new colour,
background colour, sound kind or spoken word). ``sound`` is the cue sound that accompanies a
visible event, if any. Within a clip no two objects ever share a (colour, shape) pair, so
colour + shape identify an object.

Matching (used by the event metric) compares :func:`Event.key` fields exactly and treats the
*optional* attributes -- object size, object colour (when a caption omits it) and cue sound --
as wildcards when a predicted event leaves them out; when it states them they must be right.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Object colours and their RGB values (bright, so they stand out on every background).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 240),
    "yellow": (240, 220, 40),
    "purple": (160, 60, 210),
    "orange": (250, 140, 20),
    "white": (245, 245, 245),
    "pink": (250, 130, 190),
}
# Background colours (dark or mid tones, so every object colour is visible on them).
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (10, 10, 10),
    "gray": (110, 110, 110),
    "navy": (20, 25, 80),
    "brown": (90, 55, 25),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
SIZES: dict[str, float] = {"small": 0.08, "large": 0.14}  # radius as a fraction of the frame side
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}

# Cue sounds that accompany some visible events (the action decides which one).
CUE_SOUNDS: dict[str, str] = {"appear": "chime", "leave": "pop", "collide": "thud"}
# Sounds that are events of their own (audible only).
SOUNDS: tuple[str, ...] = ("bell", "whistle", "buzzer")
# Words a voice may say (audible only). None is a colour, shape, number or direction word.
WORDS: tuple[str, ...] = ("hello", "apple", "river", "window", "garden", "rocket", "banana", "pencil")

ACTIONS: tuple[str, ...] = (
    "appear",      # obj comes into view
    "leave",       # obj disappears
    "move",        # obj moves; value = direction
    "recolour",    # obj changes colour; value = new colour
    "grow",        # obj goes from small to large
    "shrink",      # obj goes from large to small
    "collide",     # obj and other touch (symmetric)
    "background",  # the background is / becomes value (a background colour)
    "sound",       # a sound of kind value is heard (audible only)
    "speak",       # a voice says the word value (audible only)
    "present",     # still images: obj is in the picture (matches "appear" of the same object)
)
MODALITIES: tuple[str, ...] = ("visual", "audio", "audiovisual")


@dataclass(frozen=True)
class Obj:
    """An object as a caption names it. ``colour``/``size`` may be None in parsed captions."""

    colour: str | None  # one of COLOURS (None: not stated)
    shape: str          # one of SHAPES
    size: str | None = None  # "small" / "large" (None: not stated)

    def name(self, with_size: bool = False) -> str:
        words = [self.size if with_size and self.size else None, self.colour, self.shape]
        return " ".join(w for w in words if w)

    def to_json(self) -> dict[str, Any]:
        return {"colour": self.colour, "shape": self.shape, "size": self.size}

    @staticmethod
    def from_json(d: dict[str, Any], where: str = "object") -> "Obj":
        if not isinstance(d, dict) or "shape" not in d:
            raise ValueError(f"{where}: expected an object with a 'shape' field, got {d!r}")
        return Obj(colour=d.get("colour"), shape=d["shape"], size=d.get("size"))


@dataclass(frozen=True)
class Event:
    """One atomic event. Times are seconds from the start of the clip (0 for parsed captions)."""

    action: str                 # one of ACTIONS
    obj: Obj | None = None      # the object acting (None for background/sound/speak)
    value: str | None = None    # direction / new colour / background colour / sound kind / word
    other: Obj | None = None    # collide: the second object
    sound: str | None = None    # cue sound heard with a visible event (None: silent or not stated)
    start: float = 0.0          # event start [s]
    end: float = 0.0            # event end [s]
    modality: str = "visual"    # visual / audio / audiovisual (what a viewer can perceive)

    def key(self) -> tuple:
        """The identity used by matching: required fields only, collide pairs unordered."""
        action = "appear" if self.action == "present" else self.action
        objs = [o for o in (self.obj, self.other) if o is not None]
        names = tuple(sorted(((o.colour or ""), o.shape) for o in objs))
        return (action, names, self.value)

    def describe(self) -> str:
        """A short canonical text, e.g. ``move(red circle, left)``; used in reports."""
        parts = [o.name(with_size=True) for o in (self.obj, self.other) if o is not None]
        if self.value is not None:
            parts.append(self.value)
        text = f"{self.action}({', '.join(parts)})"
        return text + (f" +{self.sound}" if self.sound else "")

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"action": self.action}
        if self.obj is not None:
            d["object"] = self.obj.to_json()
        if self.other is not None:
            d["other"] = self.other.to_json()
        if self.value is not None:
            d["value"] = self.value
        if self.sound is not None:
            d["sound"] = self.sound
        d["start"] = round(self.start, 3)
        d["end"] = round(self.end, 3)
        d["modality"] = self.modality
        return d

    @staticmethod
    def from_json(d: dict[str, Any], where: str = "event") -> "Event":
        if not isinstance(d, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(d).__name__}")
        action = d.get("action")
        if action not in ACTIONS:
            raise ValueError(f"{where}: 'action' must be one of {ACTIONS}, got {action!r}")
        obj = Obj.from_json(d["object"], f"{where}.object") if d.get("object") is not None else None
        other = Obj.from_json(d["other"], f"{where}.other") if d.get("other") is not None else None
        if action in ("appear", "leave", "move", "recolour", "grow", "shrink", "present") and obj is None:
            raise ValueError(f"{where}: action {action!r} needs an 'object'")
        if action == "collide" and (obj is None or other is None):
            raise ValueError(f"{where}: action 'collide' needs 'object' and 'other'")
        modality = d.get("modality", "visual")
        if modality not in MODALITIES:
            raise ValueError(f"{where}: 'modality' must be one of {MODALITIES}, got {modality!r}")
        return Event(action=action, obj=obj, value=d.get("value"), other=other, sound=d.get("sound"),
                     start=float(d.get("start", 0.0)), end=float(d.get("end", 0.0)), modality=modality)


def obj_compatible(pred: Obj | None, ref: Obj | None) -> bool:
    """A predicted object fits a reference one: same shape, and colour/size equal where stated."""
    if pred is None or ref is None:
        return pred is ref
    return (pred.shape == ref.shape and (pred.colour is None or pred.colour == ref.colour)
            and (pred.size is None or pred.size == ref.size))


def event_compatible(pred: Event, ref: Event) -> bool:
    """True when the predicted event describes the reference event (optional fields may be omitted)."""
    pa = "appear" if pred.action == "present" else pred.action
    ra = "appear" if ref.action == "present" else ref.action
    if pa != ra or pred.value != ref.value:
        return False
    if pred.sound is not None and pred.sound != ref.sound:
        return False
    if pa == "collide":  # unordered pair
        return ((obj_compatible(pred.obj, ref.obj) and obj_compatible(pred.other, ref.other))
                or (obj_compatible(pred.obj, ref.other) and obj_compatible(pred.other, ref.obj)))
    return obj_compatible(pred.obj, ref.obj)
