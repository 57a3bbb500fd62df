"""Event metric: known missing / hallucinated / repeated cases give the expected rates."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest

from mmlora.data.caption_audio import SoundConfig
from mmlora.data.caption_events import Event, Obj
from mmlora.data.caption_grammar import caption_clip, perturbed_caption
from mmlora.data.caption_world import WorldConfig, add_audio_events, simulate
from mmlora.metrics.event_metric import Judgement, LLMJudge, ProceduralJudge, aggregate, max_matching

RED_C, BLUE_S, GREEN_T = Obj("red", "circle", "small"), Obj("blue", "square", "large"), Obj("green", "triangle", "small")
GT = [
    Event("background", value="black"),
    Event("appear", obj=RED_C),
    Event("appear", obj=BLUE_S, sound="chime", start=1.0, end=1.0, modality="audiovisual"),
    Event("move", obj=RED_C, value="left", start=1.5, end=2.3),
    Event("collide", obj=BLUE_S, other=RED_C, sound="thud", start=2.5, end=3.0, modality="audiovisual"),
    Event("sound", value="bell", start=3.1, end=3.9, modality="audio"),
]
FULL = ("On a black background, a red circle appears. A blue square appears with a chime. "
        "The red circle moves left. The blue square hits the red circle. A bell rings.")
JUDGE = ProceduralJudge()

# caption -> (matched, missing, hallucinated, unparsed, repeated)
CASES = [
    (FULL, (6, 0, 0, 0, 0)),
    ("On a black background, a red circle appears. A blue square appears. The red circle moves left. "
     "A bell rings.", (5, 1, 0, 0, 0)),                                                  # collide missing
    (FULL + " The blue square turns green.", (6, 0, 1, 0, 0)),                           # invented event
    (FULL + " The red circle moves to the left.", (6, 0, 0, 0, 1)),                      # said twice
    (FULL + " A dog barks.", (6, 0, 1, 1, 0)),                                           # unparsed text
    (FULL.replace("a red circle appears", "a large red circle appears"), (5, 1, 1, 0, 0)),  # wrong size
    (FULL.replace("with a chime", "with a thud"), (5, 1, 1, 0, 0)),                      # wrong cue sound
    (FULL.replace("The blue square hits the red circle", "The red circle and the blue square collide"),
     (6, 0, 0, 0, 0)),                                                                   # pair order free
    ("There is a red circle and a blue square on a black background.", (3, 3, 0, 0, 0)),  # present = appear
    ("", (0, 6, 0, 0, 0)),
    ("A circle moves left.", (1, 5, 0, 0, 0)),                                           # colour left out
    ("The red circle moves right. The red circle moves right.", (0, 6, 1, 0, 1)),       # repeated invention
]


@pytest.mark.parametrize("caption,expected", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_known_cases(caption, expected):
    j = JUDGE.judge(caption, GT, [])
    c = j.counts()
    assert (c["matched"], c["missing"], c["hallucinated"], c["unparsed"], c["repeated"]) == expected
    r = j.rates()
    assert r["missing_rate"] == pytest.approx(expected[1] / 6)
    assert r["hallucination_rate"] == pytest.approx(expected[2] / 6)
    assert r["error_rate"] == pytest.approx((expected[1] + expected[2]) / 6)
    n_pred = expected[0] + expected[2] + expected[4]
    assert r["repetition_rate"] == pytest.approx(expected[4] / n_pred if n_pred else 0.0)


def test_perturbed_captions_give_the_planted_counts():
    """Drop / invent / repeat events at random; the exact judge finds exactly what was planted."""
    for i in range(300):
        rng = np.random.default_rng([7, i])
        scene = simulate(rng, WorldConfig())
        add_audio_events(scene, rng, WorldConfig(), SoundConfig(), [])
        r = random.Random(i)
        cap, planted = perturbed_caption(scene.events, r, r.randrange(4), r.randrange(4), r.randrange(3))
        c = JUDGE.judge(cap.text, scene.events, []).counts()
        assert {k: c[k] for k in planted} == planted, cap.text
        assert c["matched"] == c["n_ref"] - planted["missing"] and c["unparsed"] == 0


def test_reference_captions_score_zero_error():
    for i in range(100):
        rng = np.random.default_rng([8, i])
        scene = simulate(rng, WorldConfig())
        add_audio_events(scene, rng, WorldConfig(), SoundConfig(), [])
        j = JUDGE.judge(caption_clip(scene.events, "detailed", random.Random(i)).text, scene.events, [])
        assert j.rates() == {"missing_rate": 0.0, "hallucination_rate": 0.0, "repetition_rate": 0.0,
                             "error_rate": 0.0}
        visual = JUDGE.judge(caption_clip(scene.events, "visual", random.Random(i)).text, scene.events, [])
        assert visual.counts()["missing"] == sum(e.modality == "audio" for e in scene.events)
        assert visual.counts()["hallucinated"] == 0


def test_maximum_matching_not_greedy():
    gt = [Event("move", obj=Obj("red", "circle"), value="left"), Event("move", obj=Obj("blue", "circle"), value="left")]
    j = JUDGE.judge("A circle moves left. The red circle moves left.", gt, [])
    assert j.counts()["matched"] == 2 and j.counts()["missing"] == 0
    assert max_matching(2, 2, lambda p, r: (p, r) != (1, 1)) == {0: 1, 1: 0}


def test_aggregate_global_is_pooled_and_clip_mean_is_averaged():
    a = Judgement(n_ref=2, matched=[("x", "x")], missing=["y"])             # miss 1/2
    b = Judgement(n_ref=8, matched=[("x", "x")] * 8, hallucinated=["z"] * 2)  # hall 2/8
    agg = aggregate([a, b])
    assert agg["global"]["missing_rate"] == pytest.approx(1 / 10)
    assert agg["global"]["hallucination_rate"] == pytest.approx(2 / 10)
    assert agg["clip_mean"]["missing_rate"] == pytest.approx((0.5 + 0) / 2)
    assert agg["clip_mean"]["error_rate"] == pytest.approx((0.5 + 0.25) / 2)
    assert agg["counts"]["n_ref"] == 10 and agg["counts"]["n_pred"] == 1 + 10


def test_llm_judge_counts_like_the_procedural_one():
    prompts = []

    def fake_llm(prompt: str) -> str:  # a scripted "LLM": splits and aligns as a careful judge would
        prompts.append(prompt)
        return "Sure.\n" + json.dumps({
            "reference_events": ["a man opens a door", "a dog barks", "rain falls"],
            "predicted_events": [{"text": "a man opens the door", "matches": 0},
                                 {"text": "a cat meows", "matches": None},
                                 {"text": "the man opens a door", "matches": 0},
                                 {"text": "a dog barks", "matches": 1}]})

    j = LLMJudge(fake_llm).judge("A man opens the door, a cat meows ...", None, ["A man opens a door. A dog barks."])
    assert "A man opens a door. A dog barks." in prompts[0]
    assert j.counts() == {"n_ref": 3, "n_pred": 4, "matched": 2, "missing": 1, "hallucinated": 1,
                          "unparsed": 0, "repeated": 1}
    assert j.missing == ["rain falls"]
    with pytest.raises(ValueError, match="not the expected JSON"):
        LLMJudge(lambda p: "I cannot answer").judge("x", None, ["y"])
    with pytest.raises(ValueError, match="ground-truth 'events'"):
        JUDGE.judge("x", None, ["y"])


def test_rank_captions_orders_by_planted_errors():
    from mmlora.metrics.event_metric import rank_captions

    rng = np.random.default_rng([9, 0])
    scene = simulate(rng, WorldConfig(min_duration=6.0, max_duration=8.0))
    r = random.Random(0)
    caps = [perturbed_caption(scene.events, r, n, n, 0)[0].text for n in (2, 0, 3, 1)]  # errors 4, 0, 6, 2
    order = [i for i, _ in rank_captions(caps, scene.events)]
    assert order == [1, 3, 0, 2]
    rates = dict(rank_captions(caps, scene.events))
    assert rates[1]["error_rate"] == 0.0 and rates[2]["error_rate"] > rates[0]["error_rate"]
