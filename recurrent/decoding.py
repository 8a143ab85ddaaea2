"""Decoding a Seq2Seq model: greedy search and batched beam search; and beam search over a language model.

Key: B batch, K beam size, S source length, V target vocabulary.

Both step the decoder one token at a time from the state the previous step left (`model.decode_step`), so
the prefix is never run again. Both use the same rules, so beam search with K = 1 is greedy search:

    max length     sentence b may have at most max_length(S_b) = min(max_len, ⌊a·S_b + b⌋) tokens, </s> included;
                   at the last allowed step only </s> may be chosen
    score          log p(y) / |y|^alpha, with |y| counting </s> (alpha = 0: raw log-probability;
                   alpha = 1: per-token average, the length normalisation of Cho et al. 2014 / Wu et al. 2016)
    beam search    each step expands every live hypothesis by every token and ranks the K·V candidates by
                   log-probability. A candidate ending in </s> among the top K is finished (scored with the
                   length normalisation); the best K that do not end in </s> live on. A sentence is done when it
                   has K finished hypotheses or none alive; the best normalised finished one is returned.

A language model's continuation has a fixed length (`lm_beam_search`), so there is no </s> to finish on and no
length to normalise: the K best prefixes by log-probability live on at each step.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from recurrent.data.parallel import BOS_ID, EOS_ID, PAD_ID
from recurrent.models.lm import LanguageModel
from recurrent.models.seq2seq import Seq2Seq, select


class Hypothesis(NamedTuple):
    tokens: list[int]  # target ids, </s> excluded
    score: float  # log p(tokens + </s>) / (len(tokens) + 1) ** alpha
    log_prob: float  # log p(tokens + </s>)
    attention: Tensor | None  # (len(tokens) + 1, S_b) weights of each output step over the source, or None


def max_lengths(src_lengths: Tensor, max_len: int = 200, a: float = 2.0, b: int = 10) -> Tensor:
    """The maximum output length of each sentence (</s> included): min(max_len, ⌊a·S + b⌋), at least 1."""
    return (src_lengths.float() * a + b).floor().long().clamp(1, max_len)


def normalise(log_prob: float, length: int, alpha: float) -> float:
    return log_prob / length ** alpha


def _log_softmax(logits: Tensor) -> Tensor:
    """Log-probabilities in float32 at least (float64 stays float64), so scores add up without bf16 rounding."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32)).log_softmax(-1)


def _forbid_specials(logp: Tensor) -> Tensor:
    logp[..., PAD_ID] = -math.inf  # never emit padding or a second <s>
    logp[..., BOS_ID] = -math.inf
    return logp


def _force_eos(logp: Tensor, last: Tensor) -> Tensor:
    """At a sentence's last allowed step, only </s>. logp (N, V), last (N,) True where this step is the last."""
    eos_only = torch.full_like(logp, -math.inf)
    eos_only[:, EOS_ID] = logp[:, EOS_ID]
    return torch.where(last.unsqueeze(1), eos_only, logp)


@torch.no_grad()
def greedy_search(model: Seq2Seq, src: Tensor, src_lengths: Tensor, max_len: int = 200, a: float = 2.0,
                  b: int = 10, alpha: float = 1.0) -> list[Hypothesis]:
    """The most likely token at every step, for a batch of sources src (B, S). One Hypothesis per sentence."""
    model.eval()
    B = src.shape[0]
    limits = max_lengths(src_lengths.to(src.device), max_len, a, b)  # (B,) on the model's device
    encoded = model.encode(src, src_lengths)
    state = model.initial_state(encoded)
    token = torch.full((B,), BOS_ID, dtype=torch.long, device=src.device)
    log_prob = None  # (B,) log p of each output so far
    tokens, weights, ended = [], [], torch.full((B,), -1, device=src.device)  # ended[b]: the step at which </s> came, or -1
    for t in range(int(limits.max())):
        step = model.decode_step(token, state, encoded)
        logp = _force_eos(_forbid_specials(_log_softmax(step.logits)), limits - 1 == t)  # (B, V)
        token = logp.argmax(-1)  # (B,)
        running = ended < 0
        gained = torch.where(running, logp.gather(1, token.unsqueeze(1)).squeeze(1), 0.0)
        log_prob = gained if log_prob is None else log_prob + gained
        ended = torch.where(running & (token == EOS_ID), t, ended)
        tokens.append(token)
        weights.append(step.attention)
        state = step.state
        if bool((ended >= 0).all()):
            break
    # to the CPU once, not one element at a time (each would wait for the device)
    tokens = torch.stack(tokens, dim=1).cpu()  # (B, t)
    attention = torch.stack(weights, dim=1).cpu() if model.uses_attention else None  # (B, t, S)
    ended, log_prob, src_lengths = ended.tolist(), log_prob.tolist(), src_lengths.tolist()
    out = []
    for i in range(B):
        n = ended[i] + 1  # output length with </s>
        attn = None if attention is None else attention[i, :n, : src_lengths[i]]
        out.append(Hypothesis(tokens[i, : n - 1].tolist(), normalise(log_prob[i], n, alpha), log_prob[i], attn))
    return out


@torch.no_grad()
def beam_search(model: Seq2Seq, src: Tensor, src_lengths: Tensor, beam_size: int = 5, max_len: int = 200,
                a: float = 2.0, b: int = 10, alpha: float = 1.0) -> list[Hypothesis]:
    """Batched beam search (see the module docstring for the rules). One Hypothesis per sentence: the best."""
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    model.eval()
    B, K, device = src.shape[0], beam_size, src.device
    # The scores of all K·V candidates stay on the model's device; only each step's best 2K go to the CPU,
    # where the search's bookkeeping (finished hypotheses, histories) lives.
    limits = max_lengths(src_lengths.cpu(), max_len, a, b)  # (B,)
    last_step = (limits - 1).repeat_interleave(K).to(device)  # (B*K,): each hypothesis's last allowed step
    encoded = model.encode(src, src_lengths)
    rows = torch.arange(B, device=device).repeat_interleave(K)  # (B*K,) hypothesis -> sentence
    encoded = select(encoded, rows)  # every field repeated K times: (B*K, ...)
    state = model.initial_state(encoded)  # (B*K, ...)
    dtype = torch.promote_types(next(model.parameters()).dtype, torch.float32)
    scores = torch.full((B, K), -math.inf, dtype=dtype)
    scores[:, 0] = 0.0  # one live hypothesis per sentence to start: the empty one
    token = torch.full((B * K,), BOS_ID, dtype=torch.long, device=device)
    history = torch.zeros(B, K, 0, dtype=torch.long)  # (B, K, t) tokens so far
    attn_history = None  # (B, K, t, S)
    finished: list[list[Hypothesis]] = [[] for _ in range(B)]
    done = torch.zeros(B, dtype=torch.bool)
    for t in range(int(limits.max())):
        step = model.decode_step(token, state, encoded)
        V = step.logits.shape[-1]
        logp = _forbid_specials(_log_softmax(step.logits))  # (B*K, V)
        logp = _force_eos(logp, last_step == t).view(B, K, V)
        candidates = (scores.to(device).unsqueeze(-1) + logp).view(B, K * V)  # (B, K*V)
        top, flat = (x.cpu() for x in candidates.topk(min(2 * K, K * V), dim=-1))  # (B, 2K) best first
        beam, tok = flat // V, flat % V  # which hypothesis each candidate extends, and with which token
        if model.uses_attention:
            weights = step.attention.cpu().view(B, K, 1, -1)
            attn_history = weights if attn_history is None else torch.cat([attn_history, weights], dim=2)
        is_eos = tok == EOS_ID
        # finished: </s> candidates within the top K of a sentence still searching
        for i, j in (is_eos[:, :K] & top[:, :K].isfinite() & ~done.unsqueeze(1)).nonzero().tolist():
            k = int(beam[i, j])
            attn = None if attn_history is None else attn_history[i, k, :, : int(src_lengths[i])]
            finished[i].append(Hypothesis(history[i, k].tolist(), normalise(float(top[i, j]), t + 1, alpha),
                                          float(top[i, j]), attn))
        # alive: the best K candidates that do not end in </s>
        alive_scores = top.masked_fill(is_eos, -math.inf)
        scores, pick = alive_scores.topk(K, dim=-1)  # (B, K)
        beam, tok = beam.gather(1, pick), tok.gather(1, pick)  # (B, K)
        done |= torch.tensor([len(f) >= K for f in finished]) | ~scores.isfinite().any(-1)
        scores = scores.masked_fill(done.unsqueeze(1), -math.inf)
        if bool(done.all()):
            break
        history = torch.cat([history.gather(1, beam.unsqueeze(-1).expand_as(history)), tok.unsqueeze(-1)], dim=2)
        if attn_history is not None:
            attn_history = attn_history.gather(1, beam.view(B, K, 1, 1).expand_as(attn_history))
        parents = (torch.arange(B).unsqueeze(1) * K + beam).view(-1).to(device)  # (B*K,) flat hypothesis index
        state = select(step.state, parents)
        token = tok.view(-1).to(device)
    return [max(f, key=lambda h: h.score) for f in finished]


# --- language models ----------------------------------------------------------------------------------------


class Continuation(NamedTuple):
    tokens: list[int]  # the continuation's token ids, prime excluded
    log_prob: float  # log p(tokens | prime)


@torch.inference_mode()
def lm_beam_search(model: LanguageModel, prime: Tensor, length: int, beam_size: int = 5,
                   bf16: bool = False) -> Continuation:
    """The most likely continuation of `length` tokens after `prime` (P,), by beam search.

    Each step extends each of the k live continuations by every token and keeps the K (`beam_size`) best of the
    k·V candidates by log p(continuation | prime). Every candidate has the same length, so log-probabilities
    compare fairly without normalisation. With K >= V^length no candidate is ever dropped: the search is exact.
    The live continuations step together as one batch of the model's `Stepper` (native up to its batch limit).
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    was_training = model.training
    model.eval()
    try:
        stepper = model.stepper(torch.bfloat16 if bf16 else None)
        logits, states = model.read_prime(prime, stepper)  # (1, V); cell states with batch 1
        scores = torch.zeros(1, device=logits.device)  # (k,) log p of each live continuation
        history = torch.zeros(1, 0, dtype=torch.long, device=logits.device)  # (k, t) its tokens so far
        for t in range(length):
            logp = _log_softmax(logits)  # (k, V)
            V = logp.shape[-1]
            candidates = (scores.to(logp.dtype).unsqueeze(1) + logp).view(-1)  # (k*V,)
            scores, flat = candidates.topk(min(beam_size, candidates.numel()))  # (k',) best first
            parent, token = flat // V, flat % V  # which continuation each survivor extends, and by which token
            history = torch.cat([history[parent], token.unsqueeze(1)], dim=1)  # (k', t+1)
            if t + 1 < length:  # the last tokens need no logits after them
                states = [type(s)(*(f[parent] for f in s)) for s in states]  # each survivor's parent's state
                logits, states = stepper.step(token, states)
        return Continuation(history[0].tolist(), float(scores[0]))
    finally:
        model.train(was_training)
