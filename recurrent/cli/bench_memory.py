"""`recurrent bench memory`: train each cell on a long-range memory task with the same budget and compare.

    recurrent bench memory --task adding --seq-len 200 --cells rnn,lstm,gru --out adding.png
    recurrent bench memory --task copy --seq-len 100 --cells rnn,lstm,gru

Each cell gets the same wall-clock budget (--max-time seconds, or --max-steps), Adam and gradient-norm
clipping on fresh batches. The final loss is measured on a held-out batch; the baseline is what a
memoryless predictor scores (adding: 0.167; copy: 10 ln 8 / (T + 20)).
"""
from __future__ import annotations

import argparse

import torch

from recurrent.cells import registry
from recurrent.cli.config import add_config_args, config_from_args
from recurrent.diagnostics.weights import clip_stats
from recurrent.errors import UserError
from recurrent.tasks.memory import TASKS, TrainConfig, TrainResult, make_task, train_memory


def register(subparsers) -> None:
    p = subparsers.add_parser("memory", help="train cells on the adding or copy task with the same budget",
                              description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--task", default="adding", help=f"one of {', '.join(TASKS)}")
    p.add_argument("--seq-len", type=int, default=200, help="adding: sequence length T; copy: the delay T")
    p.add_argument("--cells", default="rnn,lstm,gru", help=f"comma-separated, from {', '.join(registry.NAMES)}")
    add_config_args(p, TrainConfig)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--out", default=None, help="PNG of the learning curves, with the baseline")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cells = _check(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    task = make_task(args.task, args.seq_len)
    cfg = config_from_args(TrainConfig, args)
    print(f"bench memory: {task.name}, T={args.seq_len} ({task.seq_len} steps per sequence), hidden "
          f"{cfg.hidden_size}, batch {cfg.batch_size}, Adam lr {cfg.lr:g}, clip {cfg.clip:g}, budget "
          f"{cfg.max_time:g} s" + (f" or {cfg.max_steps} steps" if cfg.max_steps else "") + " per cell"
          + (f", LSTM forget bias {cfg.forget_bias:g}" if cfg.forget_bias else ""), flush=True)
    results = []
    for cell in cells:
        results.append(train_memory(task, cell, cfg)[1])
        r = results[-1]
        print(f"  {cell}: {r.steps} steps in {r.seconds:.1f} s, held-out loss {r.final_loss:.4f}", flush=True)
    print(format_table(results))
    for r in results:
        if r.grad_norms:
            print(f"{r.cell}: {clip_stats(r.grad_norms, cfg.clip)}")
    if args.out:
        plot_curves(results, args.out, f"{task.name}, T={args.seq_len}, hidden {cfg.hidden_size}")
        print(f"wrote {args.out}")
    return 0


def format_table(results: list[TrainResult]) -> str:
    """One row per cell: name, final (held-out) loss, baseline, steps, seconds."""
    lines = [f"{'cell':<6} {'final_loss':>10} {'baseline':>9} {'steps':>7} {'seconds':>8}"]
    for r in results:
        lines.append(f"{r.cell:<6} {r.final_loss:>10.4f} {r.baseline:>9.4f} {r.steps:>7d} {r.seconds:>8.1f}")
    return "\n".join(lines)


def plot_curves(results: list[TrainResult], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, r in enumerate(results):
        steps, losses = zip(*r.curve)
        ax.plot(steps, losses, color=f"C{i}", label=f"{r.cell}: {r.final_loss:.4f} after {r.steps} steps")
    ax.axhline(results[0].baseline, color="black", linestyle="--", label=f"baseline {results[0].baseline:.4f}")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("held-out loss")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _check(args: argparse.Namespace) -> list[str]:
    if args.task not in TASKS:
        raise UserError(f"--task must be one of {', '.join(TASKS)}, got {args.task!r}")
    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    bad = [c for c in cells if c not in registry.NAMES]
    if not cells or bad:
        raise UserError(f"--cells must be a comma-separated list from {', '.join(registry.NAMES)}, got "
                        f"{args.cells!r}")
    for flag in ("seq_len", "hidden_size", "num_layers", "batch_size", "eval_every", "eval_size"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.task == "adding" and args.seq_len < 2:
        raise UserError(f"--seq-len must be >= 2 for the adding task, got {args.seq_len}")
    if args.max_steps < 0:
        raise UserError(f"--max-steps must be >= 0 (0: no limit), got {args.max_steps}")
    for flag in ("max_time", "lr", "clip"):
        if not getattr(args, flag) > 0:
            raise UserError(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
    if args.threads < 0:
        raise UserError(f"--threads must be >= 0, got {args.threads}")
    return cells
