"""Long sequences: minGRU and minLSTM trained as one parallel scan over time (Feng et al. 2024; the `scan` backend,
in log space as Heinsen 2023) against torch.nn.GRU, forward + backward, in one run.

    python benchmarks/scan_speed.py                       # B=8 H=256, T = 512 and 4096
    python benchmarks/scan_speed.py --lengths 128,512,4096,16384 --rounds 5

The scan's work over T is O(T) but with no step waiting on the previous one, so its cost grows with T at the speed
of a few large element-wise passes; nn.GRU steps T times, each a small product. Target on a 2-core CPU: the minGRU
scan >= 5x nn.GRU at T = 4096 (the paper reports 1324x on a GPU at T = 4096). The sequential minGRU (the same
weights stepped one at a time, the autograd backend) is timed at the shorter lengths only, for reference.
"""
from __future__ import annotations

import statistics
import time

import torch
from common import parser
from torch import nn

import recurrent as rc


def train_step(model: nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    out, _ = model(x)
    out.sum().backward()
    return time.perf_counter() - start


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--lengths", default="512,4096")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--sequential-up-to", type=int, default=512, help="time the stepped minGRU up to this length")
    args = p.parse_args()
    torch.manual_seed(0)
    B, H = args.batch_size, args.hidden_size
    contenders = {
        "torch.nn.GRU": nn.GRU(H, H, batch_first=True),
        "minGRU, scan": rc.Recurrent(rc.MinGRUCell, H, H),
        "minLSTM, scan": rc.Recurrent(rc.MinLSTMCell, H, H),
        "minGRU, stepped": rc.Recurrent(rc.MinGRUCell, H, H, backend="autograd"),
    }
    print(f"training step (forward + backward), B={B} H={H}, float32, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; backends: " + ", ".join(f"{k}: {m.backend.name}" for k, m in contenders.items()
                                                            if isinstance(m, rc.Recurrent)))
    print("| T | implementation | ms / step | × torch.nn.GRU |\n|---:|---|---:|---:|")
    for T in map(int, args.lengths.split(",")):
        x = torch.randn(B, T, H)
        active = {k: m for k, m in contenders.items() if "stepped" not in k or T <= args.sequential_up_to}
        for model in active.values():
            train_step(model, x)  # warm-up
        times = {k: [] for k in active}
        for _ in range(args.rounds):  # interleaved: a shared machine's load touches every contender alike
            for k, model in active.items():
                times[k].append(train_step(model, x))
        ref = statistics.median(times["torch.nn.GRU"])
        for k, ts in times.items():
            sec = statistics.median(ts)
            print(f"| {T} | {k} | {sec * 1e3:.1f} | {ref / sec:.2f} |")


if __name__ == "__main__":
    main()
