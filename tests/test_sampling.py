"""Sampling never leaves the allowed set; the allowed set is checked against brute force."""
import itertools

import pytest
import torch

from recurrent.sampling import Sampler, filter_logits, sample_next


def nucleus_brute_force(probs: list[float], p: float) -> set[int]:
    """The smallest set of top tokens whose probability reaches p (ties broken by index order of sort)."""
    order = sorted(range(len(probs)), key=lambda i: -probs[i])
    for k in range(1, len(probs) + 1):
        if sum(probs[i] for i in order[:k]) >= p - 1e-12:
            return set(order[:k])
    return set(order)


@pytest.mark.parametrize("top_p", [0.3, 0.5, 0.8, 0.95])
def test_top_p_keeps_exactly_the_nucleus(top_p):
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        logits = torch.randn(1, 7, generator=gen) * 2
        kept = set(torch.isfinite(filter_logits(logits, top_p=top_p))[0].nonzero().flatten().tolist())
        assert kept == nucleus_brute_force(logits.softmax(-1)[0].tolist(), top_p)


@pytest.mark.parametrize("top_k,top_p", list(itertools.product([1, 2, 5], [1.0, 0.6])))
def test_samples_stay_inside_the_allowed_set(top_k, top_p):
    logits = torch.randn(4, 9, generator=torch.Generator().manual_seed(1))
    allowed = torch.isfinite(filter_logits(logits / 2.0, top_k, top_p))  # the nucleus is taken after temperature
    gen = torch.Generator().manual_seed(2)
    for _ in range(200):
        token = sample_next(logits, temperature=2.0, top_k=top_k, top_p=top_p, generator=gen)
        assert allowed[torch.arange(4), token].all()


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[0.1, 3.0, -1.0, 2.0, 0.5]])
    assert torch.isfinite(filter_logits(logits, top_k=2)).tolist() == [[False, True, False, True, False]]


def test_greedy_and_bad_values():
    logits = torch.tensor([[0.1, 3.0, -1.0]])
    assert sample_next(logits, greedy=True).tolist() == [1]
    with pytest.raises(ValueError, match="temperature must be > 0"):
        sample_next(logits, temperature=0)
    with pytest.raises(ValueError, match="top_p=1.5"):
        filter_logits(logits, top_p=1.5)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_gumbel_sampler_draws_from_the_softmax(temperature):
    """Frequencies over 40,000 draws (noise blocks refilled many times) match softmax(logits / T) within 5 sigma."""
    logits = torch.tensor([[1.0, 0.0, -1.0, 2.0, 0.5]])
    sample = Sampler(temperature, generator=torch.Generator().manual_seed(0), block=1000)
    n = 40_000
    counts = torch.bincount(torch.cat([sample(logits) for _ in range(n)]), minlength=5).double()
    p = (logits[0].double() / temperature).softmax(-1)
    sigma = (n * p * (1 - p)).sqrt()
    assert ((counts - n * p).abs() < 5 * sigma).all(), (counts / n, p)


def test_sampler_with_the_same_seed_repeats_and_block_size_does_not_change_the_draws():
    logits = torch.randn(3, 8, generator=torch.Generator().manual_seed(1))

    def draws(block):
        sample = Sampler(1.3, top_k=5, generator=torch.Generator().manual_seed(7), block=block)
        return torch.stack([sample(logits) for _ in range(50)])

    assert torch.equal(draws(50), draws(50)) and torch.equal(draws(50), draws(7))
    assert not torch.equal(draws(50), torch.stack([Sampler(1.3, top_k=5, generator=torch.Generator().manual_seed(8),
                                                           block=50)(logits) for _ in range(50)]))


def test_gumbel_noise_has_the_gumbel_distribution_on_the_cpu_path_and_the_torch_path():
    """g = -log(-log u): P(g <= x) = exp(-exp(-x)) (Kolmogorov-Smirnov distance of 200,000 draws), the numpy path
    (CPU) and the torch path (other devices) agree on the same draws, and u = 0 stays finite."""
    from recurrent.sampling import gumbel

    u = torch.rand(200_000, generator=torch.Generator().manual_seed(0))
    g = gumbel(u.clone())
    x = g.double().sort().values
    ecdf = torch.arange(1, len(x) + 1, dtype=torch.float64) / len(x)
    assert (ecdf - torch.exp(-torch.exp(-x))).abs().max() < 0.005  # KS critical value at 1%: 1.63/sqrt(n) = 0.0036
    torch.testing.assert_close(g, u.clone().clamp_(min=1e-38).log_().neg_().log_().neg_(), rtol=1e-5, atol=1e-5)
    assert torch.isfinite(gumbel(torch.tensor([0.0, 0.5, 1 - 2**-24]))).all()
