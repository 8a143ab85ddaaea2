"""Log-mel features against librosa, the stream against the whole file, and SpecAugment's masks."""
import numpy as np
import pytest
import torch

from recurrent.speech.features import (
    FeatureConfig,
    LogMelStream,
    SpecAugmentConfig,
    log_mel,
    normalize_utterance,
    spec_augment,
    warp_frequencies,
)


def noise(n, seed=0):
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32) * 0.1


def test_log_mel_matches_librosa():
    import librosa

    config = FeatureConfig(n_mels=40)
    audio = noise(16000)
    ours = log_mel(audio, config)
    ref = librosa.feature.melspectrogram(y=audio, sr=16000, n_fft=config.n_fft, hop_length=config.hop,
                                         win_length=config.win, window="hann", center=False, power=2.0,
                                         n_mels=40)  # (M, T)
    assert ours.shape == (1 + (16000 - config.win) // config.hop, 40) == ref.T.shape
    assert torch.allclose(ours, torch.log(torch.from_numpy(ref.T) + 1e-6), atol=1e-3)


def test_stream_gives_the_frames_of_the_whole_file():
    config = FeatureConfig(n_mels=24)
    audio = noise(12345, seed=1)
    whole = log_mel(audio, config)
    stream = LogMelStream(config)
    rng = np.random.default_rng(0)
    cuts = np.sort(rng.choice(np.arange(1, len(audio)), 12, replace=False))
    parts = [stream.push(chunk) for chunk in np.split(audio, cuts)]
    assert torch.allclose(torch.cat(parts), whole, atol=1e-4)


def test_normalize_utterance():
    feats = torch.randn(50, 8, dtype=torch.float64) * 3 + 2
    out = normalize_utterance(feats)
    assert torch.allclose(out.mean(0), torch.zeros(8, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(out.std(0, unbiased=False), torch.ones(8, dtype=torch.float64), atol=1e-9)


def test_spec_augment_masks_bands_and_spans_only():
    feats = torch.randn(100, 40) + 5  # no zeros of its own
    config = SpecAugmentConfig(freq_masks=1, freq_width=10, time_masks=1, time_width=30, time_fraction=0.2)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        out = spec_augment(feats, config, g)
        zero = out == 0
        kept = ~zero
        assert torch.equal(out[kept], feats[kept])
        full_cols = zero.all(0).sum().item()  # masked mel bins
        full_rows = zero.all(1).sum().item()  # masked frames
        assert full_cols <= 10 and full_rows <= 20  # time_fraction 0.2 of 100 frames caps the span at 20
        # every zero lies in a masked row or column
        assert torch.equal(zero, zero.all(0, keepdim=True) | zero.all(1, keepdim=True))
    assert torch.equal(spec_augment(feats, SpecAugmentConfig(0, 0, 0, 0), g), feats)


def test_spec_augment_fills_raw_features_with_their_mean():
    """Raw log-mel features (normalised later, by the model) are masked with the training mean of each bin, which
    the model's normalisation maps to 0, as the masks of normalised features are."""
    mean, std = torch.linspace(-9.0, -3.0, 40), torch.linspace(2.0, 4.0, 40)
    feats = torch.randn(100, 40) * std + mean
    config = SpecAugmentConfig(freq_masks=2, freq_width=10, time_masks=2, time_width=30)
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        out = (spec_augment(feats, config, g, fill=mean) - mean) / std  # as the model normalises it
        zero = out.abs() < 1e-6
        assert zero.any()
        assert torch.equal(zero, zero.all(0, keepdim=True) | zero.all(1, keepdim=True))


@pytest.mark.parametrize("factor", [0.85, 0.9, 1.1, 1.2])
def test_frequency_warp_moves_a_tone_where_the_scaled_tone_lies(factor):
    """Warping the log-mel frames of a tone at f by a gives the frames of a tone at a·f: the peak bin lands where the
    scaled tone's peak lies (within one bin), for tones across the band."""
    config = FeatureConfig(n_mels=40)
    t = np.arange(8000) / config.sample_rate
    def peak(feats):
        return int(feats.mean(0).argmax())

    moved = 0
    for f in (300.0, 800.0, 1500.0, 3000.0, 5000.0):
        tone = log_mel(np.sin(2 * np.pi * f * t).astype(np.float32), config)
        scaled = log_mel(np.sin(2 * np.pi * f * factor * t).astype(np.float32), config)
        assert abs(peak(warp_frequencies(tone, factor, 16000)) - peak(scaled)) <= 1, f
        moved += peak(scaled) != peak(tone)
    assert moved >= 3  # the tones' peaks do move: the check above is not the identity's


def test_frequency_warp_by_one_is_the_identity_and_spec_augment_draws_it():
    feats = torch.randn(30, 40, dtype=torch.float64)
    assert torch.allclose(warp_frequencies(feats, 1.0, 16000), feats, atol=1e-12)
    g = torch.Generator().manual_seed(0)
    out = spec_augment(feats, SpecAugmentConfig(0, 0, 0, 0, warp=0.1), g)
    assert out.shape == feats.shape and not torch.allclose(out, feats)
    assert torch.equal(spec_augment(feats, SpecAugmentConfig(0, 0, 0, 0, warp=0.0), g), feats)  # off: no draw
