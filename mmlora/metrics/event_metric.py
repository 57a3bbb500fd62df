"""Event-level caption metric (after video-SALMONN 2): what a caption missed, invented and repeated.

A judge turns a predicted caption into a list of atomic statements and aligns them with the
reference's atomic events. From the alignment, per clip:

=====================  ====================================================================
count                  meaning
=====================  ====================================================================
``n_ref``              reference events
``matched``            reference events the caption states (one-to-one, maximum matching)
``missing``            reference events it does not state (``n_ref - matched``)
``hallucinated``       stated events that match no reference event and repeat no earlier
                       statement, plus ``unparsed`` text the judge cannot map to an event
``repeated``           stated events that repeat an earlier statement of the same caption
                       beyond what the reference holds (the second "the circle moves left")
``n_pred``             statements: matched + hallucinated + repeated (unparsed included)
=====================  ====================================================================

Rates, as in video-SALMONN 2 and like WER, are taken over the reference events, so that
``error_rate = missing_rate + hallucination_rate`` (it can exceed 1)::

    missing_rate       = missing / n_ref
    hallucination_rate = hallucinated / n_ref
    repetition_rate    = repeated / n_pred        (0 when the caption states nothing)

Reported globally (counts summed over clips, then divided) and per clip, plus the mean of the
per-clip rates. The default judge is the deterministic parser of the procedural world
(:class:`ProceduralJudge`); :class:`LLMJudge` lets a capable local LLM play the same role on
free-form captions of real videos, returning the same :class:`Judgement`.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

from mmlora.data.caption_events import Event, event_compatible

from .caption_parser import CaptionParser


@dataclass
class Judgement:
    """One clip's alignment, as counts plus the items behind them (readable strings)."""

    n_ref: int
    matched: list[tuple[str, str]] = field(default_factory=list)  # (statement, reference event)
    missing: list[str] = field(default_factory=list)
    hallucinated: list[str] = field(default_factory=list)          # includes unparsed text
    repeated: list[str] = field(default_factory=list)
    unparsed: list[str] = field(default_factory=list)              # subset of hallucinated

    @property
    def n_pred(self) -> int:
        return len(self.matched) + len(self.hallucinated) + len(self.repeated)

    def counts(self) -> dict[str, int]:
        return {"n_ref": self.n_ref, "n_pred": self.n_pred, "matched": len(self.matched),
                "missing": len(self.missing), "hallucinated": len(self.hallucinated),
                "unparsed": len(self.unparsed), "repeated": len(self.repeated)}

    def rates(self) -> dict[str, float]:
        return rates_from_counts(self.counts())

    def to_json(self) -> dict:
        return {**self.counts(), **self.rates(), "missing_events": self.missing,
                "hallucinated_events": self.hallucinated, "repeated_events": self.repeated,
                "unparsed_text": self.unparsed, "matched_events": [list(m) for m in self.matched]}


def rates_from_counts(c: dict[str, int]) -> dict[str, float]:
    """The four rates from counts (see the module docstring)."""
    n_ref = max(c["n_ref"], 1)
    miss = c["missing"] / n_ref
    hall = c["hallucinated"] / n_ref
    rep = c["repeated"] / c["n_pred"] if c["n_pred"] else 0.0
    return {"missing_rate": miss, "hallucination_rate": hall, "repetition_rate": rep, "error_rate": miss + hall}


def max_matching(n_pred: int, n_ref: int, ok: Callable[[int, int], bool]) -> dict[int, int]:
    """Maximum bipartite matching pred→ref (Kuhn's augmenting paths; preds and refs tried in order,
    so the result is deterministic). Returns {pred index: ref index}."""
    adj = [[r for r in range(n_ref) if ok(p, r)] for p in range(n_pred)]
    ref_of: dict[int, int] = {}  # ref -> pred

    def augment(p: int, seen: set[int]) -> bool:
        for r in adj[p]:
            if r not in seen:
                seen.add(r)
                if r not in ref_of or augment(ref_of[r], seen):
                    ref_of[r] = p
                    return True
        return False

    for p in range(n_pred):
        augment(p, set())
    return {p: r for r, p in ref_of.items()}


def same_statement(a: Event, b: Event) -> bool:
    """Two stated events say the same thing: same action, value and objects (colour + shape, a
    missing colour fits any); size and cue sound are ignored."""
    def objs(e: Event) -> list:
        return [o for o in (e.obj, e.other) if o is not None]

    def fit(x, y) -> bool:
        return x.shape == y.shape and (x.colour is None or y.colour is None or x.colour == y.colour)

    ka, kb = a.key(), b.key()
    if ka[0] != kb[0] or ka[2] != kb[2] or len(objs(a)) != len(objs(b)):
        return False
    oa, ob = objs(a), objs(b)
    if len(oa) == 2:
        return (fit(oa[0], ob[0]) and fit(oa[1], ob[1])) or (fit(oa[0], ob[1]) and fit(oa[1], ob[0]))
    return all(fit(x, y) for x, y in zip(oa, ob))


def judge_events(pred: Sequence[Event], ref: Sequence[Event], unparsed: Sequence[str] = ()) -> Judgement:
    """Align stated events with reference events (:func:`event_compatible`, one-to-one, maximum)."""
    match = max_matching(len(pred), len(ref), lambda p, r: event_compatible(pred[p], ref[r]))
    j = Judgement(n_ref=len(ref))
    for p, e in enumerate(pred):
        if p in match:
            j.matched.append((e.describe(), ref[match[p]].describe()))
        elif any(same_statement(e, pred[q]) for q in range(p)):
            j.repeated.append(e.describe())
        else:
            j.hallucinated.append(e.describe())
    matched_refs = set(match.values())
    j.missing = [r.describe() for i, r in enumerate(ref) if i not in matched_refs]
    j.unparsed = list(unparsed)
    j.hallucinated += [f"unparsed: {u}" for u in unparsed]
    return j


class CaptionJudge(Protocol):
    """Anything that can judge a predicted caption against a clip's reference."""

    name: str

    def judge(self, prediction: str, reference_events: Sequence[Event] | None,
              references: Sequence[str]) -> Judgement:
        """``reference_events``: the exact events when known (procedural data), else None and the
        judge works from the reference captions ``references``."""
        ...


class ProceduralJudge:
    """The default: the deterministic parser of the procedural world + exact event matching."""

    name = "procedural"

    def __init__(self) -> None:
        self.parser = CaptionParser()

    def judge(self, prediction: str, reference_events: Sequence[Event] | None,
              references: Sequence[str]) -> Judgement:
        if reference_events is None:
            raise ValueError("the procedural judge needs the clip's ground-truth 'events' "
                             "(use an LLMJudge for data without event lists)")
        parsed = self.parser.parse(prediction)
        return judge_events(parsed.events, list(reference_events), parsed.unparsed)


LLM_JUDGE_PROMPT = """You compare a predicted video caption with the reference description of the same video.
Split the reference into atomic events (one object, one action, one detail each) unless they are given.
Split the predicted caption into atomic events the same way.
For each predicted event, give the index (0-based) of the reference event it states, or null if the
reference does not support it. Answer with JSON only, of the form
{{"reference_events": ["...", ...], "predicted_events": [{{"text": "...", "matches": 0}}, ...]}}

Reference events (may be empty): {events}
Reference description: {reference}
Predicted caption: {prediction}
"""


class LLMJudge:
    """A judge backed by any text-completion callable (e.g. a local LLM): ``complete(prompt) -> str``.

    The LLM splits captions into atomic events and aligns them (prompt: :data:`LLM_JUDGE_PROMPT`);
    counting is the same as for the procedural judge: a predicted event matching a reference event
    already taken by an earlier one, or with the same text as an earlier one, is ``repeated``.
    """

    name = "llm"

    def __init__(self, complete: Callable[[str], str], prompt: str = LLM_JUDGE_PROMPT):
        self.complete, self.prompt = complete, prompt

    def judge(self, prediction: str, reference_events: Sequence[Event] | None,
              references: Sequence[str]) -> Judgement:
        given = [e.describe() for e in reference_events] if reference_events is not None else []
        reply = self.complete(self.prompt.format(events=json.dumps(given), reference=" ".join(references[:1]),
                                                 prediction=prediction))
        m = re.search(r"\{.*\}", reply, flags=re.S)
        try:
            data = json.loads(m.group(0) if m else reply)
            ref_items = given or [str(x) for x in data["reference_events"]]
            preds = [(str(p["text"]), p.get("matches")) for p in data["predicted_events"]]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"LLM judge: reply is not the expected JSON ({exc}): {reply[:200]!r}") from exc
        j = Judgement(n_ref=len(ref_items))
        taken: set[int] = set()
        seen_text: set[str] = set()
        for text, k in preds:
            norm = " ".join(text.lower().split())
            if isinstance(k, int) and 0 <= k < len(ref_items) and k not in taken:
                taken.add(k)
                j.matched.append((text, ref_items[k]))
            elif norm in seen_text or (isinstance(k, int) and k in taken):
                j.repeated.append(text)
            else:
                j.hallucinated.append(text)
            seen_text.add(norm)
        j.missing = [r for i, r in enumerate(ref_items) if i not in taken]
        return j


def aggregate(judgements: Sequence[Judgement]) -> dict:
    """Global (pooled counts) and clip-mean rates over a corpus."""
    keys = ("n_ref", "n_pred", "matched", "missing", "hallucinated", "unparsed", "repeated")
    total = {k: sum(j.counts()[k] for j in judgements) for k in keys}
    per = [j.rates() for j in judgements]
    mean = {k: (sum(r[k] for r in per) / len(per) if per else 0.0) for k in
            ("missing_rate", "hallucination_rate", "repetition_rate", "error_rate")}
    return {"counts": total, "global": rates_from_counts(total), "clip_mean": mean}


def rank_captions(candidates: Sequence[str], reference_events: Sequence[Event] | None,
                  references: Sequence[str] = (), judge: CaptionJudge | None = None) -> list[tuple[int, dict]]:
    """Order candidate captions of one clip best first, by (error rate, repetition rate, index):
    the ranking mrDPO uses to turn sampled captions into preference pairs (best vs worst).
    Returns ``[(candidate index, rates), ...]``."""
    judge = judge or ProceduralJudge()
    scored = [(i, judge.judge(c, reference_events, references).rates()) for i, c in enumerate(candidates)]
    return sorted(scored, key=lambda s: (s[1]["error_rate"], s[1]["repetition_rate"], s[0]))
