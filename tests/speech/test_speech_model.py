"""The CTC recogniser: the stream equals the whole pass, a padded batch equals each utterance alone, the loss is
torch's ctc_loss on each utterance, and one batch overfits."""
import pytest
import torch
import torch.nn.functional as F

from recurrent.models.speech import SpeechConfig, SpeechRecognizer, ctc_loss
from recurrent.speech.ctc import greedy


def model(**changes):
    torch.manual_seed(0)
    small = {"input_size": 8, "num_chars": 5, "hidden_size": 16, "num_layers": 2, "dropout": 0.0,
             "conv_channels": 12, "conv_kernel": 5, "conv_stride": 2}
    config = SpeechConfig(**{**small, **changes})
    return SpeechRecognizer(config).eval()


@pytest.mark.parametrize("cell, conv, lookahead, running", [("lstm", 12, 0, 0), ("gru", 12, 0, 0), ("lstm", 0, 0, 0),
                                                            ("lstm", 12, 3, 0), ("gru", 0, 5, 0), ("lstm", 12, 40, 0),
                                                            ("lstm", 12, 0, 10), ("gru", 12, 4, 100)])
def test_stream_equals_the_whole_pass(cell, conv, lookahead, running):
    m = model(bidirectional=False, cell=cell, conv_channels=conv, lookahead=lookahead, running_norm=running)
    m.feature_mean.normal_()  # the training set's statistics: the normalisation's, or its running prior
    m.feature_std.uniform_(0.5, 2.0)
    if m.look is not None:
        m.look.weight.data.normal_()  # not the identity it starts as
    feats = torch.randn(2, 37, 8)
    whole = m(feats).log_probs  # (B, 18, C) with stride 2
    state, parts = m.initial_stream(2), []
    with torch.no_grad():
        for a, b in [(0, 1), (1, 4), (4, 4), (4, 15), (15, 16), (16, 30), (30, 37)]:
            out, state = m.stream(feats[:, a:b], state)
            parts.append(out)
        parts.append(m.finish(state))  # the frames waiting for their lookahead (none without one)
    assert sum(p.shape[1] for p in parts[:-1]) == max(whole.shape[1] - lookahead, 0)
    streamed = torch.cat(parts, 1)
    assert streamed.shape == whole.shape
    assert torch.allclose(streamed, whole, atol=1e-5)


def test_running_normalisation_is_the_mean_and_variance_so_far():
    """Frame t is normalised by the mean and variance of N prior frames (the training set's) and frames 0..t, written
    out with the prior as N frames drawn with exactly that mean and variance."""
    N = 4
    m = model(bidirectional=False, running_norm=N)
    m.feature_mean.normal_()
    m.feature_std.uniform_(0.5, 2.0)
    x = torch.randn(2, 9, 8, dtype=torch.float64) * 3 + 5
    prior = (m.feature_mean + m.feature_std * torch.tensor([1.0, -1.0, 1.0, -1.0])[:, None]).double()  # (N, M)
    assert torch.allclose(prior.mean(0), m.feature_mean.double()) and torch.allclose(
        prior.std(0, unbiased=False), m.feature_std.double())
    m = m.double()
    out, _, count = m._normalize(x, *m._initial_sums(2))
    assert count == N + 9
    for b in range(2):
        for t in range(9):
            seen = torch.cat([prior, x[b, :t + 1]])  # (N + t + 1, M)
            expected = (x[b, t] - seen.mean(0)) / seen.std(0, unbiased=False)
            assert torch.allclose(out[b, t], expected, atol=1e-9)


def test_running_normalisation_removes_a_loudness_offset():
    """A voice twice as loud adds log 4 to every log-mel energy: with a small prior, the normalised frames barely
    move; with the training set's statistics alone, every frame moves by log 4 / std."""
    x = torch.randn(1, 300, 8)
    running, fixed = model(bidirectional=False, running_norm=1), model(bidirectional=False)
    for m in (running, fixed):
        shift = m._normalize(x + 1.386, *m._initial_sums(1))[0] - m._normalize(x, *m._initial_sums(1))[0]
        late = shift[0, 100:].abs().max()  # once the utterance's own frames outweigh the prior
        assert late < 0.05 * 1.386 if m is running else torch.allclose(shift, torch.full_like(shift, 1.386), atol=1e-4)


def test_lookahead_adds_the_weighted_future_outputs():
    """r_t = sum_i w_i * h_{t+i}, with h past each row's end taken as 0, written out over the recurrent outputs."""
    m = model(bidirectional=False, lookahead=3)
    m.look.weight.data.normal_()
    feats, lengths = torch.randn(2, 20, 8), torch.tensor([20, 13])
    seen = {}
    m.rnn.register_forward_hook(lambda module, args, output: seen.update(h=output[0]))
    out = m(feats, lengths)
    h, w = seen["h"], m.look.weight[:, 0, :]  # (B, T', D*H), (D*H, 4)
    for b in range(2):
        n = int(out.lengths[b])
        r = torch.stack([sum(w[:, i] * h[b, t + i] for i in range(4) if t + i < n) for t in range(n)])
        assert torch.allclose(out.log_probs[b, :n], torch.log_softmax(m.out(r), -1), atol=1e-5)


def test_lookahead_starts_as_the_model_without_it():
    plain, looking = model(bidirectional=False), model(bidirectional=False, lookahead=6)
    looking.load_state_dict({**plain.state_dict(), "look.weight": looking.look.weight})
    feats, lengths = torch.randn(3, 25, 8), torch.tensor([25, 20, 9])
    assert torch.allclose(looking(feats, lengths).log_probs, plain(feats, lengths).log_probs, atol=1e-6)


def test_bidirectional_cannot_stream():
    with pytest.raises(ValueError, match="bidirectional"):
        model().initial_stream()


def test_padded_batch_equals_each_utterance_alone():
    m = model()
    lengths = torch.tensor([30, 17, 9])
    feats = torch.randn(3, 30, 8)
    feats[1, 17:], feats[2, 9:] = 100.0, -100.0  # padding must not matter
    out = m(feats, lengths)
    assert out.lengths.tolist() == [15, 8, 4]
    for b in range(3):
        alone = m(feats[b:b + 1, :lengths[b]]).log_probs[0]
        assert torch.allclose(out.log_probs[b, :out.lengths[b]], alone, atol=1e-5)


def test_loss_is_ctc_loss_per_utterance():
    m = model()
    feats, lengths = torch.randn(3, 30, 8), torch.tensor([30, 24, 20])
    targets = torch.tensor([[1, 2, 2, 3], [4, 1, 0, 0], [3, 0, 0, 0]])
    target_lengths = torch.tensor([4, 2, 1])
    out = m(feats, lengths)
    loss = ctc_loss(out, targets, target_lengths)
    each = []
    for b in range(3):
        lp = m(feats[b:b + 1, :lengths[b]]).log_probs  # (1, T', C)
        nll = F.ctc_loss(lp.transpose(0, 1), targets[b:b + 1, :target_lengths[b]], torch.tensor([lp.shape[1]]),
                         target_lengths[b:b + 1], reduction="sum")
        each.append(nll / target_lengths[b])  # "mean": each utterance's NLL per target character, then the mean
    assert torch.allclose(loss, torch.stack(each).mean(), atol=1e-5)


def test_overfits_one_batch():
    torch.manual_seed(0)
    m = model(hidden_size=32).train()
    feats = torch.randn(4, 40, 8)
    targets = torch.tensor([[1, 2, 3], [2, 2, 4], [4, 3, 0], [1, 0, 0]])
    target_lengths = torch.tensor([3, 3, 2, 1])
    optimizer = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(300):
        loss = ctc_loss(m(feats), targets, target_lengths)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    m.eval()
    out = m(feats)
    assert loss.item() < 0.1
    for b in range(4):
        assert greedy(out.log_probs[b].detach()) == targets[b, :target_lengths[b]].tolist()


def test_bad_sizes():
    with pytest.raises(ValueError, match="num_chars"):
        SpeechRecognizer(SpeechConfig(input_size=8, num_chars=1))
    with pytest.raises(ValueError, match="at least 2 frames"):
        model()(torch.randn(1, 1, 8))
