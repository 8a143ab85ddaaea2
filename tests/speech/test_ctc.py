"""CTC decoding against brute force: every alignment of a tiny vocabulary enumerated, its labelling's probability
summed, and torch's ctc_loss agreeing with that sum."""
import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recurrent.speech.ctc import (
    CharNgram,
    Lexicon,
    WordBigram,
    collapse,
    greedy,
    prefix_beam_search,
)


def brute_force(log_probs: torch.Tensor) -> dict[tuple[int, ...], float]:
    """labelling -> log p(labelling): the sum over all C^T alignments that collapse to it."""
    T, C = log_probs.shape
    totals: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(C), repeat=T):
        lp = float(sum(log_probs[t, s] for t, s in enumerate(path)))
        key = tuple(collapse(path))
        totals[key] = float(np.logaddexp(totals.get(key, -math.inf), lp))
    return totals


def random_log_probs(T, C, seed, sharpness=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.log_softmax(sharpness * torch.randn(T, C, generator=g, dtype=torch.float64), -1)


def test_collapse_merges_repeats_then_drops_blanks():
    assert collapse([1, 1, 0, 1, 2, 2, 0, 0]) == [1, 1, 2]
    assert collapse([0, 0, 0]) == []
    assert collapse([3, 0, 3, 3, 0]) == [3, 3]
    assert collapse([2, 3, 2]) == [2, 3, 2]


def test_greedy_is_the_collapsed_argmax_path():
    lp = random_log_probs(12, 4, 0, sharpness=3.0)
    path = [int(lp[t].argmax()) for t in range(12)]
    assert greedy(lp) == collapse(path)
    # a hand-built case: frames favour a a - a b b -
    onehot = torch.full((7, 3), -10.0)
    for t, s in enumerate([1, 1, 0, 1, 2, 2, 0]):
        onehot[t, s] = 0.0
    assert greedy(onehot) == [1, 1, 2]


@pytest.mark.parametrize("seed", range(4))
def test_torch_ctc_loss_is_the_brute_force_sum_over_alignments(seed):
    T, C = 5, 3
    lp = random_log_probs(T, C, seed)
    totals = brute_force(lp)
    assert math.isclose(float(np.logaddexp.reduce(list(totals.values()))), 0.0, abs_tol=1e-9)  # a distribution
    for labelling, logp in totals.items():
        if not labelling:
            continue  # torch needs a target of length >= 1 here
        target = torch.tensor([labelling])
        nll = F.ctc_loss(lp[:, None], target, torch.tensor([T]), torch.tensor([len(labelling)]), blank=0,
                         reduction="sum")
        assert math.isclose(-float(nll), logp, rel_tol=1e-9, abs_tol=1e-9)


@pytest.mark.parametrize("seed", range(6))
def test_prefix_beam_search_finds_the_brute_force_best_labelling(seed):
    T, C = 6, 3
    lp = random_log_probs(T, C, seed, sharpness=0.7)  # flat: many alignments per labelling matter
    totals = brute_force(lp)
    best = max(totals, key=totals.get)
    found = tuple(prefix_beam_search(lp, beam=C ** T))  # a beam as wide as every prefix: exact
    assert math.isclose(totals[found], totals[best], rel_tol=1e-12)
    assert tuple(prefix_beam_search(lp, beam=16)) in {best} | {k for k, v in totals.items()
                                                             if math.isclose(v, totals[best], rel_tol=1e-12)}


def test_prefix_search_beats_the_best_path_where_alignments_add_up():
    # frames 1 and 2: 'a' at 0.4, blank at 0.6: the best path is blank-blank (labelling ""), p = 0.36, but
    # "a" has a, a / a, - / -, a: 0.16 + 0.24 + 0.24 = 0.64
    lp = torch.log(torch.tensor([[0.6, 0.4], [0.6, 0.4]], dtype=torch.float64))
    assert greedy(lp) == []
    assert prefix_beam_search(lp, beam=4) == [1]
    assert math.isclose(math.exp(brute_force(lp)[(1,)]), 0.64)


@pytest.mark.parametrize("seed", range(8))
def test_beam_1_equals_greedy_on_confident_frames(seed):
    T, C = 30, 5
    g = torch.Generator().manual_seed(seed)
    best = torch.randint(0, C, (T,), generator=g)
    probs = torch.full((T, C), 0.05 / (C - 1), dtype=torch.float64)
    probs[torch.arange(T), best] = 0.95  # each frame's best symbol at 0.95, as a trained model's outputs
    lp = probs.log()
    assert prefix_beam_search(lp, beam=1) == greedy(lp)


def test_prune_skips_unlikely_characters_without_changing_a_clear_result():
    lp = random_log_probs(20, 6, 3, sharpness=4.0)
    assert prefix_beam_search(lp, beam=8, prune=1e-3) == prefix_beam_search(lp, beam=8)


def test_lexicon_prefers_listed_words_where_the_audio_is_ambiguous():
    itos = ["<blank>", " ", "a", "c", "t", "y"]
    spelled = "cat"  # the acoustics say c, a, then y (0.5) a little over t (0.4)
    frames = []
    for ch in spelled[:2]:
        frames.append({ch: 0.9})
    frames.append({"y": 0.5, "t": 0.4})
    probs = torch.full((len(frames), len(itos)), 1e-3, dtype=torch.float64)
    for t, f in enumerate(frames):
        for ch, p in f.items():
            probs[t, itos.index(ch)] = p
    lp = torch.log(probs / probs.sum(-1, keepdim=True))
    text = lambda ids: "".join(itos[i] for i in ids)
    assert text(prefix_beam_search(lp, beam=8)) == "cay"
    assert text(prefix_beam_search(lp, beam=8, scorer=Lexicon(["cat"], itos, penalty=5.0))) == "cat"
    # the penalty is charged at a space too
    assert Lexicon(["cat"], itos).extend((3, 2, 5), itos.index(" ")) == -10.0
    assert Lexicon(["cat"], itos).extend((3, 2, 4), itos.index(" ")) == 0.0


def test_beam_must_be_positive():
    with pytest.raises(ValueError, match="beam must be >= 1"):
        prefix_beam_search(torch.zeros(2, 2), beam=0)


CORPUS = ["the cat sat", "the cat ran", "a dog sat", "the dog ran far"]
ITOS = ["<blank>", " ", *sorted(set("".join(CORPUS)) - {" "}), "p"]


def test_bigram_is_a_distribution_over_seen_words_and_one_unseen():
    lm = WordBigram(CORPUS, ITOS)
    for v in ["<s>", "the", "cat", "far", "never-seen"]:
        total = sum(math.exp(lm.log_prob(w, v)) for w in lm.unigrams) + math.exp(lm.log_prob("<unseen>", v))
        assert math.isclose(total, 1.0, rel_tol=1e-12)


def test_bigram_scores_add_up_to_the_sentence_log_probability():
    lm = WordBigram(CORPUS, ITOS, weight=0.7, bonus=0.3)
    text = "the dog sat"
    ids = [ITOS.index(ch) for ch in text]
    score = sum(lm.extend(tuple(ids[:i]), ids[i]) for i in range(len(ids))) + lm.finish(tuple(ids))
    words = ["<s>", *text.split(), "</s>"]
    expected = 0.7 * sum(lm.log_prob(w, v) for v, w in itertools.pairwise(words)) + 0.3 * 3
    assert math.isclose(score, expected, rel_tol=1e-12)


def the_cap_or_cat() -> torch.Tensor:
    """The audio says t, h, e, space, c, a, then p (0.5) a little over t (0.4): "the cap"; the corpus has "the cat"."""
    frames = [{"t": 0.9}, {"h": 0.9}, {"e": 0.9}, {" ": 0.9}, {"c": 0.9}, {"a": 0.9}, {"p": 0.5, "t": 0.4}]
    probs = torch.full((len(frames), len(ITOS)), 1e-3, dtype=torch.float64)
    for t, f in enumerate(frames):
        for ch, p in f.items():
            probs[t, ITOS.index(ch)] = p
    return torch.log(probs / probs.sum(-1, keepdim=True))


def text(ids) -> str:
    return "".join(ITOS[i] for i in ids)


def test_bigram_lm_corrects_an_acoustically_close_word():
    lp = the_cap_or_cat()
    assert text(prefix_beam_search(lp, beam=8)) == "the cap"
    assert text(prefix_beam_search(lp, beam=8, scorer=WordBigram(CORPUS, ITOS, weight=1.0, bonus=0.0))) == "the cat"


def test_char_ngram_is_a_distribution_in_every_context():
    lm = CharNgram(CORPUS, ITOS, order=4)
    for context in ["", "t", "the ", "the c", "zzzz", "qxq"]:
        p = lm.distribution(CharNgram.START * 3 + context)
        assert p.shape == (len(ITOS),)  # the characters less the blank, plus the end
        assert math.isclose(p.sum(), 1.0, rel_tol=1e-12) and (p > 0).all()


def test_char_ngram_is_witten_bell_written_out():
    # order 2 on "ab" and "aa": contexts are one character; the order-0 model is add-one counts
    itos = ["<blank>", "a", "b"]
    lm = CharNgram(["ab", "aa"], itos, order=2)
    S, E = CharNgram.START, CharNgram.END
    zero = {"a": (3 + 1) / 9, "b": (1 + 1) / 9, E: (2 + 1) / 9}  # counts a 3, b 1, end 2 (6); +1 each of 3 symbols
    # after "a": seen a once, b once, end once (3 distinct, 3 in all); after START: a twice (1 distinct)
    after_a = {s: (n + 3 * zero[s]) / (3 + 3) for s, n in {"a": 1, "b": 1, E: 1}.items()}
    after_start = {s: ((2 if s == "a" else 0) + 1 * zero[s]) / (2 + 1) for s in zero}
    after_b = {s: ((1 if s == E else 0) + 1 * zero[s]) / (1 + 1) for s in zero}  # "b" is followed by the end once
    for s in zero:
        assert math.isclose(lm.log_prob(s, "a"), math.log(after_a[s]), rel_tol=1e-12)
        assert math.isclose(lm.log_prob(s, ""), math.log(after_start[s]), rel_tol=1e-12)
        assert math.isclose(lm.log_prob(s, "b"), math.log(after_b[s]), rel_tol=1e-12)
        assert math.isclose(lm.log_prob(s, "ba"), math.log(after_a[s]), rel_tol=1e-12)  # only the last character
    assert S not in lm.index


def test_char_ngram_scores_add_up_to_the_sentence_log_probability():
    lm = CharNgram(CORPUS, ITOS, order=3, weight=0.7, bonus=0.2)
    text = "the dog"
    ids = [ITOS.index(ch) for ch in text]
    score = sum(lm.extend(tuple(ids[:i]), ids[i]) for i in range(len(ids))) + lm.finish(tuple(ids))
    expected = sum(0.7 * lm.log_prob(ch, text[:i]) + 0.2 for i, ch in enumerate(text))
    expected += 0.7 * lm.log_prob(CharNgram.END, text)
    assert math.isclose(score, expected, rel_tol=1e-12)


def test_char_ngram_corrects_an_acoustically_close_character():
    lp = the_cap_or_cat()
    assert text(prefix_beam_search(lp, beam=8)) == "the cap"
    assert text(prefix_beam_search(lp, beam=8, scorer=CharNgram(CORPUS, ITOS, order=5, weight=1.0))) == "the cat"
