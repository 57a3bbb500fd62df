"""COCO caption metrics through ``pycocoevalcap``: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D.

The scorers are pycocoevalcap's own classes, called exactly as its ``COCOEvalCap.evaluate``
calls them (SPICE is left out: it downloads Stanford models at run time):

- BLEU-n: corpus BLEU with the *closest* reference length for the brevity penalty
  (``Bleu(4)``, per-clip values are sentence BLEU);
- METEOR 1.5 (``meteor-1.5.jar``, ``-l en -norm``) -- needs Java;
- ROUGE-L: LCS F-measure with β = 1.2, averaged over clips;
- CIDEr-D (pycocoevalcap calls it "CIDEr"): TF-IDF n-gram (n ≤ 4) cosine, clipped, Gaussian
  length penalty σ = 6, ×10, with document frequencies taken from the references *of the
  evaluated set* (so a clip's score depends on the other clips scored with it).

Tokenization: with Java, the Stanford PTB tokenizer pycocoevalcap ships (``-lowerCase
-preserveLines``, then its punctuation list is dropped). Without Java (or ``java="no"``),
:func:`python_tokenize`: lower case; split off punctuation; split the clitics PTB splits
(``n't``, ``'s``, ``'re``, ``'ve``, ``'ll``, ``'d``, ``'m``); drop pycocoevalcap's punctuation
list (quotes, brackets, ``. , ? ! : ; -- ...``). It equals the PTB result on plain English captions
(tested on the generated corpus); on exotic text (URLs, emoticons, abbreviations with periods)
the two may differ. Without Java METEOR is skipped and the result says so.
"""
from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field

# pycocoevalcap's punctuation list (tokenizer/ptbtokenizer.py), removed after tokenization.
PUNCTUATIONS = {"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--",
                "...", ";"}
METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D")


@dataclass(frozen=True)
class CocoConfig:
    """Which COCO metrics and how."""

    java: str = "auto"        # "auto" (use Java when it runs), "yes" (require it) or "no" (Python only)
    meteor: bool = True       # compute METEOR when Java is used


@dataclass
class CocoResult:
    """Corpus scores, per-clip scores, and how they were made."""

    corpus: dict[str, float | None]
    per_clip: dict[str, dict[str, float | None]]
    tokenizer: str                        # "ptb" (Stanford, Java) or "python"
    skipped: list[str] = field(default_factory=list)  # metrics not computed (e.g. ["METEOR"])


@functools.lru_cache(maxsize=1)
def _java_runs() -> bool:
    exe = shutil.which("java")
    if exe is None:
        return False
    try:
        return subprocess.run([exe, "-version"], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def java_available() -> bool:
    """True when a ``java`` program runs (``MMLORA_NO_JAVA=1`` forces False)."""
    return os.environ.get("MMLORA_NO_JAVA", "") not in ("1", "true", "yes") and _java_runs()


_CLITIC = re.compile(r"(n't|'s|'re|'ve|'ll|'d|'m)$")
_TOKEN = re.compile(r"(?:[a-z]\.){2,}|[a-z0-9]+(?:[-'.][a-z0-9]+)*'?|\.\.\.|--|[^\sa-z0-9]")
# PTB escapes brackets; with -lowerCase the escapes are lower case and survive the punctuation filter.
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "{": "-lcb-", "}": "-rcb-", "[": "-lsb-", "]": "-rsb-"}


def python_tokenize(text: str) -> str:
    """PTB-like tokenization without Java (see the module docstring); returns space-joined tokens."""
    t = text.lower().replace("\n", " ")
    for a, b in (("\u201c", '"'), ("\u201d", '"'), ("\u2018", "'"), ("\u2019", "'")):
        t = t.replace(a, b)
    out: list[str] = []
    for tok in _TOKEN.findall(t):
        if tok[0].isalnum():
            tail: list[str] = []
            if tok.endswith("'") and len(tok) > 1:
                tok, tail = tok[:-1], ["'"]
            while (m := _CLITIC.search(tok)) and m.start() > 0:  # "they'd've" -> they 'd 've
                tok, tail = tok[:m.start()], [m.group(1)] + tail
            out += [tok] + tail
        else:
            out.append(_BRACKETS.get(tok, tok))
    return " ".join(w for w in out if w not in PUNCTUATIONS and w != '"')


@contextlib.contextmanager
def _quiet_fd2():
    """Silence the Java tokenizer's progress line (it writes to the inherited stderr)."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def tokenize(captions: dict[str, list[str]], use_java: bool) -> dict[str, list[str]]:
    """Tokenize {id: [caption, ...]} with the PTB tokenizer (Java) or :func:`python_tokenize`."""
    if use_java:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        with _quiet_fd2():
            return PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in captions.items()})
    return {k: [python_tokenize(c) for c in v] for k, v in captions.items()}


def coco_scores(references: dict[str, list[str]], predictions: dict[str, str],
                cfg: CocoConfig | None = None) -> CocoResult:
    """Score ``predictions`` {id: caption} against ``references`` {id: [caption, ...]} (same ids)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    cfg = cfg or CocoConfig()
    if set(references) != set(predictions):
        missing = sorted(set(references) ^ set(predictions))[:5]
        raise ValueError(f"references and predictions must have the same ids; differing: {missing}")
    empty = [k for k, v in references.items() if not v]
    if empty:
        raise ValueError(f"clips without reference captions: {empty[:5]}")
    if cfg.java not in ("auto", "yes", "no"):
        raise ValueError(f"java must be 'auto', 'yes' or 'no', got {cfg.java!r}")
    use_java = cfg.java == "yes" or (cfg.java == "auto" and java_available())
    if cfg.java == "yes" and not java_available():
        raise RuntimeError("java='yes' but no working 'java' program was found; install a JRE "
                           "(scripts/setup_caption_tools.sh) or use java='auto'/'no'")
    ids = list(references)
    gts = tokenize({k: list(references[k]) for k in ids}, use_java)
    res = tokenize({k: [predictions[k]] for k in ids}, use_java)
    corpus: dict[str, float | None] = {}
    per: dict[str, dict[str, float | None]] = {k: {} for k in ids}
    skipped: list[str] = []

    def put(name: str, score: float, scores) -> None:
        corpus[name] = float(score)
        for k, s in zip(ids, scores):
            per[k][name] = float(s)

    with contextlib.redirect_stdout(io.StringIO()):  # Bleu prints its ratio even with verbose=0 on some versions
        bleu, bleus = Bleu(4).compute_score(gts, res, verbose=0)
    for n in range(4):
        put(f"BLEU-{n + 1}", bleu[n], bleus[n])
    if use_java and cfg.meteor:
        from pycocoevalcap.meteor.meteor import Meteor

        meteor = Meteor()
        try:
            put("METEOR", *meteor.compute_score(gts, res))
        finally:
            del meteor  # its __del__ stops the Java process
    else:
        corpus["METEOR"] = None
        for k in ids:
            per[k]["METEOR"] = None
        skipped.append("METEOR")
    put("ROUGE-L", *Rouge().compute_score(gts, res))
    put("CIDEr-D", *Cider().compute_score(gts, res))
    return CocoResult(corpus={m: corpus[m] for m in METRICS}, per_clip=per,
                      tokenizer="ptb" if use_java else "python", skipped=skipped)
