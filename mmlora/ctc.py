"""The auxiliary CTC objective (``model.ctc``): a head on one modality's encoder features (linear, frame by frame; or
:class:`TemporalHead`, with the neighbouring frames as context), trained with CTC
against the characters of the sample's transcript (its assistant answer), added to the LLM's loss. Characters need no
phonemizer or tokenizer, so any manifest works; the transcript is normalized as WER scoring normalizes it
(:func:`mmlora.metrics.wer.normalize_text`: lower case, punctuation removed, numbers as words)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CTCConfig", "CTC_CHARS", "HEADS", "TemporalHead", "build_ctc_head", "run_ctc_head", "ctc_targets", "ctc_loss",
           "ctc_log_likelihood", "rescore_with_ctc", "ConfidenceGate", "judge_confidence"]

HEADS = ("linear", "temporal")

CTC_CHARS = " '" + "abcdefghijklmnopqrstuvwxyz"  # label i + 1 is CTC_CHARS[i]; label 0 is the blank


@dataclass
class CTCConfig:
    """``model.ctc``: CTC on ``modality``'s encoder features (``""``: off), ``weight`` × it added to the
    cross-entropy in training. The head (``projectors.<modality>.ctc_head``) trains and is saved with the projector;
    inference does not use it, unless ``feed`` gives its hidden frames to the projector."""

    modality: str = ""    # e.g. "video": the lip encoder's 25 fps features; "" = off
    weight: float = 0.3   # loss = cross-entropy + weight · CTC (mean over the batch of per-character CTC)
    head: str = "linear"  # "linear": one frame at a time; "temporal": TemporalHead (context of neighbouring frames)
    width: int = 256      # temporal only: its projection's width,
    kernel: int = 5       # the frames each convolution sees (odd),
    layers: int = 2       # and how many residual convolutions it stacks
    feed: bool = False    # temporal only: the projector reads the head's hidden frames beside the encoder's (the
                          # LLM then sees the context the head learned), and inference runs the head too

    def __post_init__(self) -> None:
        if self.modality and not self.weight > 0:
            raise ValueError(f"model.ctc.weight must be > 0, got {self.weight}")
        if self.head not in HEADS:
            raise ValueError(f"model.ctc.head must be one of {HEADS}, got {self.head!r}")
        if self.feed and self.head != "temporal":
            raise ValueError(f"model.ctc.feed needs model.ctc.head: temporal (the hidden frames it feeds), got "
                             f"{self.head!r}")
        if self.width < 1 or self.layers < 1 or self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"model.ctc: width and layers must be >= 1 and kernel odd and >= 1, got width "
                             f"{self.width}, kernel {self.kernel}, layers {self.layers}")


class TemporalHead(nn.Module):
    """A CTC head with temporal context: a ReLU projection to ``width``, ``layers`` residual 1-D convolutions of
    ``kernel`` frames (same length), then a linear map to the labels. Padding frames are zeroed before each
    convolution, so a clip's logits do not depend on how much padding its batch has."""

    def __init__(self, d_in: int, n_labels: int, width: int = 256, kernel: int = 5, layers: int = 2):
        super().__init__()
        self.inp = nn.Linear(d_in, width)
        self.convs = nn.ModuleList(nn.Conv1d(width, width, kernel, padding=kernel // 2) for _ in range(layers))
        self.out = nn.Linear(width, n_labels)

    def hidden(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """The frames ``[B, T, width]`` after the convolutions, before the labels (what ``model.ctc.feed`` gives the
        projector)."""
        keep = None if mask is None else mask.unsqueeze(1).to(x.dtype)  # [B, 1, T]
        h = torch.relu(self.inp(x)).transpose(1, 2)
        for conv in self.convs:
            h = h if keep is None else h * keep
            h = h + torch.relu(conv(h))
        return h.transpose(1, 2)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.out(self.hidden(x, mask))


def build_ctc_head(cfg: CTCConfig, d_in: int) -> nn.Module:
    """``cfg.head``'s module from features of width ``d_in`` to the blank and :data:`CTC_CHARS`."""
    n = len(CTC_CHARS) + 1
    if cfg.head == "temporal":
        return TemporalHead(d_in, n, cfg.width, cfg.kernel, cfg.layers)
    return nn.Linear(d_in, n)


def run_ctc_head(head: nn.Module, x: Tensor, mask: Tensor) -> Tensor:
    """The logits ``[B, T, labels]`` of a head from :func:`build_ctc_head` on features ``x [B, T, D]`` (cast to the
    head's dtype) with their ``mask [B, T]``."""
    x = x.to(next(head.parameters()).dtype)
    return head(x, mask) if isinstance(head, TemporalHead) else head(x)


def ctc_targets(texts: list[str]) -> tuple[Tensor, Tensor]:
    """The transcripts as CTC labels: ``(labels [sum of lengths], lengths [B])``, characters outside
    :data:`CTC_CHARS` dropped after normalization."""
    from .metrics.wer import normalize_text

    index = {c: i + 1 for i, c in enumerate(CTC_CHARS)}
    seqs = [[index[c] for c in normalize_text(t) if c in index] for t in texts]
    return (torch.tensor([i for s in seqs for i in s], dtype=torch.long),
            torch.tensor([len(s) for s in seqs], dtype=torch.long))


def _ctc_nll(logits: Tensor, mask: Tensor, texts: list[str], zero_infinity: bool) -> tuple[Tensor, Tensor]:
    """Each sample's CTC negative log-likelihood (summed over its characters) and its number of target characters."""
    labels, lengths = ctc_targets(texts)
    logp = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)  # [T, B, C]
    nll = F.ctc_loss(logp, labels.to(logits.device), mask.sum(1).to(torch.long), lengths.to(logits.device),
                     blank=0, reduction="none", zero_infinity=zero_infinity)
    return nll, lengths.to(nll.device)


def ctc_loss(logits: Tensor, mask: Tensor, texts: list[str]) -> Tensor:
    """CTC of ``logits [B, T, len(CTC_CHARS) + 1]`` (frames where ``mask [B, T]`` is False are padding) against
    ``texts``: each sample's loss over its number of target characters (at least 1), averaged over the batch; a
    sample whose transcript cannot fit its frames counts zero (``zero_infinity``)."""
    per, lengths = _ctc_nll(logits, mask, texts, zero_infinity=True)
    return (per / lengths.clamp(min=1)).mean()  # an empty transcript: its blank path, not a 0 division


def ctc_log_likelihood(logits: Tensor, mask: Tensor, texts: list[str]) -> Tensor:
    """``log p(text | frames)`` under CTC, summed over each text's characters (normalized as :func:`ctc_targets`
    does), for ``logits [N, T, C]`` with ``mask [N, T]``; ``-inf`` where a text cannot fit its frames."""
    return -_ctc_nll(logits, mask, texts, zero_infinity=False)[0]


def mix_judges(parts: Tensor | None, share: float) -> Tensor | None:
    """The Whisper judges' score of each candidate (``generate(whisper_both=share)``): ``parts [J, N]`` holds one row
    a decoder; with one row that row, with two ``share`` of the first (Whisper's own) and ``1 - share`` of the second
    (the model folder's trained one)."""
    if parts is None:
        return None
    return parts[0] if len(parts) == 1 else share * parts[0] + (1 - share) * parts[1]


def candidate_rows(texts: list[str], llm_logp: Tensor, n_samples: int, ctc: Tensor | None = None,
                   parts: Tensor | None = None, second: Tensor | None = None) -> list[dict]:
    """Each sample's ``K`` candidates with every score :func:`rescore_beams` weighs (``generate(candidates=[])``,
    ``mmlora evaluate --candidates``): ``texts``, ``llm``, ``ctc`` (where the CTC head rescored), ``judges`` (one
    list a Whisper decoder, where they rescored) and ``second`` (the second judges' mean, where they were asked), and
    each score's dtype, so that :func:`rescore_rows` picks as the search did with any other weights, without decoding
    again."""
    K = _candidates_per_sample(texts, llm_logp, n_samples)
    named = {"llm": llm_logp, "ctc": ctc, "second": second}
    rows = []
    for b in range(n_samples):
        row: dict = {"texts": texts[b * K:(b + 1) * K]}
        row.update({k: v[b * K:(b + 1) * K].tolist() for k, v in named.items() if v is not None})
        if parts is not None:
            row["judges"] = [p[b * K:(b + 1) * K].tolist() for p in parts]
        row["dtypes"] = {k: str(v.dtype).removeprefix("torch.")
                         for k, v in {**named, "judges": parts}.items() if v is not None}
        rows.append(row)
    return rows


GATE_JUDGES = ("own", "trained")  # ConfidenceGate.judge: the row's judges[0] (Whisper's own) or judges[1]


@dataclass(frozen=True)
class ConfidenceGate:
    """``generate(confidence_gate={...})`` (session 68): a sample whose judge is sure of it (:func:`judge_confidence`
    at least ``above``) or unsure (below ``below``; one of the two is set) is ranked with these weights instead of the
    decoding's own. ``judge``: ``"own"``, Whisper's own decoder, or ``"trained"``, the folder's judge (a decoding with
    ``whisper_both`` scores with both). The folder's judge, trained on synthetic voices, is unsure of human speech
    (session 68: median -0.47 a word on the human validation set against -0.14 on synthetic held-out voices), where
    Whisper's own decoder should have more say than the weights chosen on synthetic voices give it."""

    judge: str = "trained"
    above: float | None = None        # ranks with these weights where the judge's confidence >= above
    below: float | None = None        # ... where it is < below
    ctc_weight: float = 0.0
    whisper_weight: float = 0.9
    whisper_both: float = 0.5         # Whisper's own decoder's share of the judges' score
    second_judge_weight: float = 0.0

    @classmethod
    def parse(cls, value) -> ConfidenceGate | None:
        """``value`` as saved in generation settings (a dict of these fields, one of ``above`` / ``below``
        required), an instance, or None / False (off); a bad field is named."""
        if value is None or value is False or isinstance(value, cls):
            return value or None
        if not isinstance(value, dict) or ("above" in value) == ("below" in value):
            raise ValueError(f"confidence_gate: a dict with one of 'above' / 'below' and weights, got {value!r}")
        unknown = sorted(set(value) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"confidence_gate: unknown {', '.join(unknown)} (fields: "
                             f"{', '.join(cls.__dataclass_fields__)})")
        if value.get("judge", "trained") not in GATE_JUDGES:
            raise ValueError(f"confidence_gate.judge: one of {', '.join(GATE_JUDGES)}, got {value['judge']!r}")
        for k, v in value.items():
            if k != "judge" and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise ValueError(f"confidence_gate.{k}: a number, got {v!r}")
        gate = cls(**{k: v if k == "judge" else float(v) for k, v in value.items()})
        for k in ("ctc_weight", "whisper_weight", "whisper_both"):
            if not 0.0 <= getattr(gate, k) <= 1.0:
                raise ValueError(f"confidence_gate.{k}: in [0, 1], got {getattr(gate, k)}")
        if not 0.0 <= gate.second_judge_weight < 1.0:
            raise ValueError(f"confidence_gate.second_judge_weight: in [0, 1), got {gate.second_judge_weight}")
        if not gate.whisper_weight:
            raise ValueError("confidence_gate.whisper_weight: the gate's weights rank with Whisper's judges, not 0")
        return gate

    def applies(self, row: dict, name: str = "candidate row") -> bool:
        """Whether this row's sample is ranked with the gate's weights: its ``judge``'s confidence
        (:func:`judge_confidence`, from the row's ``judges``, :func:`candidate_rows`) at least ``above`` / below
        ``below``."""
        parts = row.get("judges") or []
        if len(parts) < 2:
            raise ValueError(f"{name}: confidence_gate reads Whisper's own decoder and the folder's judge (a decoding "
                             f"with whisper_both), and the row has {len(parts)} judges")
        scores = torch.tensor(parts[GATE_JUDGES.index(self.judge)], dtype=getattr(torch, row["dtypes"]["judges"]))
        c = judge_confidence(row["texts"], scores)
        return c >= self.above if self.above is not None else c < self.below

    def weights(self) -> tuple[float, float, float, float]:
        """``(ctc_weight, judge_weight, share, second_weight)`` as :func:`row_totals` takes them."""
        return self.ctc_weight, self.whisper_weight, self.whisper_both, self.second_judge_weight


def judge_confidence(texts: list[str], scores: Tensor) -> float:
    """How sure a judge is of a sample: its best-scored candidate's log-probability (``scores [K]``: its score of
    each of ``texts``) over that candidate's words (at least 1)."""
    k = int(scores.argmax())
    return float(scores[k]) / max(1, len(texts[k].split()))


def rescore_rows(rows: list[dict], ctc_weight: float = 0.0, judge_weight: float = 0.0, share: float = 0.5,
                 second_weight: float = 0.0, gate: ConfidenceGate | None = None) -> list[str]:
    """The candidate :func:`rescore_beams` picks from each of :func:`candidate_rows`' rows with these weights
    (``share``: Whisper's own decoder's, :func:`mix_judges`; ``second_weight``: the second judges'), the first (the
    search's best) where both are 0; with ``gate``, a row it :meth:`~ConfidenceGate.applies` to is ranked with the
    gate's weights."""
    out = []
    for i, row in enumerate(rows):
        c, j, s, v = ctc_weight, judge_weight, share, second_weight
        if gate is not None and gate.applies(row, f"candidate row {i}"):
            c, j, s, v = gate.weights()
        total = row_totals(row, c, j, s, f"candidate row {i}", v)
        # argmax returns the first of equal maxima, as rescore_beams
        out.append(row["texts"][int(total.argmax())] if c or j else row["texts"][0])
    return out


def row_totals(row: dict, ctc_weight: float = 0.0, judge_weight: float = 0.0, share: float = 0.5,
               name: str = "candidate row", second_weight: float = 0.0) -> Tensor:
    """``[K]``: :func:`rescore_totals` of one of :func:`candidate_rows`' rows with these weights (``share``:
    :func:`mix_judges`; ``second_weight``: :func:`with_second`), each score read back in its saved dtype; a weighed
    score the row lacks is named."""
    def get(key: str) -> Tensor | None:
        if key not in row:
            return None
        return torch.tensor(row[key], dtype=getattr(torch, row["dtypes"][key]))
    ctc, parts, second = get("ctc"), get("judges"), get("second")
    missing = [k for k, w, v in (("ctc", ctc_weight, ctc), ("judges", judge_weight, parts),
                                 ("second", second_weight, second)) if w and v is None]
    if missing:
        raise ValueError(f"{name}: no {' or '.join(missing)} scores to weigh (the decoding did not rescore with them)")
    return with_second(rescore_totals(get("llm"), ctc, ctc_weight, mix_judges(parts, share), judge_weight), second,
                       second_weight)


def with_second(total: Tensor, second: Tensor | None, weight: float) -> Tensor:
    """``(1 - weight) * total + weight * second``: the second judges' say (``generate(second_judge_weight=…)``:
    the mean score of other trainings' judges, a score ensemble) beside the total of :func:`rescore_totals`; a weight
    of 0 leaves ``total`` as it is."""
    return (1 - weight) * total + weight * second.to(total.device) if weight else total


def rescore_with_ctc(texts: list[str], llm_logp: Tensor, logits: Tensor, mask: Tensor, weight: float) -> list[str]:
    """Joint CTC / attention rescoring of an n-best list: ``texts`` holds ``K`` candidates for each of the ``B``
    samples (sample-major, as ``generate(num_return_sequences=K)`` returns them), ``llm_logp [B*K]`` their
    log-probabilities under the LLM, ``logits [B, T, C]`` / ``mask [B, T]`` each sample's CTC head output. Returns
    for each sample the candidate with the best ``(1 - weight) * llm_logp + weight * CTC log-likelihood``; the
    first (the LLM's own best) on ties."""
    _candidates_per_sample(texts, llm_logp, logits.shape[0])
    return rescore_beams(texts, llm_logp, logits.shape[0], nbest_ctc(texts, logits, mask), weight)


def _candidates_per_sample(texts: list[str], llm_logp: Tensor, n_samples: int) -> int:
    if len(texts) % n_samples or llm_logp.numel() != len(texts):
        raise ValueError(f"{len(texts)} candidates and {llm_logp.numel()} scores for {n_samples} samples")
    return len(texts) // n_samples


def nbest_ctc(texts: list[str], logits: Tensor, mask: Tensor) -> Tensor:
    """``[B*K]``: each of the ``K`` candidates a sample (sample-major) scored by :func:`ctc_log_likelihood` on its
    sample's ``logits [B, T, C]`` / ``mask [B, T]``."""
    B = logits.shape[0]
    if len(texts) % B:
        raise ValueError(f"{len(texts)} candidates for {B} samples")
    K = len(texts) // B
    return ctc_log_likelihood(logits.repeat_interleave(K, 0), mask.repeat_interleave(K, 0), texts)


def rescore_totals(llm_logp: Tensor, ctc: Tensor | None = None, ctc_weight: float = 0.0, judge: Tensor | None = None,
                   judge_weight: float = 0.0) -> Tensor:
    """Each candidate's total that :func:`rescore_beams` ranks: ``(1 - judge_weight) * ((1 - ctc_weight) * llm_logp +
    ctc_weight * ctc) + judge_weight * judge`` (a weight of 0 leaves its score out)."""
    total = llm_logp.float()
    if ctc_weight:
        total = (1 - ctc_weight) * total.to(ctc.device) + ctc_weight * ctc
    if judge_weight:
        total = (1 - judge_weight) * total + judge_weight * judge.to(total.device)
    return total


def rescore_beams(texts: list[str], llm_logp: Tensor, n_samples: int, ctc: Tensor | None = None,
                  ctc_weight: float = 0.0, judge: Tensor | None = None, judge_weight: float = 0.0,
                  second: Tensor | None = None, second_weight: float = 0.0) -> list[str]:
    """For each of ``n_samples`` samples, the best of its ``K`` candidates (``texts``, sample-major, ``llm_logp [B*K]``
    their LLM log-probabilities) by ``(1 - judge_weight) * ((1 - ctc_weight) * llm_logp + ctc_weight * ctc) +
    judge_weight * judge`` (``ctc``, ``judge``: ``[B*K]`` scores of the same candidates, e.g. :func:`nbest_ctc` and
    Whisper's decoder, ``generate(whisper_weight=…)``), with ``second_weight`` the second judges' ``second`` beside
    it (:func:`with_second`); the first (the search's own best) on ties."""
    B, K = n_samples, _candidates_per_sample(texts, llm_logp, n_samples)
    total = with_second(rescore_totals(llm_logp, ctc, ctc_weight, judge, judge_weight), second, second_weight)
    best = total.view(B, K).argmax(1).tolist()  # argmax returns the first of equal maxima
    return [texts[b * K + k] for b, k in enumerate(best)]
