"""The vanishing-gradient lab's benchmark: Elman RNN vs LSTM vs GRU on a long-range memory task, with the
gradient diagnostics that explain the result.

    PYTHONPATH=. python benchmarks/memory.py --task adding --seq-len 100 --max-time 120 --out-dir runs/memory

For each cell, one run of `recurrent train memory` (recurrent/tasks/memory.py on the one training loop) with the
same budget and hyperparameters (the task's defaults unless given):
  * per-lag gradient norms ‖∂ℓ_T/∂h_k‖ of the task loss at the last step, before and after training;
  * a GradientMonitor during training (the fitted rate per step, logged to grads_<cell>.jsonl);
  * W_hh spectral radii, gate saturation, and how often clipping fired.
Writes to --out-dir: runs/<cell>/ (each run folder), curves.png (validation loss, with the baseline), grads_init.png,
grads_trained.png, rates.png (fitted gradient rate per step over training) and the JSONL logs. Prints the table of
`recurrent bench memory`.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recurrent.cli.bench_memory import format_table, plot_curves
from recurrent.diagnostics import (GradientMonitor, clip_stats, gate_saturation, gradient_profile,
                                   plot_profiles, recurrent_spectra, summary_lines)
from recurrent.tasks.memory import (MemoryModel, TrainMemoryConfig, TrainResult, build_model,
                                    load_memory_model, make_task, train_memory)
from recurrent.train.loop import flat_replace


def main() -> None:
    d = TrainMemoryConfig()  # the task's defaults are the benchmark's
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default=d.problem)
    p.add_argument("--seq-len", type=int, default=d.seq_len)
    p.add_argument("--cells", default="rnn,lstm,gru")
    p.add_argument("--max-time", type=float, default=d.training.max_time, help="seconds of training per cell")
    p.add_argument("--hidden-size", type=int, default=d.model.hidden_size)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.training.lr)
    p.add_argument("--clip", type=float, default=d.training.clip)
    p.add_argument("--forget-bias", type=float, default=d.model.forget_bias, help="LSTM initial forget-gate bias")
    p.add_argument("--monitor-every", type=int, default=200, help="steps between GradientMonitor records")
    p.add_argument("--diag-batch", type=int, default=16, help="sequences for the gradient diagnostics")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads; 1 is fastest on a shared small CPU")
    p.add_argument("--out-dir", default="runs/memory")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = flat_replace(d, problem=args.task, seq_len=args.seq_len, max_time=args.max_time,
                          hidden_size=args.hidden_size, batch_size=args.batch_size, lr=args.lr, clip=args.clip,
                          forget_bias=args.forget_bias, seed=args.seed, progress=False,
                          overwrite=True)  # a rerun replaces the runs, as it does the plots
    task = make_task(config.problem, config.seq_len)
    print(f"memory benchmark: {config}, threads {args.threads}", flush=True)
    diag = task.sample(args.diag_batch, torch.Generator().manual_seed(args.seed + 20_000))  # a fixed batch

    results, before, after, monitors = [], {}, {}, {}
    for cell in args.cells.split(","):
        cell_config = flat_replace(config, cell=cell, out=str(out / "runs" / cell))
        torch.manual_seed(config.training.seed)  # the same initial weights as the run draws
        init = build_model(cell_config.model, task)
        before[cell] = profile(init, task, diag)
        log = out / f"grads_{cell}.jsonl"
        log.unlink(missing_ok=True)
        monitors[cell] = GradientMonitor(layer_of=lambda m: m.rnn, loss_of=lambda m, b: loss_of(m, b, task),
                                         every=args.monitor_every, max_batch=args.diag_batch, path=str(log))
        start = time.perf_counter()
        run_dir = train_memory(cell_config, callback=monitors[cell])
        results.append(TrainResult.read(run_dir, time.perf_counter() - start))
        model = load_memory_model(run_dir)
        after[cell] = profile(model, task, diag)
        report(cell, init, model, results[-1], before[cell], after[cell], diag, config.training.clip)

    print(format_table(results))
    plot_curves(results, str(out / "curves.png"), f"{task.name}, T={args.seq_len}, hidden {args.hidden_size}, "
                                                  f"{args.max_time:g} s of training per cell")
    title = f"{task.name} T={args.seq_len}: ‖∂ℓ_T/∂h_(T-lag)‖ of the task loss at the last step"
    plot_profiles(before, str(out / "grads_init.png"), f"at initialisation: {title}")
    plot_profiles(after, str(out / "grads_trained.png"), f"after training: {title}")
    plot_rates(monitors, str(out / "rates.png"))
    print(f"wrote {out}/curves.png, grads_init.png, grads_trained.png, rates.png, grads_<cell>.jsonl, runs/<cell>")


def loss_of(model: MemoryModel, batch, task):
    """The per-sequence task loss at step t, read through the model's head: for the GradientMonitor."""
    x, y = batch
    return x, lambda h, t: task.step_loss(model.head(h), y, t)


def profile(model: MemoryModel, task, batch):
    x, loss_fn = loss_of(model, batch, task)
    return gradient_profile(model.rnn, x, loss_fn, n_targets=1)  # the adding task scores the last step only


def report(cell, init, model, result, before, after, batch, clip: float) -> None:
    print(f"== {cell}: {result.steps} steps in {result.seconds:.0f} s, validation loss {result.final_loss:.4f} "
          f"(baseline {result.baseline:.4f})")
    for when, p in (("init   ", before), ("trained", after)):
        for line in summary_lines(p, p.verdicts()):
            print(f"   {when} {line}")
    for when, m in (("init   ", init), ("trained", model)):
        for s in recurrent_spectra(m.rnn):
            print(f"   {when} {s}")
        if cell != "rnn":
            sat = ", ".join(f"{s.gate} {s.low:.1%}/{s.high:.1%}" for s in gate_saturation(m.rnn, batch[0]))
            print(f"   {when} gate saturation (sigmoid < 0.05 / > 0.95): {sat}")
    print(f"   {clip_stats(result.grad_norms, clip)}", flush=True)


def plot_rates(monitors: dict[str, GradientMonitor], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (cell, monitor) in enumerate(monitors.items()):
        steps = [r["step"] for r in monitor.history]
        ax.plot(steps, [r["layers"][0]["rate"] for r in monitor.history], "o-", color=f"C{i}", label=cell)
    ax.axhline(1.0, color="black", linestyle="--", linewidth=0.8, label="rate 1: no decay")
    ax.set_xlabel("training step")
    ax.set_ylabel("fitted ‖∂ℓ_T/∂h_k‖ rate per step back")
    ax.set_title("GradientMonitor during training: how far back the last-step loss reaches", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
