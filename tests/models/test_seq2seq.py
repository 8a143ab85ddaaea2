"""Seq2Seq: attention masks padding and normalises, the bidirectional encoder on a padded batch equals each
sentence alone, every variant overfits a batch, and a small model learns to reverse sequences."""
from __future__ import annotations

import time

import pytest
import torch

from recurrent.data.parallel import collate
from recurrent.decoding import greedy_search
from recurrent.models.attention import make_attention
from recurrent.models.seq2seq import Seq2Seq, Seq2SeqConfig
from recurrent.tasks.synthetic import SyntheticTask, exact_match

ATTENTION_TYPES = ["bahdanau", "dot", "general"]


def tiny(**kwargs) -> Seq2Seq:
    config = dict(src_vocab_size=11, tgt_vocab_size=13, embedding_size=6, hidden_size=8, dropout=0.0)
    return Seq2Seq(Seq2SeqConfig(**{**config, **kwargs})).double()


def padded_batch(src_vocab=11, tgt_vocab=13, lengths=(5, 2, 4), tgt_lengths=(3, 4, 1)):
    g = torch.Generator().manual_seed(0)
    pairs = [(torch.randint(4, src_vocab, (s,), generator=g).tolist(), torch.randint(4, tgt_vocab, (t,),
                                                                                     generator=g).tolist())
             for s, t in zip(lengths, tgt_lengths)]
    return collate(pairs, range(len(pairs)))


@pytest.mark.parametrize("kind", ATTENTION_TYPES)
def test_attention_weights_sum_to_one_and_are_zero_on_padding(kind):
    attention = make_attention(kind, 8, 8).double()
    memory = torch.randn(3, 6, 8, dtype=torch.double)
    mask = torch.arange(6) < torch.tensor([6, 2, 4]).unsqueeze(1)  # (3, 6)
    context, weights = attention(torch.randn(3, 8, dtype=torch.double), attention.keys(memory), memory, mask)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, dtype=torch.double))
    assert (weights[~mask] == 0).all() and (weights[mask] > 0).all()
    torch.testing.assert_close(context, (weights.unsqueeze(-1) * memory).sum(1))


@pytest.mark.parametrize("kind", ATTENTION_TYPES)
def test_model_attention_ignores_padding(kind):
    model, batch = tiny(attention=kind), padded_batch()
    out = model(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out)
    valid = torch.arange(batch.src.shape[1]) < batch.src_lengths.unsqueeze(1)  # (B, S)
    torch.testing.assert_close(out.attention.sum(-1), torch.ones(out.attention.shape[:2], dtype=torch.double))
    assert (out.attention.masked_select(~valid.unsqueeze(1)) == 0).all()
    # whatever sits in the padding changes nothing
    noisy = batch.src.masked_fill(~valid, 7)
    again = model(noisy, batch.src_lengths, batch.tgt_in, batch.tgt_out)
    torch.testing.assert_close(again.logits, out.logits)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_encoder_on_a_padded_batch_equals_each_sentence_alone(cell):
    model, batch = tiny(cell=cell, encoder_layers=2), padded_batch()
    encoded = model.encode(batch.src, batch.src_lengths)
    start = model.initial_state(encoded)
    for b, n in enumerate(batch.src_lengths.tolist()):
        alone = model.encode(batch.src[b : b + 1, :n], batch.src_lengths[b : b + 1])
        torch.testing.assert_close(encoded.memory[b, :n], alone.memory[0])
        assert (encoded.memory[b, n:] == 0).all()
        for ours, theirs in zip(encoded.final, alone.final):
            torch.testing.assert_close(ours[b], theirs[0])
        for ours, theirs in zip(start.cells[0], model.initial_state(alone).cells[0]):
            torch.testing.assert_close(ours[b], theirs[0])


@pytest.mark.parametrize("options", [dict(cell="gru", attention="bahdanau"), dict(cell="lstm", attention="dot"),
                                     dict(cell="rnn", attention="general", input_feeding=False),
                                     dict(cell="lstm", attention="none", decoder_layers=2),
                                     dict(cell="gru", attention="general", tie_weights=True, decoder_layers=2)])
def test_every_variant_overfits_one_batch(options):
    torch.manual_seed(0)
    model, batch = tiny(**options).float(), padded_batch()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(200):
        loss = model(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out).loss
        if loss.item() < 0.05:
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05


def test_tied_weights_share_one_matrix_and_teacher_forcing_zero_reads_own_predictions():
    model, batch = tiny(tie_weights=True), padded_batch()
    assert model.out.weight is model.tgt_embedding.weight
    forced = model(batch.src, batch.src_lengths, batch.tgt_in, teacher_forcing=1.0)
    free = model(batch.src, batch.src_lengths, batch.tgt_in, teacher_forcing=0.0)
    torch.testing.assert_close(free.logits[:, 0], forced.logits[:, 0])  # step 0 always reads <s>
    own = free.logits[:, :-1].argmax(-1)  # what free running fed back at steps 1..
    replay = model(batch.src, batch.src_lengths, torch.cat([batch.tgt_in[:, :1], own], dim=1))
    torch.testing.assert_close(replay.logits, free.logits)


@pytest.mark.parametrize("bad, message", [(dict(cell="tree"), "cell must be one of"),
                                          (dict(attention="cosine"), "attention must be one of"),
                                          (dict(hidden_size=7), "hidden_size must be even")])
def test_bad_config_fails_at_construction(bad, message):
    with pytest.raises(ValueError, match=message):
        tiny(**bad)


def test_learns_to_reverse_length_8_sequences():
    torch.manual_seed(0)
    task = SyntheticTask("reverse", num_symbols=10, min_len=8, max_len=8)
    model = Seq2Seq(Seq2SeqConfig(task.vocab_size, task.vocab_size, cell="gru", embedding_size=32, hidden_size=64,
                                  attention="bahdanau", dropout=0.0))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    generator, test = torch.Generator().manual_seed(0), task.batch(300, torch.Generator().manual_seed(1))
    references = [[t for t in row.tolist() if t > 3] for row in test.tgt_out]
    start, accuracy = time.monotonic(), 0.0
    for step in range(1, 601):
        model.train()
        batch = task.batch(64, generator)
        loss = model(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 50 == 0:
            hypotheses = greedy_search(model, test.src, test.src_lengths)
            accuracy = exact_match([h.tokens for h in hypotheses], references)
            if accuracy >= 0.99:
                break
    assert accuracy >= 0.99, f"exact match {accuracy:.3f} after {step} steps"
    assert time.monotonic() - start < 60


@pytest.mark.parametrize("attention", ATTENTION_TYPES + ["none"])
def test_teacher_forced_forward_equals_stepping_decode_step(attention):
    """forward applies the output layer once over all steps; decode_step applies it per step: same logits."""
    model = tiny(attention=attention).eval()
    batch = padded_batch()
    logits = model(batch.src, batch.src_lengths, batch.tgt_in).logits  # (B, T, V)
    encoded = model.encode(batch.src, batch.src_lengths)
    state = model.initial_state(encoded)
    for t in range(batch.tgt_in.shape[1]):
        step = model.decode_step(batch.tgt_in[:, t], state, encoded)
        torch.testing.assert_close(step.logits, logits[:, t])
        state = step.state


def test_bf16_autocast_training_step_tracks_float32():
    torch.manual_seed(0)
    model = tiny(dropout=0.0).float()
    batch = padded_batch()
    results = {}
    for bf16 in (False, True):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out).loss
        loss.backward()
        results[bf16] = (loss.detach(), [p.grad.clone() for p in model.parameters()])
    assert results[True][0].dtype == torch.float32
    torch.testing.assert_close(results[True][0], results[False][0], rtol=0.02, atol=0.0)
    got, want = (torch.cat([g.flatten() for g in results[bf16][1]]) for bf16 in (True, False))
    assert (got - want).norm() <= 0.03 * want.norm(), ((got - want).norm() / want.norm())
    assert results[True][0] != results[False][0]  # it really ran in bfloat16
