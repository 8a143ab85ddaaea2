"""Continuous batching for generation: every running /generate request of one language model steps as one batch.

Key: B requests in the batch, V vocab, H hidden units.

An RNN's state is O(1) per request (one (h, c) per layer), unlike a transformer's growing cache, so batching is
simple: the engine thread keeps the states of the B running requests stacked as (B, H) per layer, and between two
tokens new requests join (their prime read alone, then their rows appended) and finished ones leave (their rows
dropped). One `Stepper.step` then runs all B rows at once (recurrent/models/lm.py), so B clients cost about one
client's weight reads per token, where one-at-a-time would read the weights B times.

Each request samples from its own row of the logits with its own `recurrent.sampling.Sampler` (temperature,
top-k, top-p) and its own CPU generator seeded by the request, drawing the same Gumbel noise as
`recurrent generate --seed` does. The logits are float32 and each row's arithmetic does not depend on the other
rows, so a request's tokens with a given seed are the same alone or batched (up to the last bits of rounding, when
the batch crosses the native step's batch limit and the products run on oneDNN instead). With bfloat16 products
(`dtype`), a row's inputs round to bfloat16 the same way alone or batched and only the order of the float32 sums
differs, so the same holds.

    engine = BatchEngine(lm.model, max_batch=64)
    engine.submit(job)          # a Job: prime ids, length, sampler; its `emit` receives Token events
    engine.close()
"""
from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from recurrent.diagnostics.activations import hidden_activations
from recurrent.models.lm import LanguageModel
from recurrent.sampling import Sampler


@dataclass
class Job:
    """One generation request as the engine runs it. `emit(kind, payload)` is called on the engine thread: kind
    "prime" with the prime's activations (when a unit is asked for), "token" with (token id, activation or None) per
    token, then once "done" with the finish reason (or "error" with a message)."""

    prime: Tensor  # (P,) token ids
    length: int
    sampler: Sampler
    emit: Callable[[str, object], None]
    condition: Tensor | None = None  # a conditioned model's label () or features (F,)
    unit: tuple[int, int] | None = None  # (layer, unit): report h_t[unit] of that layer after each token
    stop: int | None = None  # a token that ends the output (a sentence run's separator), not emitted
    deadline: float = float("inf")  # time.monotonic() past which the job finishes with "timeout"
    cancelled: bool = False  # set by the server when the client goes away
    inbox: object = None  # for a `deliver` hook: where the job's events go (the server's (event loop, queue))
    produced: int = field(default=0, init=False)


class BatchEngine:
    """A thread that steps every running Job of one LanguageModel together, `max_batch` at most (1: one request
    at a time, the baseline). Jobs beyond that wait their turn, first come first served."""

    def __init__(self, model: LanguageModel, max_batch: int = 64,
                 deliver: Callable[[list[tuple[Job, str, object]]], None] | None = None,
                 dtype: torch.dtype | None = None, threads: int | None = None):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.model, self.max_batch, self.dtype = model.eval(), max_batch, dtype
        # threads: torch's intra-op threads on the engine thread (None: as it starts). With OpenMP, every thread
        # that runs a parallel op keeps a pool of workers, and once a process holds more pool threads than it has
        # cores, libgomp's workers stop spinning between ops and sleep: a 2x512 LM step at batch 32 (oneDNN bf16
        # products) took 2.2 ms on an engine thread against 0.96 ms where that thread was the only one with a
        # pool. `recurrent serve` therefore runs everything else on one intra-op thread and gives the engine these.
        self.threads = threads
        # deliver(events): hands one step's events [(job, kind, payload)] over at once (the server: one wake-up of
        # its event loop per step, not one per request); None: each job's emit is called in turn
        self.deliver = deliver or (lambda events: [job.emit(kind, payload) for job, kind, payload in events])
        # dtype: the per-token products' (None: the weights', float32; torch.bfloat16: `--precision bf16`, as
        # `recurrent generate` does). States, sums and logits stay float32 either way.
        self.stepper = model.stepper(dtype)
        self.waiting: deque[Job] = deque()
        self.wake = threading.Condition()
        self.running = 0  # jobs in the batch now
        self.peak = 0  # the largest batch stepped so far
        self.closed = False
        self.thread = threading.Thread(target=self._loop, name="recurrent-serve-engine", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> None:
        with self.wake:
            if self.closed:
                raise RuntimeError("the engine is closed")
            self.waiting.append(job)
            self.wake.notify()

    def close(self) -> None:
        with self.wake:
            self.closed = True
            self.wake.notify()
        self.thread.join(timeout=10)

    def stats(self) -> dict:
        return {"running": self.running, "waiting": len(self.waiting), "peak_batch": self.peak,
                "max_batch": self.max_batch}

    # --- the engine thread ----------------------------------------------------------------------------------

    def _loop(self) -> None:
        if self.threads is not None:
            torch.set_num_threads(self.threads)  # this thread's OpenMP pool (see __init__)
        jobs: list[Job] = []
        logits, states = None, None  # (B, V); one cell state per layer, fields (B, H)
        while True:
            with self.wake:
                while not jobs and not self.waiting and not self.closed:
                    self.wake.wait()
                if self.closed:
                    break
                joining = []
                while self.waiting and len(jobs) + len(joining) < self.max_batch:
                    joining.append(self.waiting.popleft())
            for job in joining:  # each prime is read alone, then its rows join the batch
                try:
                    row_logits, row_states = self._read_prime(job)
                except Exception as e:  # noqa: BLE001  (a job must end, whatever went wrong)
                    job.emit("error", str(e))
                    continue
                jobs.append(job)
                logits, states = _append(logits, states, row_logits, row_states)
            self.running, self.peak = len(jobs), max(self.peak, len(jobs))
            if jobs:
                try:
                    jobs, logits, states = self._step(jobs, logits, states)
                except Exception as e:  # noqa: BLE001  (the batch's jobs end with the error; the engine goes on)
                    for job in jobs:
                        job.emit("error", f"{type(e).__name__}: {e}")
                    jobs, logits, states = [], None, None
        for job in [*jobs, *self.waiting]:
            job.emit("done", "cancelled")

    @torch.inference_mode()
    def _read_prime(self, job: Job) -> tuple[Tensor, list]:
        """The job's logits (1, V) and states (batch 1) after its prime. Asked for a unit, it first emits "prime"
        with h_t[unit] after each prime token (here, on the one thread that runs the model)."""
        if job.unit is not None:
            values = None
            if job.condition is None:  # hidden_activations starts from the unconditioned initial state
                values = hidden_activations(self.model, job.prime, job.unit[0])[:, job.unit[1]].tolist()
            job.emit("prime", values)
        return self.model.read_prime(job.prime, self.stepper, job.condition)

    @torch.inference_mode()
    def _step(self, jobs: list[Job], logits: Tensor, states: list) -> tuple[list[Job], Tensor | None, list | None]:
        """Sample a token for every job, step the batch once, emit; return the jobs still running and their rows."""
        now = time.monotonic()
        drawn = _draw(jobs, logits)  # (B,) every job's next token, whether it still runs or not
        tokens, live, ended = [], [], []
        for i, job in enumerate(jobs):
            reason = ("cancelled" if job.cancelled else "length" if job.produced >= job.length
                      else "timeout" if now > job.deadline else None)
            token = None if reason else drawn[i]
            if token is not None and token == job.stop:
                reason = "end"
            if reason:
                ended.append((job, reason))
            else:
                live.append(i)
                tokens.append(token)
        if len(live) < len(jobs):  # finished rows leave before the step: never stepped for nothing
            keep = torch.tensor(live, dtype=torch.long)
            states = [type(s)(*(f[keep] for f in s)) for s in states]
            jobs = [jobs[i] for i in live]
        events = []
        if jobs:
            logits, states = self.stepper.step(torch.tensor(tokens), states)  # (B, V); fields (B, H)
            for i, job in enumerate(jobs):  # the activation after reading the token: h_t, as diagnose shows it
                value = None if job.unit is None else float(states[job.unit[0]].h[i, job.unit[1]])
                job.produced += 1
                events.append((job, "token", (tokens[i], value)))
        events += [(job, "done", reason) for job, reason in ended]
        self.running = len(jobs)  # before the events: a client told "done" sees itself gone from the batch
        self.deliver(events)
        return (jobs, logits, states) if jobs else ([], None, None)


def _draw(jobs: list[Job], logits: Tensor) -> list[int]:
    """Each job's next token from its own row of logits (B, V), with its own noise and settings. Rows without top-k
    or top-p are drawn together, argmax(logits + T g) over the batch at once, which is what each job's Sampler
    would compute alone (its noise comes from its own generator, row by row); greedy rows take the argmax; the
    rest are drawn one by one. A job that ends this step draws too, and its draw is discarded: ending never
    depends on the noise a draw would have used."""
    logits = logits.float()
    plain = [i for i, job in enumerate(jobs) if not job.sampler.greedy and not job.sampler.filters]
    if plain:
        noise = torch.cat([jobs[i].sampler.next_noise(logits[:1].shape, logits.device) for i in plain])  # (b, V)
        scale = torch.tensor([jobs[i].sampler.temperature for i in plain], dtype=logits.dtype)[:, None]  # (b, 1)
        if len(plain) == len(jobs):  # the usual batch: every row plain, drawn at once without gathers
            return torch.addcmul(logits, scale, noise).argmax(-1).tolist()
    tokens = logits.argmax(-1)  # (B,): the greedy rows' tokens, and a placeholder for the others
    if plain:
        rows = torch.tensor(plain)
        tokens[rows] = torch.addcmul(logits[rows], scale, noise).argmax(-1)
    for i, job in enumerate(jobs):
        if not job.sampler.greedy and job.sampler.filters:
            tokens[i] = job.sampler(logits[i:i + 1])[0]
    return tokens.tolist()


def _append(logits: Tensor | None, states: list | None, row_logits: Tensor, row_states: list):
    """The batch with one more request's rows at the end: logits (B+1, V), state fields (B+1, H)."""
    if logits is None:
        return row_logits, row_states
    return (torch.cat([logits, row_logits]),
            [type(s)(*(torch.cat([f, g]) for f, g in zip(s, r))) for s, r in zip(states, row_states)])
