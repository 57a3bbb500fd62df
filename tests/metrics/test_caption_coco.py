"""COCO metrics: our wrapper equals pycocoevalcap called directly; the no-Java path; CIDEr-D's IDF."""
from __future__ import annotations

import json
import math
import random
from collections import Counter
from pathlib import Path

import pytest

from mmlora.data.caption_events import Event
from mmlora.data.caption_grammar import perturbed_caption
from mmlora.metrics import coco
from mmlora.metrics.coco import CocoConfig, coco_scores, java_available, python_tokenize, tokenize

DATA = Path(__file__).parents[1] / "data" / "captions"
needs_java = pytest.mark.skipif(not java_available(), reason="no java: PTB tokenizer and METEOR unavailable")
HAND = ["It's a dog's life, isn't it? Yes -- (really) \"quoted\" 'single' words...",
        "The well-known 3.5 km walk; e.g. fine: ok!", "I can't, won't; they'd've gone. The U.S. is big.",
        "A RED circle   appears\nthen [vanishes] {quickly}."]


@pytest.fixture(scope="module")
def corpus() -> tuple[dict[str, list[str]], dict[str, str]]:
    """References (paraphrases 2..5) and perturbed predictions for the committed clips and images."""
    refs, preds = {}, {}
    for name in ("manifest.jsonl", "images.jsonl"):
        for i, line in enumerate((DATA / name).read_text().splitlines()):
            rec = json.loads(line)
            refs[rec["id"]] = rec["references"][1:]
            if rec["videos"]:
                r = random.Random(i)
                events = [Event.from_json(e) for e in rec["events"]]
                preds[rec["id"]] = perturbed_caption(events, r, r.randrange(3), r.randrange(3), r.randrange(2))[0].text
            else:
                preds[rec["id"]] = rec["references"][0]
    preds["clip_00003"] = ""  # an empty prediction is scored, not rejected
    return refs, preds


def direct(refs: dict[str, list[str]], preds: dict[str, str], tok) -> dict[str, tuple]:
    """pycocoevalcap's scorers called as COCOEvalCap.evaluate calls them."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge

    gts, res = tok(refs), tok({k: [v] for k, v in preds.items()})
    out = {}
    b, bs = Bleu(4).compute_score(gts, res, verbose=0)
    for n in range(4):
        out[f"BLEU-{n + 1}"] = (b[n], list(bs[n]))
    if tok is ptb:
        m, ms = Meteor().compute_score(gts, res)
        out["METEOR"] = (m, list(ms))
    r, rs = Rouge().compute_score(gts, res)
    out["ROUGE-L"] = (r, list(rs))
    c, cs = Cider().compute_score(gts, res)
    out["CIDEr-D"] = (c, list(cs))
    return out


def ptb(caps):
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    return PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in caps.items()})


def pytok(caps):
    return {k: [python_tokenize(c) for c in v] for k, v in caps.items()}


def _assert_same(ours, theirs, ids):
    for name, (score, scores) in theirs.items():
        assert ours.corpus[name] == score, name  # exact: same code, same inputs
        assert [ours.per_clip[k][name] for k in ids] == scores, name


@needs_java
@pytest.mark.slow  # one METEOR JVM start-up (~10 s on a busy 2-core machine)
def test_wrapper_equals_pycocoevalcap_with_java(corpus, monkeypatch):
    import pycocoevalcap.meteor.meteor as meteor_mod

    shared = meteor_mod.Meteor()  # one JVM for both runs (the class is the same either way)
    monkeypatch.setattr(meteor_mod, "Meteor", lambda: shared)
    refs, preds = corpus
    ours = coco_scores(refs, preds, CocoConfig(java="yes"))
    assert ours.tokenizer == "ptb" and ours.skipped == []
    _assert_same(ours, direct(refs, preds, ptb), list(refs))
    assert 0 < ours.corpus["METEOR"] < 1 and ours.corpus["CIDEr-D"] > 0.5
    # the no-Java path gives the same BLEU / ROUGE-L / CIDEr-D here: the tokenizations agree
    py = coco_scores(refs, preds, CocoConfig(java="no"))
    assert {k: py.corpus[k] for k in py.corpus if k != "METEOR"} == {
        k: ours.corpus[k] for k in ours.corpus if k != "METEOR"}


def test_no_java_path_skips_meteor_and_equals_pycocoevalcap_on_python_tokens(corpus, monkeypatch):
    monkeypatch.setenv("MMLORA_NO_JAVA", "1")
    assert not java_available()
    refs, preds = corpus
    ours = coco_scores(refs, preds)  # java="auto" falls back
    assert ours.tokenizer == "python" and ours.skipped == ["METEOR"] and ours.corpus["METEOR"] is None
    assert all(v["METEOR"] is None for v in ours.per_clip.values())
    _assert_same(ours, direct(refs, preds, pytok), list(refs))
    with pytest.raises(RuntimeError, match="java='yes'"):
        coco_scores(refs, preds, CocoConfig(java="yes"))


@needs_java
def test_python_tokenizer_equals_ptb_on_captions():
    caps: dict[str, list[str]] = {"hand": HAND}
    for name in ("manifest.jsonl", "images.jsonl"):
        for line in (DATA / name).read_text().splitlines():
            rec = json.loads(line)
            caps[rec["id"]] = rec["references"] + list(rec.get("captions", {}).values())
    assert tokenize(caps, use_java=True) == tokenize(caps, use_java=False)


@pytest.mark.parametrize("text,tokens", [
    ("The red circle's colour changes.", "the red circle 's colour changes"),
    ("It isn't \"there\" -- (yet)!", "it is n't there -lrb- yet -rrb-"),
    ("Don't, they'd've; e.g. U.S. items...", "do n't they 'd 've e.g. u.s. items"),
    ("A well-known 3.5 s clip", "a well-known 3.5 s clip"),
])
def test_python_tokenizer_rules(text, tokens):
    assert python_tokenize(text) == tokens


def cider_d_reference(refs: dict[str, list[str]], preds: dict[str, str], sigma: float = 6.0) -> dict[str, float]:
    """CIDEr-D written out (Vedantam et al. 2015, coco-caption variant): document frequencies and
    log N come from the references of *the evaluated set*; lengths are counted as pycocoevalcap
    counts them (bigrams)."""
    def grams(s: str) -> Counter:
        w = s.split()
        return Counter(tuple(w[i:i + n]) for n in range(1, 5) for i in range(len(w) - n + 1))

    df: Counter = Counter()
    for rs in refs.values():
        df.update(set(g for r in rs for g in grams(r)))
    log_n = math.log(len(refs))

    def vec(s: str):
        c = grams(s)
        v = [{g: tf * (log_n - math.log(max(1.0, df[g]))) for g, tf in c.items() if len(g) == n + 1} for n in range(4)]
        return v, [math.sqrt(sum(x * x for x in vn.values())) for vn in v], sum(t for g, t in c.items() if len(g) == 2)

    out = {}
    for k, rs in refs.items():
        vh, nh, lh = vec(preds[k])
        total = 0.0
        for r in rs:
            vr, nr, lr = vec(r)
            sims = []
            for n in range(4):
                val = sum(min(x, vr[n].get(g, 0.0)) * vr[n].get(g, 0.0) for g, x in vh[n].items())
                if nh[n] and nr[n]:
                    val /= nh[n] * nr[n]
                sims.append(val * math.exp(-((lh - lr) ** 2) / (2 * sigma ** 2)))
            total += sum(sims) / 4
        out[k] = 10.0 * total / len(rs)
    return out


def test_cider_d_idf_comes_from_the_evaluated_references(corpus, monkeypatch):
    monkeypatch.setenv("MMLORA_NO_JAVA", "1")
    refs, preds = corpus
    toks_r, toks_p = pytok(refs), {k: v[0] for k, v in pytok({k: [v] for k, v in preds.items()}).items()}
    small = [k for k in refs if k.startswith("clip_")][:4]
    for ids in (small, list(refs)):
        got = coco_scores({k: refs[k] for k in ids}, {k: preds[k] for k in ids}).per_clip
        want = cider_d_reference({k: toks_r[k] for k in ids}, {k: toks_p[k] for k in ids})
        for k in ids:
            assert got[k]["CIDEr-D"] == pytest.approx(want[k], rel=1e-9, abs=1e-12)
    # the same clip scores differently inside a different evaluated set (its IDF changed)
    alone = coco_scores({k: refs[k] for k in small}, {k: preds[k] for k in small}).per_clip[small[0]]["CIDEr-D"]
    full = coco_scores(refs, preds).per_clip[small[0]]["CIDEr-D"]
    assert abs(alone - full) > 1e-3


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="same ids"):
        coco_scores({"a": ["x"]}, {"b": "x"}, CocoConfig(java="no"))
    with pytest.raises(ValueError, match="without reference"):
        coco_scores({"a": []}, {"a": "x"}, CocoConfig(java="no"))
    with pytest.raises(ValueError, match="java must be"):
        coco_scores({"a": ["x"]}, {"a": "x"}, CocoConfig(java="maybe"))
    assert coco.METRICS == ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D")
