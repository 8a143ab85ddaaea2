"""`recurrent diagnose gradients`: per-lag gradient norms, W_hh spectra and gate saturation.

    recurrent diagnose gradients --cell lstm --hidden-size 128 --seq-len 200 --out grads.png
    recurrent diagnose gradients runs/shakespeare --data input.txt --seq-len 200

Without RUN the layer is freshly initialised and the data random: x ~ N(0, 1), and the loss at step t is a
fixed random unit probe, ℓ_t = v · h_t (see `recurrent.diagnostics.gradients.linear_probe`).

With RUN (a folder written by `recurrent train lm`) the layers are the trained model's, the data are
--batch-size windows of --seq-len tokens of --data (spread evenly over the file; random tokens of the vocabulary
without --data), each after a --warmup of the tokens before it to carry a state in, as in training, and the
loss at step t is the model's own next-token cross-entropy. The PNG goes to RUN/gradients.png unless --out.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch
from torch import Tensor

from recurrent.cells import registry
from recurrent.cli.config import check_output
from recurrent.data import read_text
from recurrent.diagnostics.gradients import (gradient_profile, judge, linear_probe, next_token_loss, plot_profiles,
                                             summary_lines)
from recurrent.diagnostics.weights import gate_saturation, recurrent_spectra, spectral_radius
from recurrent.errors import UserError
from recurrent.inference.lm import load_lm
from recurrent.runs import read_task
from recurrent.validation import Range, at_least, flag, positive

# The cells whose weights and gates the diagnostics read: the built-in layers (torch.nn's parameters).
CELLS = registry.Names(lambda: [name for name in registry.names() if registry.spec(name).layer is not None])
# Flags that describe the fresh layer; a trained RUN brings its own.
FRESH_LAYER_FLAGS = {"cell": "rnn", "nonlinearity": "tanh", "hidden_size": 128, "num_layers": 1, "input_size": 8,
                     "spectral_radius": None}


def register(subparsers) -> None:
    p = subparsers.add_parser("gradients", help="per-lag gradient norms: vanishing, healthy or exploding?",
                              description=__doc__, formatter_class=_Formatter)
    p.add_argument("run", metavar="RUN", nargs="?", default=None,
                   help="a language-model run folder (default: a fresh layer on random data)")
    p.add_argument("--data", default=None, help="with RUN: a UTF-8 text to take the windows from")
    p.add_argument("--warmup", type=flag(int, **at_least(0)), default=100,
                   help="with RUN: tokens run before each window (no gradient) to carry a state in")
    fresh = FRESH_LAYER_FLAGS
    p.add_argument("--cell", default=fresh["cell"], help=f"one of {', '.join(CELLS)}")
    p.add_argument("--nonlinearity", default=fresh["nonlinearity"], help="rnn only: tanh or relu")
    p.add_argument("--hidden-size", type=flag(int, **at_least(1)), default=fresh["hidden_size"])
    p.add_argument("--num-layers", type=flag(int, **at_least(1)), default=fresh["num_layers"])
    p.add_argument("--input-size", type=flag(int, **at_least(1)), default=fresh["input_size"])
    p.add_argument("--seq-len", type=flag(int, **at_least(2)), default=200, help="at least 2, to fit a rate")
    p.add_argument("--batch-size", type=flag(int, **at_least(1)), default=32,
                   help="sequences (random, or windows of RUN's data); norms are averaged over them")
    p.add_argument("--targets", type=flag(int, **at_least(1)), default=4,
                   help="loss steps averaged for the dashed curves: the last step and more back to T/2")
    p.add_argument("--spectral-radius", type=flag(float, **positive()), default=fresh["spectral_radius"],
                   help="rescale every H×H block of each W_hh to this spectral radius (default: torch's init)")
    p.add_argument("--vanish-below", type=flag(float, range=Range(0, 1, True, True)), default=1e-3,
                   help="verdict vanishing if the fitted gradient ratio over the sequence is below this")
    p.add_argument("--explode-above", type=flag(float, range=Range(1, low_open=True)), default=1e3,
                   help="verdict exploding if the fitted gradient ratio over the sequence is above this")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="PNG of the norms against lag (log scale); with RUN, default "
                                                "RUN/gradients.png")
    p.set_defaults(func=run)


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Flag defaults in the help, and the module docstring's examples kept as written."""


def run(args: argparse.Namespace) -> int:
    _check(args)
    if args.run is not None:
        return run_trained(args)
    torch.manual_seed(args.seed)
    kwargs = {"nonlinearity": args.nonlinearity} if args.cell == "rnn" else {}
    layer = registry.layer(args.cell, args.input_size, args.hidden_size, num_layers=args.num_layers, **kwargs)
    if args.spectral_radius is not None:
        _rescale(layer, args.spectral_radius)
    x = torch.randn(args.batch_size, args.seq_len, args.input_size,
                    generator=torch.Generator().manual_seed(args.seed))  # (B, T, I)

    profile = gradient_profile(layer, x, linear_probe(args.hidden_size, args.seed), args.targets)
    verdicts = profile.verdicts(args.vanish_below, args.explode_above)
    name = args.cell + (f" ({args.nonlinearity})" if args.cell == "rnn" else "")
    print(f"diagnose gradients: {name}, {args.num_layers} layer(s), hidden {args.hidden_size}, "
          f"T={args.seq_len}, batch {args.batch_size} of random N(0,1) inputs; loss = unit probe v·h_t "
          f"at the last step (averaged curves: steps {profile.targets})")
    _print_verdicts(args, profile, verdicts)
    for spectrum in recurrent_spectra(layer):
        print(spectrum)
    if args.cell != "rnn":
        saturation = gate_saturation(layer, x)
        for l in range(args.num_layers):
            stats = [s for s in saturation if s.layer == l]
            gates = ", ".join(f"{s.gate} {s.low:.1%} low / {s.high:.1%} high" for s in stats)
            print(f"layer {l}: gate saturation (sigmoid < 0.05 / > 0.95): {gates}")
    if args.out:
        plot_profiles({name: profile}, args.out, f"{name}, hidden {args.hidden_size}, T={args.seq_len}: "
                                                 f"‖∂ℓ_t/∂h_(t-lag)‖ (solid: last step; dashed: mean of targets)")
        print(f"wrote {args.out}")
    return 0


def run_trained(args: argparse.Namespace) -> int:
    """Per-lag gradient norms of a trained language model's own loss, through its trained layers."""
    lm = load_lm(args.run)  # in eval mode: no dropout
    model, vocab = lm.model, lm.vocab
    if model.config.num_conditions or model.config.condition_size:  # its forward needs the condition
        raise UserError(f"{args.run} is a conditioned language model (trained with --condition); diagnose reads "
                        "unconditioned ones")
    tokens, source = _lm_windows(args, vocab)  # (B, warmup + T + 1)
    W, T = args.warmup, args.seq_len
    with torch.no_grad():
        warm = model(tokens[:, :W]).state if W else None  # the carried state, as in training
        x = model.embedding(tokens[:, W : W + T])  # (B, T, E)
    targets = tokens[:, W + 1 : W + T + 1]  # (B, T): the next token at each step
    profile = gradient_profile(model.layers, x, next_token_loss(model.decoder, targets), args.targets, warm)
    verdicts = profile.verdicts(args.vanish_below, args.explode_above)
    cfg = model.config
    print(f"diagnose gradients: {args.run}: {cfg.cell}, {cfg.num_layers} layer(s), hidden {cfg.hidden_size}, "
          f"{vocab.level}-level vocabulary of {len(vocab)}; {args.batch_size} windows of T={T} {source} after "
          f"{W} warm-up tokens; loss = next-token cross-entropy at the last step "
          f"(averaged curves: steps {profile.targets})")
    _print_verdicts(args, profile, verdicts)
    for l, layer in enumerate(model.layers):
        for spectrum in recurrent_spectra(layer):
            print(dataclasses.replace(spectrum, layer=l))
    if cfg.cell != "rnn":
        inp = x
        for l, layer in enumerate(model.layers):
            layer_state = None if warm is None else warm[l]
            stats = gate_saturation(layer, inp, layer_state)
            gates = ", ".join(f"{s.gate} {s.low:.1%} low / {s.high:.1%} high" for s in stats)
            print(f"layer {l}: gate saturation (sigmoid < 0.05 / > 0.95): {gates}")
            with torch.no_grad():
                inp, _ = layer(inp, layer_state)  # (B, T, H): the next layer's input
    out = args.out or str(Path(args.run) / "gradients.png")
    plot_profiles({cfg.cell: profile}, out, f"{Path(args.run).name}: {cfg.cell}, hidden {cfg.hidden_size}, T={T}: "
                                            f"‖∂ℓ_t/∂h_(t-lag)‖ (solid: last step; dashed: mean of targets)")
    print(f"wrote {out}")
    return 0


def _lm_windows(args: argparse.Namespace, vocab) -> tuple[Tensor, str]:
    """(B, warmup + T + 1) token ids: windows spread evenly over --data, or random tokens; and their source."""
    B, n = args.batch_size, args.warmup + args.seq_len + 1
    generator = torch.Generator().manual_seed(args.seed)
    if args.data is None:
        return torch.randint(len(vocab), (B, n), generator=generator), "of random tokens"
    ids = vocab.encode(read_text(args.data))  # (N,); UserError for a character outside a char vocabulary
    if len(ids) < n:
        raise UserError(f"{args.data} has {len(ids)} tokens; --warmup {args.warmup} + --seq-len {args.seq_len} + 1 "
                        f"needs {n} (use a longer text or smaller values)")
    starts = torch.linspace(0, len(ids) - n, B).long()  # (B,)
    return torch.stack([ids[s : s + n] for s in starts.tolist()]), f"of {args.data}"


def _print_verdicts(args: argparse.Namespace, profile, verdicts) -> None:
    for line in summary_lines(profile, verdicts):
        print(line)
    for v, norms in zip(verdicts, profile.mean):
        mean = judge(v.layer, norms, args.vanish_below, args.explode_above)
        print(f"summary layer {v.layer}: fitted rate {v.rate:.4g}/step at the last step, {mean.rate:.4g}/step "
              f"averaged over {len(profile.targets)} target steps -> {v.verdict}")


def _check(args: argparse.Namespace) -> None:
    if args.run is not None:
        changed = [f for f, default in FRESH_LAYER_FLAGS.items() if getattr(args, f) != default]
        if changed:
            raise UserError(f"--{changed[0].replace('_', '-')} describes a fresh layer; RUN brings its own trained "
                            f"layers (leave it out, or drop RUN)")
        task = read_task(args.run)
        if task != "lm":
            raise UserError(f"{args.run} is a {task!r} run; diagnose gradients RUN needs a language "
                            f"model (recurrent train lm)")
    elif args.data is not None:
        raise UserError("--data needs a trained RUN folder (without RUN the data are random)")
    if args.cell not in CELLS:
        raise UserError(f"--cell must be one of {', '.join(CELLS)}, got {args.cell!r}")
    if args.nonlinearity not in ("tanh", "relu"):
        raise UserError(f"--nonlinearity must be tanh or relu, got {args.nonlinearity!r}")
    if args.out is not None:
        check_output("--out", args.out, ".png")


@torch.no_grad()
def _rescale(layer, radius: float) -> None:
    """Scale every H×H gate block of every W_hh so that its spectral radius is `radius`."""
    for cells in layer.cells:
        for cell in cells:
            for block in cell.weight_hh.split(cell.hidden_size):  # views into W_hh
                block.mul_(radius / spectral_radius(block))
