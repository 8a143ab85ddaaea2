"""The CRF against brute force: log Z equals log Σ exp over every tag path, Viterbi equals the best-scoring
path (with and without the BIO constraint), on padded batches of several lengths; gradcheck in float64."""
from __future__ import annotations

import itertools

import pytest
import torch

from recurrent.models.crf import CRF, bio_constraints

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def path_score(crf: CRF, e: torch.Tensor, path: tuple[int, ...], constrained: bool) -> float:
    """s(y) written out for one unpadded sequence e (T, K), with forbidden moves as -inf when constrained."""
    A, start, end = crf.transitions, crf.start, crf.end
    if constrained and (not crf.allowed_start[path[0]] or any(not crf.allowed[a, b] for a, b in zip(path, path[1:]))):
        return float("-inf")
    s = start[path[0]] + e[0, path[0]] + end[path[-1]]
    for t in range(1, len(path)):
        s = s + A[path[t - 1], path[t]] + e[t, path[t]]
    return float(s.detach())


def random_batch(B: int, T: int, K: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    emissions = torch.randn(B, T, K, generator=g, dtype=torch.float64) * 2
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0] = T
    mask = torch.arange(T) < lengths.unsqueeze(1)  # (B, T)
    return emissions, lengths, mask


@pytest.mark.parametrize("seed", range(3))
def test_log_partition_is_brute_force_log_sum_exp(seed):
    K, T = 3, 4
    crf = CRF(K).double()
    emissions, lengths, mask = random_batch(5, T, K, seed)
    log_z = crf.log_partition(emissions, mask)
    for b, L in enumerate(lengths.tolist()):
        scores = torch.tensor([path_score(crf, emissions[b, :L], p, False)
                               for p in itertools.product(range(K), repeat=L)], dtype=torch.float64)
        torch.testing.assert_close(log_z[b], torch.logsumexp(scores, 0))


@pytest.mark.parametrize("constrained", [False, True], ids=["free", "bio"])
@pytest.mark.parametrize("seed", range(3))
def test_viterbi_is_brute_force_argmax(seed, constrained):
    K, T = len(TAGS), 4
    crf = CRF(K, bio_constraints(TAGS) if constrained else None).double()
    with torch.no_grad():
        crf.transitions.normal_(0, 2)
        crf.start.normal_(0, 2)
    emissions, lengths, mask = random_batch(6, T, K, seed)
    best = crf.decode(emissions, mask)
    for b, L in enumerate(lengths.tolist()):
        paths = list(itertools.product(range(K), repeat=L))
        scores = [path_score(crf, emissions[b, :L], p, constrained) for p in paths]
        assert tuple(best[b, :L].tolist()) == paths[max(range(len(paths)), key=scores.__getitem__)]
        assert best[b, L:].eq(0).all()


def test_bio_constraint_forbids_i_after_o_another_type_and_at_start():
    allowed, start = bio_constraints(TAGS)
    i_per, b_per, i_loc, b_loc, o = (TAGS.index(t) for t in ("I-PER", "B-PER", "I-LOC", "B-LOC", "O"))
    assert not start[i_per] and start[b_per] and start[o]
    assert allowed[b_per, i_per] and allowed[i_per, i_per]
    assert not allowed[o, i_per] and not allowed[b_loc, i_per] and not allowed[i_loc, i_per]
    assert allowed[i_loc, b_per] and allowed[o, b_loc] and allowed[i_per, o]


def test_constrained_decode_never_emits_an_invalid_sequence():
    crf = CRF(len(TAGS), bio_constraints(TAGS))
    emissions = torch.randn(20, 7, len(TAGS)) * 5
    emissions[..., TAGS.index("I-PER")] += 6  # tempt it with I-PER everywhere
    mask = torch.ones(20, 7, dtype=torch.bool)
    for path in crf.decode(emissions, mask).tolist():
        tags = ["O"] + [TAGS[i] for i in path]
        for prev, tag in zip(tags, tags[1:]):
            assert not tag.startswith("I-") or prev[2:] == tag[2:], tags


def test_log_likelihood_of_all_paths_sums_to_one():
    K, T = 3, 3
    crf = CRF(K).double()
    e = torch.randn(1, T, K, dtype=torch.float64)
    mask = torch.ones(1, T, dtype=torch.bool)
    total = sum(crf.log_likelihood(e, torch.tensor([p]), mask).exp() for p in itertools.product(range(K), repeat=T))
    torch.testing.assert_close(total, torch.ones(1, dtype=torch.float64))


def test_gradcheck_log_likelihood_float64():
    """Gradients of log p(y | x) w.r.t. the emissions, transitions, start and end scores, padded batch."""
    K, T = 3, 4
    crf = CRF(K, bio_constraints(["O", "B-X", "I-X"])).double()
    emissions, lengths, mask = random_batch(3, T, K, seed=1)
    tags = torch.randint(0, K, (3, T))

    def log_likelihood(e, transitions, start, end):
        params = {"transitions": transitions, "start": start, "end": end}
        return torch.func.functional_call(crf, params, (e, tags, mask))

    inputs = [emissions] + [p.detach().clone() for p in (crf.transitions, crf.start, crf.end)]
    assert torch.autograd.gradcheck(log_likelihood, [x.requires_grad_() for x in inputs])


def test_bad_mask_fails_early():
    crf = CRF(3)
    with pytest.raises(ValueError, match="mask\\[:, 0\\] must be True"):
        crf.log_likelihood(torch.randn(1, 2, 3), torch.zeros(1, 2, dtype=torch.long),
                           torch.tensor([[False, True]]))
