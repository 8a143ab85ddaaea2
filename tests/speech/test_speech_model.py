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


@pytest.mark.parametrize("cell, conv", [("lstm", 12), ("gru", 12), ("lstm", 0)])
def test_stream_equals_the_whole_pass(cell, conv):
    m = model(bidirectional=False, cell=cell, conv_channels=conv)
    m.feature_mean.normal_()  # a globally normalised model: the mean pads the left context
    m.feature_std.uniform_(0.5, 2.0)
    feats = torch.randn(2, 37, 8)
    whole = m(feats).log_probs  # (B, 18, C) with stride 2
    state, parts = m.initial_stream(2), []
    with torch.no_grad():
        for a, b in [(0, 1), (1, 4), (4, 4), (4, 15), (15, 16), (16, 30), (30, 37)]:
            out, state = m.stream(feats[:, a:b], state)
            parts.append(out)
    streamed = torch.cat(parts, 1)
    assert streamed.shape == whole.shape
    assert torch.allclose(streamed, whole, atol=1e-5)


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
