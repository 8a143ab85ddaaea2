"""`recurrent diagnose activations RUN --text FILE --out units.html`: which hidden units track what?

    recurrent diagnose activations runs/shakespeare --text sample.txt --out units.html --units 8

Runs a char-level language model over the text (one stream, state carried), ranks one layer's hidden units by
the Pearson correlation of their activation h_t with simple features of the text (inside quotes, position in
the line, indentation, bracket depth), prints the best units per feature, and writes a self-contained HTML page
that colours every character by a unit's activation (blue -1, white 0, red +1), one block of text per unit, as
in Karpathy et al. 2015. See `recurrent.diagnostics.activations`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from recurrent.cli.config import check_output
from recurrent.data import read_text
from recurrent.diagnostics.activations import (hidden_activations, rank_units, render_page, text_features,
                                               units_to_show)
from recurrent.errors import UserError
from recurrent.inference.lm import load_lm
from recurrent.runs import read_task
from recurrent.validation import at_least, flag


def register(subparsers) -> None:
    p = subparsers.add_parser("activations", help="colour text by hidden units; find units that track quotes, "
                                                  "line position, indentation, brackets",
                              description=__doc__, formatter_class=_Formatter)
    p.add_argument("run", metavar="RUN", help="a char-level run folder written by `recurrent train lm`")
    p.add_argument("--text", required=True, help="a UTF-8 text file to run the model over")
    p.add_argument("--out", default="units.html", help="the HTML page to write")
    positive_int = flag(int, **at_least(1))
    p.add_argument("--units", type=positive_int, default=8, help="units shown on the page (at most the layer's size)")
    p.add_argument("--layer", type=int, default=-1, help="which layer's h (0 is the first, -1 the last)")
    p.add_argument("--top", type=positive_int, default=3, help="best units listed per feature")
    p.add_argument("--max-chars", type=positive_int, default=20000,
                   help="characters of the text used for the correlations")
    p.add_argument("--show-chars", type=positive_int, default=2000, help="characters of the text shown in each block")
    p.set_defaults(func=run)


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Flag defaults in the help, and the module docstring's example kept as written."""


def run(args: argparse.Namespace) -> int:
    _check(args)
    lm = load_lm(args.run)  # in eval mode: no dropout
    model, vocab = lm.model, lm.vocab
    if model.config.num_conditions or model.config.condition_size:  # its forward needs the condition
        raise UserError(f"{args.run} is a conditioned language model (trained with --condition); diagnose reads "
                        "unconditioned ones")
    if vocab.level != "char":
        raise UserError(f"{args.run} is a {vocab.level}-level model; activations need a char-level model "
                        f"(one hidden state per character)")
    L = len(model.layers)
    if not -L <= args.layer < L:
        raise UserError(f"--layer must be in {-L}..{L - 1} for this {L}-layer model, got {args.layer}")
    H = model.layers[args.layer].hidden_size
    text = read_text(args.text)[: args.max_chars]  # UserError for a missing or empty file
    ids = vocab.encode(text)  # (N,); a character training never saw reads as <unk>
    acts = hidden_activations(model, ids, args.layer).float().numpy()  # (N, H)

    ranking = rank_units(acts, text_features(text), args.top)
    units = units_to_show(ranking, acts, min(args.units, H))
    layer = args.layer % L
    print(f"diagnose activations: {args.run}: {model.config.cell} layer {layer} of {L}, {H} units, over "
          f"{len(text)} characters of {args.text}")
    for name, scores in ranking.items():
        best = ", ".join(f"unit {s.unit} r={s.r:+.2f}" for s in scores) or "constant over this text"
        print(f"{name:<16} {best}")
    shown = text[: args.show_chars]
    title = f"Hidden units of {Path(args.run).name}: layer {layer}"
    description = (f"{model.config.cell} layer {layer} of {L} ({H} units), h_t after reading each character of "
                   f"{Path(args.text).name}; correlations over {len(text)} characters, the first {len(shown)} "
                   f"shown.")
    page = render_page(shown, acts[: len(shown)], units, ranking, title, description)
    Path(args.out).write_text(page, encoding="utf-8")
    print(f"wrote {args.out} ({len(units)} of {H} units: {', '.join(map(str, units))})")
    return 0


def _check(args: argparse.Namespace) -> None:
    check_output("--out", args.out, ".html")
    task = read_task(args.run)
    if task != "lm":
        raise UserError(f"{args.run} is a {task!r} run; diagnose activations needs a char-level language model")
