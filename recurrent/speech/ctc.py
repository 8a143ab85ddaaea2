"""Decoding CTC outputs (Graves et al. 2006): greedy best path, and prefix beam search with a word list or LM.

    ids = greedy(log_probs)                                   # log_probs (T, C): one utterance, blank = 0
    ids = prefix_beam_search(log_probs, beam=8)               # the most probable labelling the beam finds
    ids = prefix_beam_search(log_probs, beam=8, scorer=Lexicon(words, itos))   # out-of-list words pay a penalty
    ids = prefix_beam_search(log_probs, beam=8, scorer=WordBigram(sentences, itos))   # a word bigram LM
    ids = prefix_beam_search(log_probs, beam=8, scorer=CharNgram(sentences, itos))    # a character n-gram LM

Key: T frames, C classes (the blank, id 0, and the characters).

A labelling's probability is the sum over every alignment (a path of T symbols) that collapses to it: merge
repeats, then drop blanks ("aa-ab-" -> "aab"). Greedy decoding collapses the single most probable path. Prefix
beam search (Hannun et al. 2014, "First-pass large vocabulary continuous speech recognition using bi-directional
recurrent DNNs") keeps the `beam` most probable prefixes, each with the probability of its alignments ending in a
blank (p_b) and in its last character (p_nb), so alignments that collapse alike are summed, not compared. With a
beam as wide as the number of prefixes it is exact; beam 1 follows the best prefix, which is the greedy path when
each frame's best symbol is confident (the case for a trained model).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from itertools import pairwise
from typing import Protocol

import numpy as np
from torch import Tensor

BLANK = 0
NEG_INF = -math.inf


def collapse(path: Sequence[int], blank: int = BLANK) -> list[int]:
    """An alignment -> its labelling: merge repeated symbols, then drop blanks ([1, 1, 0, 1, 2, 2] -> [1, 1, 2])."""
    out, previous = [], None
    for s in path:
        if s != previous and s != blank:
            out.append(int(s))
        previous = s
    return out


def greedy(log_probs: Tensor | np.ndarray, blank: int = BLANK) -> list[int]:
    """The labelling of the most probable path: each frame's best symbol, collapsed. log_probs (T, C)."""
    return collapse(np.asarray(log_probs).argmax(-1).tolist(), blank)


class Scorer(Protocol):
    """What prefix beam search asks of a language model: log weights added as a prefix grows, and at its end."""

    def extend(self, prefix: tuple[int, ...], c: int) -> float:
        """The log weight of appending character `c` to `prefix` (0: neutral)."""

    def finish(self, prefix: tuple[int, ...]) -> float:
        """The log weight of `prefix` ending the utterance."""


class Lexicon:
    """A word list as a scorer: a word that ends (at a space, or the utterance's end) and is not in the list costs
    `penalty` (log units). With a large penalty the search keeps to the list's words where the audio allows.

        scorer = Lexicon(["one", "two"], itos, penalty=10.0)     # itos: the model's characters, itos[0] the blank
    """

    def __init__(self, words, itos: Sequence[str], penalty: float = 10.0, space: str = " "):
        self.words, self.itos, self.penalty = set(words), list(itos), float(penalty)
        self.space = self.itos.index(space) if space in self.itos else None

    def _last_word(self, prefix: tuple[int, ...]) -> str:
        cut = len(prefix)
        while cut and prefix[cut - 1] != self.space:
            cut -= 1
        return "".join(self.itos[i] for i in prefix[cut:])

    def _cost(self, word: str) -> float:
        return 0.0 if not word or word in self.words else -self.penalty

    def extend(self, prefix: tuple[int, ...], c: int) -> float:
        return self._cost(self._last_word(prefix)) if c == self.space else 0.0

    def finish(self, prefix: tuple[int, ...]) -> float:
        return self._cost(self._last_word(prefix))


class WordBigram:
    """A word bigram language model as a scorer (Hannun et al. 2014's weighting): each word that ends adds
    `weight` · log P(word | previous word) + `bonus` (a bonus per word offsets the LM's pull towards fewer words).
    P interpolates the bigram counts with the add-one unigram: P(w | v) = (c(v, w) + k·P(w)) / (c(v) + k), so unseen
    pairs and words keep some mass; "<s>" starts each sentence, "</s>" ends it.

        lm = WordBigram(open("train.txt").read().splitlines(), itos, weight=0.5, bonus=1.0)
    """

    def __init__(self, sentences, itos: Sequence[str], weight: float = 0.5, bonus: float = 1.0, k: float = 1.0,
                 space: str = " "):
        self.itos, self.weight, self.bonus, self.k = list(itos), float(weight), float(bonus), float(k)
        self.space = self.itos.index(space) if space in self.itos else None
        self.unigrams: dict[str, int] = {}
        self.bigrams: dict[tuple[str, str], int] = {}
        self.contexts: dict[str, int] = {}
        for line in sentences:
            words = ["<s>", *line.split(), "</s>"]
            for v, w in pairwise(words):
                self.unigrams[w] = self.unigrams.get(w, 0) + 1
                self.bigrams[v, w] = self.bigrams.get((v, w), 0) + 1
                self.contexts[v] = self.contexts.get(v, 0) + 1
        self.total = sum(self.unigrams.values())

    def log_prob(self, word: str, previous: str) -> float:
        unigram = (self.unigrams.get(word, 0) + 1) / (self.total + len(self.unigrams) + 1)  # +1: an unseen word
        p = (self.bigrams.get((previous, word), 0) + self.k * unigram) / (self.contexts.get(previous, 0) + self.k)
        return math.log(p)

    def _words(self, prefix: tuple[int, ...]) -> list[str]:
        return "".join(self.itos[i] for i in prefix).split()

    def _score(self, words: list[str]) -> float:
        previous = words[-2] if len(words) > 1 else "<s>"
        return self.weight * self.log_prob(words[-1], previous) + self.bonus

    def extend(self, prefix: tuple[int, ...], c: int) -> float:
        if c != self.space or not prefix or prefix[-1] == self.space:
            return 0.0
        return self._score(self._words(prefix))

    def finish(self, prefix: tuple[int, ...]) -> float:
        words = self._words(prefix)
        ended = self._score(words) if words and prefix[-1] != self.space else 0.0
        return ended + self.weight * self.log_prob("</s>", words[-1] if words else "<s>")


class CharNgram:
    """A character n-gram language model as a scorer, for open vocabularies where a word list or word bigram
    cannot know the test's words. Each character that a prefix gains adds `weight` · log P(c | the n-1 before it)
    + `bonus` (the bonus offsets the LM's pull towards fewer characters); the end adds weight · log P(end | ...).

    P is Witten-Bell interpolated (Witten and Bell 1991, as SRILM's -wbdiscount): with h' the context h less its
    oldest character, P(c | h) = (c(h, c) + u(h) · P(c | h')) / (c(h) + u(h)), u(h) the number of distinct
    characters seen after h; the order-0 model is add-one over the characters and the end. Each sentence starts
    with n-1 start symbols. Distributions are computed once per context and kept.

        lm = CharNgram(open("train.txt").read().splitlines(), itos, order=6, weight=0.5, bonus=0.5)
    """

    START, END = "\x02", "\x03"

    def __init__(self, sentences, itos: Sequence[str], order: int = 6, weight: float = 0.5, bonus: float = 0.0):
        if order < 1:
            raise ValueError(f"order must be >= 1, got {order}")
        self.itos, self.order, self.weight, self.bonus = list(itos), int(order), float(weight), float(bonus)
        self.symbols = [*self.itos[1:], self.END]  # what can follow a context: the characters (not the blank), end
        self.index = {ch: i for i, ch in enumerate(self.symbols)}
        self.counts: dict[str, dict[str, int]] = {}  # context (0..n-1 characters) -> next symbol -> count
        for line in sentences:
            text = self.START * (self.order - 1) + line + self.END
            for i in range(self.order - 1, len(text)):
                for k in range(self.order):  # every context length 0..n-1 before text[i]
                    follow = self.counts.setdefault(text[i - k:i], {})
                    follow[text[i]] = follow.get(text[i], 0) + 1
        self.cache: dict[str, np.ndarray] = {}

    def distribution(self, context: str) -> np.ndarray:
        """P(· | context) over `symbols` (the characters, then the end), using its last n-1 characters."""
        context = context[len(context) - self.order + 1:] if self.order > 1 else ""
        if context not in self.cache:
            counts = np.zeros(len(self.symbols))
            follow = {ch: n for ch, n in self.counts.get(context, {}).items() if ch in self.index}
            for ch, n in follow.items():
                counts[self.index[ch]] = n
            if context:  # Witten-Bell: the lower order weighted by the distinct symbols seen after the context
                lower, weight = self.distribution(context[1:]), len(follow)
            else:  # add-one: the uniform distribution weighted by the number of symbols
                lower, weight = np.full(len(self.symbols), 1 / len(self.symbols)), len(self.symbols)
            self.cache[context] = lower if not follow else (counts + weight * lower) / (counts.sum() + weight)
        return self.cache[context]

    def _context(self, prefix: tuple[int, ...]) -> str:
        head = prefix[len(prefix) - self.order + 1:] if self.order > 1 else ()
        return self.START * (self.order - 1 - len(head)) + "".join(self.itos[i] for i in head)

    def log_prob(self, symbol: str, context: str) -> float:
        """log P(symbol | context), symbol a character or END; context: the text so far (START-padded or not)."""
        pad = self.START * max(0, self.order - 1 - len(context))
        return math.log(self.distribution(pad + context)[self.index[symbol]])

    def extend(self, prefix: tuple[int, ...], c: int) -> float:
        p = self.distribution(self._context(prefix))[self.index[self.itos[c]]]
        return self.weight * math.log(p) + self.bonus

    def finish(self, prefix: tuple[int, ...]) -> float:
        return self.weight * math.log(self.distribution(self._context(prefix))[-1])


def _add(beams: dict, prefix: tuple[int, ...], pb: float, pnb: float, weight: float) -> None:
    """Sum the alignment probabilities of a prefix reached in several ways."""
    entry = beams.get(prefix)
    if entry is None:
        beams[prefix] = [pb, pnb, weight]
    else:
        entry[0], entry[1] = np.logaddexp(entry[0], pb), np.logaddexp(entry[1], pnb)


def prefix_beam_search(log_probs: Tensor | np.ndarray, beam: int = 8, blank: int = BLANK,
                       scorer: Scorer | None = None, prune: float = 0.0) -> list[int]:
    """The most probable labelling that a beam of `beam` prefixes finds. log_probs (T, C), log-softmaxed.

    scorer: an optional language model (see Scorer, Lexicon): prefixes are ranked by log p(audio-prefix) + its
    weights. prune: skip characters whose probability at a frame is below this (0: none; 1e-3 makes long
    utterances several times faster and rarely changes the result)."""
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    lp = np.asarray(log_probs, dtype=np.float64)
    T, C = lp.shape
    floor = math.log(prune) if prune > 0 else NEG_INF
    # prefix -> [log p_b, log p_nb, log weight from the scorer]
    beams: dict[tuple[int, ...], list[float]] = {(): [0.0, NEG_INF, 0.0]}
    for t in range(T):
        frame = lp[t]
        chars = [c for c in range(C) if c != blank and frame[c] >= floor]
        nxt: dict[tuple[int, ...], list[float]] = {}
        add = partial(_add, nxt)
        for prefix, (pb, pnb, weight) in beams.items():
            total = np.logaddexp(pb, pnb)
            add(prefix, total + frame[blank], NEG_INF, weight)  # a blank: the prefix stays
            last = prefix[-1] if prefix else None
            if last is not None:
                add(prefix, NEG_INF, pnb + frame[last], weight)  # the last character repeated: merged
            for c in chars:
                w = weight + (scorer.extend(prefix, c) if scorer is not None else 0.0)
                # after a blank, or a different character, c starts a new label; c == last needs a blank between
                add(prefix + (c,), NEG_INF, (pb if c == last else total) + frame[c], w)
        beams = dict(sorted(nxt.items(), key=lambda kv: -(np.logaddexp(kv[1][0], kv[1][1]) + kv[1][2]))[:beam])

    def final(item):
        prefix, (pb, pnb, weight) = item
        return np.logaddexp(pb, pnb) + weight + (scorer.finish(prefix) if scorer is not None else 0.0)

    return list(max(beams.items(), key=final)[0])
