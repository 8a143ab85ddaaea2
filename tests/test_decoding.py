"""Decoding: beam search with beam 1 is greedy search, and a wide beam finds the best hypothesis that brute force
over every output up to the maximum length finds, with the same length normalisation."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from recurrent.data.parallel import BOS_ID, EOS_ID, PAD_ID, UNK_ID, collate
from recurrent.decoding import beam_search, greedy_search, max_lengths
from recurrent.models.seq2seq import Seq2Seq, Seq2SeqConfig
from recurrent.tasks.synthetic import SyntheticTask


def model_and_source(tgt_vocab: int = 9, steps: int = 30, **options):
    """A model half-trained to copy (so outputs end on </s> at varied lengths, and not always surely), and a
    padded batch of sources."""
    torch.manual_seed(0)
    task = SyntheticTask("copy", num_symbols=tgt_vocab - 4, min_len=1, max_len=5)
    config = dict(src_vocab_size=9, tgt_vocab_size=tgt_vocab, embedding_size=8, hidden_size=12, dropout=0.0)
    model = Seq2Seq(Seq2SeqConfig(**{**config, **options})).double()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    g = torch.Generator().manual_seed(3)
    for _ in range(steps):
        batch = task.batch(32, g)
        loss = model(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    batch = collate([(torch.randint(4, tgt_vocab, (n,), generator=g).tolist(), [4]) for n in [5, 3, 1, 4]], range(4))
    return model.eval(), batch.src, batch.src_lengths


@pytest.mark.parametrize("options", [dict(), dict(cell="lstm", attention="dot"), dict(attention="none")])
@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_beam_of_one_is_greedy(options, alpha):
    model, src, lengths = model_and_source(**options)
    greedy = greedy_search(model, src, lengths, max_len=12, alpha=alpha)
    beam = beam_search(model, src, lengths, beam_size=1, max_len=12, alpha=alpha)
    assert [h.tokens for h in beam] == [h.tokens for h in greedy]
    for b, g in zip(beam, greedy):
        assert math.isclose(b.score, g.score, rel_tol=1e-9) and math.isclose(b.log_prob, g.log_prob, rel_tol=1e-9)
        if g.attention is not None:
            torch.testing.assert_close(b.attention, g.attention)
    assert len({len(h.tokens) for h in greedy}) > 1  # varied lengths: stopping on </s> is exercised


def log_prob(model, src, length, output: list[int]) -> float:
    """log p(output + </s> | src), teacher-forced through the model's training forward."""
    tgt_in = torch.tensor([[BOS_ID] + output])
    with torch.no_grad():
        logp = model(src, length, tgt_in).logits.log_softmax(-1)[0]  # (n, V)
    return float(sum(logp[t, y] for t, y in enumerate(output + [EOS_ID])))


@pytest.mark.parametrize("alpha", [0.0, 1.0, 0.6])
def test_wide_beam_finds_the_brute_force_best(alpha):
    model, src, lengths = model_and_source(tgt_vocab=7)  # outputs over {<unk>, 4, 5, 6}, then </s>
    limits = max_lengths(lengths, max_len=3, a=1.0, b=0)  # per sentence: min(3, S) tokens with </s>
    beam = beam_search(model, src, lengths, beam_size=32, max_len=3, a=1.0, b=0, alpha=alpha)
    tokens = [UNK_ID, 4, 5, 6]
    for i in range(src.shape[0]):
        n = int(lengths[i])
        outputs = [list(y) for k in range(int(limits[i])) for y in itertools.product(tokens, repeat=k)]
        scored = [(log_prob(model, src[i : i + 1, :n], lengths[i : i + 1], y) / (len(y) + 1) ** alpha, y)
                  for y in outputs]
        best_score, best = max(scored)
        assert beam[i].tokens == best
        assert math.isclose(beam[i].score, best_score, rel_tol=1e-9)
        assert PAD_ID not in beam[i].tokens and BOS_ID not in beam[i].tokens


def test_beam_five_scores_match_the_model_and_stay_in_length():
    """The bookkeeping through reordering: each returned score is the teacher-forced log-probability of its
    output, normalised; outputs respect the length limit; attention is (output steps, source length)."""
    model, src, lengths = model_and_source()
    beam = beam_search(model, src, lengths, beam_size=5, max_len=8, alpha=1.0)
    for i, h in enumerate(beam):
        n = int(lengths[i])
        expected = log_prob(model, src[i : i + 1, :n], lengths[i : i + 1], h.tokens)
        assert math.isclose(h.log_prob, expected, rel_tol=1e-9)
        assert math.isclose(h.score, expected / (len(h.tokens) + 1), rel_tol=1e-9)
        assert len(h.tokens) + 1 <= 8 and h.attention.shape == (len(h.tokens) + 1, n)
