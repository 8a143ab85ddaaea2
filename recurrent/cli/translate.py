"""`recurrent translate RUN`: translate stdin to stdout, one output line per input line, in order.

    recurrent translate runs/de-en --beam 5 < test.de > hyp.en
    recurrent translate runs/de-en --plot-attention "ein mann fährt fahrrad ." --out attn.png

Progress and counts go to stderr. An empty input line gives an empty output line; sources longer than the
model's --max-len are cut to it (and counted).
"""
from __future__ import annotations

import argparse
import sys

import torch

from recurrent.cli.config import add_run_args, check_output, precision_from_args
from recurrent.data.text import decode
from recurrent.errors import UserError
from recurrent.inference.translate import load_translator
from recurrent.validation import at_least, flag


def register(subparsers) -> None:
    p = subparsers.add_parser("translate", help="translate stdin with a trained model (greedy or beam search)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN", help="a run folder written by `recurrent train translate`")
    p.add_argument("--beam", type=flag(int, **at_least(1)), default=5, help="beam size (1: greedy)")
    p.add_argument("--alpha", type=flag(float, **at_least(0)), default=1.0,
                   help="length normalisation: score = log p / length^alpha")
    p.add_argument("--batch-size", type=flag(int, **at_least(1)), default=64, help="sentences decoded together")
    p.add_argument("--plot-attention", metavar="SENTENCE", default=None,
                   help="translate this sentence and save its attention heatmap to --out (PNG)")
    p.add_argument("--out", default="attention.png", help="where --plot-attention writes the PNG")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar on stderr")
    add_run_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.plot_attention is not None:
        check_output("--out", args.out, ".png")  # before the model is loaded
    precision = precision_from_args(args)
    translator = load_translator(args.run, args.device)
    if args.plot_attention is not None:
        return plot(translator, args)
    lines = decode(sys.stdin.buffer.read(), "stdin").splitlines()  # UserError naming the line of a bad byte
    with precision.autocast(torch.device(args.device).type):
        results = translator.translate(lines, args.beam, args.batch_size, args.alpha, progress=args.progress)
    sys.stdout.write("".join(r.text + "\n" for r in results))
    sys.stdout.flush()
    empty = sum(not line.strip() for line in lines)
    print(f"translated {len(lines)} lines ({empty} empty; {translator.truncated} sources cut to "
          f"{translator.max_len} tokens)", file=sys.stderr)
    return 0


def plot(translator, args: argparse.Namespace) -> int:
    if not translator.model.uses_attention:
        raise UserError(f"{args.run} was trained without attention (--attention none): nothing to plot")
    if not args.plot_attention.strip():
        raise UserError("--plot-attention needs a non-empty sentence")
    (result,) = translator.translate([args.plot_attention], args.beam, alpha=args.alpha)
    target = translator.target_tokens(result.hypothesis.tokens) + ["</s>"]
    plot_attention(result.hypothesis.attention, result.src_tokens, target, args.out)
    print(result.text)
    print(f"attention plot: {args.out}", file=sys.stderr)
    return 0


def plot_attention(weights, source: list[str], target: list[str], path) -> None:
    """A heatmap of weights (target step x source token), source along the top, target down the side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    T, S = weights.shape
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * S + 2), max(3, 0.4 * T + 1.5)))
    ax.imshow(weights.numpy(), cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(S), source, rotation=60, ha="left")
    ax.set_yticks(range(T), target)
    ax.xaxis.tick_top()
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
