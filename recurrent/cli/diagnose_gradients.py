"""`recurrent diagnose gradients`: per-lag gradient norms, W_hh spectra and gate saturation of a fresh layer.

    recurrent diagnose gradients --cell lstm --hidden-size 128 --seq-len 200 --out grads.png

For now the layer is freshly initialised and the data random: x ~ N(0, 1), and the loss at step t is a fixed
random unit probe, ℓ_t = v · h_t (see `recurrent.diagnostics.gradients.linear_probe`). A trained RUN folder
(a positional argument) comes with the language-model issue.
"""
from __future__ import annotations

import argparse

import torch

from recurrent.diagnostics.gradients import gradient_profile, judge, linear_probe, plot_profiles, summary_lines
from recurrent.diagnostics.weights import gate_saturation, recurrent_spectra, spectral_radius
from recurrent.errors import UserError
from recurrent.tasks.memory import CELLS


def register(subparsers) -> None:
    p = subparsers.add_parser("gradients", help="per-lag gradient norms: vanishing, healthy or exploding?",
                              description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--cell", default="rnn", help=f"one of {', '.join(CELLS)}")
    p.add_argument("--nonlinearity", default="tanh", help="rnn only: tanh or relu")
    p.add_argument("--hidden-size", type=int, default=128)
    p.add_argument("--num-layers", type=int, default=1)
    p.add_argument("--input-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=32, help="random sequences; norms are averaged over them")
    p.add_argument("--targets", type=int, default=4,
                   help="loss steps averaged for the dashed curves: the last step and more back to T/2")
    p.add_argument("--spectral-radius", type=float, default=None,
                   help="rescale every H×H block of each W_hh to this spectral radius (default: torch's init)")
    p.add_argument("--vanish-below", type=float, default=1e-3,
                   help="verdict vanishing if the fitted gradient ratio over the sequence is below this")
    p.add_argument("--explode-above", type=float, default=1e3,
                   help="verdict exploding if the fitted gradient ratio over the sequence is above this")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="PNG of the norms against lag (log scale)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    _check(args)
    torch.manual_seed(args.seed)
    kwargs = {"nonlinearity": args.nonlinearity} if args.cell == "rnn" else {}
    layer = CELLS[args.cell](args.input_size, args.hidden_size, num_layers=args.num_layers, **kwargs)
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
    for line in summary_lines(profile, verdicts):
        print(line)
    for v, norms in zip(verdicts, profile.mean):
        mean = judge(v.layer, norms, args.vanish_below, args.explode_above)
        print(f"summary layer {v.layer}: fitted rate {v.rate:.4g}/step at the last step, {mean.rate:.4g}/step "
              f"averaged over {len(profile.targets)} target steps -> {v.verdict}")
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


def _check(args: argparse.Namespace) -> None:
    if args.cell not in CELLS:
        raise UserError(f"--cell must be one of {', '.join(CELLS)}, got {args.cell!r}")
    if args.nonlinearity not in ("tanh", "relu"):
        raise UserError(f"--nonlinearity must be tanh or relu, got {args.nonlinearity!r}")
    for flag in ("hidden_size", "num_layers", "input_size", "seq_len", "batch_size", "targets"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.seq_len < 2:
        raise UserError(f"--seq-len must be >= 2 to fit a rate over lags, got {args.seq_len}")
    if args.spectral_radius is not None and not args.spectral_radius > 0:
        raise UserError(f"--spectral-radius must be positive, got {args.spectral_radius}")
    if not 0 < args.vanish_below < 1 < args.explode_above:
        raise UserError(f"need 0 < --vanish-below < 1 < --explode-above, got {args.vanish_below} and "
                        f"{args.explode_above}")


@torch.no_grad()
def _rescale(layer, radius: float) -> None:
    """Scale every H×H gate block of every W_hh so that its spectral radius is `radius`."""
    for cells in layer.cells:
        for cell in cells:
            for block in cell.weight_hh.split(cell.hidden_size):  # views into W_hh
                block.mul_(radius / spectral_radius(block))
