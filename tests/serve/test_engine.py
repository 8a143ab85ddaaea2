"""The continuous-batching engine without HTTP: jobs joining and leaving a running batch give the tokens of
`LanguageModel.generate` with the same seed, one at a time or 12 at once (past the native step's batch limit of 8:
equal within rounding, so compared on a model whose logits are far apart); and every way a job ends."""
from __future__ import annotations

import threading

import pytest
import torch

from recurrent.models.lm import LanguageModel, LMConfig
from recurrent.sampling import Sampler
from recurrent.serve.engine import BatchEngine, Job


class Collect:
    """A job's events, and a flag set when it is done."""

    def __init__(self):
        self.tokens, self.activations, self.reason, self.done = [], [], None, threading.Event()

    def __call__(self, kind, payload):
        if kind == "token":
            self.tokens.append(payload[0])
            self.activations.append(payload[1])
        elif kind in ("done", "error"):
            self.reason = payload
            self.done.set()


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return LanguageModel(LMConfig(vocab_size=12, hidden_size=16, num_layers=2, cell="lstm")).eval()


def job(prime, length, seed, collect, **sampling) -> Job:
    return Job(torch.tensor(prime), length, Sampler(generator=torch.Generator().manual_seed(seed), **sampling), collect)


@pytest.mark.parametrize("max_batch, dtype", [(1, None), (4, None), (64, None), (64, torch.bfloat16)])
def test_jobs_of_any_length_joining_a_batch_give_generates_tokens(model, max_batch, dtype):
    """bfloat16 products (serve --precision bf16) too: the same tokens as `generate(bf16=True)` alone."""
    engine = BatchEngine(model, max_batch, dtype=dtype)
    specs = [([1, 2, 3], 50, 0, {}), ([4], 7, 1, {"temperature": 0.5}), ([5, 5], 0, 2, {}),
             ([2] * 80, 33, 3, {"top_k": 3}), ([7, 1], 61, 4, {"top_p": 0.7}), ([3], 20, 5, {"greedy": True})] * 2
    collected = [Collect() for _ in specs]
    try:
        for (prime, length, seed, sampling), c in zip(specs, collected):  # 12 jobs: past the native batch of 8
            engine.submit(job(prime, length, seed, c, **sampling))
        for c in collected:
            assert c.done.wait(30)
    finally:
        engine.close()
    for (prime, length, seed, sampling), c in zip(specs, collected):
        expected = list(model.generate(torch.tensor(prime), length, generator=torch.Generator().manual_seed(seed),
                                       bf16=dtype is torch.bfloat16, **sampling))
        assert c.tokens == expected and c.reason == "length"
    assert engine.peak == min(max_batch, len(specs)) or max_batch == 64


def test_a_job_ends_at_its_stop_token_on_cancel_and_at_its_deadline(model):
    engine = BatchEngine(model, 8)
    try:
        greedy = list(model.generate(torch.tensor([1]), 30, greedy=True))
        stop = Collect()
        engine.submit(Job(torch.tensor([1]), 30, Sampler(greedy=True), stop, stop=greedy[5]))
        assert stop.done.wait(30) and stop.reason == "end"
        assert stop.tokens == greedy[: greedy.index(greedy[5])]  # up to the first stop token, not including it
        late = Collect()
        engine.submit(Job(torch.tensor([1]), 10**9, Sampler(greedy=True), late, deadline=0.0))
        assert late.done.wait(30) and late.reason == "timeout" and late.tokens == []
        gone = Collect()
        long = Job(torch.tensor([1]), 10**9, Sampler(greedy=True), gone)
        engine.submit(long)
        while not gone.tokens:
            gone.done.wait(0.01)
        long.cancelled = True
        assert gone.done.wait(30) and gone.reason == "cancelled"
        assert engine.stats()["running"] == 0
    finally:
        engine.close()


def test_a_failing_step_ends_its_jobs_with_the_error_and_the_engine_goes_on(model):
    """A step that raises (here the deliver hook, once) must not kill the engine's thread, where every request
    would then wait for ever: the batch's jobs end with "error", and the next job runs."""
    failures = ["boom"]

    def deliver(events):
        if failures:
            raise RuntimeError(failures.pop())
        for j, kind, payload in events:
            j.emit(kind, payload)

    engine = BatchEngine(model, 8, deliver)
    try:
        first, second = Collect(), Collect()
        engine.submit(job([1], 20, 0, first))
        assert first.done.wait(30) and first.reason == "RuntimeError: boom"
        engine.submit(job([1], 20, 0, second))
        assert second.done.wait(30) and second.reason == "length" and len(second.tokens) == 20
    finally:
        engine.close()


def test_activations_are_the_stepped_layer_states(model):
    engine = BatchEngine(model, 8)
    c = Collect()
    try:
        engine.submit(Job(torch.tensor([1, 2]), 15, Sampler(greedy=True), c, unit=(1, 7)))
        assert c.done.wait(30)
    finally:
        engine.close()
    ids = torch.tensor([1, 2, *c.tokens])
    with torch.inference_mode():
        x = model.embedding(ids.view(1, -1))  # the whole text through the layers at once: h_t of every step
        for layer in model.layers:
            x, _ = layer(x)
    torch.testing.assert_close(torch.tensor(c.activations), x[0, 2:, 7], atol=1e-5, rtol=1e-4)


def test_the_engine_thread_runs_torch_on_the_threads_it_was_given(model):
    """`recurrent serve` runs everything else on one intra-op thread and gives the engines the rest (one OpenMP
    pool in the process: see engine.py); the engine thread's own setting is what its steps run with, whatever the
    thread that built it has."""
    seen = []
    before = torch.get_num_threads()

    def deliver(events):
        seen.append(torch.get_num_threads())  # called on the engine thread, between steps
        for j, kind, payload in events:
            j.emit(kind, payload)

    wanted = 3 if before != 3 else 2
    engine = BatchEngine(model, 8, deliver, threads=wanted)
    try:
        done = Collect()
        engine.submit(job([1], 5, 0, done))
        assert done.done.wait(30) and done.reason == "length"
    finally:
        engine.close()
        torch.set_num_threads(before)  # per thread with OpenMP; process-wide on torch's other thread pools
    assert seen and set(seen) == {wanted}
