"""Data-parallel training over several processes, on one machine or several, with torch.distributed: what the
training loop (recurrent/train/loop.py) needs from it, in one place.

    torchrun --nproc-per-node 2 -m recurrent train lm --data input.txt --batch-size 32
    torchrun --nnodes 2 --node-rank 0 --rdzv-backend c10d --rdzv-endpoint host:29500 --nproc-per-node 4 \\
        -m recurrent train lm --data input.txt --batch-size 32          # and --node-rank 1 on the other machine

torchrun starts the processes and sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT in each;
`start` joins them into a process group (gloo on the CPU, nccl with --device cuda, each process on
cuda:LOCAL_RANK). Each process holds a whole copy of the model, wrapped in DistributedDataParallel, which averages
the gradients over the processes during the backward pass.

Key: W processes (world size), r a rank, n_r what this process's loss is a mean over (tokens or examples),
N = Σ_r n_r, the global batch's.

The global batch means what it means in one process. Every process computes the same global batches from the
same seeded generator and trains on its share (`World.rows`): the LM on B/W of its B streams, the other tasks on
a contiguous part of each bucketed batch. A process's loss is a mean over its n_r tokens or examples, so the loop
weighs it by n_r · W / N (`World.weigh`), and DDP's average of the gradients is then

    (1/W) Σ_r ∇(n_r · W / N · loss_r) = (1/N) Σ_i ∇ℓ_i,

the gradient of the global batch's mean: the step one process takes, with the same learning rate, however unevenly
a batch splits. Clipping sees that averaged gradient, the same on every process.

What differs from one process:
- the random streams: each process draws its dropout masks (and unk replacement) from its own RNG, reseeded
  seed + rank once the model is built (rank 0 keeps the stream one process would draw). With dropout a run matches
  one process in distribution, not mask for mask; without it, to rounding.
- only rank 0 writes the run folder (config.json, checkpoints, metrics.jsonl, loss.png, progress) and evaluates;
  the others wait for its result, so that the best checkpoint, patience and the plateau schedule decide alike.
  Time budgets (--max-time, the cosine schedule's total time) run on rank 0's clock, agreed at every step.
- the last checkpoint holds rank 0's RNG states and the whole carried state (all B streams, gathered), so it has
  the layout of a one-process run's. --resume loads it on every process (on several machines the run folder must
  be on a shared file system, or copied to each); the other ranks' RNGs are reseeded seed + rank again.
"""
from __future__ import annotations

import atexit
import os
from datetime import timedelta
from typing import Any, Callable, NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from recurrent.errors import UserError
from recurrent.train.common import resolve_device

TIMEOUT = timedelta(hours=2)  # how long the other processes wait, e.g. for rank 0's evaluation


class StandIn(NamedTuple):
    """What a process trains on when its share of a global batch is empty (the batch has fewer examples than there
    are processes): the batch's first example, whose loss the loop weighs 0. DDP needs every process in every step."""

    batch: Any


class StepTotals(NamedTuple):
    """One step summed over the processes."""

    loss: float  # the global batch's mean loss: what one process would report
    count: int  # tokens or examples in the global batch, for throughput
    finite: bool  # every process's loss was finite: all step, or all skip
    elapsed: float  # rank 0's seconds since the run began: one clock for the time budget and the schedule
    stop: int  # the signal some process received (SIGINT, SIGTERM; the highest number if several), else 0: all
    #            stop after this step


class World(NamedTuple):
    """This process's place among the W training processes: one process is World(0, 1, 0)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0  # the rank on this machine: which GPU

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes the run folder and evaluates."""
        return self.rank == 0

    def rows(self, n: int) -> slice:
        """This process's rows of a global batch of n: contiguous, in rank order, sizes differing by at most one
        (all n in one process). Empty where n < W."""
        return slice(self.rank * n // self.size, (self.rank + 1) * n // self.size)

    def share(self, n: int, take: Callable[[slice], Any]):
        """take(rows) for this process's rows of a global batch of n, or a StandIn of its first row where it has
        none."""
        rows = self.rows(n)
        return take(rows) if rows.stop > rows.start else StandIn(take(slice(0, 1)))

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The model the steps run: DistributedDataParallel around it with several processes, else the model.
        DDP copies rank 0's parameters to the others here. The models use all of their parameters in every step,
        so DDP need not search each step's graph for unused ones, but for a conditioned language model: it reads
        its condition into the state of a stream's first window only, and its condition layers sit out the rest."""
        if self.size == 1:
            return model
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                       find_unused_parameters=bool(getattr(model, "conditioned", False)))

    def weigh(self, loss: Tensor, weight: int, count: int, elapsed: float,
              stop: int = 0) -> tuple[Tensor, StepTotals]:
        """(this process's loss weighted by n_r · W / N, the step's totals): see the module docstring. `weight` is
        n_r (0 for a StandIn), `count` the tokens or examples for throughput, `elapsed` this process's clock, `stop`
        the signal this process was asked to stop by (0: none)."""
        if self.size == 1:
            return loss, StepTotals(loss.item(), count, bool(torch.isfinite(loss)), elapsed, stop)
        finite = torch.isfinite(loss)
        local = torch.tensor([float(weight), 0.0, float(count), 0.0, elapsed if self.main else 0.0, float(stop > 0)],
                             dtype=torch.float64, device=loss.device)
        local[1] = weight * torch.where(finite, loss.detach(), 0).double()
        local[3] = (~finite).double()
        dist.all_reduce(local)  # sums: N, Σ n_r loss_r, the global count, non-finite losses, rank 0's clock, stops
        total, loss_sum, total_count, bad, rank0_elapsed, stops = local.tolist()
        if stops:  # once, at the end: which signal, so that every process reports the same
            signum = torch.tensor(stop, device=loss.device)
            dist.all_reduce(signum, op=dist.ReduceOp.MAX)
            stop = int(signum)
        mean = loss_sum / total if not bad else float("nan")
        scale = weight * self.size / total if total else 0.0  # (total 0: no process had a loss term)
        return loss * scale, StepTotals(mean, int(total_count), not bad, rank0_elapsed, stop)

    def from_main(self, value):
        """Rank 0's value (a JSON-like object) on every process."""
        if self.size == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        """Wait for every process (with one, return)."""
        if self.size > 1:
            dist.barrier()

    def gather_carry(self, carry: tuple | None) -> tuple | None:
        """The carried states of all streams, in rank order: each field (..., B/W, H) -> (..., B, H)."""
        if self.size == 1 or carry is None:
            return carry
        return tuple(type(s)(*(_gather_rows(f, self.size) for f in s)) for s in carry)

    def take_carry(self, carry: tuple | None) -> tuple | None:
        """This process's rows of the carried states of all streams: the inverse of gather_carry."""
        if self.size == 1 or carry is None:
            return carry
        return tuple(type(s)(*(f[..., self.rows(f.shape[-2]), :] for f in s)) for s in carry)


def _gather_rows(x: Tensor, size: int) -> Tensor:
    parts = [torch.empty_like(x) for _ in range(size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=-2)  # (..., B, H): the batch axis of a state field is next to last


def world() -> World:
    """This process's World: from the process group when one is running, else one process."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def start(device_name: str) -> tuple[World, torch.device]:
    """(World, device) for a training run. Under torchrun with WORLD_SIZE > 1 it joins the process group, once per
    process: a later run in the same process (a script that trains two models) uses it again, and it is left at
    exit. A group the caller started is used as it is. --device cuda becomes cuda:LOCAL_RANK."""
    device = resolve_device(device_name)
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1 and not (dist.is_available() and dist.is_initialized()):
        return World(), device
    if not dist.is_available():
        raise UserError(f"WORLD_SIZE is {size}, but this torch {torch.__version__} has no torch.distributed")
    device = _process_device(device, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT,
                                device_id=device if device.type == "cuda" else None)
        atexit.register(dist.destroy_process_group)
    return world(), device


def _process_device(device: torch.device, local_rank: int) -> torch.device:
    """cuda -> cuda:LOCAL_RANK; a cuda:N given with several processes on this machine is a UserError."""
    if device.type != "cuda":
        return device
    local_size = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if device.index is not None and local_size > 1:
        raise UserError(f"device {str(device)!r} would put all {local_size} processes of this machine on one GPU: "
                        f"give --device cuda, and each process takes cuda:LOCAL_RANK")
    return resolve_device(str(device) if device.index is not None else f"cuda:{local_rank}")
